"""`run`: the topology's `run:` steps, in order, on a run that is up.

Steps come in groups (one step item on several hosts, or a ``parallel:`` item) whose
members run at the same time, each on a thread of its own. Foreground steps go through
the backend's exec with the step's timeout; background steps are spawned detached with
their output in a log under the state dir (the guest writes it through the state
share), which a thread tails: it prints the lines with the host's prefix and tells
`wait_for` when the awaited text shows up. A failed step stops the sequence after its
group unless it has ``continue_on_error``; each step not run is reported as skipped,
with the step that stopped the sequence.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Optional

from emulator.backends.base import Backend
from emulator.errors import UserError
from emulator.runs.guest_env import forwarded_env, guest_cwd
from emulator.runs.state import RunState
from emulator.topology.model import Step

TIMEOUT_EXIT = 124
POLL_INTERVAL = 1.0  # seconds between "is the background step still running?" checks
EXIT_DRAIN = 1.0  # after it ended, how long its log may take to show its last lines


@dataclass
class StepResult:
    """What happened to one step; ``status`` is passed, failed, error or skipped."""

    index: int
    step: Step
    status: str = "skipped"
    exit_code: Optional[int] = None
    seconds: float = 0.0
    message: Optional[str] = None
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    pid: Optional[int] = None

    @property
    def title(self) -> str:
        """'step 3 on host1': how messages name it."""
        return f"step {self.step.label} on {self.step.on}"

    @property
    def name(self) -> str:
        kind = " (background)" if self.step.background else ""
        return f"{self.title}{kind}: {self.step.cmd}"


class PrefixedStream:
    """A binary sink that copies whole lines, prefixed ``[host] ``, to ``out`` and keeps
    every byte in ``capture`` (for the JUnit report)."""

    def __init__(self, prefix: str, out: BinaryIO, capture: bytearray, lock: threading.Lock) -> None:
        self.prefix = prefix.encode()
        self.out = out
        self.capture = capture
        self.lock = lock
        self._partial = b""

    def write(self, data: bytes) -> int:
        self.capture.extend(data)
        lines = (self._partial + bytes(data)).split(b"\n")
        self._partial = lines.pop()
        if lines:
            with self.lock:
                self.out.write(b"".join(self.prefix + line + b"\n" for line in lines))
                self.out.flush()
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        """Print a last line that had no newline."""
        if self._partial:
            with self.lock:
                self.out.write(self.prefix + self._partial + b"\n")
                self.out.flush()
            self._partial = b""


class LogTail(threading.Thread):
    """Follows a background step's log: prints it prefixed and watches for ``wait_for``."""

    def __init__(self, path: Path, sink: PrefixedStream, wait_for: Optional[str]) -> None:
        super().__init__(daemon=True, name=f"tail-{path.name}")
        self.path = path
        self.sink = sink
        self.wait_for = wait_for.encode() if wait_for else None
        self.seen = threading.Event()
        self._finish = threading.Event()
        self._buffer = b""

    def run(self) -> None:
        f = None
        try:
            while True:
                if f is None:
                    try:
                        f = open(self.path, "rb")
                    except FileNotFoundError:
                        f = None
                chunk = f.read(65536) if f is not None else b""
                if chunk:
                    self.sink.write(chunk)
                    self._watch(chunk)
                    continue
                if self._finish.is_set():
                    return
                time.sleep(0.1)
        finally:
            if f is not None:
                f.close()

    def _watch(self, chunk: bytes) -> None:
        if self.wait_for is None or self.seen.is_set():
            return
        self._buffer = (self._buffer + chunk)[-(len(self.wait_for) + 65536):]
        if self.wait_for in self._buffer:
            self.seen.set()

    def stop(self) -> None:
        """Read what is left, then end."""
        self._finish.set()
        self.join(timeout=5.0)
        self.sink.close()


