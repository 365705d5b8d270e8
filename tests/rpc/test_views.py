"""Zero-copy views: frames lent out of a ring (wire/loans.py) and ``notnets_rpc.as_view``.

Ring level: a lent body is the ring's own bytes, the producer cannot overwrite them
while they are lent, and the tail moves on when the view is dropped, released, ended
or revoked. RPC level: handlers and callers that ask for views get them, plain code
still gets bytes, and a view does not outlive its call.
"""

from __future__ import annotations

import gc
import time
import uuid
from collections import deque
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from hypothesis import given, settings, strategies as st

import notnets_rpc
from notnets_rpc.errors import ProtocolError
from notnets_rpc.memory import Memory
from notnets_rpc.wire import frames as F
from notnets_rpc.wire.frames import CALL, HEADER, HEADER_BYTES, MESSAGE, FRAME_MAGIC, frame_bytes
from notnets_rpc.wire.ring import VIEW_MIN, RingReader, RingWriter

RING = 1 << 20
DATA = 256  # ring data after the two counters (0 and 64)
BIG = VIEW_MIN * 2


def make_ring(size: int = RING, lend=lambda *frame: True):
    mem = Memory(bytearray(DATA + size))
    reader = RingReader(mem, DATA, size, 0, 64)
    reader.viewer = lend
    return mem, RingWriter(mem, DATA, size, 0, 64), reader


def body_of(n: int, seed: int) -> bytes:
    return bytes((seed + i) & 0xFF for i in range(256)) * (n // 256) + bytes(n % 256)


def test_large_body_is_lent_and_the_tail_waits_for_it():
    mem, w, r = make_ring()
    payload = body_of(BIG, 1)
    assert w.try_write(MESSAGE, 0, 7, BIG, (payload,), BIG)
    assert w.try_write(MESSAGE, 0, 8, 3, (b"abc",), 3)
    kind, _, cid, _, view = r.read()
    assert (kind, cid) == (MESSAGE, 7)
    assert type(view) is memoryview and view.readonly and view == payload
    assert r.read()[4] == b"abc"  # frames behind a loan are read (and copied) as usual
    assert mem.load(64) == 0  # ... but the published tail stays at the lent frame
    del view
    assert r.read() is None  # the next read sees the view gone and publishes everything
    assert mem.load(64) == r.tail == frame_bytes(BIG) + frame_bytes(3)
    assert not r.loans


def test_release_and_end_free_the_frame_and_forbid_later_use():
    mem, w, r = make_ring()
    for cid in (1, 2):
        assert w.try_write(MESSAGE, 0, cid, BIG, (body_of(BIG, cid),), BIG)
    first = r.read()[4]
    first_loan = r.loan
    second = r.read()[4]
    second_loan = r.loan
    first.release()  # the holder gives it back
    assert r.read() is None
    assert mem.load(64) == frame_bytes(BIG)
    second_loan.end()  # the owner's call ended: the view is released under the holder's feet
    with pytest.raises(ValueError):
        bytes(second)
    assert r.read() is None
    assert mem.load(64) == 2 * frame_bytes(BIG)
    assert first_loan.done() and second_loan.done()


def test_producer_cannot_overwrite_a_lent_frame():
    size = 4 * BIG
    mem, w, r = make_ring(size)
    payload = body_of(BIG, 3)
    assert w.try_write(MESSAGE, 0, 1, BIG, (payload,), BIG)
    view = r.read()[4]
    filler = bytes(1000)
    for _ in range(2 * size // len(filler)):
        if not w.try_write(MESSAGE, 0, 2, len(filler), (filler,), len(filler)):
            break
    else:
        pytest.fail("the producer wrote more than a ring over a lent frame")
    assert view == payload  # it stopped short of the lent bytes
    del view
    r.read()
    assert w.try_write(MESSAGE, 0, 2, len(filler), (filler,), len(filler))


def test_a_view_held_too_long_is_revoked_not_a_stall():
    size = 4 * BIG
    mem, w, r = make_ring(size)
    assert w.try_write(MESSAGE, 0, 1, BIG, (body_of(BIG, 5),), BIG)
    held = r.read()[4]
    small = bytes(1000)
    for _ in range(200):  # far more than a ring's worth of traffic behind the held view
        while not w.try_write(MESSAGE, 0, 2, len(small), (small,), len(small)):
            assert r.read() is not None, "the ring stalled behind a held view"
        r.read()
    with pytest.raises(ValueError):
        held.tobytes()
    assert not r.loans


def test_lending_stops_at_half_the_ring():
    size = 5 * BIG
    mem, w, r = make_ring(size)
    for cid in range(1, 4):
        assert w.try_write(MESSAGE, 0, cid, BIG, (body_of(BIG, cid),), BIG)
    bodies = [r.read()[4] for _ in range(3)]
    assert [type(b) for b in bodies] == [memoryview, memoryview, bytes]  # the third would pin more than half
    assert [bytes(b) for b in bodies] == [body_of(BIG, cid) for cid in range(1, 4)]


def test_small_bodies_and_uninterested_readers_get_copies():
    mem, w, r = make_ring(lend=lambda kind, flags, cid, aux, n: cid == 1)
    assert w.try_write(MESSAGE, 0, 1, VIEW_MIN - 8, (bytes(VIEW_MIN - 8),), VIEW_MIN - 8)
    assert w.try_write(MESSAGE, 0, 2, BIG, (bytes(BIG),), BIG)
    assert type(r.read()[4]) is bytes
    assert type(r.read()[4]) is bytes
    assert not r.loans


def test_hostile_length_never_becomes_a_view():
    """A header that claims more than was published (or more than the ring) is refused
    by the same checks as before; no loan is made and nothing outside the ring is read."""
    mem, w, r = make_ring()
    mem.pack(HEADER, DATA, RING, MESSAGE, 0, FRAME_MAGIC, 1, RING)  # body longer than the ring
    mem.store(0, frame_bytes(BIG))
    with pytest.raises(ProtocolError):
        r.read()
    assert not r.loans
    mem2, w2, r2 = make_ring()
    mem2.pack(HEADER, DATA, BIG, MESSAGE, 0, FRAME_MAGIC, 1, BIG)  # longer than head - tail
    mem2.store(0, HEADER_BYTES + 8)
    with pytest.raises(ProtocolError):
        r2.read()
    assert not r2.loans


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.tuples(st.just("w"), st.integers(0, 3 * VIEW_MIN)),
                          st.tuples(st.just("r"), st.booleans()),
                          st.tuples(st.just("drop"), st.integers(0, 7))), max_size=80))
