"""Extent lanes: messages larger than half a ring, handed over by reference (wire/extents.py).

Lane level (pure, over a bytearray): a lane frame is lent and its room comes back only
when the view ends; frames whose reference never came are skipped; every hostile reference ends in ProtocolError. Claims:
a dead holder's lane is taken over. RPC level, on coherent and software-coherence pools:
1 MiB messages travel whole through lanes, a reply that is the request (its view, or an
echo's equal bytes) crosses the pool once in all (the client's write), lanes go back when channels end, a dead client's
lane is reused, and a hostile client costs only its own channel.
"""

from __future__ import annotations

import contextlib
import gc
import os
import subprocess
import sys
import threading
import time
import uuid
from concurrent import futures
from pathlib import Path

import grpc
import pytest

import notnets_rpc
from notnets_rpc import inspect as I
from notnets_rpc import pool_regions
from notnets_rpc.errors import PoolCorruptError, ProtocolError
from notnets_rpc.lane_claims import REQUESTS, RESPONSES, ChannelLanes, claim_lane, release_lane
from notnets_rpc.memory import Memory
from notnets_rpc.pool import Pool
from notnets_rpc.wire import frames as F
from notnets_rpc.wire import layout as L
from notnets_rpc.wire.extents import (F_EXTENT, IN_LANE, REF, RETURNED, RETURNED_STATUS, LaneReader, LaneWriter,
                                       parse_ref)
from notnets_rpc.wire.frames import HEADER, MESSAGE, frame_bytes

from .hostile import RawChannel

MIB = 1 << 20
TAIL = 4096 + 8  # a word in the channel table, as the reader's tail (any word the reader owns will do)


def lane_pair(lay=None):
    lay = lay or L.plan_layout(24 << 20, max_hosts=1, channels=4, ring_bytes=256 << 10)
    mem = Memory(bytearray(lay.pool_bytes))
    w = LaneWriter(mem, lay, 0, 0, TAIL)
    r = LaneReader(mem, lay, 0, TAIL)
    r.viewer = lambda *frame: True
    return mem, lay, w, r


