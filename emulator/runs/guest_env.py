"""What a command run in a guest inherits from the caller: its directory and NOTNETS_* vars.

Like ssh, `exec` runs in the caller's directory when the guest can see it: the guest
sees the host's whole root (read-only, with a tmpfs overlay), so almost every path
exists there too, except the kernel's own file systems (/proc, /sys, /dev), which are
the guest's. Variables are not forwarded wholesale (the host's PATH or HOME would be
wrong in the guest); only those the user exported with a NOTNETS_ prefix, minus the
ones the guest agent sets itself (NOTNETS_HOST*, NOTNETS_POOL*).
"""

from __future__ import annotations

import os
from typing import Mapping, Optional

GUEST_OWN_DIRS = ("/proc", "/sys", "/dev")
RESERVED_PREFIXES = ("NOTNETS_HOST", "NOTNETS_POOL")


def guest_cwd(cwd: str) -> Optional[str]:
    """``cwd`` if the guest sees the same directory there, else None (the agent's default)."""
    path = os.path.abspath(cwd)
    for own in GUEST_OWN_DIRS:
        if path == own or path.startswith(own + "/"):
            return None
    return path


def forwarded_env(environ: Mapping[str, str], run_name: str, state_dir: str) -> dict[str, str]:
    """The caller's NOTNETS_* variables (not the reserved ones), plus the run's name and state dir."""
    env = {
        key: value for key, value in environ.items()
        if key.startswith("NOTNETS_") and not key.startswith(RESERVED_PREFIXES)
    }
    env["NOTNETS_RUN"] = run_name
    env["NOTNETS_STATE_DIR"] = state_dir
    return env
