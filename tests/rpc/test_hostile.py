"""Broken and malicious peers: each costs its own calls a status, never the server,
never other clients (docs/rpc.md, "Concurrency" and "Untrusted memory")."""

from __future__ import annotations

import threading
import time

import grpc
import pytest

import notnets_rpc
from notnets_rpc.wire import frames as F

from . import load, service
from .hostile import RawChannel, RawServer

pytestmark = pytest.mark.timeout(60)


def test_client_that_never_reads_stalls_nobody_else(serve, pool_path):
    """A client fills its request ring with calls (some with deadlines) and never reads
    the answers: the server keeps serving another channel, keeps its heartbeat, and
    holds at most its window for the silent one."""
    server = serve()
    raw = RawChannel(pool_path, "t")
    watch = load.HeartbeatWatch(pool_path, "t")
    try:
        payload = b"x" * (48 << 10)
        cid = 0
        end = time.monotonic() + 5
        sent_all = False
        while time.monotonic() < end:  # until the request ring stays full: the server stopped reading it
            cid += 1
            if not raw.unary(cid, "/test.T/Echo", payload, timeout_us=300_000 if cid % 2 else 0):
                time.sleep(0.2)
                if not raw.unary(cid, "/test.T/Echo", payload):
                    sent_all = True
                    break
        assert sent_all, "the server kept reading a channel whose client reads nothing"
        with notnets_rpc.insecure_channel("notnets:t", pool=pool_path) as other:
            echo = other.unary_unary("/test.T/Echo")
            for i in range(20):
                assert echo(b"%d" % i, timeout=5) == b"%d" % i
                watch.sample()
        time.sleep(0.5)  # deadlines of the silent client's calls expire meanwhile
        assert watch.sample() < 1.0 and watch.max_age < 1.0
        (ch,) = [c for c in server._channels.values() if c.slot == raw.slot]
        assert ch.outbox.nbytes <= server._window + len(payload) + 4096
    finally:
        watch.close()
        raw.close()


def test_cancel_of_an_answered_call_drops_its_queued_answer(serve, pool_path):
    """Once the client cancels, the rest of a large answer is not sent."""
    server = serve()
    raw = RawChannel(pool_path, "t")
    try:
        big = b"y" * (3 << 20)  # several rings' worth
        assert raw.unary(1, "/test.T/Echo", big[: 8 << 10])  # settle the method cache
        assert raw.wait_status(1) is not None
        assert raw.write(F.CALL, 0, 2, 0, b"".join(F.call_parts(b"/test.T/Echo", 0, b"", None)))
        chunk = server._chunk - 64
        for start in range(0, len(big), chunk):
            piece = big[start : start + chunk]
            flags = F.F_MORE if start + chunk < len(big) else F.F_END_STREAM
            while not raw.write(F.MESSAGE, flags, 2, len(big), piece):
                raw.beat()
                time.sleep(0.002)
        end = time.monotonic() + 5
        (ch,) = [c for c in server._channels.values() if c.slot == raw.slot]
        while not ch.outbox.frames and time.monotonic() < end:
            time.sleep(0.01)
        assert ch.outbox.frames, "the answer should be waiting for room"
        assert raw.write(F.CANCEL, 0, 2, 0, b"")
        while ch.outbox.frames and time.monotonic() < end:
            time.sleep(0.01)
        assert not ch.outbox.frames and ch.outbox.nbytes == 0
    finally:
        raw.close()


@pytest.mark.parametrize("method,streaming", [("BigTrailer", False), ("BigDetails", False), ("BigHeaders", True)])
def test_status_or_metadata_larger_than_a_ring_is_resource_exhausted(channel, method, streaming):
    """grpcio answers RESOURCE_EXHAUSTED for metadata over its limit and serves on."""
    size = str(1 << 20).encode()  # far more than a ring of the 32 MiB test pool (about 100 KiB)
    call = channel.unary_stream if streaming else channel.unary_unary
    with pytest.raises(grpc.RpcError) as err:
        result = call(f"/test.T/{method}")(size, timeout=10)
        if streaming:
            list(result)
    assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    for i in range(12):  # more crashes than the poller used to survive (10)
        with pytest.raises(grpc.RpcError):
            channel.unary_unary("/test.T/BigTrailer")(size, timeout=10)
    assert channel.unary_unary("/test.T/Echo")(b"serving", timeout=5) == b"serving"