def body_of(n: int, seed: int) -> bytes:
    return bytes((seed + i) & 0xFF for i in range(256)) * (n // 256) + bytes(n % 256)


class Call:
    done = False


# -- layout ----------------------------------------------------------------------------------------
def test_a_256_mib_pool_has_lanes_and_small_pools_stay_as_they_were():
    lay = L.plan_layout(256 * MIB)
    assert lay.lanes_per_host >= 1 and lay.lane_bytes == L.DEFAULT_LANE_BYTES
    assert lay.chunk_bytes < MIB < lay.lane_bytes - F.HEADER_BYTES  # 1 MiB: too large for a ring, one lane frame
    assert lay.lanes_offset == lay.rings_offset + lay.max_hosts * lay.channels * 2 * lay.ring_bytes
    assert lay.pool_bytes == lay.lanes_offset + lay.max_hosts * lay.lanes_per_host * lay.lane_bytes <= 256 * MIB
    small = L.plan_layout(32 * MIB)
    assert small.lanes_per_host == 0 and small.pool_bytes == small.lanes_offset


def test_superblock_lane_fields_are_validated():
    lay = L.plan_layout(64 * MIB, max_hosts=2)
    assert lay.lanes_per_host
    mem = Memory(bytearray(lay.pool_bytes))
    L.write_superblock(mem, lay)
    assert L.parse_superblock(mem).lanes_per_host == lay.lanes_per_host
    for bad in ({"lanes_per_host": L.LANES_MAX + 1}, {"lane_bytes": 4096}, {"lanes_offset": lay.lanes_offset + 8}):
        mem = Memory(bytearray(lay.pool_bytes))
        L.write_superblock(mem, L.Layout(**{**lay.__dict__, **bad}))
        with pytest.raises(PoolCorruptError):
            L.parse_superblock(mem)


def test_regions_and_inspect_name_the_lanes(tmp_path):
    path = str(tmp_path / "pool")
    lay = notnets_rpc.create_pool(path, 40 * MIB, max_hosts=2, channels=2)
    assert lay.lanes_per_host >= 1
    assert "extent lane 1/0 control (claim, pid, channel, direction, head)" == pool_regions.name_offset(
        lay, lay.lane_ctl(1, 0))
    assert pool_regions.name_offset(lay, lay.lane_data(1, 0) + 5) == "extent lane 1/0, byte 5"
    assert "request lane tail" in pool_regions.name_offset(lay, lay.channel(0, 1) + L.CH_REQ_LANE_TAIL)
    pool = Pool.acquire(path, 1)
    try:
        claim = claim_lane(pool, RESPONSES, 0, 1, 7, os.getpid())
        snap = I.inspect_pool(path, watch_s=0)
        assert snap["header"]["lanes_per_host"] == lay.lanes_per_host
        assert snap["lanes"] == [{"host": 1, "lane": claim[0], "generation": claim[1], "state": "held",
                                  "pid": os.getpid(), "channel": "0/1", "channel_generation": 7,
                                  "direction": "responses", "bytes_written": 0}]
        assert "extent lanes (1 ever claimed)" in I.format_inspection(snap)
    finally:
        pool.release()


# -- lanes -----------------------------------------------------------------------------------------
def test_extent_lifecycle_lent_until_the_view_ends():
    mem, lay, w, r = lane_pair()
    payload = body_of(MIB, 1)
    pos = w.put_message(9, MIB, (payload,))
    view, loan = r.take(pos, 9, MIB)
    assert type(view) is memoryview and view.readonly and view == payload and loan is not None
    assert mem.load(TAIL) == 0  # lent: the writer still sees it as unread
    fits = (lay.lane_bytes - frame_bytes(MIB)) // frame_bytes(MIB)
    for i in range(fits):
        assert w.put_message(10 + i, MIB, (payload,)) is not None
    assert w.put_message(99, MIB, (payload,)) is None  # full: the caller sends chunks, nothing waits
    del view
    for i in range(fits):  # read (and release) the others in order
        got, _ = r.take(frame_bytes(MIB) * (i + 1), 10 + i, MIB)
        del got
    r.settle()
    assert mem.load(TAIL) == r.tail and not r.loans  # every view gone: all the room is back
    pos = w.put_message(99, MIB, (payload,))  # (after the pad the failed attempt left)
    assert pos is not None and r.take(pos, 99, MIB)[0] == payload


def test_release_and_double_release_and_owner_end():
    mem, lay, w, r = lane_pair()
    pos = w.put_message(1, MIB, (body_of(MIB, 2),))
    view, loan = r.take(pos, 1, MIB)
    view.release()
    view.release()  # twice: harmless
    loan.end()
    loan.end()
    r.settle()
    assert mem.load(TAIL) == w.head
    pos = w.put_message(2, MIB, (body_of(MIB, 3),))
    view, loan = r.take(pos, 2, MIB)
    loan.end()  # the call ended: the view is released, using it raises instead of showing reused bytes
    with pytest.raises(ValueError):
        bytes(view)
    r.settle()
    assert mem.load(TAIL) == w.head


def test_frames_whose_reference_never_came_are_skipped_unread():
    mem, lay, w, r = lane_pair()
    w.put_message(1, 300_000, (body_of(300_000, 1),))  # its call was cancelled before the reference left
    pos = w.put_message(2, MIB, (body_of(MIB, 2),))
    view, _ = r.take(pos, 2, MIB)
    assert view == body_of(MIB, 2)


@pytest.mark.parametrize("case", ["behind", "inside", "other call", "other length", "past head", "garbage"])
def test_hostile_references_are_protocol_errors(case):
    mem, lay, w, r = lane_pair()
    pos = w.put_message(1, MIB, (body_of(MIB, 1),))
    cid, n = 1, MIB
    if case == "behind":
        got, _ = r.take(pos, 1, MIB)
        del got
    elif case == "inside":
        pos += 64
    elif case == "other call":
        cid = 2
    elif case == "other length":
        n = MIB - 8
    elif case == "past head":
        pos = w.head + 8
    else:
        mem.write(lay.lane_data(0, 0), b"\xff" * 16)
    with pytest.raises(ProtocolError):
        r.take(pos, cid, n)


def test_references_are_checked_before_use():
    for raw in (b"short", REF.pack(0, 7, 0, 10), REF.pack(0, IN_LANE, 3, 10), REF.pack(0, IN_LANE, 0, 1 << 40)):
        with pytest.raises(ProtocolError):
            parse_ref(raw)


@pytest.fixture
def host0(tmp_path):
    """(path, Pool) of a two-host pool with lanes, mapped as host 0."""
    path = str(tmp_path / "pool")
    notnets_rpc.create_pool(path, 40 * MIB, max_hosts=2, channels=2)
    pool = Pool.acquire(path, 0)
    try:
        yield path, pool
    finally:
        pool.release()


def test_a_reader_tail_that_makes_no_sense_turns_the_writer_to_chunks(host0):
    path, pool = host0
    off = pool.layout.channel(0, 0)
    lanes = ChannelLanes(pool, REQUESTS, 0, 0, 1, off + L.CH_RESP_LANE_TAIL, off + L.CH_REQ_LANE_TAIL, 0, True)
    with lanes.lock:
        assert lanes.put(1, MIB, (body_of(MIB, 1),)) is not None
        pool.mem.store(off + L.CH_REQ_LANE_TAIL, 1 << 40)  # a hostile reader's tail
        refs = [lanes.put(2, MIB, (body_of(MIB, 1),)) for _ in range(6)]  # the tail is read when room is short
        assert refs[-2:] == [None, None] and lanes.writer is None  # no exception, no lane: chunks from now on
    lanes.close()
    assert I.inspect_pool(path, watch_s=0)["lanes"][0]["state"] == "free"


def test_a_peer_lane_outside_its_partition_is_refused(host0):
    path, pool = host0
    off = pool.layout.channel(0, 0)
    lanes = ChannelLanes(pool, RESPONSES, 0, 0, 1, off + L.CH_REQ_LANE_TAIL, off + L.CH_RESP_LANE_TAIL, 0, False)
    other = pool.layout.lanes_per_host  # host 1's first lane
    with pytest.raises(ProtocolError):
        lanes.take(REF.pack(other, IN_LANE, 0, MIB), 1, True)
    with pytest.raises(ProtocolError):
        lanes.take(REF.pack(0, RETURNED, 0, MIB), 1, True)


# -- claims ----------------------------------------------------------------------------------------
def test_claims_run_out_and_a_dead_holders_lane_is_taken_over(host0):
    path, pool = host0
    lay = pool.layout
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    claims = [claim_lane(pool, REQUESTS, 0, k, 1, os.getpid()) for k in range(lay.lanes_per_host)]
    assert all(c is not None for c in claims)
    assert claim_lane(pool, REQUESTS, 0, 1, 2, os.getpid()) is None  # all held by live holders
    pool.mem.store(lay.lane_ctl(0, claims[0][0]) + L.LANE_PID, dead.pid)  # its holder died
    taken = claim_lane(pool, REQUESTS, 0, 1, 2, os.getpid())  # all held, but the first holder is dead
    assert taken is not None and taken[0] == claims[0][0] and taken[1] == claims[0][1] + 1
    assert claim_lane(pool, REQUESTS, 0, 1, 3, os.getpid()) is None  # now all live
    release_lane(pool, *claims[0])  # a stale generation gives nothing back
    assert claim_lane(pool, REQUESTS, 0, 1, 3, os.getpid()) is None
    release_lane(pool, *taken)
    assert claim_lane(pool, REQUESTS, 0, 1, 3, os.getpid()) is not None


# -- RPC -------------------------------------------------------------------------------------------
@pytest.fixture(params=["coherent", "software"])
def lane_pool(request):
    """A pool whose rings chunk a 1 MiB message (256 KiB rings) and which has lanes."""
    path = Path("/dev/shm") / f"notnets-test-{uuid.uuid4().hex[:12]}"
    lay = notnets_rpc.create_pool(str(path), 24 << 20, max_hosts=1, channels=4, ring_bytes=256 << 10,
                                  coherence=request.param)
    assert lay.lanes_per_host >= 2 and lay.chunk_bytes < MIB
    try:
        yield str(path)
    finally:
        path.unlink(missing_ok=True)


class Handlers:
    def __init__(self):
        self.seen = []

    def view_echo(self, request, context):
        self.seen.append(request)
        return request

    def copy_echo(self, request, context):
        return bytes(request)

    def plain_echo(self, request, context):
        self.seen.append(request)
        return request

    def grow(self, request, context):
        return bytes(request) + b"+"

    def tagged_echo(self, request, context):
        context.set_trailing_metadata((("tag", "kept"),))
        return request

    def headed(self, request, context):
        context.send_initial_metadata((("h", "v"),))
        return body_of(MIB, 3)

    def generic(self):
        return grpc.method_handlers_generic_handler("x.X", {
            "View": grpc.unary_unary_rpc_method_handler(self.view_echo, request_deserializer=notnets_rpc.as_view,
                                                        response_serializer=notnets_rpc.as_bytes),
            "Copy": grpc.unary_unary_rpc_method_handler(self.copy_echo, request_deserializer=notnets_rpc.as_view),
            "Plain": grpc.unary_unary_rpc_method_handler(self.plain_echo),
            "Grow": grpc.unary_unary_rpc_method_handler(self.grow),
            "Tagged": grpc.unary_unary_rpc_method_handler(self.tagged_echo),
            "Headed": grpc.unary_unary_rpc_method_handler(self.headed),
        })


@pytest.fixture
def lane_server(lane_pool):
    handlers = Handlers()
    server = notnets_rpc.server(futures.ThreadPoolExecutor(2), pool=lane_pool)
    server.add_generic_rpc_handlers((handlers.generic(),))
    server.add_endpoint("x")
    server.start()
    try:
        yield handlers, lane_pool
    finally:
        server.stop(None).wait(5)


def lanes_of(path):
    return I.inspect_pool(path, watch_s=0)["lanes"]


def all_lanes_free(path, timeout=10.0) -> bool:
    """Wait until every lane ever claimed is free again (a server lets go when it sees the channel close)."""
    end = time.monotonic() + timeout
    while any(x["state"] != "free" for x in lanes_of(path)):
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True


def test_a_request_view_answered_as_is_is_handed_back_untouched(lane_server):
    handlers, path = lane_server
    software = I.inspect_pool(path, watch_s=0)["coherence"]["formatted"] == "software"
    with notnets_rpc.insecure_channel("notnets:x", pool=path) as ch:
        echo = ch.unary_unary("/x.X/View", response_deserializer=notnets_rpc.as_view)
        plain = ch.unary_unary("/x.X/Plain")
        assert echo(b"warm") == b"warm" and plain(b"warm") == b"warm"  # the first calls look the methods up
        for i in range(6):
            payload = body_of(MIB, i)
            reply = echo(payload, timeout=10)
            # handed back: the caller's own request, never read from the pool
            assert type(reply) is memoryview and reply.readonly and reply.obj is payload
            assert plain(payload) is payload  # plain bytes code: the server's copy compared equal
        assert [x["direction"] for x in lanes_of(path)] == ["requests"]  # the server never wrote a lane
    for seen in handlers.seen[2::2]:
        if not software:  # lent (software coherence: copies)
            assert type(seen) is memoryview
            with pytest.raises(ValueError):  # released when its call ended
                bytes(seen)
    assert all_lanes_free(path)  # the channel closed: its lane went back


@pytest.mark.parametrize("form", ["message", "status", "handback status", "status without reference"])
def test_a_hostile_handback_of_another_calls_extent_fails_only_that_call(lane_pool, form):
    """A returned reference that is not this call's request, in a MESSAGE frame or as the
    message of a STATUS frame (how a server ends a unary call with a large reply), or a
    STATUS that says extent and carries none: that call fails INTERNAL, the channel goes on."""
    from .hostile import RawServer

    server = RawServer(lane_pool, "evil")
    try:
        with notnets_rpc.insecure_channel("notnets:evil", pool=lane_pool) as ch:
            accepting = threading.Thread(target=server.accept)
            accepting.start()
            call = ch.unary_unary("/x.X/Plain")
            fut = call.future(body_of(MIB, 1), timeout=10)
            accepting.join(10)
            [cid] = server.calls(1)
            for ref in (REF.pack(0, RETURNED, 4096, MIB), REF.pack(0, RETURNED, 0, MIB - 8)):
                if form == "message":
                    assert server.write(F.MESSAGE, F_EXTENT, cid, 0, ref)
                elif form == "status":
                    body = b"".join(F.status_parts(b"", b"", b"", ref))
                    assert server.write(F.STATUS, F.F_HAS_MESSAGE | F_EXTENT, cid, 0, body)
                elif form == "handback status":  # the exact frame of a hand-back, naming another extent
                    body = b"".join(F.status_parts(b"", b"", b"", ref))
                    assert server.write(F.STATUS, RETURNED_STATUS, cid, 0, body)
                else:
                    body = b"".join(F.status_parts(b"", b"", b"", None))
                    assert server.write(F.STATUS, F_EXTENT, cid, 0, body)
            with pytest.raises(grpc.RpcError) as err:
                fut.result()
            expected = "without its reference" if form == "status without reference" else "returned extent"
            assert err.value.code() == grpc.StatusCode.INTERNAL and expected in err.value.details()
            later = call.future(b"small", timeout=10)  # the channel serves its next call
            [cid] = server.calls(1)
            assert server.write(F.STATUS, F.F_BARE, cid, 0, b"fine")
            assert later.result() == b"fine"
    finally:
        server.close()


def test_a_large_unary_reply_ends_its_call_in_one_frame(lane_server):
    """The extent reference is the message of the STATUS frame: one frame per large reply,
    whether handed back or written into the server's lane."""
    handlers, path = lane_server
    with notnets_rpc.insecure_channel("notnets:x", pool=path) as ch:
        grow, plain = ch.unary_unary("/x.X/Grow"), ch.unary_unary("/x.X/Plain")
        assert grow(b"w") == b"w+" and plain(b"w") == b"w"  # the first calls look the methods up
        conn = ch._conn
        seen = []
        dispatch = conn._dispatch
        conn._dispatch = lambda frame: (seen.append(frame[:2]), dispatch(frame))[1]
        for call, tail in ((grow, b"+"), (plain, b"")):
            seen.clear()
            assert call(body_of(MIB, 5)) == body_of(MIB, 5) + tail
            assert len(seen) == 1 and seen[0][0] == F.STATUS and seen[0][1] & F_EXTENT, seen
        assert seen[0][1] == RETURNED_STATUS  # the plain echo's request went back: OK, nothing else


def test_a_handed_back_request_keeps_what_its_handler_set(lane_server):
    """A handler that returns its request and sets trailing metadata: the request still
    goes back by reference, and the client gets the metadata (the general status path,
    not the hand-back's one frame of nothing else)."""
    handlers, path = lane_server
    with notnets_rpc.insecure_channel("notnets:x", pool=path) as ch:
        tagged = ch.unary_unary("/x.X/Tagged")
        assert tagged(b"warm") == b"warm"  # the first call looks the method up
        conn = ch._conn
        seen = []
        dispatch = conn._dispatch
        conn._dispatch = lambda frame: (seen.append((frame[0], frame[1], bytes(frame[4]))), dispatch(frame))[1]
        payload = body_of(MIB, 7)
        reply, call = tagged.with_call(payload, timeout=10)
        assert reply is payload and call.trailing_metadata() == (("tag", "kept"),)
        [(kind, flags, body)] = seen
        assert kind == F.STATUS and flags & F_EXTENT and parse_ref(body[-REF.size:])[1] == RETURNED
        assert len(body) > F.STATUS_HEAD.size + REF.size  # the metadata rides with the reference


def test_a_large_reply_with_headers_to_a_small_request_takes_the_general_path(lane_server):
    """A new 1 MiB reply with initial metadata carries the flags of a hand-back (headers,
    message, extent) on a call whose request never went into a lane: the client must read
    it as an ordinary reply, not look for a request of its own (an AttributeError in the
    reading thread once wedged that thread's call under load)."""
    handlers, path = lane_server
    with notnets_rpc.insecure_channel("notnets:x", pool=path) as ch:
        headed = ch.unary_unary("/x.X/Headed")
        assert headed(b"warm", timeout=10) == body_of(MIB, 3)  # the first call looks the method up
        conn = ch._conn
        seen = []
        dispatch = conn._dispatch
        conn._dispatch = lambda frame: (seen.append(frame[:2]), dispatch(frame))[1]
        reply, call = headed.with_call(b"small", timeout=10)
        assert reply == body_of(MIB, 3) and tuple(call.initial_metadata()) == (("h", "v"),)
        assert (F.STATUS, RETURNED_STATUS) in seen, seen  # the flags of a hand-back, for a call that sent none


def test_new_responses_go_through_the_servers_lane(lane_server):
    handlers, path = lane_server
    software = I.inspect_pool(path, watch_s=0)["coherence"]["formatted"] == "software"
    with notnets_rpc.insecure_channel("notnets:x", pool=path) as ch:
        viewed = ch.unary_unary("/x.X/Grow", response_deserializer=notnets_rpc.as_view)
        plain = ch.unary_unary("/x.X/Grow")
        for i in range(5):
            reply = viewed(body_of(MIB, i))
            assert reply == body_of(MIB, i) + b"+"
            assert type(reply) is memoryview and (type(reply.obj) is bytes) == software  # the server's lane, if lent
            del reply
            reply = plain(body_of(MIB + 8 * i, i))
            assert type(reply) is bytes and reply == body_of(MIB + 8 * i, i) + b"+"
        assert sorted(x["direction"] for x in lanes_of(path)) == ["requests", "responses"]
        assert ch._conn.stage.value == "open"
    assert all_lanes_free(path)  # both ends gave their lanes back


@contextlib.contextmanager
def echo_stub(pool, echo_pb2_grpc, servicer):
    """A stub on a channel to a server running ``servicer`` on ``pool`` (stopped afterwards)."""
    server = notnets_rpc.server(futures.ThreadPoolExecutor(4), pool=pool)
    echo_pb2_grpc.add_EchoServicer_to_server(servicer, server)
    server.add_endpoint("pb")
    server.start()
    try:
        with notnets_rpc.insecure_channel("notnets:pb", pool=pool) as ch:
            yield echo_pb2_grpc.EchoStub(ch), ch
    finally:
        server.stop(None).wait(5)


def test_protobuf_over_lanes(lane_pool, echo_protos):
    echo_pb2, echo_pb2_grpc = echo_protos

    class Echo(echo_pb2_grpc.EchoServicer):
        def Unary(self, request, context):
            return echo_pb2.EchoReply(payload=request.payload)

    with echo_stub(lane_pool, echo_pb2_grpc, Echo()) as (stub, ch):
        assert stub.Unary(echo_pb2.EchoRequest(payload=b"w")).payload == b"w"  # looks the method up
        for i in range(5):
            payload = body_of(MIB, i)
            assert stub.Unary(echo_pb2.EchoRequest(payload=payload)).payload == payload
        # the reply serializes to the request's bytes: handed back, the server wrote no lane
        assert [x["direction"] for x in lanes_of(lane_pool)] == ["requests"]
        assert ch._conn.lanes.reader is None  # and we read none


def test_without_a_free_lane_messages_go_in_chunks(lane_server):
    handlers, path = lane_server
    pool = Pool.acquire(path, 0)
    try:
        taken = [claim_lane(pool, REQUESTS, 0, 3, 1, os.getpid()) for _ in range(pool.layout.lanes_per_host)]
        assert all(taken)
        with notnets_rpc.insecure_channel("notnets:x", pool=path) as ch:
            copy = ch.unary_unary("/x.X/Copy", response_deserializer=notnets_rpc.as_view)
            for i in range(3):
                assert copy(body_of(MIB, i)) == body_of(MIB, i)
            assert ch._conn.lanes.writer is None  # no lane for us (nor for the server): chunks both ways
        assert [x["channel"] for x in lanes_of(path)] == ["0/3"] * len(taken)
    finally:
        pool.release()


def test_a_dead_clients_lane_is_reused(lane_server):
    handlers, path = lane_server
    code = (
        "import os, notnets_rpc\n"
        f"ch = notnets_rpc.insecure_channel('notnets:x', pool={path!r})\n"
        "p = bytes(range(256)) * 4096\n"
        "assert ch.unary_unary('/x.X/Plain')(p) == p\n"
        "print('held', flush=True)\n"
        "os._exit(0)\n")  # dies holding its lane, without closing anything
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "held" in out.stdout, out.stderr
    assert any(x["state"] == "held" and x["direction"] == "requests" for x in lanes_of(path))
    end = time.monotonic() + 20  # the server reclaims the dead client's channel and lets its response lane go
    while any(x["state"] == "held" and x["direction"] == "responses" for x in lanes_of(path)):
        assert time.monotonic() < end, "the server kept its lane for a dead client"
        time.sleep(0.02)
    assert any(x["state"] == "held" and x["direction"] == "requests" for x in lanes_of(path))  # nobody freed it
    pool = Pool.acquire(path, 0)
    try:
        got = [claim_lane(pool, REQUESTS, 0, 3, 1, os.getpid()) for _ in range(pool.layout.lanes_per_host)]
        assert all(c is not None for c in got)  # including the dead client's
    finally:
        pool.release()


@pytest.mark.parametrize("form", ["call", "message"])
@pytest.mark.parametrize("ref", [REF.pack(0, IN_LANE, 1 << 30, MIB), REF.pack(99, IN_LANE, 0, MIB),
                                 REF.pack(0, RETURNED, 0, MIB), b"garbage"], ids=["past", "lane", "returned", "short"])
def test_a_hostile_extent_costs_only_its_channel(lane_server, form, ref):
    handlers, path = lane_server
    with notnets_rpc.insecure_channel("notnets:x", pool=path) as good:
        echo = good.unary_unary("/x.X/Plain")
        assert echo(body_of(MIB, 1)) == body_of(MIB, 1)
        raw = RawChannel(path, "x")
        try:
            if form == "call":  # the reference in a unary CALL
                body = b"".join(F.call_parts(b"/x.X/Plain", 0, b"", ref))
                assert raw.write(F.CALL, F.F_HAS_MESSAGE | F.F_END_STREAM | F_EXTENT, 1, 0, body)
            else:  # a CALL without its message, then the reference in a MESSAGE frame
                assert raw.write(F.CALL, 0, 1, 0, b"".join(F.call_parts(b"/x.X/Plain", 0, b"", None)))
                assert raw.write(F.MESSAGE, F.F_END_STREAM | F_EXTENT, 1, 0, ref)
            deadline = time.monotonic() + 10
            while raw.mem.load(raw.ctl + L.CH_ACCEPT) != L.pack_state(raw.generation, L.ACC_REJECTED):
                raw.beat()
                assert time.monotonic() < deadline, "the hostile channel was not dropped"
                time.sleep(0.01)
        finally:
            raw.close()
        assert echo(body_of(MIB, 2)) == body_of(MIB, 2)  # the good channel goes on


@pytest.mark.parametrize("method,crossings", [("Plain", 2), ("Copy", 2), ("Grow", 4), ("Pb", 2)])
def test_bytes_crossing_the_pool_per_round_trip(monkeypatch, echo_protos, method, crossings):
    """Counted by the far-memory model (every payload byte read or written in the pool):
    an echo's reply is handed back, so 1 MiB crosses twice (client write, server read);
    a reply the handler built anew (other bytes) crosses four times. (With direct mappings an as_view
    handler's echo crosses once: the server reads nothing; the model disables views.)"""
    from notnets_rpc import farmem

    echo_pb2, echo_pb2_grpc = echo_protos
    path = Path("/dev/shm") / f"notnets-test-{uuid.uuid4().hex[:12]}"
    notnets_rpc.create_pool(str(path), 24 << 20, max_hosts=1, channels=4, ring_bytes=256 << 10)
    monkeypatch.setenv(farmem.ENV, '{"%s": {"latency_ns": 1, "bandwidth_gbps": 1000}}' % path)
    handlers = Handlers()

    class Echo(echo_pb2_grpc.EchoServicer):
        def Unary(self, request, context):
            return echo_pb2.EchoReply(payload=request.payload)

    server = notnets_rpc.server(futures.ThreadPoolExecutor(2), pool=str(path))
    server.add_generic_rpc_handlers((handlers.generic(),))
    echo_pb2_grpc.add_EchoServicer_to_server(Echo(), server)
    server.add_endpoint("x")
    server.start()
    try:
        with notnets_rpc.insecure_channel("notnets:x", pool=str(path)) as ch:
            if method == "Pb":
                stub = echo_pb2_grpc.EchoStub(ch)
                call = lambda p: stub.Unary(echo_pb2.EchoRequest(payload=p)).payload  # noqa: E731
            else:
                call = ch.unary_unary(f"/x.X/{method}")
            grow = b"+" if method == "Grow" else b""
            assert call(b"warm") == b"warm" + grow
            n, rounds = MIB, 5
            before = farmem.accounts()[str(path)]["bytes"]
            for i in range(rounds):
                assert call(body_of(n, i)) == body_of(n, i) + grow
            per_call = (farmem.accounts()[str(path)]["bytes"] - before) / rounds
        assert crossings * n <= per_call < crossings * n + 64 * 1024, per_call / n  # plus headers and small frames
    finally:
        server.stop(None).wait(5)
        path.unlink(missing_ok=True)


def test_a_reply_is_the_request_only_when_its_bytes_are():
    from notnets_rpc.serving.replies import _same_bytes

    request = body_of(MIB, 3)
    lent = memoryview(bytearray(request)).toreadonly()
    assert _same_bytes(bytes(request), request, MIB) and _same_bytes(bytearray(request), lent, MIB)
    assert _same_bytes(memoryview(request), request, MIB)  # a whole view of our copy
    assert not _same_bytes(memoryview(request)[1:], request, MIB - 1)
    assert not _same_bytes(memoryview(bytes(bytearray(request))), request, MIB)  # another buffer: never compared item by item
    assert not _same_bytes(body_of(MIB, 4), lent, MIB) and not _same_bytes(request[:-1] + b"x", request, MIB)
    assert not _same_bytes("text", request, MIB)
    lent.release()  # a handler may release its view before it answers
    assert not _same_bytes(request, lent, MIB)


def test_streamed_messages_go_through_lanes_in_order(lane_pool, echo_protos):
    echo_pb2, echo_pb2_grpc = echo_protos

    class Echo(echo_pb2_grpc.EchoServicer):
        def ServerStream(self, request, context):
            for i in range(request.count):
                yield echo_pb2.EchoReply(payload=body_of(MIB + 8 * i, i))

        def Bidi(self, request_iterator, context):
            for request in request_iterator:
                yield echo_pb2.EchoReply(payload=request.payload[::-1])

        def ClientStream(self, request_iterator, context):
            return echo_pb2.EchoReply(payload=b"".join(r.payload for r in request_iterator))

    with echo_stub(lane_pool, echo_pb2_grpc, Echo()) as (stub, ch):
        got = [r.payload for r in stub.ServerStream(echo_pb2.EchoRequest(count=7), timeout=30)]
        assert got == [body_of(MIB + 8 * i, i) for i in range(7)]  # 7 MiB through a 4 MiB lane
        requests = [echo_pb2.EchoRequest(payload=body_of(MIB, i)) for i in range(3)]
        got = [r.payload for r in stub.Bidi(iter(requests), timeout=30)]
        assert got == [body_of(MIB, i)[::-1] for i in range(3)]  # both ways through lanes
        assert sorted(x["direction"] for x in lanes_of(lane_pool)) == ["requests", "responses"]
        streamed = [echo_pb2.EchoRequest(payload=body_of(MIB, i)) for i in range(6)]  # 6 MiB up a 4 MiB lane
        assert stub.ClientStream(iter(streamed), timeout=30).payload == b"".join(r.payload for r in streamed)

