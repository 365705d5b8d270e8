"""The run's private L2 network: one vde_switch on a unix socket in the state dir.

Only for topologies with ``network: true`` (the gRPC-over-network baseline). The
switch has no uplink, so nothing the guests send can leave this machine.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Optional

from emulator.backends.qemu.process import is_alive, kill, wait_dead
from emulator.errors import UserError

START_TIMEOUT = 5.0


def start_switch(state_dir: Path) -> tuple[int, str]:
    """Start ``vde_switch -d`` (it daemonises itself); return (pid, socket path)."""
    sock = state_dir / "vde"
    pid_file = state_dir / "vde.pid"
    argv = ["vde_switch", "-d", "-s", str(sock), "-p", str(pid_file), "-m", "600", "--dirmode", "700"]
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=START_TIMEOUT,
                              start_new_session=True, umask=0o077)
    except FileNotFoundError:
        raise UserError("vde_switch not found; run `make setup` (it installs vde2)") from None
    except subprocess.TimeoutExpired:
        raise UserError("vde_switch did not start within 5 s") from None
    if done.returncode != 0:
        raise UserError(f"vde_switch failed: {done.stderr.decode(errors='replace').strip()}")
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        pid = _read_pid(pid_file)
        if pid and (sock / "ctl").exists():
            return pid, str(sock)
        time.sleep(0.05)
    raise UserError(f"vde_switch did not create {sock} within 5 s")


def _read_pid(pid_file: Path) -> Optional[int]:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def stop_switch(pid: Optional[int], sock: Optional[str]) -> None:
    """Stop the switch if it is still the one this run started."""
    if not pid:
        return
    marker = sock or "vde_switch"
    if is_alive(pid, marker):
        kill(pid, marker, 15)
        if not wait_dead(pid, marker, 2.0):
            kill(pid, marker)
            wait_dead(pid, marker, 2.0)