def test_lent_bytes_never_change_while_lent(ops):
    """Whatever the mix of writes, reads (kept or dropped) and drops: every view still
    held reads exactly what was written, or raises ValueError (revoked), and every frame
    arrives once, in order."""
    size = 8 * VIEW_MIN
    mem, w, r = make_ring(size)
    sent: deque = deque()
    held = []
    seq = 0
    for op in ops:
        if op[0] == "w":
            n = op[1]
            payload = body_of(n, seq)
            if w.try_write(MESSAGE, 0, seq & 0xFFFF or 1, n, (payload,), n):
                sent.append(payload)
                seq += 1
        elif op[0] == "r":
            frame = r.read()
            if frame is None:
                assert not sent
                continue
            expected = sent.popleft()
            assert bytes(frame[4]) == expected
            if op[1] and type(frame[4]) is memoryview:
                held.append((frame[4], expected))
        elif held:
            held.pop(op[1] % len(held))
        for view, expected in held:
            try:
                assert bytes(view) == expected
            except ValueError:
                pass  # revoked: released, never stale
        assert w.head - mem.load(64) <= size


# -- RPC level -----------------------------------------------------------------------------------
@pytest.fixture
def big_ring_pool():
    """A pool with 1 MiB rings (like a 256 MiB pool's), so that 128 KiB messages are lent."""
    path = Path("/dev/shm") / f"notnets-test-{uuid.uuid4().hex[:12]}"
    notnets_rpc.create_pool(str(path), 12 << 20, max_hosts=1, channels=4, ring_bytes=1 << 20)
    try:
        yield str(path)
    finally:
        path.unlink(missing_ok=True)


