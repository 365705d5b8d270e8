"""A broken or malicious server costs an aio client's fast-path calls a clear status, never
the client's event loop: an answer over the client's limit is RESOURCE_EXHAUSTED (and the
next call goes on), a frame that breaks the response ring is UNAVAILABLE, and a watchdog
task keeps its schedule meanwhile."""

from __future__ import annotations

import asyncio

import grpc

import notnets_rpc.aio
from notnets_rpc.aio import calls as C
from notnets_rpc.wire import frames as F

from rpc.hostile import RawServer

from .watchdog import Watchdog

TICK = 0.005
MAX_LAG = 0.5  # as tests/aio/test_loop_free.py


async def _answer(raw: RawServer, body: bytes, kind: int = F.STATUS, flags: int = F.F_BARE) -> None:
    """(off the loop) wait for the next CALL and write one frame for it."""
    def answer() -> None:
        (cid,) = raw.calls(1)
        assert raw.write(kind, flags, cid, 0, body)
    await asyncio.to_thread(answer)


async def _against(raw: RawServer, pool: str):
    accepting = asyncio.ensure_future(asyncio.to_thread(raw.accept))
    async with notnets_rpc.aio.insecure_channel("notnets:raw", pool=pool,
                                               options=[("grpc.max_receive_message_length", 1000)]) as channel:
        echo = channel.unary_unary("/t.T/Echo")
        first = echo(b"a")
        await accepting
        await _answer(raw, b"a")
        out = [await first]
        dog = Watchdog(TICK)
        calls = []
        for body, kind in ((b"x" * 1001, F.STATUS), (b"ok", F.STATUS), (b"junk", 0x7E)):
            call = echo(b"b")
            calls.append(call)
            await _answer(raw, body, kind)
            try:
                out.append(await asyncio.wait_for(call, 10))
            except grpc.aio.AioRpcError as exc:
                out.append((exc.code(), exc.details()))
        lags = await dog.stop()
    return out, [type(c) is C.FastUnaryCall for c in calls], lags


def test_a_hostile_server_costs_only_its_calls(pool_path):
    raw = RawServer(pool_path, "raw")
    try:
        out, fast, lags = asyncio.run(asyncio.wait_for(_against(raw, pool_path), 60))
    finally:
        raw.close()
    assert fast == [True, True, True]
    assert out[:3] == [b"a", (grpc.StatusCode.RESOURCE_EXHAUSTED, "Received message larger than max (1001 vs. 1000)"),
                       b"ok"]
    code, details = out[3]
    assert code is grpc.StatusCode.UNAVAILABLE and "corrupted response ring" in details, details
    assert lags and max(lags) < MAX_LAG, f"the loop stood still for {max(lags):.3f} s"
