"""Where each pool's backing file lives on the machine running the hosts."""

from __future__ import annotations

from pathlib import Path

from emulator.topology.model import Pool

HUGETLBFS_MOUNT = Path("/dev/hugepages")
SHM_DIR = Path("/dev/shm")


def backing_path(run_name: str, pool: Pool, hugetlbfs: Path = HUGETLBFS_MOUNT, shm: Path = SHM_DIR) -> Path:
    """The backing file of ``pool`` in run ``run_name``.

    Named after run and pool so that two runs never share a file by accident, and so
    that leftovers are easy to recognise (``notnets-<run>-<pool>``).
    """
    if pool.backing == "path":
        assert pool.path is not None
        return Path(pool.path)
    base = hugetlbfs if pool.backing == "hugetlbfs" else shm
    return base / f"notnets-{run_name}-{pool.name}"
