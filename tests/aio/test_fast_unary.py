"""The client's unary fast path (a connected channel, a small request):
calls that nobody awaits still end, report and call back as grpc.aio's do, and the fast
path is the one taken (it must not fall back silently)."""

from __future__ import annotations

import asyncio

import grpc

from notnets_rpc.aio import calls as C

from .service import Req, echo_pb2_grpc, outcome, over_pool, until


async def _not_awaited(server, channel):
    stub = echo_pb2_grpc.EchoStub(channel)
    await stub.Unary(Req(payload=b"echo"))  # connected: the calls below take the fast path
    asked = stub.Unary(Req(payload=b"echo"))
    await until(asked.done)  # done() alone must see the answer come
    called = stub.Unary(Req(payload=b"echo"))
    seen = []
    called.add_done_callback(lambda call: seen.append(call.done()))
    await until(lambda: bool(seen))
    late = stub.Unary(Req(payload=b"sleep:5"), timeout=0.2)
    code = await late.code()  # never awaited itself: its deadline still ends it
    cancelled = stub.Unary(Req(payload=b"sleep:5"))
    cancelled.cancel()
    try:
        await cancelled
        raised = "nothing"
    except asyncio.CancelledError:
        raised = "CancelledError"
    return [await outcome(asked, (await asked).payload), seen, await outcome(called, (await called).payload),
            code.name, raised, (await cancelled.code()).name]


def test_calls_nobody_awaits_end_as_in_grpc_aio(both):
    results = both(_not_awaited)
    assert results["pool"] == results["tcp"]
    assert results["pool"][1:] == [[True], {"code": "OK", "details": "", "initial": [], "trailing": [],
                                            "responses": b"echo"}, "DEADLINE_EXCEEDED", "CancelledError",
                                   "CANCELLED"]


async def _kinds(server, channel):
    stub = echo_pb2_grpc.EchoStub(channel)
    kinds = []
    for kw in ({}, {}, {"timeout": 5}, {"metadata": (("k", "v"),)}, {"wait_for_ready": True}):
        call = stub.Unary(Req(payload=b"echo"), **kw)
        assert (await call).payload == b"echo"
        kinds.append(type(call) is C.FastUnaryCall)
    big = stub.Unary(Req(payload=b"x" * 20000))
    assert (await big).payload == b"?"
    kinds.append(type(big) is C.FastUnaryCall)
    return kinds


def test_connected_calls_without_metadata_take_the_fast_path(both):
    kinds = both(_kinds)["pool"]
    # the first call connects (on a thread); wait_for_ready and a request over
    # LOOP_START_MAX take the general path
    assert kinds == [False, True, True, True, False, False]


def test_calls_that_cannot_be_sent_fail_as_in_the_sync_api(pool_path):
    """INTERNAL, as grpcio's sync channel says, for a request that does not serialize
    (grpc.aio 1.x logs the error and its call returns None: not copied) and for invalid
    metadata, on a connected channel (the fast path leaves both to the general path)."""

    async def program(server, channel):
        stub = echo_pb2_grpc.EchoStub(channel)
        bad = channel.unary_unary("/echo.Echo/Unary", request_serializer=lambda r: 1 / 0,
                                  response_deserializer=Req.FromString)
        await stub.Unary(Req(payload=b"echo"))
        failures = []
        for call in (lambda: bad(Req(payload=b"echo")), lambda: stub.Unary(Req(), metadata=(("Bad Key", "v"),))):
            try:
                await call()
            except grpc.aio.AioRpcError as exc:
                failures.append((exc.code().name, exc.details()))
        return failures

    result = asyncio.run(asyncio.wait_for(over_pool(pool_path, program), 30))
    assert result == [("INTERNAL", "Exception serializing request!"), ("INTERNAL", "Invalid metadata")]
