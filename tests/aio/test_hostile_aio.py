"""A broken peer costs only its own channel when the aio server's event loop reads the
rings (the loop runs the sync server's checks): the server serves on."""

from __future__ import annotations

import asyncio
import time

import notnets_rpc.aio
from notnets_rpc.wire import frames as F
from notnets_rpc.wire import layout as L

from rpc.hostile import RawChannel

from .service import Req, echo_pb2_grpc


async def _calls(stub, n: int):
    return [(await asyncio.wait_for(stub.Unary(Req(payload=b"0")), 10)).payload for _ in range(n)]


async def _garbage_between_calls(pool: str):
    async with notnets_rpc.aio.insecure_channel("notnets:slow", pool=pool) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        before = await _calls(stub, 20)  # the server's loop reads the rings from now on
        raw = RawChannel(pool, "slow")
        await _calls(stub, 5)
        raw.write(F.CALL, F.F_HAS_MESSAGE | F.F_END_STREAM, 7, 0, b"\x01\x02")  # shorter than a CALL's header
        after = await _calls(stub, 20)
        verdict = None
        end = time.monotonic() + 5
        while time.monotonic() < end:
            verdict = L.unpack_state(raw.mem.load(raw.ctl + L.CH_ACCEPT))[1]
            if verdict != L.ACC_ACCEPTED:
                break
            await asyncio.sleep(0.01)
        return before, after, verdict


def test_a_malformed_call_drops_only_its_channel(slow_server):
    before, after, verdict = asyncio.run(asyncio.wait_for(_garbage_between_calls(slow_server), 30))
    assert before == after[:20] == [b"0"] * 20
    assert verdict == L.ACC_REJECTED
