"""notnets_rpc.aio against grpc.aio: the same program over TCP (real grpc.aio) and over
the pool must report the same codes, details, metadata and responses."""

from __future__ import annotations

import asyncio
import time

import grpc
import grpc.aio
import pytest

from .service import EVENTS, Rep, Req, echo_pb2_grpc, scenario, until


def test_every_behaviour_matches_grpc_aio(both):
    results = both(lambda server, channel: scenario(channel))
    tcp, pool = results["tcp"], results["pool"]
    assert pool == tcp
    # and what grpc.aio says, so that a change on both sides is noticed too
    assert pool["raise"]["details"] == "Unexpected <class 'ValueError'>: boom"
    assert pool["abort:PERMISSION_DENIED"]["trailing"] == [("why", "policy")]
    assert pool["metadata"]["initial"] == [("initial-bin", b"\x00\x01"), ("initial-key", "initial")]
    assert pool["deadline"]["code"] == "DEADLINE_EXCEEDED"
    assert pool["bidi-write-read"]["responses"] == [b"ONE", b"TWO", True]
    assert pool["in-task"]["responses"] == b"same task True, saw unset, sees in-task"
    assert pool["in-task-waits"]["responses"] == b"same task True, saw unset, sees in-task-waits"
    assert pool["self-cancel"]["responses"] == b"cancelled at its first wait"


async def _done_callback_of_an_answer(server, channel):
    EVENTS.clear()
    reply = await echo_pb2_grpc.EchoStub(channel).Unary(Req(payload=b"done-now"))
    await until(lambda: bool(EVENTS))
    return [reply.payload, EVENTS[:]]


def test_done_callbacks_of_a_handler_that_answers_at_once(both):
    results = both(_done_callback_of_an_answer)
    assert results["pool"] == results["tcp"] == [b"done", ["done-now: done()=True cancelled()=False"]]


async def _cancel_while_running(server, channel):
    EVENTS.clear()
    stub = echo_pb2_grpc.EchoStub(channel)
    call = stub.Unary(Req(payload=b"sleep:30"))
    await until(lambda: "sleep:30:started" in EVENTS)
    assert call.cancel() and call.done() and not call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await until(lambda: "sleep:30:cancelled" in EVENTS and "sleep:30:done-callback" in EVENTS)
    seen = [e for e in EVENTS if e.startswith("sleep:30:context")]
    return [(await call.code()).name, await call.details(), call.cancelled(), seen]


def test_client_cancel_cancels_the_server_task(both):
    results = both(_cancel_while_running)
    assert results["pool"] == results["tcp"]
    assert results["pool"][:3] == ["CANCELLED", "Locally cancelled by application!", True]


async def _task_cancelled(server, channel):
    EVENTS.clear()
    stub = echo_pb2_grpc.EchoStub(channel)

    async def caller():
        return await stub.Unary(Req(payload=b"sleep:20"))

    task = asyncio.ensure_future(caller())
    await until(lambda: "sleep:20:started" in EVENTS)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await until(lambda: "sleep:20:cancelled" in EVENTS)
    return True


def test_cancelling_the_awaiting_task_cancels_the_rpc(both):
    assert both(_task_cancelled) == {"tcp": True, "pool": True}


async def _stream_cancelled(server, channel):
    EVENTS.clear()
    call = echo_pb2_grpc.EchoStub(channel).ServerStream(Req(payload=b"slow", count=1))
    first = await call.read()
    await until(lambda: "slow-stream:started" in EVENTS)
    call.cancel()
    await until(lambda: "slow-stream:cancelled" in EVENTS)
    return [first.payload, (await call.code()).name]


def test_cancelling_a_response_stream_reaches_the_async_generator(both):
    results = both(_stream_cancelled)
    assert results["pool"] == results["tcp"] == [b"slow-0", "CANCELLED"]


async def _loop_keeps_running(server, channel):
    """A ticker must keep ticking while calls wait on the transport.

    Counted, not timed: the ticker ticks every 10 ms, so while a 0.6 s call waits a free
    loop ticks dozens of times, and a loop that the wait blocks ticks at most once or twice
    (a loaded machine stretches each tick, it does not stop them).
    """
    ticks = 0
    stop = asyncio.Event()

    async def ticker():
        nonlocal ticks
        while not stop.is_set():
            await asyncio.sleep(0.01)
            ticks += 1

    async def ticks_while(call):
        before = ticks
        reply = await call
        return reply, ticks - before

    stub = echo_pb2_grpc.EchoStub(channel)
    await stub.Unary(Req(payload=b"echo"))  # connected: calls now start from the loop itself
    tick = asyncio.ensure_future(ticker())
    replies = await asyncio.gather(ticks_while(stub.Unary(Req(payload=b"sleep:0.6"))), stub.Unary(Req(payload=b"echo")),
                                   _collect(stub.ServerStream(Req(payload=b"s", count=3))))
    stop.set()
    await tick
    (slept, ticked) = replies[0]
    return slept.payload, len(replies[2]), ticked


async def _collect(call):
    return [r async for r in call]


def test_waiting_on_a_call_never_blocks_the_loop(both):
    results = both(_loop_keeps_running)
    for transport, (slept, streamed, ticked) in results.items():
        assert (slept, streamed) == (b"slept", 3), transport
        assert ticked >= 10, f"{transport}: the loop ticked only {ticked} times while a 0.6 s call waited"