def test_server_refuses_a_single_frame_message_over_its_limit(serve, pool_path):
    serve(options=[("grpc.max_receive_message_length", 1000)])
    with notnets_rpc.insecure_channel("notnets:t", pool=pool_path) as ch:
        echo = ch.unary_unary("/test.T/Echo")
        assert echo(b"x" * 1000, timeout=5) == b"x" * 1000
        for kwargs in ({}, {"timeout": 5}, {"metadata": (("k", "v"),)}):
            with pytest.raises(grpc.RpcError) as err:
                echo(b"x" * 1001, **kwargs)
            assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert echo(b"small", timeout=5) == b"small"


def test_client_refuses_a_single_frame_answer_over_its_limit(serve, pool_path):
    serve()
    with notnets_rpc.insecure_channel("notnets:t", pool=pool_path,
                                      options=[("grpc.max_receive_message_length", 100)]) as ch:
        echo = ch.unary_unary("/test.T/Echo")
        assert echo(b"x" * 100) == b"x" * 100
        for kwargs in ({}, {"timeout": 5}):
            with pytest.raises(grpc.RpcError) as err:
                echo(b"x" * 101, **kwargs)
            assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert echo(b"small") == b"small"


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_announced_huge_messages_cost_no_memory_beyond_the_budget(serve, pool_path):
    """A peer announces 128 MiB messages in 16-byte chunks: the server charges each to
    its reassembly budget (here 64 MiB) and refuses, allocating nothing."""
    server = serve(options=[("notnets.max_reassembly_bytes", 64 << 20)])
    raw = RawChannel(pool_path, "t")
    try:
        before = _rss_bytes()
        for cid in range(1, 9):
            assert raw.write(F.CALL, 0, cid, 0, b"".join(F.call_parts(b"/test.T/Sum", 0, b"", None)))
            assert raw.write(F.MESSAGE, F.F_MORE, cid, 128 << 20, b"z" * 16)
            status = raw.wait_status(cid)
            assert status is not None and status[3] == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        assert _rss_bytes() - before < 16 << 20
        assert server._budget.used == 0
    finally:
        raw.close()
    with notnets_rpc.insecure_channel("notnets:t", pool=pool_path) as ch:  # others are served
        big = b"q" * (3 << 20)
        assert ch.stream_unary("/test.T/Sum")(iter([big]), timeout=10) == big
    assert server._budget.used == 0


def _server_call(server, cid=None):
    """The server's only request-streaming call in flight (or the one with id ``cid``)."""
    for ch in list(server._channels.values()):
        for call in list(ch.calls.values()):
            if call.handler.request_streaming and (cid is None or call.call_id == cid):
                return call
    return None


def test_a_held_request_stream_waits_alone(serve, pool_path):
    """A handler that takes no requests: its client stops one window ahead (the server
    holds no more than that for it), and the channel's other calls -- unary and another
    request stream -- go on meanwhile; released, the stream delivers everything."""
    server = serve()
    service.HOLD.clear()
    try:
        with notnets_rpc.insecure_channel("notnets:t", pool=pool_path) as ch:
            parts = [bytes([i]) * (16 << 10) for i in range(64)]  # 1 MiB, 8 windows of a 32 MiB pool
            held = ch.stream_unary("/test.T/HeldSum").future(iter(parts), timeout=30)
            conn = ch._conn
            window = conn.request_window
            end = time.monotonic() + 10
            while held._state.sent - held._state.credit < window:  # the client reached its window
                assert time.monotonic() < end, "the request stream never waited for its window"
                time.sleep(0.01)
            for i in range(20):
                assert ch.unary_unary("/test.T/Echo")(b"%d" % i, timeout=5) == b"%d" % i
            assert ch.stream_unary("/test.T/Sum")(iter([b"a", b"b"]), timeout=5) == b"ab"
            call = _server_call(server)
            assert call is not None and call.arrived - call.taken <= window + (16 << 10)
            assert held._state.sent < len(parts) * (16 << 10)
            service.HOLD.set()
            assert held.result(timeout=30) == b"".join(parts)
    finally:
        service.HOLD.set()


