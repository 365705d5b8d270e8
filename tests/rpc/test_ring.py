"""Property tests for ring framing: FIFO order, no loss, no overrun, bounded garbage."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given, settings, strategies as st

from notnets_rpc.errors import ProtocolError
from notnets_rpc.wire.frames import CALL, HEADER_BYTES, MESSAGE, STATUS, frame_bytes
from notnets_rpc.memory import Memory
from notnets_rpc.wire.ring import RingReader, RingWriter

RING = 4096
DATA = 256  # ring data after two control words (0 and 64)


class ModelledMemory(Memory):
    """A subclass that redefines an access method: rings must take their careful paths."""

    __slots__ = ()

    def load(self, off: int) -> int:
        return super().load(off)


def make_ring(size: int = RING, modelled: bool = False):
    mem = (ModelledMemory if modelled else Memory)(bytearray(DATA + size))
    return mem, RingWriter(mem, DATA, size, 0, 64), RingReader(mem, DATA, size, 0, 64)


ops = st.lists(
    st.one_of(
        st.tuples(st.just("w"), st.integers(0, RING - HEADER_BYTES), st.sampled_from([CALL, MESSAGE, STATUS]),
                  st.integers(0, 255), st.integers(0, 2**32 - 1)),
        st.tuples(st.just("r"), st.integers(1, 5)),
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(ops, st.booleans(), st.booleans())
def test_fifo_no_loss(operations, modelled, one_part):
    """Both write paths (``put`` for one part, ``try_write``) and both memories (direct
    views, a modelled subclass) must give the same stream."""
    mem, w, r = make_ring(modelled=modelled)
    assert mem.direct is not modelled
    expected: deque = deque()
    for op in operations:
        if op[0] == "w":
            _, n, kind, flags, call_id = op
            body = bytes([call_id & 0xFF]) * n
            half = n // 2
            if one_part:
                ok = w.put(kind, flags, call_id, n, body)
            else:
                ok = w.try_write(kind, flags, call_id, n, (body[:half], body[half:]), n)
            used = w.head - r.tail
            assert 0 <= used <= RING
            if ok:
                expected.append((kind, flags, call_id, n, body))
            else:
                # refusing is only allowed when the frame could not fit right now
                assert used + frame_bytes(n) > RING - 0 or w.head % RING + frame_bytes(n) > RING
        else:
            for _ in range(op[1]):
                got = r.read()
                if not expected:
                    assert got is None
                    break
                assert got == expected.popleft()
    while expected:
        assert r.read() == expected.popleft()
    assert r.read() is None
    assert w.is_empty()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, RING - HEADER_BYTES), min_size=1, max_size=60))
def test_every_frame_eventually_fits(sizes):
    """A writer that retries after the reader drains always gets every frame through."""
    mem, w, r = make_ring()
    for n in sizes:
        body = b"x" * n
        for _attempt in range(3):
            if w.try_write(MESSAGE, 0, 1, 0, (body,), n):
                break
            while r.read() is not None:
                pass
        else:
            pytest.fail(f"frame of {n} bytes never fit into an empty ring")
        assert r.read() == (MESSAGE, 0, 1, 0, body)


@settings(max_examples=400, deadline=None)
@given(st.binary(min_size=1, max_size=512), st.integers(0, 2**64 - 1),
       st.one_of(st.integers(0, 2**64 - 1), st.integers(-64, 2 * RING)), st.booleans())
def test_garbage_ring_is_an_error_never_a_crash(seed, tail, delta, modelled):
    """Random ring contents and counters: the reader errs cleanly and always terminates."""
    blob = (seed * ((DATA + RING) // len(seed) + 1))[: DATA + RING]
    head = delta if delta > 2 * RING else (tail + delta) % 2**64
    mem = (ModelledMemory if modelled else Memory)(bytearray(blob))
    mem.store(0, head)
    mem.store(64, tail)
    r = RingReader(mem, DATA, RING, 0, 64, tail=tail)
    w = RingWriter(mem, DATA, RING, 0, 64, head=head)
    for _ in range(RING // 8 + 2):  # each read consumes at least 8 bytes: bounded
        try:
            frame = r.read()
        except ProtocolError:
            break
        if frame is None:
            break
        assert len(frame[4]) <= RING
    try:
        w.try_write(MESSAGE, 0, 0, 0, (b"abc",), 3)
        w.put(MESSAGE, 0, 0, 0, b"abc")
    except ProtocolError:
        pass


def test_oversized_frame_is_refused():
    mem, w, r = make_ring()
    with pytest.raises(ValueError):
        w.try_write(MESSAGE, 0, 0, 0, (b"x" * RING,), RING)


def test_pad_and_stub_wrap():
    mem, w, r = make_ring()
    # leave exactly 8 bytes before the end: a stub the reader must skip by rule
    n = RING - 8 - HEADER_BYTES
    assert w.try_write(MESSAGE, 0, 1, 0, (b"a" * n,), n)
    assert r.read()[4] == b"a" * n
    assert w.try_write(MESSAGE, 0, 2, 0, (b"b" * 10,), 10)
    assert r.read() == (MESSAGE, 0, 2, 0, b"b" * 10)
    assert r.tail == RING + frame_bytes(10)  # the 8-byte stub was skipped, the frame is at 0
