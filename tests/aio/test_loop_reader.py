"""The server's loop reads its rings while calls come, and a failure there (a bug of
ours) hands the rings back to a poller thread instead of leaving them unread."""

from __future__ import annotations

import asyncio

import notnets_rpc.aio

from .service import Req, add_service, echo_pb2_grpc


async def _calls_through_a_broken_look(pool: str):
    server = notnets_rpc.aio.server(pool=pool)
    add_service(server)
    server.add_endpoint("echo")
    await server.start()
    sync = server.pool_server
    broken = []
    real = sync.poll_rings

    def poll_rings_once_broken(me):
        if not broken:
            broken.append(me)
            raise RuntimeError("a bug in the loop's look at the rings")
        return real(me)

    sync.poll_rings = poll_rings_once_broken
    try:
        async with notnets_rpc.aio.insecure_channel("notnets:echo", pool=pool) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            replies = [(await asyncio.wait_for(stub.Unary(Req(payload=b"echo")), 10)).payload for _ in range(50)]
        return replies, broken, server._reader.looks
    finally:
        await server.stop(0)


def test_a_failed_look_hands_the_rings_back_and_calls_go_on(pool_path, caplog):
    replies, broken, looks = asyncio.run(_calls_through_a_broken_look(pool_path))
    assert replies == [b"echo"] * 50
    assert broken, "the loop never read the rings"
    assert looks > 1, "the loop did not take the rings again after a poller thread passed them back"
    assert "reading the rings from the event loop failed" in caplog.text