def test_a_client_past_its_request_window_gets_resource_exhausted(serve, pool_path):
    server = serve()
    service.HOLD.clear()
    raw = RawChannel(pool_path, "t")
    try:
        assert raw.write(F.CALL, 0, 1, 0, b"".join(F.call_parts(b"/test.T/HeldSum", 0, b"", None)))
        window, sent = server._request_window, 0
        end = time.monotonic() + 10
        while sent <= window + (8 << 10):  # a whole window and one message more, never waiting for credit
            if raw.write(F.MESSAGE, 0, 1, 8 << 10, b"w" * (8 << 10)):
                sent += 8 << 10
            else:  # the ring is full until the server reads it
                assert time.monotonic() < end, "the server stopped reading the request ring"
                time.sleep(0.001)
        status = raw.wait_status(1)
        assert status is not None and status[3] == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        assert b"request window" in status[4]
    finally:
        service.HOLD.set()
        raw.close()
    with notnets_rpc.insecure_channel("notnets:t", pool=pool_path) as ch:
        assert ch.unary_unary("/test.T/Echo")(b"on", timeout=5) == b"on"


def test_a_deadline_that_ends_the_handshake_is_deadline_exceeded(pool_path):
    """A server too busy to accept before a call's deadline: the call ends
    DEADLINE_EXCEEDED, and the entry is not held against the next call (it would end
    UNAVAILABLE, "no live server", until the heartbeat moved)."""
    raw = RawServer(pool_path, "slow", beat=False)
    try:
        with notnets_rpc.insecure_channel("notnets:slow", pool=pool_path) as ch:
            for _ in range(2):
                with pytest.raises(grpc.RpcError) as err:
                    ch.unary_unary("/test.T/Echo")(b"x", timeout=0.6)
                assert err.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED, err.value.details()
    finally:
        raw.close()


def _raw_streams(raw, channel, n):
    """``n`` response streams from ``channel`` to the raw server, and their call ids there."""
    accepting = threading.Thread(target=raw.accept) if raw.tx is None else None
    if accepting is not None:
        accepting.start()
    calls = [channel.unary_stream("/raw.R/Stream")(b"", timeout=30) for _ in range(n)]
    if accepting is not None:
        accepting.join(10)
    return calls, raw.calls(n)


def test_client_charges_announced_messages_to_its_budget(pool_path):
    """A server announces 5 MiB messages in 16-byte chunks on four calls at once: the
    channel's reassembly budget (8 MiB) takes the first, the others end
    RESOURCE_EXHAUSTED before anything is allocated, and an ended or completed message
    gives its charge back."""
    raw = RawServer(pool_path, "raw")
    try:
        with notnets_rpc.insecure_channel("notnets:raw", pool=pool_path,
                                          options=[("notnets.max_reassembly_bytes", 8 << 20)]) as ch:
            calls, ids = _raw_streams(raw, ch, 4)
            for cid in ids:
                assert raw.write(F.MESSAGE, F.F_MORE, cid, 5 << 20, b"z" * 16)
            for call in calls[1:]:
                assert call.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "out of buffer space" in call.details()
            assert calls[0].is_active() and ch._budget.used == 5 << 20
            calls[0].cancel()
            assert ch._budget.used == 0
            (call,), (cid,) = _raw_streams(raw, ch, 1)
            assert raw.write(F.MESSAGE, F.F_MORE, cid, 32, b"a" * 16)
            assert raw.write(F.MESSAGE, 0, cid, 32, b"b" * 16)
            assert next(call) == b"a" * 16 + b"b" * 16
            assert ch._budget.used == 0
    finally:
        raw.close()


