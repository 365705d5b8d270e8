"""An async Echo servicer (generated code from notnets_bench/echo) with one behaviour per
request payload, and the client scenarios run against it over grpc.aio/TCP and over
the pool: the tests compare what both transports report."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any, Callable, Dict, List

import grpc
import grpc.aio

import notnets_rpc.aio

from notnets_bench.protos import REPO, load_generated

echo_pb2, echo_pb2_grpc = load_generated(REPO / "notnets_bench" / "echo", "echo")
Req, Rep = echo_pb2.EchoRequest, echo_pb2.EchoReply

EVENTS: List[str] = []  # what handlers saw (cancellations, done callbacks), in this process
SEEN = contextvars.ContextVar("SEEN", default="unset")  # set by handlers: each RPC must start with it unset


class AsyncEcho(echo_pb2_grpc.EchoServicer):
    async def Unary(self, request, context):
        what = request.payload.decode()
        if what == "echo":
            return Rep(payload=request.payload)
        if what.startswith("abort:"):
            await context.abort(grpc.StatusCode[what[6:]], "denied: é ✓", trailing_metadata=(("why", "policy"),))
        if what == "raise":
            raise ValueError("boom")
        if what == "set-code":
            context.set_code(grpc.StatusCode.NOT_FOUND)
            context.set_details("nothing here: ü")
            return Rep()
        if what == "metadata":
            md = dict(context.invocation_metadata())
            await context.send_initial_metadata((("initial-key", "initial"), ("initial-bin", b"\x00\x01")))
            context.set_trailing_metadata((("echo-text", md.get("text", "")), ("echo-bin", md.get("blob-bin", b""))))
            return Rep(payload=b"ok")
        if what.startswith("sleep:"):
            context.add_done_callback(lambda ctx: EVENTS.append(f"{what}:done-callback"))
            EVENTS.append(f"{what}:started")
            try:
                await asyncio.sleep(float(what[6:]))
            except asyncio.CancelledError:
                EVENTS.append(f"{what}:cancelled")
                EVENTS.append(f"{what}:context.cancelled()={context.cancelled()} done()={context.done()}")
                raise
            return Rep(payload=b"slept")
        if what in ("in-task", "in-task-waits"):  # a handler runs as a task of its own, from its first step
            task, before = asyncio.current_task(), SEEN.get()
            SEEN.set(what)
            async with asyncio.timeout(5):  # (needs the current task)
                if what == "in-task-waits":
                    await asyncio.sleep(0.01)
            same = task is not None and task is asyncio.current_task()
            return Rep(payload=f"same task {same}, saw {before}, sees {SEEN.get()}".encode())
        if what == "self-cancel":  # cancels its own task in its first step, then waits
            asyncio.current_task().cancel()
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                return Rep(payload=b"cancelled at its first wait")
            return Rep(payload=b"not cancelled")
        if what == "done-now":
            context.add_done_callback(lambda ctx: EVENTS.append(f"done-now: done()={ctx.done()} "
                                                                f"cancelled()={ctx.cancelled()}"))
            return Rep(payload=b"done")
        if what == "remaining":
            remaining = context.time_remaining()
            return Rep(payload=b"none" if remaining is None else b"some" if 0 < remaining <= 30 else b"bad")
        if what == "bad-response":
            return b"not a message"
        return Rep(payload=b"?")

    async def ServerStream(self, request, context):
        what = request.payload.decode()
        for i in range(request.count):
            if what == "abort-after-2" and i == 2:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "enough")
            if what == "raise-after-1" and i == 1:
                raise RuntimeError("stream broke")
            yield Rep(payload=f"{what}-{i}".encode())
        if what == "slow":
            EVENTS.append("slow-stream:started")
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                EVENTS.append("slow-stream:cancelled")
                raise

    async def ClientStream(self, request_iterator, context):
        parts = []
        async for request in request_iterator:
            if request.payload == b"abort":
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad part")
            parts.append(request.payload)
        return Rep(payload=b"+".join(parts))

    async def Bidi(self, request_iterator, context):
        # read()/write() style, as grpc.aio allows: no async generator
        await context.send_initial_metadata((("bidi", "yes"),))
        while True:
            request = await context.read()
            if request is grpc.aio.EOF:
                break
            if request.payload == b"stop":
                context.set_code(grpc.StatusCode.ABORTED)
                context.set_details("stopped by request")
                return
            await context.write(Rep(payload=request.payload.upper()))


def add_service(server: Any) -> None:
    echo_pb2_grpc.add_EchoServicer_to_server(AsyncEcho(), server)


async def over_pool(pool: str, program: Callable[[Any, Any], Any]) -> Any:
    """``await program(server, channel)`` with this service on a notnets_rpc.aio server
    and a channel to it, both on this loop."""
    server = notnets_rpc.aio.server(pool=pool)
    add_service(server)
    server.add_endpoint("echo")
    await server.start()
    try:
        async with notnets_rpc.aio.insecure_channel("notnets:echo", pool=pool) as channel:
            return await program(server, channel)
    finally:
        await server.stop(0)


async def outcome(call: Any, responses: Any = None) -> Dict[str, Any]:
    """What a finished call reports, in plain data."""
    return {
        "code": (await call.code()).name,
        "details": await call.details(),
        "initial": sorted(tuple(await call.initial_metadata())),
        "trailing": sorted(tuple(await call.trailing_metadata())),
        "responses": responses,
    }


async def unary(stub: Any, payload: bytes, **kw: Any) -> Dict[str, Any]:
    call = stub.Unary(Req(payload=payload), **kw)
    try:
        response = (await call).payload
    except grpc.aio.AioRpcError as exc:
        response = ("error", exc.code().name, exc.details(), sorted(tuple(exc.trailing_metadata())))
    return await outcome(call, response)


async def scenario(channel: Any) -> Dict[str, Any]:
    """Every behaviour once, through generated stubs; plain data to compare."""
    stub = echo_pb2_grpc.EchoStub(channel)
    out: Dict[str, Any] = {}
    for payload in (b"echo", b"abort:PERMISSION_DENIED", b"raise", b"set-code", b"remaining",
                    b"bad-response", b"in-task", b"in-task-waits", b"self-cancel"):
        out[payload.decode()] = await unary(stub, payload)
    out["remaining-with-deadline"] = await unary(stub, b"remaining", timeout=20)
    out["metadata"] = await unary(stub, b"metadata", metadata=(("text", "hello"), ("blob-bin", b"\xff\x00")))
    out["deadline"] = await unary(stub, b"sleep:5", timeout=0.3)
    out["no-such-method"] = await unary(_Missing(channel), b"x")

    for payload, count in ((b"many", 5), (b"abort-after-2", 5), (b"raise-after-1", 3)):
        call = stub.ServerStream(Req(payload=payload, count=count))
        got = []
        try:
            async for reply in call:
                got.append(reply.payload)
        except grpc.aio.AioRpcError as exc:
            got.append(("error", exc.code().name, exc.details()))
        out[f"server-stream-{payload.decode()}"] = await outcome(call, got)

    call = stub.ServerStream(Req(payload=b"read", count=2))
    got = [await call.read(), await call.read(), await call.read()]
    out["server-stream-read"] = await outcome(call, [r if r is grpc.aio.EOF else r.payload for r in got]
                                              + [got[-1] is grpc.aio.EOF])

    async def parts(*items: bytes):
        for item in items:
            await asyncio.sleep(0)
            yield Req(payload=item)

    call = stub.ClientStream(parts(b"a", b"b", b"c"))
    out["client-stream-async-iter"] = await outcome(call, (await call).payload)
    call = stub.ClientStream(iter([Req(payload=b"x"), Req(payload=b"y")]))
    out["client-stream-sync-iter"] = await outcome(call, (await call).payload)
    call = stub.ClientStream(parts(b"a", b"abort", b"c"))
    try:
        await call
        got = "no error"
    except grpc.aio.AioRpcError as exc:
        got = (exc.code().name, exc.details())
    out["client-stream-abort"] = await outcome(call, got)
    call = stub.ClientStream()
    for item in (b"w1", b"w2"):
        await call.write(Req(payload=item))
    await call.done_writing()
    out["client-stream-write"] = await outcome(call, (await call).payload)

    call = stub.Bidi()
    got = []
    for item in (b"one", b"two"):
        await call.write(Req(payload=item))
        got.append((await call.read()).payload)
    await call.done_writing()
    got.append(await call.read() is grpc.aio.EOF)
    out["bidi-write-read"] = await outcome(call, got)
    call = stub.Bidi(parts(b"p", b"q", b"stop", b"r"))
    got = [reply.payload async for reply in _until_error(call)]
    out["bidi-stop"] = await outcome(call, got)
    return out


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait (polling the loop, never blocking it) until ``predicate()``; fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {predicate.__doc__ or predicate}; events {EVENTS}")
        await asyncio.sleep(0.005)


async def _until_error(call: Any):
    try:
        async for reply in call:
            yield reply
    except grpc.aio.AioRpcError:
        return


class _Missing:
    """A stub for a method the server does not have."""

    def __init__(self, channel: Any) -> None:
        self.Unary = channel.unary_unary("/echo.Echo/Missing", request_serializer=Req.SerializeToString,
                                         response_deserializer=Rep.FromString)
