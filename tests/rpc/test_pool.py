"""Pool files: formatting, refusing what is not a pool, and surviving garbage."""

from __future__ import annotations

import json
import mmap
import os
import struct
import subprocess
import sys
import zlib

import grpc
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import notnets_rpc
from notnets_rpc.wire import layout as L
from notnets_rpc.errors import PoolError, ProtocolError
from notnets_rpc.inspect import format_inspection, inspect_pool
from notnets_rpc.mapping import device_size
from notnets_rpc.memory import Memory
from notnets_rpc.pool import pool_memory
from notnets_rpc.pool import Pool


def test_create_refuses_to_overwrite(blank_path):
    first = notnets_rpc.create_pool(blank_path, 8 << 20)
    with pytest.raises(notnets_rpc.PoolExistsError):
        notnets_rpc.create_pool(blank_path, 8 << 20)
    second = notnets_rpc.create_pool(blank_path, 8 << 20, overwrite=True)
    assert first.uuid != second.uuid
    assert second.pool_bytes <= 8 << 20


def test_too_small(blank_path):
    with pytest.raises(notnets_rpc.PoolTooSmallError):
        notnets_rpc.create_pool(blank_path, 1 << 20)
    small = notnets_rpc.create_pool(blank_path, 1 << 20, overwrite=True, max_hosts=2, channels=4)
    assert small.ring_bytes >= L.MIN_RING_BYTES


def test_not_a_pool(blank_path):
    with open(blank_path, "wb") as f:
        f.write(os.urandom(1 << 20))
    for open_it in (lambda: Pool.acquire(blank_path), lambda: inspect_pool(blank_path),
                    lambda: notnets_rpc.insecure_channel("notnets:x", pool=blank_path)):
        with pytest.raises(notnets_rpc.NotAPoolError, match="not a NotNets pool"):
            open_it()
    server = notnets_rpc.server(pool=blank_path)
    server.add_endpoint("x")
    with pytest.raises(notnets_rpc.NotAPoolError):
        server.start()


def _rewrite_superblock(path: str, offset: int, fmt: str, value: int, fix_crc: bool) -> None:
    with open(path, "r+b") as f:
        raw = bytearray(f.read(4096))
        struct.pack_into(fmt, raw, offset, value)
        if fix_crc:
            size = L._SB.size
            struct.pack_into("<I", raw, size - 4, zlib.crc32(bytes(raw[8 : size - 4])))
        f.seek(0)
        f.write(raw)


def test_other_layout_version(pool_path):
    _rewrite_superblock(pool_path, 8, "<I", 99, fix_crc=True)
    with pytest.raises(notnets_rpc.LayoutVersionError, match="version 99"):
        inspect_pool(pool_path)


def test_corrupt_superblock(pool_path):
    _rewrite_superblock(pool_path, 60, "<I", 12345, fix_crc=False)
    with pytest.raises(notnets_rpc.PoolCorruptError, match="checksum"):
        inspect_pool(pool_path)
    _rewrite_superblock(pool_path, 60, "<I", 12345, fix_crc=True)  # ring size not a page multiple
    with pytest.raises(notnets_rpc.PoolCorruptError):
        inspect_pool(pool_path)


def test_pool_larger_than_the_file(pool_path):
    os.truncate(pool_path, 8 << 20)
    with pytest.raises(notnets_rpc.PoolTooSmallError):
        inspect_pool(pool_path)


def test_dax_size_from_sysfs(tmp_path):
    dev = tmp_path / "dax0.0"
    dev.write_bytes(b"")
    st = os.stat(dev)
    size_file = tmp_path / "sys" / "dev" / "char" / f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}" / "size"
    size_file.parent.mkdir(parents=True)
    size_file.write_text("262144000\n")
    assert device_size(dev, sysfs=tmp_path / "sys") == 262144000
    with pytest.raises(PoolError):
        device_size(dev, sysfs=tmp_path / "nothing")


def test_no_futex_on_a_device(pool_path):
    # FUTEX_WAIT on a device-dax page oopses Linux 6.1 and kills the waiting thread
    with open(pool_path, "r+b") as f:
        buf = mmap.mmap(f.fileno(), 0)
    try:
        assert pool_memory(buf, pool_path).can_wait == Memory(buf).can_wait
        assert not pool_memory(buf, "/dev/null").can_wait  # a character device, like /dev/dax0.0
    finally:
        buf.close()


