"""The pools' backing files on this machine: huge pages when they can be had, else /dev/shm.

Huge pages are the better backing (no page-table churn, and the pool is never swapped),
but a machine may have none free. Then, as root, we raise vm.nr_hugepages by exactly
the deficit and lower it again at `down`; otherwise the pool goes to /dev/shm and the
user is told, because the numbers they measure then differ.
"""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from emulator.errors import UserError
from emulator.pools.backing import HUGETLBFS_MOUNT, SHM_DIR, backing_path
from emulator.runs.state import FILE_MODE, PoolState
from emulator.sizes import format_size
from emulator.topology.model import Pool, Topology

NR_HUGEPAGES = Path("/proc/sys/vm/nr_hugepages")
Say = Callable[[str], None]


@dataclass(frozen=True)
class HugePages:
    """What /proc/meminfo says about the default huge page pool."""

    page_size: int
    free: int  # pages neither in use nor promised to a mapping


def hugetlbfs_mounted(mount: Path = HUGETLBFS_MOUNT, mounts: Path = Path("/proc/mounts")) -> bool:
    """True when ``mount`` is a hugetlbfs mount point."""
    try:
        for line in mounts.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[1] == str(mount) and parts[2] == "hugetlbfs":
                return True
    except OSError:
        return False
    return False


def read_hugepages(meminfo: Path = Path("/proc/meminfo")) -> Optional[HugePages]:
    """The default huge page size and free count, or None where the kernel has none."""
    values: dict[str, int] = {}
    try:
        for line in meminfo.read_text().splitlines():
            key, _, rest = line.partition(":")
            fields = rest.split()
            if fields:
                values[key] = int(fields[0])
    except (OSError, ValueError):
        return None
    if "Hugepagesize" not in values:
        return None
    free = values.get("HugePages_Free", 0) - values.get("HugePages_Rsvd", 0)
    return HugePages(values["Hugepagesize"] * 1024, max(free, 0))


def _raise_nr_hugepages(extra: int) -> int:
    """Ask the kernel for ``extra`` more huge pages; return how many it actually added."""
    try:
        before = int(NR_HUGEPAGES.read_text())
        NR_HUGEPAGES.write_text(str(before + extra))
        after = int(NR_HUGEPAGES.read_text())
    except (OSError, ValueError):
        return 0
    return max(after - before, 0)


def lower_nr_hugepages(count: int) -> None:
    """Give back huge pages this run added (best effort: never below zero)."""
    if count <= 0:
        return
    try:
        current = int(NR_HUGEPAGES.read_text())
        NR_HUGEPAGES.write_text(str(max(current - count, 0)))
    except (OSError, ValueError):
        pass


