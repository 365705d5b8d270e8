"""Commands the agent runs for the host: attached (exec) and detached (spawn).

Each command is `/bin/sh -c CMD` in a session (and process group) of its own, so that a
timeout, a lost client or a signal from the host reaches the whole tree it started,
never the agent.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time

from .protocol import CHUNK, TIMEOUT_EXIT_CODE, b64

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs a noticeable import time under TCG; the agent skips it
    from typing import Callable, Mapping, Optional

    Send = Callable[[dict], None]

STDIN_CHUNKS = 64  # stdin frames queued for a command that does not read them yet (backpressure)
PS_KEEP_ENDED = 200  # ended commands `ps` still lists (the oldest are forgotten)
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


def _popen(cmd: str, cwd: str, env: Mapping[str, str], stdin=subprocess.DEVNULL, **kwargs) -> subprocess.Popen:
    if not os.path.isdir(cwd):
        raise CommandError(f"working directory {cwd} does not exist in the guest")
    try:
        return subprocess.Popen(["/bin/sh", "-c", cmd], cwd=cwd, env=dict(env), stdin=stdin,
                                start_new_session=True, close_fds=True, **kwargs)
    except OSError as err:
        raise CommandError(f"cannot start /bin/sh: {err}") from None


class StdinFeed:
    """What the client sends for a command's stdin (``exec -i``), written to its pipe in order.

    The queue is bounded, so a client that sends faster than the command reads waits
    (the port's reader blocks in :meth:`put`) instead of growing the agent's memory;
    once the command is gone or closed its stdin, further data is dropped.
    """

    def __init__(self) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=STDIN_CHUNKS)
        self.closed = threading.Event()

    def put(self, data: Optional[bytes]) -> None:
        """Queue ``data`` (None: end of input); dropped once the pipe is closed."""
        while not self.closed.is_set():
            try:
                self._queue.put(data, timeout=0.5)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        self.closed.set()
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass

    def pump(self, pipe) -> None:
        """Write queued data to ``pipe`` until end of input or until the reader is gone."""
        try:
            while True:
                data = self._queue.get()
                if data is None or self.closed.is_set():
                    return
                pipe.write(data)
                pipe.flush()
        except OSError:  # BrokenPipeError: the command no longer reads its stdin
            return
        finally:
            self.closed.set()
            try:
                pipe.close()
            except OSError:
                pass


class Processes:
    """Every process the agent started, so that signal/poll can find them and shutdown can end them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[int, subprocess.Popen] = {}
        self._exited: dict[int, int] = {}
        self._info: dict[int, dict] = {}  # pid -> what `ps` shows

    def _track(self, proc: subprocess.Popen, cmd: str, log: Optional[str] = None) -> None:
        with self._lock:
            self._running[proc.pid] = proc
            self._info[proc.pid] = {"pid": proc.pid, "cmd": cmd, "detached": log is not None, "log": log,
                                    "started": time.time()}

    def listing(self) -> list[dict]:
        """Every command the agent started, oldest first: pid, cmd, detached, log, started,
        running and (once it ended) its exit code."""
        with self._lock:
            rows = []
            for pid, info in self._info.items():
                row = dict(info, running=pid in self._running, code=self._exited.get(pid))
                rows.append(row)
        return sorted(rows, key=lambda r: r["started"])

    def _reaped(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._running.pop(proc.pid, None)
            self._exited[proc.pid] = exit_code(proc.returncode)
            ended = [pid for pid in self._info if pid not in self._running]
            for pid in ended[:max(len(ended) - PS_KEEP_ENDED, 0)]:
                del self._info[pid]

    def run(self, cmd: str, cwd: str, env: Mapping[str, str], timeout: Optional[float], send: Send,
            wake: threading.Event, stdin: Optional[StdinFeed] = None) -> Optional[int]:
        """Run attached: stream output through ``send``; the exit code, or None if cancelled.

        ``send`` gets {"type": "started"|"output", ...} messages; the caller sends "exit".
        Setting ``wake`` from outside cancels the command (its client went away). With
        ``stdin`` the command reads what the client sends; otherwise /dev/null.
        """
        try:
            proc = _popen(cmd, cwd, env, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except CommandError:
            if stdin:
                stdin.close()
            raise
        self._track(proc, cmd)
        if stdin:
            threading.Thread(target=stdin.pump, args=(proc.stdin,), daemon=True).start()
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
        if stdin:
            stdin.close()
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
            log = os.fdopen(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600), "ab",
                            buffering=0)
        except OSError as err:
            raise CommandError(f"cannot open the log {log_path}: {err.strerror}") from None
        try:
            proc = _popen(cmd, cwd, env, stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        self._track(proc, cmd, log_path)
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
