"""Serve one virtio-serial port (notnets.agent.N): frames in, frames out, one client at a time.

How the guest side of a virtio-serial port behaves (Linux 6.1 virtio_console):
- while no host client is connected, poll() reports POLLHUP and read() returns b""
  at once, and whatever the guest writes is dropped by QEMU; so the server waits for a
  connection (woken by SIGIO, which the driver raises when the host connects, with a
  slow timer as a fallback) and only ever answers requests;
- when the client goes away read() returns b"", which ends the session: the commands
  it was running attached are cancelled (their output has nowhere to go).
"""

from __future__ import annotations

import errno
import fcntl
import glob
import os
import select
import threading
import time

from .protocol import LineBuffer, encode

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs a noticeable import time under TCG; the agent skips it
    from typing import Callable, Optional

SYSFS_PORTS = "/sys/class/virtio-ports"
PORT_PREFIX = "notnets.agent."
READ_SIZE = 64 * 1024
IDLE_RECHECK = 5.0  # seconds; SIGIO normally wakes an idle port at once (measured: ~40 ms connect+status)


def find_ports(expected: int, timeout: float, sysfs: str = SYSFS_PORTS, dev: str = "/dev") -> list[str]:
    """The agent's port devices (by name, in port order), waiting for ``expected`` of them."""
    deadline = time.monotonic() + timeout
    while True:
        found = []
        for entry in glob.glob(os.path.join(sysfs, "vport*")):
            try:
                with open(os.path.join(entry, "name")) as f:
                    name = f.read().strip()
            except OSError:
                continue
            node = os.path.join(dev, os.path.basename(entry))
            if name.startswith(PORT_PREFIX) and name[len(PORT_PREFIX):].isdigit() and os.path.exists(node):
                found.append((int(name[len(PORT_PREFIX):]), node))
        if len(found) >= expected or time.monotonic() >= deadline:
            return [path for _, path in sorted(found)]
        time.sleep(0.1)


class Wakeup:
    """A generation counter bumped on every SIGIO: 'something happened on some port'."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._generation = 0

    @property
    def generation(self) -> int:
        return self._generation

    def bump(self) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def wait_change(self, since: int, timeout: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._generation != since, timeout)


class Session:
    """One client's connection: replies go out through it; closing it cancels its commands."""

    def __init__(self, write: Callable[[bytes], bool]) -> None:
        self._write = write
        self._lock = threading.Lock()
        self._cancels: set[threading.Event] = set()
        self.closed = False

    def send(self, message: dict) -> None:
        if self.closed:
            return
        frame = encode(message)
        with self._lock:
            if not self._write(frame):
                self.closed = True

    def cancel_event(self) -> threading.Event:
        """An event that is set when the session ends (already set if it has)."""
        event = threading.Event()
        with self._lock:
            if self.closed:
                event.set()
            else:
                self._cancels.add(event)
        return event

    def forget(self, event: threading.Event) -> None:
        with self._lock:
            self._cancels.discard(event)

    def close(self) -> None:
        with self._lock:
            self.closed = True
            cancels, self._cancels = self._cancels, set()
        for event in cancels:
            event.set()


class PortServer:
    """Runs forever in its own thread; ``handler`` gets each request with its session."""

    def __init__(self, path: str, handler: Callable[[dict, Session], None], wakeup: Wakeup,
                 log: Callable[[str], None]) -> None:
        self.path = path
        self.handler = handler
        self.wakeup = wakeup
        self.log = log
        self.fd: Optional[int] = None

    def serve_forever(self) -> None:
        self.fd = self._open()
        while True:
            self._wait_for_client()
            self.serve_session()

    def _open(self) -> int:
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
                break
            except OSError as err:  # EBUSY: an earlier agent still holds it
                self.log(f"{self.path}: cannot open ({err.strerror}); retrying")
                time.sleep(1.0)
        fcntl.fcntl(fd, fcntl.F_SETOWN, os.getpid())
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_ASYNC)
        return fd

    def _wait_for_client(self) -> None:
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        while True:
            generation = self.wakeup.generation
            events = poller.poll(0)
            if not any(ev & select.POLLHUP for _, ev in events):
                return
            self.wakeup.wait_change(generation, IDLE_RECHECK)

    def _write(self, frame: bytes) -> bool:
        view = memoryview(frame)
        try:
            while view:
                written = os.write(self.fd, view)
                view = view[written:]
            return True
        except OSError as err:
            self.log(f"{self.path}: write failed ({err.strerror}); dropping the session's output")
            return False

    def serve_session(self) -> None:
        """Serve the connected client on ``self.fd`` until it goes away."""
        session = Session(self._write)
        frames = LineBuffer()
        try:
            while True:
                try:
                    data = os.read(self.fd, READ_SIZE)
                except OSError as err:
                    if err.errno == errno.EINTR:
                        continue
                    self.log(f"{self.path}: read failed ({err.strerror})")
                    time.sleep(0.5)
                    return
                if not data:
                    return
                for message in frames.feed(data):
                    self.handler(message, session)
        finally:
            session.close()