def _create_file(path: Path, size: int, allocate: bool) -> bool:
    """Create (or reuse) ``path`` at ``size`` bytes; False when the memory is not there.

    On hugetlbfs the pages are allocated now (fallocate), so that a run that cannot get
    them falls back to /dev/shm at once instead of QEMU failing later, and so that a
    second run sees them as taken.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        if allocate:
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError as err:
                if err.errno in (errno.ENOSPC, errno.ENOMEM, errno.EINVAL, errno.EOPNOTSUPP):
                    os.close(fd)
                    fd = -1
                    path.unlink(missing_ok=True)
                    return False
                raise
        elif os.fstat(fd).st_size < size:
            os.ftruncate(fd, size)
    finally:
        if fd >= 0:
            os.close(fd)
    return True


def in_use_by(path: Path) -> Optional[int]:
    """The pid of a process that maps ``path`` (QEMU of another run), or None.

    Backing files are named after the run, and two state dirs (two working directories)
    can hold runs of the same name: reusing a file a live VM maps would join the two.
    """
    target = str(path)
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            with open(proc / "maps", encoding="utf-8", errors="replace") as f:
                if any(line.rstrip("\n").endswith(" " + target) or line.rstrip("\n").endswith(target + " (deleted)")
                       for line in f):
                    return int(proc.name)
        except OSError:
            continue
    return None


def _check_free(pool: Pool, path: Path) -> None:
    pid = in_use_by(path)
    if pid is not None:
        raise UserError(f"pool {pool.name}: {path} is in use by pid {pid} (a run of the same name from "
                        f"another directory?); `down` that run, or rename this topology")


def _shm_free(shm: Path) -> int:
    st = os.statvfs(shm)
    return st.f_bavail * st.f_frsize


class PoolAllocator:
    """Makes the backing files of a run and remembers what to undo."""

    def __init__(self, run_name: str, say: Say, hugetlbfs: Path = HUGETLBFS_MOUNT, shm: Path = SHM_DIR,
                 may_raise_hugepages: Optional[bool] = None) -> None:
        self.run_name = run_name
        self.say = say
        self.hugetlbfs = hugetlbfs
        self.shm = shm
        self.may_raise = (os.geteuid() == 0) if may_raise_hugepages is None else may_raise_hugepages
        self.hugepages_raised = 0
        self.made: list[PoolState] = []

    def prepare(self, topology: Topology) -> list[PoolState]:
        """Backing files for every pool of ``topology``, each said aloud."""
        for pool in topology.pools:
            try:
                state = self._one(pool)
            except OSError as err:
                where = f" {err.filename}" if err.filename else ""
                raise UserError(f"pool {pool.name}: cannot create its backing file{where}: {err.strerror or err}") from None
            state.coherence = pool.coherence
            self.made.append(state)
        return self.made

    def _one(self, pool: Pool) -> PoolState:
        if pool.backing == "path":
            path = backing_path(self.run_name, pool)
            if not path.parent.is_dir():
                raise UserError(f"pool {pool.name}: {path.parent} does not exist")
            existed = path.exists()
            _create_file(path, pool.size, allocate=False)
            self.say(f"pool {pool.name}: {format_size(pool.size)} in {path} (path given in the topology; kept at down)")
            return PoolState(pool.name, pool.size, "path", str(path), created=False,
                             note="existing file" if existed else None)
        huge_path = backing_path(self.run_name, pool, hugetlbfs=self.hugetlbfs, shm=self.shm)
        shm_path = backing_path(self.run_name, Pool(pool.name, pool.size, "shm"), self.hugetlbfs, self.shm)
        if pool.backing == "hugetlbfs":
            if huge_path.exists():
                _check_free(pool, huge_path)
                self.say(f"pool {pool.name}: reusing {huge_path} (kept by an earlier run)")
                return PoolState(pool.name, pool.size, "hugetlbfs", str(huge_path))
            if not shm_path.exists():
                note = self._try_hugetlbfs(pool, huge_path)
                if note is None:
                    self.say(f"pool {pool.name}: {format_size(pool.size)} on huge pages at {huge_path}")
                    return PoolState(pool.name, pool.size, "hugetlbfs", str(huge_path))
            else:
                note = "reusing the /dev/shm file kept by an earlier run"
        else:
            note = None
        return self._shm(pool, shm_path, note)

    def _try_hugetlbfs(self, pool: Pool, path: Path) -> Optional[str]:
        """None on success, else why the pool cannot live on huge pages."""
        if not hugetlbfs_mounted(self.hugetlbfs):
            return f"{self.hugetlbfs} is not a hugetlbfs mount"
        pages = read_hugepages()
        if pages is None:
            return "the kernel has no huge pages"
        need = -(-pool.size // pages.page_size)
        if pages.free < need:
            if not self.may_raise:
                return f"only {pages.free} free huge pages, {need} needed, and not root to reserve more"
            added = _raise_nr_hugepages(need - pages.free)
            self.hugepages_raised += added
            if added < need - pages.free:
                return f"only {pages.free + added} huge pages could be had, {need} needed"
            self.say(f"pool {pool.name}: reserved {added} more huge pages (given back at down)")
        if not _create_file(path, pool.size, allocate=True):
            return f"the huge pages for {format_size(pool.size)} could not be allocated"
        return None

    def _shm(self, pool: Pool, path: Path, note: Optional[str]) -> PoolState:
        if path.exists():
            _check_free(pool, path)
        if not path.exists() and _shm_free(self.shm) < pool.size:
            raise UserError(f"pool {pool.name}: {self.shm} has less than {format_size(pool.size)} free")
        _create_file(path, pool.size, allocate=False)
        why = f" ({note})" if note else ""
        self.say(f"pool {pool.name}: {format_size(pool.size)} on {self.shm} at {path}{why}")
        return PoolState(pool.name, pool.size, "shm", str(path), note=note)


def release_pools(pools: list[PoolState], hugepages_raised: int, keep: bool) -> list[str]:
    """Remove the backing files this run created and give back the huge pages it added.

    Returns the paths removed. With ``keep`` nothing is removed and the huge pages stay
    reserved (the kept files still hold them).
    """
    removed: list[str] = []
    if keep:
        return removed
    for pool in pools:
        if pool.model_dir:  # the non-coherent model's views: made by this run whatever the backing
            shutil.rmtree(pool.model_dir, ignore_errors=True)
            removed.append(pool.model_dir)
        if not pool.created:
            continue
        path = Path(pool.backing)
        try:
            path.unlink()
            removed.append(str(path))
        except FileNotFoundError:
            pass
        except OSError as err:
            raise UserError(f"pool {pool.name}: cannot remove {path}: {err}") from None
    lower_nr_hugepages(hugepages_raised)
    return removed
