"""`exec -d`: start a command detached, its output in hosts/HOST/exec/STAMP-PID.log.

The guest pid is known only once the agent started the command, so the log is opened
under a temporary name and renamed after (the command keeps writing to the open file);
`logs` and `ps` then find a command's output by its pid.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Mapping, Optional

from emulator.backends.base import Backend
from emulator.runs.state import HostState, RunState, make_private_dir

EXEC_DIR = "exec"
_LOG_RE = re.compile(r"^\d{8}-\d{6}-(\d+)\.log$")


def spawn_detached(backend: Backend, run: RunState, host: HostState, command: str, *, cwd: Optional[str],
                   env: Mapping[str, str]) -> tuple[int, Path]:
    """(guest pid, log path) of a command started detached in HOST."""
    log_dir = make_private_dir(Path(host.dir) / EXEC_DIR)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    pending = log_dir / f".{stamp}-new{os.getpid()}.log"
    pid = backend.spawn(run, host, command, cwd=cwd, env=env, log_path=str(pending))
    final = log_dir / f"{stamp}-{pid}.log"
    try:
        os.replace(pending, final)
    except FileNotFoundError:  # the agent did not create it (it always does): keep the name
        return pid, pending
    return pid, final


def detached_logs(host_dir: Path) -> list[tuple[int, Path]]:
    """(pid, log) of every detached command of a host, oldest first."""
    found = []
    for path in sorted((host_dir / EXEC_DIR).glob("*.log")):
        match = _LOG_RE.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return found
