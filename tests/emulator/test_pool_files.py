"""Pool backing files: hugetlbfs when possible, else /dev/shm said aloud; release undoes it."""

from __future__ import annotations

import stat

import pytest

from emulator.errors import UserError
from emulator.pools import files as pool_files
from emulator.pools.files import PoolAllocator, read_hugepages, release_pools
from emulator.topology.model import parse_topology

TOPO = """
name: t
pools:
  - {name: pool0, size: 256M}
  - {name: pool1, size: 256M, backing: shm}
hosts:
  - {name: host0, pools: [pool0, pool1]}
"""


def _topology(text=TOPO):
    return parse_topology(text, memory_probe=lambda: None)


@pytest.fixture
def dirs(tmp_path):
    huge, shm = tmp_path / "huge", tmp_path / "shm"
    huge.mkdir()
    shm.mkdir()
    return huge, shm


def test_no_hugetlbfs_mount_falls_back_to_shm_and_says_so(dirs):
    huge, shm = dirs
    said = []
    alloc = PoolAllocator("t", said.append, hugetlbfs=huge, shm=shm, may_raise_hugepages=False)
    pools = alloc.prepare(_topology())
    assert [p.kind for p in pools] == ["shm", "shm"]
    assert pools[0].note and "not a hugetlbfs mount" in pools[0].note
    assert pools[1].note is None  # asked for shm: nothing to explain
    assert any("pool0" in s and "not a hugetlbfs mount" in s for s in said)
    path = shm / "notnets-t-pool0"
    assert path.stat().st_size == 256 << 20
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.stat().st_blocks == 0, "sparse until the guests touch it"


def test_release_removes_created_files_and_is_idempotent(dirs, monkeypatch):
    huge, shm = dirs
    lowered = []
    monkeypatch.setattr(pool_files, "lower_nr_hugepages", lowered.append)
    pools = PoolAllocator("t", lambda s: None, hugetlbfs=huge, shm=shm, may_raise_hugepages=False).prepare(_topology())
    removed = release_pools(pools, hugepages_raised=3, keep=False)
    assert sorted(removed) == sorted(str(shm / f"notnets-t-pool{i}") for i in (0, 1))
    assert list(shm.iterdir()) == []
    assert lowered == [3]
    assert release_pools(pools, 0, keep=False) == []


def test_keep_pools_keeps_files_and_next_up_reuses_them(dirs):
    huge, shm = dirs
    first = PoolAllocator("t", lambda s: None, hugetlbfs=huge, shm=shm, may_raise_hugepages=False).prepare(_topology())
    (shm / "notnets-t-pool0").write_bytes(b"marker")  # content a user wants to keep
    assert release_pools(first, 0, keep=True) == []
    said = []
    again = PoolAllocator("t", said.append, hugetlbfs=huge, shm=shm, may_raise_hugepages=False).prepare(_topology())
    assert again[0].backing == str(shm / "notnets-t-pool0")
    assert (shm / "notnets-t-pool0").read_bytes()[:6] == b"marker"
    assert any("kept by an earlier run" in s for s in said)


def test_path_backing_is_created_and_never_removed(tmp_path):
    target = tmp_path / "mine.pool"
    topo = _topology(f"name: t\npools:\n  - {{name: p, size: 256M, backing: 'path:{target}'}}\n"
                     "hosts:\n  - {name: h, pools: [p]}\n")
    pools = PoolAllocator("t", lambda s: None).prepare(topo)
    assert pools[0].kind == "path" and not pools[0].created
    release_pools(pools, 0, keep=False)
    assert target.exists()


def test_path_backing_in_missing_dir_is_a_user_error(tmp_path):
    topo = _topology(f"name: t\npools:\n  - {{name: p, size: 256M, backing: 'path:{tmp_path}/no/x'}}\n"
                     "hosts:\n  - {name: h, pools: [p]}\n")
    with pytest.raises(UserError, match="does not exist"):
        PoolAllocator("t", lambda s: None).prepare(topo)


def test_too_few_hugepages_and_not_root(dirs, monkeypatch):
    huge, shm = dirs
    monkeypatch.setattr(pool_files, "hugetlbfs_mounted", lambda mount: True)
    monkeypatch.setattr(pool_files, "read_hugepages", lambda: pool_files.HugePages(2 << 20, 10))
    pools = PoolAllocator("t", lambda s: None, hugetlbfs=huge, shm=shm, may_raise_hugepages=False).prepare(_topology())
    assert pools[0].kind == "shm"
    assert "only 10 free huge pages, 128 needed" in pools[0].note


def test_root_raises_nr_hugepages_by_the_deficit(dirs, monkeypatch):
    huge, shm = dirs
    asked = []
    monkeypatch.setattr(pool_files, "hugetlbfs_mounted", lambda mount: True)
    monkeypatch.setattr(pool_files, "read_hugepages", lambda: pool_files.HugePages(2 << 20, 100))
    monkeypatch.setattr(pool_files, "_raise_nr_hugepages", lambda n: asked.append(n) or n)
    monkeypatch.setattr(pool_files, "_create_file", lambda path, size, allocate: True)
    alloc = PoolAllocator("t", lambda s: None, hugetlbfs=huge, shm=shm, may_raise_hugepages=True)
    pools = alloc.prepare(_topology())
    assert asked == [28]
    assert alloc.hugepages_raised == 28
    assert pools[0].kind == "hugetlbfs"


def test_read_hugepages_parses_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("HugePages_Total:     512\nHugePages_Free:      500\nHugePages_Rsvd:        20\n"
                       "Hugepagesize:       2048 kB\n")
    assert read_hugepages(meminfo) == pool_files.HugePages(2 << 20, 480)


def test_a_backing_file_mapped_by_a_live_process_is_not_reused(dirs):
    import mmap

    huge, shm = dirs
    path = shm / "notnets-t-pool1"
    path.write_bytes(b"\0" * 4096)
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 4096) as _mapped:
        assert pool_files.in_use_by(path) is not None
        with pytest.raises(UserError, match="is in use by pid"):
            PoolAllocator("t", lambda s: None, hugetlbfs=huge, shm=shm, may_raise_hugepages=False).prepare(_topology())
    assert pool_files.in_use_by(path) is None
