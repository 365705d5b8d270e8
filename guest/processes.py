"""Commands the agent runs for the host: attached (exec) and detached (spawn).

Each command is `/bin/sh -c CMD` in a session (and process group) of its own, so that a
timeout, a lost client or a signal from the host reaches the whole tree it started,
never the agent.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading

from .protocol import CHUNK, TIMEOUT_EXIT_CODE, b64

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs a noticeable import time under TCG; the agent skips it
    from typing import Callable, Mapping, Optional

    Send = Callable[[dict], None]

KILL_GRACE = 2.0  # seconds between SIGTERM (timeout) or SIGHUP (client gone) and SIGKILL
DRAIN_GRACE = 1.0  # after the shell exits, how long output may still come from its pipes


class CommandError(Exception):
    """The command could not be started (bad cwd, bad log path); the message says why."""


def exit_code(returncode: int) -> int:
    """Shell convention: killed by signal N -> 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def _kill_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _popen(cmd: str, cwd: str, env: Mapping[str, str], **kwargs) -> subprocess.Popen:
    if not os.path.isdir(cwd):
        raise CommandError(f"working directory {cwd} does not exist in the guest")
    try:
        return subprocess.Popen(["/bin/sh", "-c", cmd], cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL,
                                start_new_session=True, close_fds=True, **kwargs)
    except OSError as err:
        raise CommandError(f"cannot start /bin/sh: {err}") from None


class Processes:
    """Every process the agent started, so that signal/poll can find them and shutdown can end them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[int, subprocess.Popen] = {}
        self._exited: dict[int, int] = {}

    def _track(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._running[proc.pid] = proc

    def _reaped(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._running.pop(proc.pid, None)
            self._exited[proc.pid] = exit_code(proc.returncode)

    def run(self, cmd: str, cwd: str, env: Mapping[str, str], timeout: Optional[float], send: Send,
            wake: threading.Event) -> Optional[int]:
        """Run attached: stream output through ``send``; the exit code, or None if cancelled.

        ``send`` gets {"type": "started"|"output", ...} messages; the caller sends "exit".
        Setting ``wake`` from outside cancels the command (its client went away).
        """
        proc = _popen(cmd, cwd, env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._track(proc)
        send({"type": "started", "pid": proc.pid})
        finished = threading.Event()
        pumps = [threading.Thread(target=self._pump, args=(pipe, fd, send, finished), daemon=True)
                 for fd, pipe in ((1, proc.stdout), (2, proc.stderr))]
        for pump in pumps:
            pump.start()
        exited = threading.Event()

        def waiter() -> None:
            proc.wait()
            exited.set()
            wake.set()

        threading.Thread(target=waiter, daemon=True).start()
        timed_out = not wake.wait(timeout)
        cancelled = not timed_out and not exited.is_set()
        if timed_out or cancelled:
            _kill_group(proc.pid, signal.SIGTERM if timed_out else signal.SIGHUP)
            if not exited.wait(KILL_GRACE):
                _kill_group(proc.pid, signal.SIGKILL)
            exited.wait()
        for pump in pumps:
            pump.join(DRAIN_GRACE)
        finished.set()
        self._reaped(proc)
        if cancelled:
            return None
        return TIMEOUT_EXIT_CODE if timed_out else exit_code(proc.returncode)

    @staticmethod
    def _pump(pipe, fd: int, send: Send, finished: threading.Event) -> None:
        try:
            while True:
                data = os.read(pipe.fileno(), CHUNK)
                if not data or finished.is_set():
                    return
                send({"type": "output", "fd": fd, "data": b64(data)})
        except OSError:
            return
        finally:
            pipe.close()

    def spawn(self, cmd: str, cwd: str, env: Mapping[str, str], log_path: str) -> int:
        """Start detached, output appended to ``log_path``; the pid (also its process group)."""
        try:
            os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
            log = open(log_path, "ab", buffering=0)
        except OSError as err:
            raise CommandError(f"cannot open the log {log_path}: {err.strerror}") from None
        try:
            proc = _popen(cmd, cwd, env, stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        self._track(proc)
        threading.Thread(target=lambda: (proc.wait(), self._reaped(proc)), daemon=True).start()
        return proc.pid

    def signal(self, pid: int, sig: int) -> None:
        """Signal a process the agent started (its whole group), or any other guest process."""
        with self._lock:
            ours = pid in self._running
            code = self._exited.get(pid)
        if not ours and code is not None:
            raise CommandError(f"process {pid} has already exited (code {code})")
        try:
            if ours:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            raise CommandError(f"no process {pid} in the guest") from None
        except PermissionError as err:
            raise CommandError(f"cannot signal {pid}: {err.strerror}") from None

    def poll(self, pid: int) -> tuple[bool, Optional[int]]:
        """(running, exit code) of a process the agent started."""
        with self._lock:
            if pid in self._running:
                return True, None
            if pid in self._exited:
                return False, self._exited[pid]
        raise CommandError(f"process {pid} was not started by the agent")

    def terminate_all(self, grace: float = KILL_GRACE) -> None:
        """SIGTERM every group the agent started, SIGKILL what is left after ``grace``."""
        with self._lock:
            procs = list(self._running.values())
        for proc in procs:
            _kill_group(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                _kill_group(proc.pid, signal.SIGKILL)
