"""Waiting on the pool never blocks the event loop: a watchdog task keeps its schedule
while calls wait for a slow server in another process."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

import notnets_rpc.aio

from .service import Req, echo_pb2_grpc
from .watchdog import Watchdog

SLOW = 2.0      # seconds each slow call waits on the server
CALLS = 40      # more than the channel's waiter threads: the pump serves the rest
TICK = 0.005
MAX_LAG = 0.5   # a loop that waited on the pool would stand still for SLOW (here a loaded 2-CPU machine stalled 0.49 s once)


async def _watch_while_waiting(pool: str):
    async with notnets_rpc.aio.insecure_channel("notnets:slow", pool=pool) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        await stub.Unary(Req(payload=b"0"))  # connected: calls start from the loop itself
        dog = Watchdog(TICK)
        started = time.monotonic()
        slow = [stub.Unary(Req(payload=str(SLOW).encode())) for _ in range(CALLS)]
        late = stub.Unary(Req(payload=str(SLOW).encode()), timeout=SLOW / 4)
        replies = await asyncio.gather(*slow)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await late
        waited = time.monotonic() - started
        lags = await dog.stop()
    return [r.payload for r in replies], info.value.code(), waited, lags


def test_a_watchdog_keeps_its_schedule_while_calls_wait(slow_server):
    payloads, late_code, waited, lags = asyncio.run(asyncio.wait_for(_watch_while_waiting(slow_server), 30))
    assert payloads == [str(SLOW).encode()] * CALLS
    assert late_code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert waited >= SLOW
    assert len(lags) >= waited / (TICK + MAX_LAG)
    assert max(lags) < MAX_LAG, f"the loop stood still for {max(lags):.3f} s while calls waited"
