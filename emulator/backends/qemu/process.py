"""Starting QEMU so that it outlives the CLI, and finding out later whether it still runs.

`up` returns while the VMs keep running, and `down` runs in another process that only
has the recorded pid. A pid alone can be reused, so "alive" also checks that the
process is still the QEMU that was started (its command line names the run's QMP
socket); a zombie counts as dead.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Optional, Sequence

from emulator.errors import UserError


def start_detached(argv: Sequence[str], log_path: Path) -> subprocess.Popen:
    """Start ``argv`` in its own session (so Ctrl-C in the shell and the CLI's exit leave
    it alone), with its own stdout/stderr in ``log_path`` and private files (umask 077)."""
    log = open(log_path, "ab", buffering=0)
    try:
        os.chmod(log_path, 0o600)
        return subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True, umask=0o077,
        )
    except FileNotFoundError:
        raise UserError(f"{argv[0]}: not found; run `make setup` (it installs qemu-system-x86)") from None
    finally:
        log.close()


def cpu_seconds(pid: int) -> Optional[float]:
    """User + system CPU time a live process has used so far (None once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _proc_state(pid: int) -> Optional[str]:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    except OSError:
        return None
    # "pid (comm) S ..." where comm may contain spaces and parentheses
    return stat.rsplit(")", 1)[-1].split()[0]


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def is_alive(pid: Optional[int], marker: Optional[str] = None) -> bool:
    """True if ``pid`` runs (not a zombie) and, with ``marker``, its argv mentions it."""
    if not pid or pid <= 0:
        return False
    state = _proc_state(pid)
    if state is None or state in ("Z", "X"):
        return False
    if marker is not None:
        return any(marker in word for word in cmdline(pid))
    return True


def wait_dead(pid: int, marker: Optional[str], timeout: float) -> bool:
    """Poll until the process is gone (or a zombie); True if it died in time."""
    deadline = time.monotonic() + timeout
    while True:
        _reap(pid)
        if not is_alive(pid, marker):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _reap(pid: int) -> None:
    """Collect our own child so it does not linger as a zombie (no-op for others)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except (ChildProcessError, OSError):
        pass


def kill(pid: int, marker: Optional[str], sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to ``pid`` only if it is still the process we started."""
    if is_alive(pid, marker):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