class Recorder:
    """Handlers that remember what they were given."""

    def __init__(self):
        self.seen = []

    def view_echo(self, request, context):
        self.seen.append(request)
        return request

    def plain_echo(self, request, context):
        self.seen.append(request)
        return request

    def slow_echo(self, request, context):
        """Holds its request view until the test says go (the server has promoted another
        poller meanwhile, which reads the channel's later requests behind this one)."""
        assert self.go.wait(20)
        return bytes(request)

    def handlers(self):
        import threading

        self.go = threading.Event()
        return grpc.method_handlers_generic_handler("v.V", {
            "Slow": grpc.unary_unary_rpc_method_handler(self.slow_echo, request_deserializer=notnets_rpc.as_view),
            "View": grpc.unary_unary_rpc_method_handler(self.view_echo, request_deserializer=notnets_rpc.as_view,
                                                        response_serializer=notnets_rpc.as_bytes),
            "Plain": grpc.unary_unary_rpc_method_handler(self.plain_echo),
        })


@pytest.fixture
def view_server(big_ring_pool):
    rec = Recorder()
    server = notnets_rpc.server(futures.ThreadPoolExecutor(2), pool=big_ring_pool)
    server.add_generic_rpc_handlers((rec.handlers(),))
    server.add_endpoint("views")
    server.start()
    try:
        yield rec, big_ring_pool
    finally:
        server.stop(None).wait(5)


def test_handler_view_is_released_when_the_call_ends(view_server):
    rec, pool = view_server
    payload = body_of(BIG, 11)
    with notnets_rpc.insecure_channel("notnets:views", pool=pool) as ch:
        assert ch.unary_unary("/v.V/View")(b"warm") == b"warm"  # the first call looks the method up
        assert ch.unary_unary("/v.V/View")(payload, timeout=10) == payload
        assert ch.unary_unary("/v.V/View")(payload) == payload  # the fast path (no deadline)
        assert ch.unary_unary("/v.V/View")(payload, metadata=(("k", "v"),)) == payload
    assert len(rec.seen) == 4
    for kept in rec.seen[1:]:
        assert type(kept) is memoryview
        with pytest.raises(ValueError):  # kept past its call: released, not stale bytes
            bytes(kept)


def test_plain_code_still_gets_bytes(view_server):
    rec, pool = view_server
    payload = body_of(BIG, 12)
    with notnets_rpc.insecure_channel("notnets:views", pool=pool) as ch:
        reply = ch.unary_unary("/v.V/Plain")(payload)
    assert type(reply) is bytes and reply == payload
    assert type(rec.seen[0]) is bytes and rec.seen[0] == payload


def test_caller_view_lives_until_dropped(view_server):
    rec, pool = view_server
    with notnets_rpc.insecure_channel("notnets:views", pool=pool) as ch:
        view_call = ch.unary_unary("/v.V/View", response_deserializer=notnets_rpc.as_view)
        plain_call = ch.unary_unary("/v.V/Plain")
        first = view_call(body_of(BIG, 1))
        assert type(first) is memoryview and first.readonly and first == body_of(BIG, 1)
        rx = ch._conn.rx
        assert len(rx.loans) == 1
        assert plain_call(body_of(BIG, 2)) == body_of(BIG, 2)  # other calls go on meanwhile
        assert first == body_of(BIG, 1)  # and the held view still reads what it was given
        mem = ch._conn.mem
        assert mem.load(rx.tail_off) < rx.tail  # the server sees the lent bytes as unread
        del first
        gc.collect()
        assert plain_call(b"x") == b"x"
        assert not rx.loans and mem.load(rx.tail_off) == rx.tail


def test_caller_keeping_every_view_does_not_stall_the_channel(view_server):
    rec, pool = view_server
    with notnets_rpc.insecure_channel("notnets:views", pool=pool) as ch:
        view_call = ch.unary_unary("/v.V/View", response_deserializer=notnets_rpc.as_view)
        kept = [view_call(body_of(BIG, i), timeout=10) for i in range(40)]  # 40 x 128 KiB through 1 MiB rings
        assert kept[-1] == body_of(BIG, 39)
        revoked = 0
        for i, view in enumerate(kept):
            try:
                assert bytes(view) == body_of(BIG, i)
            except ValueError:
                revoked += 1
        assert revoked  # old ones were revoked (the rest were copies once half the ring was lent); none went stale


