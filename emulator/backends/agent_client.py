"""The host's side of the guest agent protocol (guest/protocol.py) over one virtio-serial port.

Each VM has a few agent ports (STATE/hosts/HOST/agentN.sock, QEMU's unix-socket end of
virtserialport notnets.agent.N). QEMU serves one client per socket, so a client first
takes a port with flock on '<socket>.lock' (several host processes can then exec at
once, up to the number of ports), then connects. The host always speaks first: QEMU
passes nothing to the guest until the agent has the port open, and drops what the guest
writes while no client is connected, so requests simply wait in the socket until the
agent reads them.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import select
import socket
import threading
import time
from typing import Any, BinaryIO, Mapping, Optional, Sequence

from guest import protocol

from emulator.errors import UserError

STATUS_POLL = 0.25  # seconds between status requests while the agent is still setting up
EXIT_GRACE = 10.0  # how long after an exec's own timeout the agent may take to report its end
REQUEST_TIMEOUT = 30.0  # spawn, signal, poll, ps: quick requests


class AgentError(UserError):
    """The guest agent refused, failed, or cannot be reached; the message says which host and why."""


class AgentClient:
    """One connection to a guest agent; use as a context manager or call close()."""

    def __init__(self, sock: socket.socket, lock_fd: int, socket_path: str) -> None:
        self._sock = sock
        self._lock_fd = lock_fd
        self.socket_path = socket_path
        self._frames = protocol.LineBuffer()
        self._pending: list[dict[str, Any]] = []
        self._ids = itertools.count(int.from_bytes(os.urandom(3), "big") << 16)
        self._closed = False
        self._send_lock = threading.Lock()  # the stdin feeder sends from its own thread

    # --- connection -------------------------------------------------------------------
    @classmethod
    def connect(cls, sockets: Sequence[str], timeout: float) -> "AgentClient":
        """Take a free agent port (flock on '<socket>.lock', so several host processes
        can exec at once, up to the number of ports), connect."""
        if not sockets:
            raise AgentError("no agent sockets given")
        deadline = time.monotonic() + timeout
        last_error = ""
        while True:
            busy = 0
            for path in sockets:
                lock_fd = _try_lock(path + ".lock")
                if lock_fd is None:
                    busy += 1
                    continue
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.connect(path)
                except OSError as err:
                    sock.close()
                    os.close(lock_fd)
                    last_error = f"{path}: {err.strerror}"
                    continue
                return cls(sock, lock_fd, path)
            if time.monotonic() >= deadline:
                if busy == len(sockets):
                    raise AgentError(f"all {len(sockets)} agent ports are busy (other execs are running); try again later")
                raise AgentError(f"cannot connect to the guest agent ({last_error}); is the host up?")
            time.sleep(0.05)

    def close(self) -> None:
        """Disconnect; the agent cancels any command still attached to this connection."""
        if self._closed:
            return
        self._closed = True
        try:
            self._sock.close()
        finally:
            os.close(self._lock_fd)

    def __enter__(self) -> "AgentClient":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- framing ----------------------------------------------------------------------
    def _request(self, op: str, **fields: Any) -> int:
        rid = next(self._ids)
        try:
            with self._send_lock:
                self._sock.sendall(protocol.encode({"id": rid, "op": op, **fields}))
        except OSError as err:
            raise AgentError(f"lost the connection to the guest agent ({err.strerror}); did the VM exit?") from None
        return rid

    def _next(self, rid: int, deadline: Optional[float]) -> dict[str, Any]:
        """The next frame for request ``rid``; raises TimeoutError at ``deadline``."""
        while True:
            for i, message in enumerate(self._pending):
                if message["id"] == rid:
                    del self._pending[i]
                    return message
            self._pending.clear()  # frames for earlier requests: nobody waits for them
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                raise TimeoutError("the guest agent did not answer in time")
            readable, _, _ = select.select([self._sock], [], [], wait)
            if not readable:
                continue
            try:
                data = self._sock.recv(256 * 1024)
            except OSError as err:
                raise AgentError(f"lost the connection to the guest agent ({err.strerror}); did the VM exit?") from None
            if not data:
                raise AgentError("the guest agent's socket closed; did the VM exit? (see its console log)")
            self._pending.extend(self._frames.feed(data))

    def _call(self, op: str, deadline: Optional[float], **fields: Any) -> dict[str, Any]:
        reply = self._next(self._request(op, **fields), deadline)
        if reply.get("type") == "error":
            raise AgentError(f"guest agent: {reply.get('message')}")
        return reply

    def _quick(self, op: str, **fields: Any) -> dict[str, Any]:
        """A request the agent answers at once; silence for REQUEST_TIMEOUT is an error."""
        try:
            return self._call(op, time.monotonic() + REQUEST_TIMEOUT, **fields)
        except TimeoutError:
            raise AgentError(f"the guest agent did not answer {op!r} within {REQUEST_TIMEOUT:g} s "
                             "(is the host frozen or overloaded?)") from None

    # --- API --------------------------------------------------------------------------
    def status(self, timeout: float) -> dict[str, Any]:
        """The agent's current state at once (state: starting, ready or failed)."""
        return self._call("status", time.monotonic() + timeout)

    def wait_ready(self, timeout: float) -> dict[str, Any]:
        """Block until the guest agent answers; return e.g.
        {"host": "host0", "pools": {"pool0": "/dev/dax0.0"}, "error": None};
        raise AgentError (with the reason the guest gave, e.g. region creation failed)
        or TimeoutError."""
        deadline = time.monotonic() + timeout
        last: Optional[dict[str, Any]] = None
        while True:
            try:
                last = self._call("status", deadline)
            except TimeoutError:
                if last is None:
                    raise TimeoutError("the guest agent did not answer "
                                       "(still booting? see the console log)") from None
                raise TimeoutError(f"the guest agent was still '{last.get('phase')}'") from None
            if last.get("state") == "ready":
                return last
            if last.get("state") == "failed":
                raise AgentError(f"host {last.get('host')}: {last.get('error')}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"the guest agent was still '{last.get('phase')}'")
            time.sleep(min(STATUS_POLL, remaining))

    def exec(self, command: str, *, cwd: str | None, env: Mapping[str, str],
             timeout: float | None, stdout: BinaryIO, stderr: BinaryIO, stdin: Optional[BinaryIO] = None) -> int:
        """Run `command` with the guest's /bin/sh -c, stream its output back, return its
        exit code (124 on timeout, like coreutils timeout). With ``stdin``, what it holds
        is the command's stdin (``exec -i``); otherwise the command reads /dev/null.

        The timeout holds even when the agent cannot act on it (a host frozen meanwhile):
        EXIT_GRACE after it, the command is given up on with 124 and a line on stderr."""
        rid = self._request("exec", cmd=command, cwd=cwd, env=dict(env), timeout=timeout,
                            stdin=stdin is not None)
        if stdin is not None:
            threading.Thread(target=self._feed, args=(rid, stdin), daemon=True, name="stdin").start()
        deadline = None if timeout is None else time.monotonic() + timeout + EXIT_GRACE
        streams = {1: stdout, 2: stderr}
        while True:
            try:
                message = self._next(rid, deadline)
            except TimeoutError:
                stderr.write(f"notnets-emu: the command did not end {EXIT_GRACE:g} s after its {timeout:g} s "
                             "timeout (is the host frozen?); given up on\n".encode())
                stderr.flush()
                return protocol.TIMEOUT_EXIT_CODE
            kind = message.get("type")
            if kind == "output":
                stream = streams.get(message.get("fd"), stderr)
                try:
                    stream.write(protocol.unb64(message.get("data", "")))
                    stream.flush()
                except ValueError:
                    continue  # undecodable payload: not from our agent
            elif kind == "exit":
                return int(message["code"])
            elif kind == "error":
                raise AgentError(f"guest agent: {message.get('message')}")

    def _feed(self, rid: int, stdin: BinaryIO) -> None:
        """Send ``stdin`` to exec ``rid`` as it comes, then end of input."""
        read = getattr(stdin, "read1", stdin.read)
        try:
            while True:
                data = read(protocol.CHUNK)
                if not data:
                    break
                self._request("stdin", ref=rid, data=protocol.b64(data))
            self._request("stdin", ref=rid, eof=True)
        except (AgentError, OSError, ValueError):
            return  # the connection ended (the command is over)

    def spawn(self, command: str, *, cwd: str | None, env: Mapping[str, str], log_path: str) -> int:
        """Detached: start and return the guest pid at once; stdout+stderr go to
        log_path (a file under the state dir, so the host can tail it)."""
        reply = self._quick("spawn", cmd=command, cwd=cwd, env=dict(env),
                           log=log_path)
        return int(reply["pid"])

    def processes(self) -> list[dict[str, Any]]:
        """The commands the agent started (guest/processes.py Processes.listing)."""
        reply = self._quick("ps")
        rows = reply.get("processes")
        return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []

    def signal(self, pid: int, sig: int) -> None:
        """Send ``sig`` to a guest process (to its whole group when the agent started it)."""
        self._quick("signal", pid=int(pid), sig=int(sig))

    def poll(self, pid: int) -> Optional[int]:
        """None while a process the agent started runs, then its exit code."""
        reply = self._quick("poll", pid=int(pid))
        return None if reply.get("running") else reply.get("code")


def _try_lock(path: str) -> Optional[int]:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as err:
        raise AgentError(f"cannot open the port lock {path}: {err.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd

