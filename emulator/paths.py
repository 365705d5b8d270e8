"""Where the project's files are: the checkout, the cache, the guest kernel, run state."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from emulator.errors import UserError

REPO_ROOT = Path(__file__).resolve().parent.parent
STATE_FILE = "run.json"  # a run's state file, in its state dir
DIR_MODE = 0o700


def make_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) readable by the owner only: it holds sockets to the VMs."""
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    os.chmod(path, DIR_MODE)
    return path


def cache_dir() -> Path:
    """Downloaded and built artefacts (guest kernel, initramfs); $NOTNETS_CACHE overrides."""
    return Path(os.environ.get("NOTNETS_CACHE", REPO_ROOT / ".cache"))


def state_root() -> Path:
    """Where runs keep their state: $NOTNETS_STATE, else ``.notnets/runs`` under the cwd."""
    env = os.environ.get("NOTNETS_STATE")
    return Path(env) if env else Path.cwd() / ".notnets" / "runs"


@dataclass(frozen=True)
class Kernel:
    """A guest kernel image and the matching modules tree (``ROOT/lib/modules/VERSION``)."""

    vmlinuz: Path
    modules_root: Path  # the directory that holds lib/modules/<version>
    version: str

    @property
    def modules_dir(self) -> Path:
        return self.modules_root / "lib" / "modules" / self.version


def find_kernel() -> Kernel:
    """The guest kernel: $NOTNETS_KERNEL (+ $NOTNETS_KERNEL_MODULES), else the cached Debian one.

    NOTNETS_KERNEL_MODULES may name either ``.../lib/modules/<version>`` or a root holding
    ``lib/modules/<version>``.
    """
    env = os.environ.get("NOTNETS_KERNEL")
    if env:
        vmlinuz = Path(env)
        if not vmlinuz.is_file():
            raise UserError(f"NOTNETS_KERNEL={env}: no such file")
        mods = os.environ.get("NOTNETS_KERNEL_MODULES")
        if not mods:
            raise UserError("NOTNETS_KERNEL is set but NOTNETS_KERNEL_MODULES (its lib/modules/<version>) is not")
        mods_path = Path(mods)
        if (mods_path / "modules.dep").exists() or (mods_path / "kernel").is_dir():
            return Kernel(vmlinuz, mods_path.parent.parent.parent, mods_path.name)
        versions = sorted(p.name for p in (mods_path / "lib" / "modules").glob("*") if p.is_dir())
        if not versions:
            raise UserError(f"NOTNETS_KERNEL_MODULES={mods}: no lib/modules/<version> inside")
        return Kernel(vmlinuz, mods_path, versions[-1])
    current = cache_dir() / "kernel" / "current"
    vmlinuz = current / "vmlinuz"
    if not vmlinuz.is_file():
        raise UserError(f"no guest kernel in {current}; run `make setup` (or scripts/fetch-kernel.sh)")
    version = (current / "version").read_text().strip()
    return Kernel(vmlinuz.resolve(), current.resolve(), version)