def test_client_refuses_announced_or_single_frame_messages_over_its_limit(pool_path):
    raw = RawServer(pool_path, "raw")
    try:
        with notnets_rpc.insecure_channel("notnets:raw", pool=pool_path,
                                          options=[("grpc.max_receive_message_length", 1000)]) as ch:
            calls, (chunked, single, fits) = _raw_streams(raw, ch, 3)
            assert raw.write(F.MESSAGE, F.F_MORE, chunked, 5000, b"z" * 16)
            assert raw.write(F.MESSAGE, 0, single, 1001, b"y" * 1001)
            assert raw.write(F.MESSAGE, 0, fits, 1000, b"x" * 1000)
            for call in calls[:2]:
                assert call.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "Received message larger than max" in call.details()
            assert next(calls[2]) == b"x" * 1000
            assert ch._budget.used == 0
    finally:
        raw.close()


def test_channel_dropped_by_the_server_is_reported(serve, pool_path):
    """A call without deadline ends UNAVAILABLE (not a hang) once the server drops its
    channel, and the next call reconnects."""
    from notnets_rpc.wire import layout as L

    server = serve()
    with notnets_rpc.insecure_channel("notnets:t", pool=pool_path) as ch:
        assert ch.unary_unary("/test.T/Echo")(b"a") == b"a"
        future = ch.unary_unary("/test.T/Sleep").future(b"30:dropped")
        (sch,) = server._channels.values()
        server._drop_channel(sch, L.ACC_RECLAIMED)
        assert future.exception(timeout=5).code() is grpc.StatusCode.UNAVAILABLE
        assert ch.unary_unary("/test.T/Echo")(b"b", timeout=5) == b"b"


def test_overwritten_claim_word_is_reported(serve, pool_path):
    from notnets_rpc.wire import layout as L

    serve()
    with notnets_rpc.insecure_channel("notnets:t", pool=pool_path) as ch:
        assert ch.unary_unary("/test.T/Echo")(b"a") == b"a"
        future = ch.unary_unary("/test.T/Sleep").future(b"30:overwritten")
        conn = ch._conn
        conn.mem.store(conn.ctl + L.CH_CLAIM, L.pack_state(conn.generation + 7, L.CH_OPEN))
        assert future.exception(timeout=5).code() is grpc.StatusCode.UNAVAILABLE
        assert ch.unary_unary("/test.T/Echo")(b"b", timeout=5) == b"b"


def test_forged_directory_entry_does_not_capture_clients(serve, pool_path, monkeypatch):
    """One write of a fake entry with a fresh (even future) heartbeat: new channels still
    reach the real server, and once the fake is seen standing still it is skipped."""
    from notnets_rpc.pool import now_ms

    from .hostile import forge_entry

    monkeypatch.setenv("NOTNETS_STALE_MS", "1000")
    forge_entry(pool_path, host=1, slot=0, name="t", heartbeat_ms=now_ms() + 30_000)
    serve()
    times = []
    for i in range(4):
        start = time.monotonic()
        with notnets_rpc.insecure_channel("notnets:t", pool=pool_path) as ch:
            assert ch.unary_unary("/test.T/Echo")(b"%d" % i, timeout=5) == b"%d" % i
        times.append(time.monotonic() - start)
        time.sleep(0.5)
    assert max(times) < 2.5 and times[-1] < 0.5, times


