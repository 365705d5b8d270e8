"""Every run on this machine, whatever directory it was started from.

A run's state lives under the directory `up` ran in (or $NOTNETS_STATE), so a later
verb from another directory would not see it. `up` therefore also leaves a symlink
NAME -> its state dir in a per-user directory of this machine ($XDG_RUNTIME_DIR/notnets/
runs, else /tmp/notnets-UID/runs); `down` removes it. Run names are unique on a
machine anyway (the pools' backing files are named after them). A link whose run has
no state file any more (a crash, a reboot) counts for nothing and is pruned on reading.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional

from emulator.paths import STATE_FILE, make_private_dir


def registry_dir() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "notnets" / "runs"
    return Path(tempfile.gettempdir()) / f"notnets-{os.getuid()}" / "runs"


def _usable(directory: Path) -> bool:
    """Ours and private: a directory another user made in /tmp is not trusted."""
    try:
        info = directory.stat()
    except OSError:
        return False
    return info.st_uid == os.getuid() and not info.st_mode & 0o022


def register(name: str, state_dir: str) -> None:
    """Point NAME at ``state_dir`` (atomically; best effort: a run works without it)."""
    try:
        directory = make_private_dir(registry_dir())
        if not _usable(directory):
            return
        tmp = directory / f".{name}.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        os.symlink(state_dir, tmp)
        os.replace(tmp, directory / name)
    except OSError:
        return


def unregister(name: str, state_dir: str) -> None:
    """Remove NAME's link if it still points at ``state_dir``."""
    link = registry_dir() / name
    try:
        if os.readlink(link) == state_dir:
            link.unlink()
    except OSError:
        return


def registered(directory: Optional[Path] = None) -> dict[str, Path]:
    """name -> state dir of every registered run that still has a state file."""
    base = directory or registry_dir()
    if not _usable(base):
        return {}
    found = {}
    for link in base.iterdir():
        if link.name.startswith("."):
            continue
        try:
            target = Path(os.readlink(link))
        except OSError:
            continue
        if (target / STATE_FILE).is_file():
            found[link.name] = target
        else:
            link.unlink(missing_ok=True)
    return found