def test_inspect_finds_the_pool_inside_a_backing_file(pool_path, blank_path):
    # a QEMU run's backing file: the CXL region's metadata, then the DAX device (our pool)
    with open(pool_path, "rb") as f:
        pool = f.read()
    with open(blank_path, "wb") as f:
        f.write(b"\0" * (6 << 20) + pool)
    snap = inspect_pool(blank_path)
    assert snap["offset"] == 6 << 20 and snap["header"]["pool_bytes"] == inspect_pool(pool_path)["header"]["pool_bytes"]
    assert inspect_pool(pool_path)["offset"] == 0
    assert "at byte 6291456" in format_inspection(snap)


def _emu(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emulator.cli", *args], capture_output=True, text=True, timeout=60)


def test_cli_create_and_inspect(blank_path):
    result = _emu("pool", "create", blank_path, "--size", "16M")
    assert result.returncode == 0, result.stderr
    assert "formatted" in result.stdout
    result = _emu("pool", "create", blank_path, "--size", "16M")
    assert result.returncode != 0 and "already holds a NotNets pool" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = _emu("pool", "inspect", blank_path, "--json")
    assert result.returncode == 0
    snap = json.loads(result.stdout)
    assert snap["header"]["layout_version"] == L.LAYOUT_VERSION and snap["services"] == []
    for bad in ("/dev/null/nope", "/etc/passwd"):
        result = _emu("pool", "inspect", bad)
        assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr


def test_inspect_shows_services_channels_and_calls(serve, pool_path):
    serve(name="shown")
    with notnets_rpc.insecure_channel("notnets:shown", pool=pool_path) as ch:
        future = ch.unary_unary("/test.T/Sleep").future(b"1:inspect")
        import time

        time.sleep(0.4)  # a heartbeat publishes the counters
        snap = inspect_pool(pool_path)
        future.result(10)
    [svc] = snap["services"]
    assert svc["name"] == "shown" and svc["state"] == "live" and svc["pid"] == os.getpid()
    [chan] = snap["channels"]
    assert chan["target"]["name"] == "shown" and chan["server_verdict"] == "accepted"
    assert chan["in_flight"] == 1
    text = format_inspection(snap)
    assert "shown" in text and "in-flight calls: 1" in text


def test_corrupted_request_ring_drops_only_that_channel(serve, pool_path):
    serve(name="sturdy")
    with notnets_rpc.insecure_channel("notnets:sturdy", pool=pool_path) as bad:
        assert bad.unary_unary("/test.T/Echo")(b"x") == b"x"
        conn = bad._conn
        conn.mem.store(conn.tx.head_off, conn.tx.head + 1000)  # producer counter pointing at garbage
        conn.tx.head += 1000
        with pytest.raises(grpc.RpcError) as err:
            bad.unary_unary("/test.T/Echo")(b"y", timeout=5)
        assert err.value.code() is grpc.StatusCode.UNAVAILABLE  # the server dropped the channel and said so
    with notnets_rpc.insecure_channel("notnets:sturdy", pool=pool_path) as good:
        assert good.unary_unary("/test.T/Echo")(b"z", timeout=5) == b"z"


regions = st.sampled_from(["superblock", "hosts", "directory", "channels", "rings"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(regions, st.integers(0, 2**20), st.binary(min_size=1, max_size=256))
def test_fuzzed_pool_is_an_error_never_a_crash(pool_path, region, where, blob):
    """Random bytes anywhere in a pool: readers raise PoolError/ProtocolError or cope."""
    pool = Pool.acquire(pool_path)
    lay = pool.layout
    pool.release()
    bounds = {"superblock": (0, 4096), "hosts": (lay.hosts_offset, lay.dir_offset),
              "directory": (lay.dir_offset, lay.channels_offset),
              "channels": (lay.channels_offset, lay.rings_offset), "rings": (lay.rings_offset, lay.pool_bytes)}[region]
    start = bounds[0] + where % max(1, bounds[1] - bounds[0] - len(blob))
    with open(pool_path, "r+b") as f:
        f.seek(start)
        original = f.read(len(blob))
        f.seek(start)
        f.write(blob)
    try:
        _read_everything(pool_path)
    finally:  # the next example starts from a good pool again
        with open(pool_path, "r+b") as f:
            f.seek(start)
            f.write(original)


def _read_everything(pool_path: str) -> None:
    try:
        snap = inspect_pool(pool_path)
        format_inspection(snap)
        json.dumps(snap)
    except PoolError:
        return
    try:
        pool = Pool.acquire(pool_path)
    except PoolError:
        return
    try:
        pool.resolve("t")
        for h in range(pool.layout.max_hosts):
            for k in range(pool.layout.channels):
                req, _ = pool.server_rings(h, k)
                for _ in range(4):
                    try:
                        if req.read() is None:
                            break
                    except ProtocolError:
                        break
    finally:
        pool.release()


# -- pools for more than eight hosts ------------------------------------------------------
def test_sixteen_host_pool_formats_and_takes_host_ids_up_to_fifteen(blank_path):
    lay = notnets_rpc.create_pool(blank_path, 64 << 20, max_hosts=16)
    eight = L.plan_layout(64 << 20)
    assert lay.max_hosts == 16 and eight.max_hosts == L.DEFAULT_MAX_HOSTS == 8
    assert lay.ring_bytes < eight.ring_bytes  # twice the rings share the same bytes
    assert lay.rings_offset + 16 * lay.channels * 2 * lay.ring_bytes == lay.pool_bytes <= 64 << 20
    assert inspect_pool(blank_path)["header"]["max_hosts"] == 16
    pool = Pool.acquire(blank_path, host_id=15)
    try:
        assert pool.layout.max_hosts == 16  # a reader takes the count from the superblock
        assert pool.layout.channel(15, lay.channels - 1) + L.CHANNEL_CTL_BYTES <= lay.rings_offset
    finally:
        pool.release()
    with pytest.raises(PoolError, match="host id 16 .* 16 host partitions"):
        Pool.acquire(blank_path, host_id=16)


def test_a_server_formats_an_empty_pool_for_NOTNETS_POOL_HOSTS(blank_path, monkeypatch):
    with open(blank_path, "wb") as f:
        f.truncate(32 << 20)  # an empty device
    monkeypatch.setenv("NOTNETS_POOL_HOSTS", "16")
    pool = Pool.acquire(blank_path, host_id=12, format_if_empty=True)
    try:
        assert pool.layout.max_hosts == 16
    finally:
        pool.release()
    monkeypatch.setenv("NOTNETS_POOL_HOSTS", "4")  # only the formatter reads it: the pool keeps 16
    pool = Pool.acquire(blank_path, host_id=12)
    try:
        assert pool.layout.max_hosts == 16
    finally:
        pool.release()


@pytest.mark.parametrize("value", ["sixteen", "0", "257", "-3"])
def test_a_bad_NOTNETS_POOL_HOSTS_is_one_clear_error(blank_path, monkeypatch, value):
    with open(blank_path, "wb") as f:
        f.truncate(16 << 20)
    monkeypatch.setenv("NOTNETS_POOL_HOSTS", value)
    with pytest.raises(PoolError, match=f"NOTNETS_POOL_HOSTS='{value}': expected a host count in 1..256"):
        Pool.acquire(blank_path, format_if_empty=True)
    with open(blank_path, "rb") as f:
        assert f.read(L.SUPERBLOCK_BYTES) == bytes(L.SUPERBLOCK_BYTES)  # left unformatted


def test_a_forged_host_count_is_refused(pool_path):
    _rewrite_superblock(pool_path, 48, "<I", 16, fix_crc=True)  # 16 hosts, the 8-host offsets kept
    with pytest.raises(notnets_rpc.PoolCorruptError, match="region offsets"):
        inspect_pool(pool_path)
    _rewrite_superblock(pool_path, 48, "<I", 300, fix_crc=True)
    with pytest.raises(notnets_rpc.PoolCorruptError, match="max_hosts must be 1..256"):
        inspect_pool(pool_path)


def test_cli_create_for_sixteen_hosts(blank_path):
    result = _emu("pool", "create", blank_path, "--size", "32M", "--hosts", "16")
    assert result.returncode == 0, result.stderr
    assert "16 hosts x 16 channels" in result.stdout
    assert json.loads(_emu("pool", "inspect", blank_path, "--json").stdout)["header"]["max_hosts"] == 16
    for bad, said in (("0", "--hosts 0: expected 1..256"), ("257", "--hosts 257: expected 1..256")):
        result = _emu("pool", "create", blank_path, "--overwrite", "--hosts", bad)
        assert result.returncode != 0 and said in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
