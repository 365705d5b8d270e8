"""Helpers for the CLI end-to-end tests: run `notnets-emu` as a user would, and make sure
nothing a test started outlives it (QEMU, vde_switch, pool files)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[2]
EMU = [sys.executable, "-m", "emulator.cli"]


def qemu_available() -> Optional[str]:
    """Why the e2e tests cannot run here, or None."""
    from shutil import which

    if which("qemu-system-x86_64") is None:
        return "qemu-system-x86_64 not installed"
    from emulator.errors import UserError
    from emulator.paths import find_kernel

    try:
        find_kernel()
    except UserError as err:
        return f"no guest kernel: {err}"
    return None


class Emu:
    """Runs the CLI with its state in ``state`` and its cwd in ``cwd``."""

    def __init__(self, state: Path, cwd: Path) -> None:
        self.state = state
        self.cwd = cwd
        self.env = {**os.environ, "NOTNETS_STATE": str(state), "PYTHONPATH": str(REPO)}

    def __call__(self, *args: str, timeout: float = 240, env: Optional[dict] = None,
                 input: Optional[str] = None) -> subprocess.CompletedProcess:
        return subprocess.run(EMU + list(args), capture_output=True, text=True, cwd=self.cwd,
                              env={**self.env, **(env or {})}, timeout=timeout, input=input)

    def status(self, name: Optional[str] = None) -> dict:
        args = ["status", "--json"] + (["--name", name] if name else [])
        result = self(*args, timeout=30)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def pids(self) -> list[int]:
        """Every pid recorded in any run.json under the state dir (for the safety net)."""
        pids = []
        for path in self.state.glob("*/run.json"):
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            pids += [h["pid"] for h in data.get("hosts", []) if h.get("pid")]
            if data.get("vde_pid"):
                pids.append(data["vde_pid"])
        return pids

    def namespaces(self) -> list[str]:
        """Every network namespace recorded in any run.json under the state dir (sim runs
        with ``network: true``)."""
        names = []
        for path in self.state.glob("*/run.json"):
            try:
                names += json.loads(path.read_text()).get("namespaces", [])
            except (OSError, ValueError):
                pass
        return names

    def backing_files(self) -> list[str]:
        files = []
        for path in self.state.glob("*/run.json"):
            try:
                files += [p["backing"] for p in json.loads(path.read_text()).get("pools", [])]
            except (OSError, ValueError):
                pass
        return files

    def kernel_faults(self) -> dict[str, list[str]]:
        """Guest kernel faults in the console logs of this harness's QEMU runs (the logs
        stay after `down`): an oops kills one thread and a test may still pass."""
        from emulator.runs.kernel_faults import kernel_faults

        found = {}
        for log in self.state.glob("*/hosts/*/console.log"):
            lines = kernel_faults(log)
            if lines:
                found[str(log)] = lines
        return found

    def cleanup(self) -> None:
        """Safety net: `down` every run, then kill whatever is still recorded."""
        pids, files, namespaces = self.pids(), self.backing_files(), self.namespaces()
        for path in self.state.glob("*/run.json"):
            self("down", "--name", path.parent.name, timeout=60)
        for pid in pids:
            if _is_ours(pid, str(self.state)):
                os.kill(pid, signal.SIGKILL)
        for f in files:
            if "/notnets-" in f:
                Path(f).unlink(missing_ok=True)
        for name in set(namespaces) & set(network_namespaces()):
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=10)


def _is_ours(pid: int, marker: str) -> bool:
    try:
        return marker in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def running_under(marker: str) -> list[int]:
    """Pids of processes whose command line mentions ``marker`` (a test's state dir)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid() and _is_ours(int(proc.name), marker):
            stat = (proc / "stat").read_text() if (proc / "stat").exists() else ""
            if stat and stat.rsplit(")", 1)[-1].split()[0] != "Z":
                found.append(int(proc.name))
    return found


def pool_files(run_name: str) -> list[str]:
    """Backing files of ``run_name`` in /dev/hugepages and /dev/shm."""
    out = []
    for base in ("/dev/hugepages", "/dev/shm"):
        out += [str(p) for p in Path(base).glob(f"notnets-{run_name}-*")]
    return out


def network_namespaces(prefix: str = "notnets-") -> list[str]:
    """The machine's named network namespaces (`ip netns list`) whose name starts with ``prefix``."""
    try:
        done = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    names = [line.split()[0] for line in done.stdout.splitlines() if line.strip()]
    return [name for name in names if name.startswith(prefix)]


def run_namespaces(run_name: str) -> list[str]:
    """Network namespaces of sim run ``run_name`` (emulator/backends/sim/network.py names them)."""
    return network_namespaces(f"notnets-{run_name}-")


def wait_until(predicate, timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()
