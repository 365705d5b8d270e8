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
import re
from typing import Iterable, Mapping, Optional

from emulator.errors import UserError

GUEST_OWN_DIRS = ("/proc", "/sys", "/dev")
RESERVED_PREFIXES = ("NOTNETS_HOST", "NOTNETS_POOL")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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


def parse_env_options(items: Iterable[str], environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """``-e KEY=VAL`` / ``-e KEY`` (the caller's value; skipped when unset, as docker does)."""
    env: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not ENV_NAME_RE.match(key):
            raise UserError(f"-e {item!r}: {key!r} is not a variable name (expected KEY=VALUE)", exit_code=2)
        if key.startswith(RESERVED_PREFIXES):
            raise UserError(f"-e {item!r}: {key} is set by the host itself (NOTNETS_HOST*, NOTNETS_POOL*)",
                            exit_code=2)
        if sep:
            env[key] = value
        elif key in environ:
            env[key] = environ[key]
    return env


def resolve_workdir(workdir: Optional[str], cwd: str) -> Optional[str]:
    """Where a command runs: -w DIR (relative to the caller's directory), else the caller's
    directory when the guest sees it (see :func:`guest_cwd`)."""
    if workdir is None:
        return guest_cwd(cwd)
    return os.path.normpath(os.path.join(cwd, workdir))
