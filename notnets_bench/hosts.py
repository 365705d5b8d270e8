"""Running the benchmark's programs in the hosts of a run: servers in the background,
clients in the foreground with their output read line by line as it arrives.

Works the same on every backend, through the backend's spawn/exec/signal/poll: a
server's log is a file under the run's state dir (the one directory a QEMU guest writes
through to the host), and a client's stdout comes back through `exec`.
"""

from __future__ import annotations

import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional

from emulator.backends.base import Backend
from emulator.errors import UserError
from emulator.paths import REPO_ROOT
from emulator.runs.guest_env import forwarded_env
from emulator.runs.state import HostState, RunState
from notnets_bench.malloc_env import MALLOC_ENV

POLL_INTERVAL = 0.2
STOP_GRACE = 5.0
# What a backend call may raise when a guest is slow or gone: the agent client's own
# errors are UserErrors, but a reply that does not come in time is a TimeoutError.
AGENT_ERRORS = (UserError, TimeoutError, OSError)
@dataclass
class GuestProcess:
    """A background program in a host, and the match of the line that said it was ready."""

    host: HostState
    pid: int
    log: Path
    ready: "re.Match[str]"


@dataclass
class Spawned:
    """A background program in a host that has not said it is ready yet."""

    host: HostState
    pid: int
    log: Path
    label: str


class LineSink:
    """A binary stream that hands each complete line (decoded) to ``on_line``."""

    def __init__(self, on_line: Callable[[str], None]) -> None:
        self.on_line = on_line
        self._partial = b""

    def write(self, data: bytes) -> int:
        lines = (self._partial + bytes(data)).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            self.on_line(line.decode(errors="replace").rstrip("\r"))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self._partial:
            self.on_line(self._partial.decode(errors="replace"))
            self._partial = b""


def tail_lines(path: Path, n: int = 5) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    return " | ".join(lines[-n:]) or "(empty log)"


class HostRunner:
    """Starts, stops and runs programs in the hosts of one run, in the project's directory."""

    def __init__(self, run: RunState, backend: Backend, extra_env: Optional[Mapping[str, str]] = None) -> None:
        self.run = run
        self.backend = backend
        # the bench picks each transport itself: interposition (on in hosts by default) must
        # not carry its gRPC baseline over the pool, whatever the caller's environment says
        self.env = {**forwarded_env(os.environ, run.name, run.state_dir), **MALLOC_ENV,
                    **(extra_env or {}), "NOTNETS_INTERPOSE": "0"}
        self.log_dir = Path(run.state_dir) / "bench"
        self.log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.started: list[GuestProcess] = []
        self.spawned: list[Spawned] = []
        self._count = 0

    def start(self, host: str, command: str, ready: str, timeout: float, label: str) -> GuestProcess:
        """Spawn ``command`` in ``host`` and wait until its log matches the regex ``ready``."""
        return self.wait_ready(self.spawn(host, command, label), ready, timeout)

    def spawn(self, host: str, command: str, label: str) -> "Spawned":
        """Start ``command`` in ``host`` in the background (``wait_ready`` then waits for it),
        so that several hosts can start their servers at once."""
        target = self.run.host(host)
        self._count += 1
        log = self.log_dir / f"{self._count:02d}-{host}-{label}.log"
        try:
            pid = self.backend.spawn(self.run, target, command, cwd=str(REPO_ROOT), env=self.env, log_path=str(log))
        except (TimeoutError, OSError) as exc:
            raise UserError(f"{label} on {host}: the guest agent did not start it: {exc or type(exc).__name__}") from None
        spawned = Spawned(target, pid, log, label)
        self.spawned.append(spawned)
        return spawned

    def wait_ready(self, spawned: "Spawned", ready: str, timeout: float) -> GuestProcess:
        """Wait until the log of ``spawned`` matches the regex ``ready``; kill it if it never does."""
        target, pid, log, label = spawned.host, spawned.pid, spawned.log, spawned.label
        proc_ready = re.compile(ready)
        deadline = time.monotonic() + timeout
        while True:
            match = _search(log, proc_ready)
            if match:
                proc = GuestProcess(target, pid, log, match)
                self.spawned.remove(spawned)
                self.started.append(proc)
                return proc
            try:
                code = self.backend.poll(self.run, target, pid)
            except AGENT_ERRORS:  # a guest busy for a while (soft lockup under TCG): the log decides
                code = None
            if code is not None:
                self.spawned.remove(spawned)
                raise UserError(f"{label} on {target.name} exited with code {code} before it was ready: {tail_lines(log)}")
            if time.monotonic() > deadline:
                self.spawned.remove(spawned)
                self._kill(target, pid)
                raise UserError(f"{label} on {target.name} was not ready within {timeout:g} s: {tail_lines(log)}")
            time.sleep(POLL_INTERVAL)

    def stop(self, proc: GuestProcess) -> None:
        """SIGTERM, then SIGKILL after a grace period; a host that is gone is not an error."""
        if proc in self.started:
            self.started.remove(proc)
        try:
            self.backend.signal(self.run, proc.host, proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE
            while time.monotonic() < deadline:
                if self.backend.poll(self.run, proc.host, proc.pid) is not None:
                    return
                time.sleep(POLL_INTERVAL)
            self._kill(proc.host, proc.pid)
        except AGENT_ERRORS:
            pass

    def stop_all(self) -> None:
        for spawned in list(reversed(self.spawned)):  # started, never waited for
            self.spawned.remove(spawned)
            self.stop(GuestProcess(spawned.host, spawned.pid, spawned.log, None))  # type: ignore[arg-type]
        for proc in list(reversed(self.started)):
            self.stop(proc)

    def _kill(self, host: HostState, pid: int) -> None:
        try:
            self.backend.signal(self.run, host, pid, signal.SIGKILL)
        except AGENT_ERRORS:
            pass

    def exec_lines(self, host: str, command: str, timeout: float, on_stdout: Callable[[str], None],
                   on_stderr: Callable[[str], None]) -> int:
        """Run ``command`` in ``host``; each output line goes to a callback as it arrives."""
        out, err = LineSink(on_stdout), LineSink(on_stderr)
        try:
            return self.backend.exec(self.run, self.run.host(host), command, cwd=str(REPO_ROOT), env=self.env,
                                     timeout=timeout, stdout=out, stderr=err)  # type: ignore[arg-type]
        except (TimeoutError, OSError) as exc:
            raise UserError(f"{host}: the guest agent failed while running a command: "
                            f"{exc or type(exc).__name__}") from None
        finally:
            out.close()
            err.close()


def _search(path: Path, pattern: "re.Pattern[str]") -> "Optional[re.Match[str]]":
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    return pattern.search(text)
