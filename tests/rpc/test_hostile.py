"""Broken and malicious peers: each costs its own calls a status, never the server,
never other clients (docs/rpc.md, "Concurrency" and "Untrusted memory")."""

from __future__ import annotations

import time

import grpc
import pytest

import notnets_rpc
from notnets_rpc.wire import frames as F

from . import load
from .hostile import RawChannel

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
