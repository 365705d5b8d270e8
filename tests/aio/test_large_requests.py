"""Requests larger than a ring holds at once, to a server on the same event loop: writing
them waits for ring room, which only the server (this loop) can make, so such calls
start on a thread (``aio.channel.fits_at_once``) and the loop stays free to read."""

from __future__ import annotations

import asyncio

from .service import Req, echo_pb2_grpc, over_pool

SIZES = (100, 300_000, 1_000_000)  # a 32 MiB pool's request ring holds ~124 KiB


async def _echo_sizes(server, channel):
    stub = echo_pb2_grpc.EchoStub(channel)
    await stub.Unary(Req(payload=b"echo"))  # connected: small calls start from the loop
    calls = [stub.Unary(Req(payload=b"x" * n), timeout=20) for n in SIZES]
    return [len((await call).payload) for call in calls]


def test_large_requests_to_a_server_on_the_same_loop(pool_path):
    assert asyncio.run(asyncio.wait_for(over_pool(pool_path, _echo_sizes), 30)) == [1, 1, 1]
