"""grpc.aio client interceptors over ``notnets_rpc.aio`` calls.

An intercepted call runs its interceptor chain as a task and answers for the call the
chain returns (or for the response an interceptor returned in place of a call), as
grpc.aio's intercepted calls do.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, Callable, Optional

import grpc
import grpc.aio
from grpc.aio import EOF, Metadata

INTERCEPTOR = {
    "unary_unary": (grpc.aio.UnaryUnaryClientInterceptor, "intercept_unary_unary"),
    "unary_stream": (grpc.aio.UnaryStreamClientInterceptor, "intercept_unary_stream"),
    "stream_unary": (grpc.aio.StreamUnaryClientInterceptor, "intercept_stream_unary"),
    "stream_stream": (grpc.aio.StreamStreamClientInterceptor, "intercept_stream_stream"),
}


def intercepted(channel: Any, shape: str, method: str, serializer: Any, deserializer: Any, plain: Any) -> Any:
    kind, hook = INTERCEPTOR[shape]
    chain = [i for i in channel._interceptors if isinstance(i, kind)]
    if not chain:
        return plain
    return _InterceptingMultiCallable(channel, shape, method, serializer, deserializer, plain, chain, hook)


class _InterceptingMultiCallable:
    def __init__(self, channel: Any, shape: str, method: str, serializer: Any, deserializer: Any, plain: Any,
                 chain: list, hook: str) -> None:
        self._channel = channel
        self._shape = shape
        self._method = method
        self._serializer = serializer
        self._deserializer = deserializer
        self._plain = plain
        self._chain = chain
        self._hook = hook

    def __call__(self, request: Any = None, timeout: Optional[float] = None, metadata: Any = None,
                 credentials: Any = None, wait_for_ready: Optional[bool] = None, compression: Any = None) -> Any:
        method = self._method.encode() if isinstance(self._method, str) else self._method
        md = None if metadata is None else (metadata if isinstance(metadata, Metadata)
                                            else Metadata.from_tuple(tuple(metadata)))
        details = grpc.aio.ClientCallDetails(method, timeout, md, credentials, wait_for_ready)
        loop = asyncio.get_running_loop()
        return InterceptedCall(loop, self._run(0, details, request), self._shape.endswith("unary"), timeout)

    async def _run(self, i: int, details: Any, request: Any) -> Any:
        if i == len(self._chain):
            method = details.method.decode() if isinstance(details.method, bytes) else details.method
            mc = self._plain
            if method != self._method:
                mc = self._channel._multicallable(type(self._plain), self._shape, method, self._serializer,
                                                  self._deserializer)
            return mc(request, timeout=details.timeout, metadata=details.metadata, credentials=details.credentials,
                      wait_for_ready=details.wait_for_ready)
        continuation = functools.partial(self._run, i + 1)
        return await getattr(self._chain[i], self._hook)(continuation, details, request)


class _Answered:
    """An interceptor answered without a call: a response, or an async iterator of them."""

    def __init__(self, value: Any) -> None:
        self._value = value

    def __await__(self):
        if False:
            yield
        return self._value

    async def read(self) -> Any:
        try:
            return await self._value.__anext__()
        except StopAsyncIteration:
            return EOF

    def __aiter__(self):
        return self._value.__aiter__()

    def done(self) -> bool:
        return True

    def cancel(self) -> bool:
        return False

    def cancelled(self) -> bool:
        return False

    def add_done_callback(self, cb: Callable) -> None:
        cb(self)

    async def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.OK

    async def details(self) -> str:
        return ""

    async def initial_metadata(self) -> Metadata:
        return Metadata()

    async def trailing_metadata(self) -> Metadata:
        return Metadata()

    async def wait_for_connection(self) -> None:
        return None


class InterceptedCall(grpc.aio.Call):
    """Every shape's methods; the multicallable's shape decides which a user calls."""

    def __init__(self, loop: asyncio.AbstractEventLoop, chain: Any, unary_response: bool,
                 timeout: Optional[float]) -> None:
        self._loop = loop
        self._task = loop.create_task(chain)
        self._unary = unary_response
        self._deadline = None if timeout is None else loop.time() + timeout

    async def _inner(self) -> Any:
        result = await asyncio.shield(self._task)
        if isinstance(result, grpc.aio.Call) or isinstance(result, InterceptedCall):
            return result
        return _Answered(result)

    def _settled_inner(self) -> Any:
        if not self._task.done() or self._task.cancelled() or self._task.exception() is not None:
            return None
        result = self._task.result()
        return result if isinstance(result, (grpc.aio.Call, InterceptedCall)) else _Answered(result)

    def __await__(self):
        try:
            inner = yield from self._inner().__await__()
        except asyncio.CancelledError:
            self.cancel()
            raise
        return (yield from inner.__await__())

    def __aiter__(self):
        return self._responses()

    async def _responses(self):
        inner = await self._inner()
        async for item in inner:
            yield item

    async def read(self) -> Any:
        return await (await self._inner()).read()

    async def write(self, request: Any) -> None:
        await (await self._inner()).write(request)

    async def done_writing(self) -> None:
        await (await self._inner()).done_writing()

    def cancel(self) -> bool:
        if not self._task.done():
            return self._task.cancel()
        inner = self._settled_inner()
        return inner.cancel() if inner is not None else False

    def cancelled(self) -> bool:
        if self._task.cancelled():
            return True
        inner = self._settled_inner()
        return inner.cancelled() if inner is not None else False

    def done(self) -> bool:
        if not self._task.done():
            return False
        inner = self._settled_inner()
        return inner.done() if inner is not None else True

    def time_remaining(self) -> Optional[float]:
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - self._loop.time())

    def add_done_callback(self, callback: Callable) -> None:
        def chained(task: asyncio.Task) -> None:
            inner = self._settled_inner()
            if inner is None:
                callback(self)
            else:
                inner.add_done_callback(lambda _inner: callback(self))
        self._task.add_done_callback(chained)

    async def _status(self, what: str) -> Any:
        try:
            inner = await self._inner()
        except grpc.aio.AioRpcError as exc:
            return getattr(exc, what)()
        except asyncio.CancelledError:
            return {"code": grpc.StatusCode.CANCELLED, "details": "Locally cancelled by application!"}.get(
                what, Metadata())
        return await getattr(inner, what)()

    async def code(self) -> grpc.StatusCode:
        return await self._status("code")

    async def details(self) -> str:
        return await self._status("details")

    async def initial_metadata(self) -> Metadata:
        return await self._status("initial_metadata")

    async def trailing_metadata(self) -> Metadata:
        return await self._status("trailing_metadata")

    async def wait_for_connection(self) -> None:
        await (await self._inner()).wait_for_connection()