def test_protobuf_parses_straight_from_the_ring(big_ring_pool, echo_protos):
    echo_pb2, echo_pb2_grpc = echo_protos
    seen = []

    class Echo(echo_pb2_grpc.EchoServicer):
        def Unary(self, request, context):
            seen.append(request)
            return echo_pb2.EchoReply(payload=request.payload)

    server = notnets_rpc.server(futures.ThreadPoolExecutor(2), pool=big_ring_pool)
    echo_pb2_grpc.add_EchoServicer_to_server(Echo(), server)
    server.add_endpoint("pb")
    server.start()
    try:
        with notnets_rpc.insecure_channel("notnets:pb", pool=big_ring_pool) as ch:
            stub = echo_pb2_grpc.EchoStub(ch)
            for i in range(5):
                payload = body_of(BIG, i)
                assert stub.Unary(echo_pb2.EchoRequest(payload=payload)).payload == payload
            rx = ch._conn.rx
            assert stub.Unary(echo_pb2.EchoRequest(payload=b"s")).payload == b"s"
            assert not rx.loans  # the parser gave each view back at once
        assert [m.payload for m in seen[:5]] == [body_of(BIG, i) for i in range(5)]  # parsed copies outlive the ring
    finally:
        server.stop(None).wait(5)


def test_the_same_view_code_runs_over_grpcio():
    """as_view / as_bytes are plain functions for grpcio: the handlers and multicallables
    written for views work unchanged over TCP (grpcio sends only bytes)."""
    rec = Recorder()
    server = grpc.server(futures.ThreadPoolExecutor(2))
    server.add_generic_rpc_handlers((rec.handlers(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with notnets_rpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            echo = ch.unary_unary("/v.V/View", request_serializer=notnets_rpc.as_bytes,
                                  response_deserializer=notnets_rpc.as_view)
            reply = echo(memoryview(body_of(BIG, 4)))
        assert type(reply) is memoryview and reply.readonly and reply == body_of(BIG, 4)
        assert type(rec.seen[0]) is memoryview
    finally:
        server.stop(None).wait(5)


def test_view_requests_go_out_without_a_serializer_copy(view_server):
    """A view (say, one a handler received) sent with as_bytes goes into the request ring
    as it is: the server sees the same bytes."""
    rec, pool = view_server
    with notnets_rpc.insecure_channel("notnets:views", pool=pool) as ch:
        echo = ch.unary_unary("/v.V/View", request_serializer=notnets_rpc.as_bytes,
                              response_deserializer=notnets_rpc.as_view)
        first = echo(body_of(BIG, 6))
        second = echo(first)  # forwarded straight from the response ring to the request ring
        assert second == body_of(BIG, 6)


def test_a_view_still_queued_is_copied_not_revoked(view_server):
    """Responses nobody has collected yet (futures) are copied out when the ring needs
    their bytes back: every result arrives intact."""
    rec, pool = view_server
    with notnets_rpc.insecure_channel("notnets:views", pool=pool) as ch:
        view_call = ch.unary_unary("/v.V/View", response_deserializer=notnets_rpc.as_view)
        futures_ = [view_call.future(body_of(BIG, i), timeout=20) for i in range(24)]  # 3 MiB through 1 MiB rings
        for f in futures_:
            f.exception()  # all done before any result is taken
        assert [bytes(f.result()) for f in futures_] == [body_of(BIG, i) for i in range(24)]


def test_evict_runs_before_a_revocation():
    size = 4 * BIG
    mem, w, r = make_ring(size)
    assert w.try_write(MESSAGE, 0, 1, BIG, (body_of(BIG, 1),), BIG)
    queue = [r.read()[4]]
    r.loan.evict = lambda: queue.__setitem__(0, queue[0].tobytes())
    small = bytes(1000)
    for _ in range(3 * size // len(small)):
        while not w.try_write(MESSAGE, 0, 2, len(small), (small,), len(small)):
            assert r.read() is not None
        r.read()
    assert type(queue[0]) is bytes and queue[0] == body_of(BIG, 1)
    assert not r.loans


def test_a_handler_keeps_its_view_for_the_whole_call(view_server):
    """The server never revokes a request view: later traffic on the same channel (more
    than half a ring of it) does not take it from a handler that is still running."""
    rec, pool = view_server
    with notnets_rpc.insecure_channel("notnets:views", pool=pool) as ch:
        assert ch.unary_unary("/v.V/Slow").future(b"warm") is not None
        rec.go.set()
        ch.unary_unary("/v.V/Plain")(b"warm")
        rec.go.clear()
        slow = ch.unary_unary("/v.V/Slow").future(body_of(BIG, 21), timeout=20)
        plain = ch.unary_unary("/v.V/Plain")
        for i in range(5):  # 640 KiB behind the held request in a 1 MiB ring
            assert plain(body_of(BIG, i), timeout=20) == body_of(BIG, i)
        rec.go.set()
        assert slow.result() == body_of(BIG, 21)
        # larger than what is left of the request ring: it fits only once the slow call's
        # request is given back, which the poller that took over must publish unasked
        assert plain(body_of(400 << 10, 7), timeout=10) == body_of(400 << 10, 7)


def test_views_end_with_their_channel(view_server):
    """Closing the channel gives its slot (and rings) to the next client: a view still
    held is released, a response still uncollected is copied first."""
    rec, pool = view_server
    ch = notnets_rpc.insecure_channel("notnets:views", pool=pool)
    view_call = ch.unary_unary("/v.V/View", response_deserializer=notnets_rpc.as_view)
    held = view_call(body_of(BIG, 31))
    pending = view_call.future(body_of(BIG, 32))
    pending.exception()
    ch.close()
    with pytest.raises(ValueError):
        bytes(held)
    assert bytes(pending.result()) == body_of(BIG, 32)


@pytest.mark.parametrize("shape", ["well_formed", "with_metadata", "with_deadline", "unknown_method", "method_overruns",
                                   "metadata_overruns", "no_method", "bad_method"])
def test_hostile_large_calls_are_lent_safely(view_server, shape):
    """A peer's large unary CALL frames (the ones the server lends as views) with lying
    lengths: each gets a STATUS or costs its channel, the server gives every view back
    and serves on."""
    from notnets_rpc.wire import layout as L

    from .hostile import RawChannel

    rec, pool = view_server
    payload = body_of(BIG, 40)
    method = b"/v.V/View"
    bodies = {
        "well_formed": b"".join(F.call_parts(method, 0, b"", payload)),
        "with_metadata": b"".join(F.call_parts(method, 0, F.encode_metadata((("k", "v"),)), payload)),
        "with_deadline": b"".join(F.call_parts(method, 5_000_000, b"", payload)),
        "unknown_method": b"".join(F.call_parts(b"/nope.N/X", 0, b"", payload)),
        "method_overruns": F.CALL_HEAD.pack(0, BIG * 4, 0) + method + payload,
        "metadata_overruns": F.CALL_HEAD.pack(0, len(method), 2**32 - 1) + method + payload,
        "no_method": F.CALL_HEAD.pack(0, 0, 0) + payload,
        "bad_method": b"".join(F.call_parts(b"\xff" * 9, 0, b"", payload)),
    }
    with notnets_rpc.insecure_channel("notnets:views", pool=pool) as ch:
        assert ch.unary_unary("/v.V/View")(b"warm", timeout=5) == b"warm"  # cached: the lending path
    raw = RawChannel(pool, "views")
    try:
        assert raw.write(F.CALL, F.F_HAS_MESSAGE | F.F_END_STREAM, 7, 0, bodies[shape])
        end = time.monotonic() + 5
        while True:
            statuses = [f for f in raw.read_all() if f[0] == F.STATUS and f[2] == 7]
            if statuses:
                if shape in ("well_formed", "with_deadline"):
                    assert statuses[0][4] == payload
                break
            _, verdict = L.unpack_state(raw.mem.load(raw.ctl + L.CH_ACCEPT))
            if verdict == L.ACC_REJECTED:
                assert shape not in ("well_formed", "with_metadata", "with_deadline", "unknown_method")
                break
            assert time.monotonic() < end, f"no status and no verdict for {shape}"
            raw.beat()
            time.sleep(0.002)
        end = time.monotonic() + 5  # the view was given back: the server's published tail reaches our head
        while (L.unpack_state(raw.mem.load(raw.ctl + L.CH_ACCEPT))[1] != L.ACC_REJECTED
               and raw.mem.load(raw.ctl + L.CH_REQ_TAIL) != raw.tx.head):
            assert time.monotonic() < end, f"the server kept the ring space of a {shape} call"
            time.sleep(0.01)
    finally:
        raw.close()
    with notnets_rpc.insecure_channel("notnets:views", pool=pool) as ch:
        assert ch.unary_unary("/v.V/View")(payload, timeout=5) == payload
