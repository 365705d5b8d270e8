"""Requests larger than a ring holds at once, to a server on the same event loop: writing
them waits for ring room, which only the server (this loop) can make, so such calls
start on a thread (``aio.channel.fits_at_once``) and the loop stays free to read."""

from __future__ import annotations

import asyncio

import notnets_rpc.aio

from .service import Req, add_service, echo_pb2_grpc

SIZES = (100, 300_000, 1_000_000)  # a 32 MiB pool's request ring holds ~124 KiB


async def _echo_sizes(pool: str):
    server = notnets_rpc.aio.server(pool=pool)
    add_service(server)
    server.add_endpoint("echo")
    await server.start()
    try:
        async with notnets_rpc.aio.insecure_channel("notnets:echo", pool=pool) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            await stub.Unary(Req(payload=b"echo"))  # connected: small calls start from the loop
            calls = [stub.Unary(Req(payload=b"x" * n), timeout=20) for n in SIZES]
            return [len((await call).payload) for call in calls]
    finally:
        await server.stop(0)


def test_large_requests_to_a_server_on_the_same_loop(pool_path):
    assert asyncio.run(asyncio.wait_for(_echo_sizes(pool_path), 30)) == [1, 1, 1]