@pytest.mark.parametrize("skew_ms", [-5_000, 30_000], ids=["server-clock-behind", "server-clock-ahead"])
def test_liveness_ignores_the_servers_clock(serve, pool_path, monkeypatch, skew_ms):
    """A server whose clock differs from ours by seconds is visible while it beats, and
    once dead does not block its replacement for longer than the stale interval."""
    from notnets_rpc import pool as pool_module
    from notnets_rpc.serving import channels

    from .hostile import forge_entry

    monkeypatch.setenv("NOTNETS_STALE_MS", "1000")
    skewed = lambda: int(time.time() * 1000) + skew_ms  # noqa: E731
    monkeypatch.setattr(pool_module, "now_ms", skewed)
    monkeypatch.setattr(channels, "now_ms", skewed)
    serve()
    with notnets_rpc.insecure_channel("notnets:t", pool=pool_path) as ch:
        assert ch.unary_unary("/test.T/Echo")(b"seen", timeout=5) == b"seen"
    forge_entry(pool_path, host=2, slot=0, name="gone", heartbeat_ms=skewed())  # a dead server's entry
    start = time.monotonic()
    serve(name="gone")
    assert time.monotonic() - start < 3.0
    with notnets_rpc.insecure_channel("notnets:gone", pool=pool_path) as ch:
        assert ch.unary_unary("/test.T/Echo")(b"replaced", timeout=5) == b"replaced"


def test_overwritten_entry_is_published_again(serve, pool_path):
    from notnets_rpc.pool import Pool
    from notnets_rpc.wire import layout as L

    server = serve()
    (ep,) = server.endpoints
    pool = Pool.acquire(pool_path)
    try:
        off = pool.layout.dir_entry(ep.host, ep.slot)
        L.write_name(pool.mem, off, "hijacked")
        pool.mem.store(off + L.DIR_STATE, L.pack_state(ep.generation + 5, L.DIR_LIVE))
        end = time.monotonic() + 2
        while L.read_name(pool.mem, off) != "t" and time.monotonic() < end:
            time.sleep(0.01)
        assert L.read_name(pool.mem, off) == "t"
        assert pool.mem.load(off + L.DIR_STATE) == L.pack_state(ep.generation, L.DIR_LIVE)
    finally:
        pool.release()
    with notnets_rpc.insecure_channel("notnets:t", pool=pool_path) as ch:
        assert ch.unary_unary("/test.T/Echo")(b"back", timeout=5) == b"back"


@pytest.mark.parametrize("pid", [4_000_000, 1], ids=["no-such-pid", "live-pid"])
def test_squatted_channel_slots_are_reclaimed(serve, pool_path, monkeypatch, pid):
    """Every channel slot of this host marked open by someone else: a new client still
    gets one (at once for a pid that does not exist, once the server reclaims it for a
    live pid whose heartbeat stands still)."""
    from notnets_rpc.pool import Pool
    from notnets_rpc.wire import layout as L

    monkeypatch.setenv("NOTNETS_STALE_MS", "500")
    server = serve()
    (ep,) = server.endpoints
    pool = Pool.acquire(pool_path)
    try:
        lay = pool.layout
        for k in range(lay.channels):
            off = lay.channel(0, k)
            pool.mem.store(off + L.CH_CLIENT_PID, pid)
            pool.mem.store(off + L.CH_TARGET, L.pack_target(ep.index, ep.generation))
            pool.mem.store(off + L.CH_CLAIM, L.pack_state(9, L.CH_OPEN))
        pool._ring_bell(L.HOST_CHANNEL_BELL)
    finally:
        pool.release()
    with notnets_rpc.insecure_channel("notnets:t", pool=pool_path) as ch:
        assert ch.unary_unary("/test.T/Echo")(b"room", timeout=5, wait_for_ready=True) == b"room"


@pytest.fixture
def crc_pool(blank_path):
    notnets_rpc.create_pool(blank_path, 32 << 20, frame_checksums=True)
    return blank_path


def _serve_on(path, name="t"):
    from concurrent import futures

    from .service import test_handlers

    server = notnets_rpc.server(futures.ThreadPoolExecutor(8), pool=path)
    server.add_generic_rpc_handlers((test_handlers(),))
    server.add_endpoint(name)
    server.start()
    return server


