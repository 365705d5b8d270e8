"""Child processes running a test peer (rpc.peer by default), for tests across processes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


class Peers:
    """Child processes running rpc.peer; all killed at the end."""

    def __init__(self) -> None:
        self.procs: list = []

    def start(self, *args: str, host: int = 0, module: str = "rpc.peer", **env: str) -> subprocess.Popen:
        from .conftest import python_env

        environment = python_env(NOTNETS_HOST_ID=str(host), **env)
        environment["PYTHONPATH"] = str(TESTS) + ":" + environment["PYTHONPATH"]
        proc = subprocess.Popen([sys.executable, "-m", module, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=environment)
        self.procs.append(proc)
        return proc

    def send(self, proc: subprocess.Popen, line: str) -> None:
        """One line to ``proc``'s stdin (peers act on each line they read)."""
        proc.stdin.write(line + "\n")
        proc.stdin.flush()

    def expect(self, proc: subprocess.Popen, *lines: str, timeout: float = 30) -> None:
        """Read ``proc``'s output until a line containing each of ``lines`` has come, in any order."""
        import selectors

        missing = set(lines)
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if sel.select(timeout=0.1):
                got = proc.stdout.readline()
                missing = {line for line in missing if line not in got}
                if not missing:
                    return
                if not got and proc.poll() is not None:
                    break
        raise AssertionError(f"no {sorted(missing)!r} from {proc.args}: "
                             f"{proc.stderr.read() if proc.poll() is not None else ''}")

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