async def _stop_with_grace(server, channel):
    EVENTS.clear()
    stub = echo_pb2_grpc.EchoStub(channel)
    short = stub.Unary(Req(payload=b"sleep:0.3"))
    long = stub.Unary(Req(payload=b"sleep:30"))
    await until(lambda: "sleep:0.3:started" in EVENTS and "sleep:30:started" in EVENTS)
    waiter = asyncio.ensure_future(server.wait_for_termination())
    await server.stop(1.0)
    timed_out = await asyncio.wait_for(waiter, 5)
    short_result = (await short).payload
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await long
    await until(lambda: "sleep:30:cancelled" in EVENTS)
    return [short_result, info.value.code().name, timed_out]


def test_stop_with_grace_finishes_short_calls_and_cancels_the_rest(both):
    results = both(_stop_with_grace)
    assert results["pool"][0] == results["tcp"][0] == b"slept"
    assert results["pool"][2] is results["tcp"][2] is False  # wait_for_termination: terminated, not timed out
    # grpc.aio says UNAVAILABLE for calls cut by shutdown; so must the pool
    assert results["pool"][1] == results["tcp"][1], results


class _AddMetadata(grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, client_call_details, request):
        details = client_call_details._replace(metadata=grpc.aio.Metadata(("text", "from-interceptor")))
        EVENTS.append(f"client-interceptor:{client_call_details.method!r}")
        return await continuation(details, request)


class _Gate(grpc.aio.ServerInterceptor):
    async def intercept_service(self, continuation, handler_call_details):
        md = dict(handler_call_details.invocation_metadata)
        EVENTS.append(f"server-interceptor:{handler_call_details.method}:{md.get('text')}")
        if md.get("text") == "deny":
            return None  # -> UNIMPLEMENTED
        return await continuation(handler_call_details)


def _gated_server(factory):
    from .service import add_service

    server = factory(interceptors=[_Gate()])
    add_service(server)
    return server


async def _intercepted(server, channel):
    EVENTS.clear()
    stub = echo_pb2_grpc.EchoStub(channel)
    call = stub.Unary(Req(payload=b"metadata"))
    reply = await call
    trailing = dict(await call.trailing_metadata())
    return [reply.payload, trailing["echo-text"], (await call.code()).name, sorted(EVENTS)]


def test_client_and_server_interceptors(both):
    results = both(_intercepted, make_server=_gated_server, interceptors=[_AddMetadata()])
    assert results["pool"] == results["tcp"]
    assert results["pool"][1] == "from-interceptor"
    assert "server-interceptor:/echo.Echo/Unary:from-interceptor" in results["pool"][3]


async def _denied(server, channel):
    stub = echo_pb2_grpc.EchoStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Unary(Req(payload=b"echo"), metadata=(("text", "deny"),))
    return info.value.code().name, info.value.details()


def test_a_server_interceptor_can_refuse(both):
    results = both(_denied, make_server=_gated_server)
    assert results["pool"] == results["tcp"] == ("UNIMPLEMENTED", "Method not found!")


class SyncEcho(echo_pb2_grpc.EchoServicer):
    def Unary(self, request, context):
        context.set_trailing_metadata((("sync", "yes"),))
        return Rep(payload=request.payload[::-1])

    def ServerStream(self, request, context):
        for i in range(request.count):
            yield Rep(payload=bytes([65 + i]))


def _sync_server(factory):
    from concurrent import futures

    server = factory(migration_thread_pool=futures.ThreadPoolExecutor(2))
    echo_pb2_grpc.add_EchoServicer_to_server(SyncEcho(), server)
    return server


async def _sync_handlers(server, channel):
    stub = echo_pb2_grpc.EchoStub(channel)
    call = stub.Unary(Req(payload=b"abc"))
    reply = await call
    stream = [r.payload async for r in stub.ServerStream(Req(count=3))]
    return [reply.payload, tuple(await call.trailing_metadata()), stream]


def test_sync_handlers_in_an_aio_server(both):
    results = both(_sync_handlers, make_server=_sync_server)
    assert results["pool"] == results["tcp"] == [b"cba", (("sync", "yes"),), [b"A", b"B", b"C"]]


async def _many_at_once(server, channel):
    """Hundreds of calls in flight together: each async call on the pool holds a server
    thread and (for a unary response) may hold one of the channel's waiters."""
    stub = echo_pb2_grpc.EchoStub(channel)
    unary = [stub.Unary(Req(payload=b"sleep:0.3")) for _ in range(300)]
    streams = [_collect(stub.ServerStream(Req(payload=b"s", count=5))) for _ in range(40)]
    replies = await asyncio.gather(*unary, *streams)
    return sorted({r.payload for r in replies[:300]}), sorted({len(s) for s in replies[300:]})


def test_hundreds_of_calls_at_once(both):
    results = both(_many_at_once, timeout=60)
    assert results["pool"] == results["tcp"] == ([b"slept"], [5])


async def _closed_under_a_call(server, channel):
    EVENTS.clear()
    call = echo_pb2_grpc.EchoStub(channel).Unary(Req(payload=b"sleep:30"))
    await until(lambda: "sleep:30:started" in EVENTS)
    await channel.close()
    try:
        await call
        outcome = "no error"
    except grpc.aio.AioRpcError as exc:
        outcome = (exc.code().name, exc.details())
    except asyncio.CancelledError:
        outcome = "CancelledError"
    await until(lambda: "sleep:30:cancelled" in EVENTS)
    return outcome, (await call.code()).name, await call.details(), call.cancelled()


def test_closing_the_channel_ends_its_calls(both):
    results = both(_closed_under_a_call)
    assert results["pool"] == results["tcp"]