def test_corrupted_request_frame_is_data_loss(crc_pool):
    """With frame checksums, a request whose bytes changed in the pool ends DATA_LOSS;
    the channel and the server go on."""
    from notnets_rpc.memory import Memory
    from notnets_rpc.wire.ring import RingWriter

    server = _serve_on(crc_pool)
    raw = RawChannel(crc_pool, "t")
    try:
        assert raw.unary(1, "/test.T/Echo", b"fine")
        status = raw.wait_status(1)
        assert status[3] == 0 and status[4] == b"fine"  # OK, bare
        scratch = Memory(bytearray(1 << 16))
        writer = RingWriter(scratch, 0, 1 << 15, 1 << 15, (1 << 15) + 8, crc=True)
        body = b"".join(F.call_parts(b"/test.T/Echo", 0, b"", b"payload!"))
        assert writer.try_write(F.CALL, F.F_HAS_MESSAGE | F.F_END_STREAM, 2, 0, (body,), len(body))
        frame = bytearray(scratch.read(0, writer.head))
        frame[-8] ^= 0x40  # a byte of the message
        tx = raw.tx
        tx.mem.write(tx.data + tx.head % tx.size, bytes(frame))
        tx.head += len(frame)
        tx.mem.store(tx.head_off, tx.head)
        status = raw.wait_status(2)
        assert status is not None and status[3] == grpc.StatusCode.DATA_LOSS.value[0]
        assert raw.unary(3, "/test.T/Echo", b"after")
        assert raw.wait_status(3)[4] == b"after"
    finally:
        raw.close()
        server.stop(None).wait(5)


def test_bytes_sprayed_over_rings_never_come_back_as_ok(crc_pool):
    """Random bytes written over both rings of a busy channel: every call ends with its
    own payload or an error status (DATA_LOSS, UNAVAILABLE, INTERNAL...), never with a
    wrong payload as OK; the server serves a clean channel afterwards."""
    import random
    import threading

    server = _serve_on(crc_pool)
    rng = random.Random(11)
    corrupt, errors, ok = [], [], []
    stop = threading.Event()
    ch = notnets_rpc.insecure_channel("notnets:t", pool=crc_pool)
    try:
        echo = ch.unary_unary("/test.T/Echo")
        assert echo(b"warm", timeout=5) == b"warm"
        conn = ch._conn

        def spray():
            while not stop.is_set():
                c = ch._conn or conn
                ring = rng.choice((c.tx, c.rx))
                at = ring.data + rng.randrange(ring.size - 8)
                c.mem.write(at, rng.randbytes(rng.randint(1, 8)))
                time.sleep(0.0005)

        sprayer = threading.Thread(target=spray)
        sprayer.start()
        end = time.monotonic() + 3
        i = 0
        while time.monotonic() < end:
            i += 1
            payload = rng.randbytes(rng.choice((64, 1000, 30000)))
            try:
                got = echo(payload, timeout=2)
                (ok if got == payload else corrupt).append(i)
            except grpc.RpcError as exc:
                errors.append(exc.code())
        stop.set()
        sprayer.join(5)
        assert not corrupt, f"{len(corrupt)} corrupted payloads returned as OK"
        assert ok and grpc.StatusCode.DATA_LOSS in errors, (len(ok), set(errors))
    finally:
        stop.set()
        ch.close()
    with notnets_rpc.insecure_channel("notnets:t", pool=crc_pool) as clean:
        assert clean.unary_unary("/test.T/Echo")(b"clean", timeout=5) == b"clean"
    server.stop(None).wait(5)


def test_restarted_host_takes_over_its_dead_servers_entry(serve, pool_path, monkeypatch):
    """A restarted host numbers its processes from 1 again: the dead server's entry may
    name a pid that exists (here: ours). Its heartbeat stands still, so the new server
    takes the name over within the stale interval."""
    import os

    from .hostile import forge_entry

    monkeypatch.setenv("NOTNETS_STALE_MS", "500")
    forge_entry(pool_path, host=0, slot=0, name="t", heartbeat_ms=123, pid=os.getpid())
    start = time.monotonic()
    serve()
    assert time.monotonic() - start < 2.0
    with notnets_rpc.insecure_channel("notnets:t", pool=pool_path) as ch:
        assert ch.unary_unary("/test.T/Echo")(b"mine", timeout=5) == b"mine"