class StepRunner:
    """Runs a topology's steps on an up run, printing prefixed output as it comes."""

    def __init__(self, run: RunState, backend: Backend, say: Callable[[str], None],
                 out: Optional[BinaryIO] = None, err: Optional[BinaryIO] = None,
                 base_dir: Optional[str] = None) -> None:
        self.run = run
        self.backend = backend
        self.say = say
        self.out = out or sys.stdout.buffer
        self.err = err or sys.stderr.buffer
        self.lock = threading.Lock()
        self.tails: list[LogTail] = []
        self.cwd = guest_cwd(os.getcwd())
        self.base_dir = base_dir or os.getcwd()  # where a step's relative workdir starts
        self.env = forwarded_env(os.environ, run.name, run.state_dir)
        self.log_dir = Path(run.state_dir) / "steps"
        self.results: list[StepResult] = []  # also readable after an interrupt

    def run_all(self, steps: tuple[Step, ...] | list[Step]) -> list[StepResult]:
        """Every group in order, its steps at the same time; after a group with a failed
        step (without continue_on_error) the rest are skipped, each saying why.
        Background output is collected until the end."""
        results = self.results = [StepResult(i, step) for i, step in enumerate(steps)]
        groups: dict[int, list[StepResult]] = {}
        for result in results:
            groups.setdefault(result.step.group, []).append(result)
        stopped_by: Optional[StepResult] = None
        try:
            for group in groups.values():
                if stopped_by is not None:
                    for result in group:
                        result.message = f"{stopped_by.title} {stopped_by.status}"
                        self.say(f"{result.title}: skipped ({result.message})")
                    continue
                self._group(group)
                for result in group:
                    if result.status != "passed" and not result.step.continue_on_error and stopped_by is None:
                        stopped_by = result
        finally:
            for tail in self.tails:
                tail.stop()
        return results

    def _group(self, group: list[StepResult]) -> None:
        """Run the group's steps together; a lone step runs on this thread."""
        if len(group) == 1:
            self._one_said(group[0])
            return
        threads = [threading.Thread(target=self._one_said, args=(r,), daemon=True, name=r.title) for r in group]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.2)
        except KeyboardInterrupt:
            for result in group:
                if result.status == "skipped":
                    result.status, result.message = "error", "interrupted (Ctrl-C or SIGTERM)"
            raise

    def _one_said(self, result: StepResult) -> None:
        try:
            self._one(result)
        except KeyboardInterrupt:
            result.status, result.message = "error", "interrupted (Ctrl-C or SIGTERM)"
            raise
        except Exception as error:  # noqa: BLE001 - a parallel step's bug must not vanish in its thread
            if threading.current_thread() is threading.main_thread():
                raise
            result.status, result.message = "error", f"{type(error).__name__}: {error}"
        verdict = result.status + (f" ({result.message})" if result.message else "")
        if result.status != "passed" and result.step.continue_on_error:
            verdict += "; continue_on_error: the run goes on"
        self.say(f"{result.title}: {verdict} in {result.seconds:.1f} s")

    def _one(self, result: StepResult) -> None:
        step = result.step
        host = self.run.host(step.on)
        out = PrefixedStream(f"[{step.on}] ", self.out, result.stdout, self.lock)
        err = PrefixedStream(f"[{step.on}] ", self.err, result.stderr, self.lock)
        started = time.monotonic()
        self.say(f"{result.title}: {step.cmd}")
        env = {**self.env, **dict(step.env)}
        cwd = os.path.normpath(os.path.join(self.base_dir, step.workdir)) if step.workdir else self.cwd
        try:
            if step.background:
                self._background(result, host, out, cwd, env)
            else:
                code = self.backend.exec(self.run, host, step.cmd, cwd=cwd, env=env,
                                         timeout=step.timeout, stdout=out, stderr=err)
                out.close()
                err.close()
                result.exit_code = code
                if code == TIMEOUT_EXIT:
                    result.status, result.message = "failed", f"timed out after {step.timeout:g} s"
                elif code != 0:
                    result.status, result.message = "failed", f"exit code {code}"
                else:
                    result.status = "passed"
        except UserError as error:
            result.status, result.message = "error", str(error)
        finally:
            result.seconds = time.monotonic() - started

    def _background(self, result: StepResult, host, out: PrefixedStream, cwd: Optional[str],
                    env: dict[str, str]) -> None:
        step = result.step
        self.log_dir.mkdir(mode=0o700, exist_ok=True)
        major, _, minor = step.label.partition(".")
        log = self.log_dir / f"{major.zfill(2)}{'.' + minor if minor else ''}-{step.on}.log"
        result.pid = self.backend.spawn(self.run, host, step.cmd, cwd=cwd, env=env, log_path=str(log))
        tail = LogTail(log, out, step.wait_for)
        tail.start()
        self.tails.append(tail)
        if step.wait_for is None:
            result.status = "passed"
            return
        deadline = time.monotonic() + step.timeout
        exit_code: Optional[int] = None
        while not tail.seen.wait(min(POLL_INTERVAL, max(deadline - time.monotonic(), 0))):
            if exit_code is not None or time.monotonic() >= deadline:
                break
            exit_code = self.backend.poll(self.run, host, result.pid)  # ended before the line?
            if exit_code is not None:
                result.exit_code = exit_code
                deadline = min(deadline, time.monotonic() + EXIT_DRAIN)  # let the tail read the rest
        if tail.seen.is_set():
            result.status = "passed"
        elif exit_code is not None:
            result.status = "failed"
            result.message = f"exited with code {exit_code} before {step.wait_for!r} appeared"
        else:
            result.status = "failed"
            result.message = f"{step.wait_for!r} did not appear within {step.timeout:g} s"


def summary(results: list[StepResult]) -> tuple[int, str]:
    """(exit code, one line): 0 only when every step passed."""
    counts = {s: sum(1 for r in results if r.status == s) for s in ("passed", "failed", "error", "skipped")}
    code = 0 if counts["passed"] == len(results) else 1
    text = ", ".join(f"{n} {s}" for s, n in counts.items() if n or s in ("passed", "failed"))
    return code, text
