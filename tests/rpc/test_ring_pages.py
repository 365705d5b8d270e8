"""A closed or idle channel's ring pages leave the process's RSS (mapping.drop_pages).

Residency is read per page from /proc/self/pagemap (bit 63: present in this process's
page tables), so each test sees exactly which pages went. What stayed is checked by what
the server asked to drop (Mapping.drop_pages, spied), not by residency: the kernel may
unmap a cold page on its own (this machine runs DAMON with a pageout scheme, which
unmaps cold shmem pages even without swap; a never-touched table page went that way). Clients run
in child processes on host 1 (channel 1/0 of a fresh pool), so that what leaves the
server's page tables is the server's doing, not a client's in the same process.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import threading
import time
import uuid
from concurrent import futures
from pathlib import Path

import pytest

import notnets_rpc
from notnets_rpc.mapping import Mapping, mapping_page_size
from notnets_rpc.pool import Pool
from notnets_rpc.serving import server as server_module

from . import service

pytestmark = pytest.mark.timeout(120)
PAGE = mmap.PAGESIZE


def resident(mm: mmap.mmap, off: int, n: int) -> list:
    """For each 4 KiB page of ``[off, off+n)`` of ``mm``: present in our page tables?"""
    anchor = ctypes.c_char.from_buffer(mm)
    base = ctypes.addressof(anchor)
    del anchor
    first, last = (base + off) // PAGE, (base + off + n - 1) // PAGE
    fd = os.open("/proc/self/pagemap", os.O_RDONLY)
    try:
        raw = os.pread(fd, (last - first + 1) * 8, first * 8)
    finally:
        os.close(fd)
    return [bool(int.from_bytes(raw[i : i + 8], "little") >> 63) for i in range(0, len(raw), 8)]


def wait_until(predicate, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.01)


@pytest.fixture
def drops(monkeypatch) -> list:
    """Every (offset, length) any mapping of this process is asked to drop."""
    asked: list = []
    real = Mapping.drop_pages

    def spy(self, off: int, n: int) -> int:
        asked.append((off, n))
        return real(self, off, n)

    monkeypatch.setattr(Mapping, "drop_pages", spy)
    return asked


@pytest.fixture(params=["coherent", "software"])
def shm_pool(request, blank_path):
    """A fresh 32 MiB pool (rings of ~124 KiB) in either coherence format."""
    notnets_rpc.create_pool(blank_path, 32 << 20, coherence=request.param)
    return blank_path


@pytest.fixture
def local_server(shm_pool):
    server = notnets_rpc.server(futures.ThreadPoolExecutor(max_workers=4), pool=shm_pool, host_id=0)
    server.add_generic_rpc_handlers((service.test_handlers(),))
    server.add_endpoint("pages")
    server.start()
    pool = Pool.acquire(shm_pool, 0)
    try:
        yield server, pool
    finally:
        server.stop(None).wait(5)
        pool.release()


def _span(pool: Pool, host: int, slot: int) -> tuple:
    lay = pool.layout
    start = lay.request_ring(host, slot)
    return start, lay.response_ring(host, slot) + lay.ring_bytes - start


def test_a_closed_channels_ring_pages_leave_the_server_and_nothing_else_does(local_server, shm_pool, peers, drops):
    server, pool = local_server
    mm = pool.mapping.mm
    start, n = _span(pool, 1, 0)
    ring_bytes = pool.layout.ring_bytes
    stop = threading.Event()
    with notnets_rpc.insecure_channel("notnets:pages", pool=shm_pool) as live:  # channel 0/0, kept busy
        echo = live.unary_unary("/test.T/Echo")
        echo(b"x" * 4096, timeout=10)
        busy = threading.Thread(target=lambda: [echo(b"busy", timeout=10) for _ in iter(stop.is_set, True)])
        busy.start()  # the server never idles, so only the close can drop pages
        try:
            client = peers.start("hold", shm_pool, "pages", str(3 * ring_bytes), host=1)
            peers.expect(client, "ready")
            assert all(resident(mm, start, n)), "the burst should have touched every page of channel 1/0's rings"
            client.stdin.close()  # the client closes its channel and exits
            assert client.wait(30) == 0
            wait_until(lambda: not any(resident(mm, start, n)), 10, "channel 1/0's ring pages left the server")
            assert drops and set(drops) == {(start, n)}, f"only the closed channel's rings were dropped: {drops}"
            # a new channel in the same slot maps the pages again and works
            again = peers.start("hold", shm_pool, "pages", str(3 * ring_bytes), host=1)
            peers.expect(again, "ready")
            peers.send(again, "more")
            peers.expect(again, "OK")
            assert all(resident(mm, start, n))
            again.stdin.close()
            assert again.wait(30) == 0
        finally:
            stop.set()
            busy.join(10)
        assert echo(b"still", timeout=10) == b"still"


def test_an_idle_servers_open_channels_drop_their_ring_pages_and_still_work(local_server, shm_pool, peers,
                                                                            monkeypatch, drops):
    monkeypatch.setattr(server_module, "TRIM_AFTER", 0.2)  # read by the monitor at each look
    server, pool = local_server
    mm = pool.mapping.mm
    start, n = _span(pool, 1, 0)
    client = peers.start("hold", shm_pool, "pages", str(3 * pool.layout.ring_bytes), host=1)
    peers.expect(client, "ready")
    wait_until(lambda: not any(resident(mm, start, n)), 20, "an idle server dropped its open channel's ring pages")
    assert drops and set(drops) == {(start, n)}, f"only the open channel's rings were dropped: {drops}"
    peers.send(client, "again")
    peers.expect(client, "OK")
    assert all(resident(mm, start, n))
    client.stdin.close()
    assert client.wait(30) == 0


def test_a_client_drops_its_channels_ring_pages_when_it_closes(shm_pool, peers):
    server = peers.start("serve", shm_pool, "pages", host=1)
    peers.expect(server, "serving")
    pool = Pool.acquire(shm_pool, 0)  # keeps the mapping after the channel lets its pool go
    try:
        mm = pool.mapping.mm
        start, n = _span(pool, 0, 0)
        payload = os.urandom(8192)
        with notnets_rpc.insecure_channel("notnets:pages", pool=shm_pool) as channel:
            echo = channel.unary_unary("/test.T/Echo")
            for _ in range(3 * pool.layout.ring_bytes // len(payload)):
                assert echo(payload, timeout=10) == payload
            assert all(resident(mm, start, n))
        assert not any(resident(mm, start, n))
    finally:
        pool.release()


def test_drop_pages_takes_only_whole_pages_inside_the_range(blank_path):
    path = Path(blank_path)
    path.write_bytes(b"\0" * (8 * PAGE))
    mapping = Mapping(path)
    try:
        mapping.mm[:] = b"y" * (8 * PAGE)
        assert mapping.page_size == PAGE
        assert mapping.drop_pages(PAGE + 1, 3 * PAGE) == 2 * PAGE  # pages 2 and 3; 1 and 4 are partly outside
        assert resident(mapping.mm, 0, 8 * PAGE) == [True, True, False, False, True, True, True, True]
        assert mapping.drop_pages(PAGE + 1, PAGE) == 0
        assert mapping.mm[:] == b"y" * (8 * PAGE)  # the file kept the bytes; reading maps them again
    finally:
        mapping.close()


def test_the_page_size_follows_the_file_system():
    fd = os.open("/dev/shm", os.O_RDONLY)
    try:
        assert mapping_page_size("/dev/shm", fd) == PAGE
    finally:
        os.close(fd)
    if not os.path.ismount("/dev/hugepages"):
        pytest.skip("no hugetlbfs at /dev/hugepages")
    fd = os.open("/dev/hugepages", os.O_RDONLY)
    try:
        assert mapping_page_size("/dev/hugepages", fd) == 2 << 20  # its block size is the huge page size
    finally:
        os.close(fd)


def test_on_hugetlbfs_only_whole_aligned_huge_pages_go():
    """The kernel refuses MADV_DONTNEED at a start that is not huge-page aligned (EINVAL)
    and rounds the end down: drop_pages rounds inward to 2 MiB itself, so it asks only
    for what the kernel does, and the file keeps every byte."""
    if not os.path.ismount("/dev/hugepages"):
        pytest.skip("no hugetlbfs at /dev/hugepages")
    huge = 2 << 20
    path = Path("/dev/hugepages") / f"notnets-test-{uuid.uuid4().hex[:12]}"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.ftruncate(fd, 2 * huge)
    finally:
        os.close(fd)
    try:
        try:
            mapping = Mapping(path)  # a shared hugetlbfs mapping reserves its pages here (or fails)
        except notnets_rpc.PoolError as exc:
            pytest.skip(f"no free huge pages: {exc}")
        try:
            assert mapping.page_size == huge
            mapping.mm[:] = b"z" * (2 * huge)
            assert mapping.drop_pages(huge // 2, huge) == 0  # no whole huge page inside
            assert all(resident(mapping.mm, 0, 2 * huge))
            assert mapping.drop_pages(0, huge + huge // 2) == huge  # the first page, whole
            assert resident(mapping.mm, 0, 2 * huge) == [False] * (huge // PAGE) + [True] * (huge // PAGE)
            assert mapping.mm[:] == b"z" * (2 * huge)
        finally:
            mapping.close()
    finally:
        path.unlink()