def _call_bodies():
    from hypothesis import strategies as st

    method = st.sampled_from([b"/test.T/Echo", b"/test.T/Sum", b"/test.T/Count", b"/nope.N/X", b"\xff\xfe", b""])
    metadata = st.one_of(st.just(b""), st.binary(max_size=40),
                         st.just(F.encode_metadata((("k", "v"), ("b-bin", b"\x00")))))
    head = st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
    well_formed = st.builds(lambda t, m, md, msg: b"".join(F.call_parts(m, t % 10**7, md, msg)),
                            st.integers(0, 2**64 - 1), method, metadata, st.one_of(st.none(), st.binary(max_size=64)))
    lying = st.builds(lambda h, rest: F.CALL_HEAD.pack(*h) + rest, head, st.binary(max_size=64))
    return st.one_of(well_formed, lying, st.binary(max_size=40))


def test_any_call_frame_gets_a_status_or_costs_its_channel(serve, pool_path):
    """CALL frames of every shape (well formed, lying lengths, garbage), any flags: the
    server parses them with frames.parse_call; each ends with a STATUS for its call or
    the channel is rejected, and the server serves on."""
    from hypothesis import HealthCheck, given, settings, strategies as st

    from notnets_rpc.wire import layout as L

    serve()

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(_call_bodies(), st.sampled_from([0, F.F_HAS_MESSAGE, F.F_HAS_MESSAGE | F.F_END_STREAM, 0xFF]))
    def check(body, flags):
        raw = RawChannel(pool_path, "t")
        try:
            assert raw.write(F.CALL, flags, 7, 0, body)
            if not flags & F.F_END_STREAM:  # a call still open for requests waits for them: close it
                assert raw.write(F.HALF_CLOSE, 0, 7, 0, b"")
            end = time.monotonic() + 5
            while True:
                if any(f[0] == F.STATUS and f[2] == 7 for f in raw.read_all()):
                    break
                _, verdict = L.unpack_state(raw.mem.load(raw.ctl + L.CH_ACCEPT))
                if verdict == L.ACC_REJECTED:
                    break
                assert time.monotonic() < end, f"no status and no verdict for CALL {body!r} flags {flags:#x}"
                raw.beat()
                time.sleep(0.002)
        finally:
            raw.close()

    check()
    with notnets_rpc.insecure_channel("notnets:t", pool=pool_path) as ch:
        assert ch.unary_unary("/test.T/Echo")(b"still serving", timeout=5) == b"still serving"


@pytest.mark.parametrize("flags", [F.F_HAS_MESSAGE | F.F_END_STREAM, 0], ids=["unary-fast-path", "other"])
@pytest.mark.parametrize("size", [0, 3, F.CALL_HEAD.size - 1])
def test_a_call_body_shorter_than_its_header_is_rejected_as_parse_call_says(serve, pool_path, caplog, flags, size):
    """The unary fast path reads the CALL header itself: a short body ends the channel
    with what frames.parse_call says of it, as every other CALL does."""
    from notnets_rpc.wire import layout as L

    serve()
    raw = RawChannel(pool_path, "t")
    try:
        with caplog.at_level("WARNING", logger="notnets_rpc"):
            assert raw.write(F.CALL, flags, 7, 0, b"\x01" * size)
            end = time.monotonic() + 5
            while L.unpack_state(raw.mem.load(raw.ctl + L.CH_ACCEPT))[1] != L.ACC_REJECTED:
                assert time.monotonic() < end, "the channel of a short CALL was not rejected"
                time.sleep(0.002)
        expected = f"dropping channel host0/{raw.slot}: CALL: body shorter than its header"
        assert any(r.getMessage() == expected for r in caplog.records), [r.getMessage() for r in caplog.records]
    finally:
        raw.close()
    with notnets_rpc.insecure_channel("notnets:t", pool=pool_path) as ch:
        assert ch.unary_unary("/test.T/Echo")(b"still serving", timeout=5) == b"still serving"
