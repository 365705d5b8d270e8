"""SoftwareCoherent memory: rings between two hosts of a non-coherent model pool."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from notnets_rpc import cxl
from notnets_rpc import noncoherent_views as V
from notnets_rpc.coherent_memory import SoftwareCoherent
from notnets_rpc.errors import ProtocolError
from notnets_rpc.memory import Memory
from notnets_rpc.wire.ring import RingReader, RingWriter

SIZE = 64 << 10
HEAD, TAIL, DATA, RING = 0, 64, 4096, 8192


@pytest.fixture
def hosts():
    """(model dir, host 0 mapping, host 1 mapping) of a 64 KiB device shared by two hosts."""
    device = Path("/dev/shm") / f"notnets-test-cm-{uuid.uuid4().hex[:12]}"
    device.write_bytes(bytes(SIZE))
    directory = Path(f"{device}.coherence")
    V.create_model(directory, str(device), [0, 1])
    maps = [cxl.map_pool(V.view_path(directory, h)) for h in (0, 1)]
    try:
        yield directory, maps
    finally:
        for m in maps:
            m.close()
        device.unlink()
        for f in directory.glob("*"):
            f.unlink()
        directory.rmdir()


def ends(maps, mem_class=SoftwareCoherent):
    wmem = mem_class(maps[0].buf, True, maps[0].ops) if mem_class is SoftwareCoherent else Memory(maps[0].buf)
    rmem = mem_class(maps[1].buf, True, maps[1].ops) if mem_class is SoftwareCoherent else Memory(maps[1].buf)
    return RingWriter(wmem, DATA, RING, HEAD, TAIL), RingReader(rmem, DATA, RING, HEAD, TAIL)


def test_frames_cross_hosts_with_the_discipline_and_nothing_conflicts(hosts):
    directory, maps = hosts
    writer, reader = ends(maps)
    sent = [os.urandom(n) for n in (0, 1, 63, 64, 65, 3000, 5000, 100, 7)] * 4
    got = []
    for i, body in enumerate(sent):
        for _ in range(len(sent)):
            if writer.try_write(1, 0, i, 0, (body,), len(body)):
                break
            frame = reader.read()  # full: the reader drains a frame (None: it skipped a pad)
            if frame is not None:
                got.append(frame)
        else:
            raise AssertionError(f"frame {i} never fit")
    while (frame := reader.read()) is not None:
        got.append(frame)
    assert [(f[2], f[4]) for f in got] == list(enumerate(sent))
    assert V.read_reports(directory) == []


def test_without_the_discipline_the_reader_sees_nothing(hosts):
    _, maps = hosts
    writer, reader = ends(maps, Memory)
    assert writer.put(1, 0, 7, 0, b"hello")
    assert all(reader.read() is None for _ in range(50))


def test_a_missing_write_back_of_the_word_hides_the_frame(hosts, monkeypatch):
    _, maps = hosts
    writer, reader = ends(maps)
    real = maps[0].ops.flush
    monkeypatch.setattr(maps[0].ops, "flush", lambda off, n: None if off == HEAD else real(off, n))
    assert writer.put(1, 0, 7, 0, b"hello")
    assert all(reader.read() is None for _ in range(50))
    monkeypatch.undo()
    maps[0].ops.flush(HEAD, 8)
    assert reader.read()[4] == b"hello"


def test_a_word_written_back_before_its_payload_delivers_stale_bytes(hosts, monkeypatch):
    """The ordering rule: the payload's write-back is dropped, the word's is not."""
    _, maps = hosts
    writer, reader = ends(maps)
    real = maps[0].ops.flush
    monkeypatch.setattr(maps[0].ops, "flush", lambda off, n: None if off >= DATA else real(off, n))
    writer.put(1, 0, 7, 0, b"hello")
    with pytest.raises(ProtocolError, match="bad frame header"):
        reader.read()


def test_a_missing_invalidate_keeps_the_reader_on_its_stale_copy(hosts, monkeypatch):
    _, maps = hosts
    writer, reader = ends(maps)
    monkeypatch.setattr(maps[1].ops, "invalidate", lambda off, n: None)
    assert writer.put(1, 0, 7, 0, b"hello")
    assert all(reader.read() is None for _ in range(50))


def test_untrusted_ranges_are_protocol_errors_before_any_cache_operation(hosts):
    _, maps = hosts
    mem = SoftwareCoherent(maps[0].buf, True, maps[0].ops)
    for bad in (lambda: mem.read(SIZE - 4, 8), lambda: mem.write(-8, b"x"), lambda: mem.fill(SIZE, 1)):
        with pytest.raises(ProtocolError, match="outside the pool"):
            bad()
