"""``notnets_rpc.aio`` channels: grpc.aio's channel API over a sync ``notnets_rpc.Channel``.

A call is started from the event loop when the channel is connected (writing the CALL
frame does not wait, unless the request ring is full); while it is not (the first call,
after the server went away, ``wait_for_ready``), calls start on a thread, because
connecting waits for the server to accept.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, Callable, Optional, Sequence

import grpc
import grpc.aio

from . import calls as C
from .bridge import in_thread
from .client_interceptors import intercepted
from .spin import SpinBudget


START_WAIT_S = 5.0  # close() waits this long at most for calls that are still connecting
LOOP_START_MAX = 16384  # bytes: a request message larger than this starts its call on a thread (fits_at_once)


class Channel(grpc.aio.Channel):
    def __init__(self, sync_channel: Any, interceptors: Optional[Sequence[Any]] = None) -> None:
        self._sync = sync_channel
        self._interceptors = list(interceptors or ())
        for i in self._interceptors:
            if not isinstance(i, grpc.aio.ClientInterceptor):
                raise ValueError(f"Interceptor {i} must be a grpc.aio client interceptor")
        self._warm = False  # a call got through: the sync channel is connected, starting does not wait
        self._active: set = set()  # calls not settled yet (for close's grace)
        self._spin = SpinBudget()  # turns a waiting unary call polls before it also yields the CPU

    # -- starting calls ----------------------------------------------------------------------------
    def _start(self, call: C.Call, start: Callable[[], Any], wait_for_ready: Optional[bool],
               request: Any = None) -> None:
        self._active.add(call)
        call._owner = self  # its _settle tells _settled
        if self._warm and not wait_for_ready and fits_at_once(request):
            try:
                sync = start()
            except Exception as exc:
                sync = C._FailedStart(exc)
            call._begin(sync)
            return
        fut = in_thread(call._loop, _started, start)  # a daemon thread: wait_for_ready may wait long
        fut.add_done_callback(functools.partial(self._started, call))

    def _started(self, call: C.Call, fut: "asyncio.Future[Any]") -> None:
        call._begin(fut.result())

    def _settled(self, call: C.Call, code: Optional[grpc.StatusCode]) -> None:
        """A call ended with ``code`` (None: it never started). Connected while calls get
        through; after an UNAVAILABLE the next call may have to reconnect, which waits: it
        starts on a thread again."""
        self._active.discard(call)
        if code is not None:
            self._warm = code is not grpc.StatusCode.UNAVAILABLE

    def _make(self, shape: str, method: str, serializer: Any, deserializer: Any) -> Any:
        return getattr(self._sync, shape)(method, request_serializer=serializer, response_deserializer=deserializer)

    def _multicallable(self, cls: type, shape: str, method: str, serializer: Any, deserializer: Any) -> Any:
        mc = cls(self, self._make(shape, method, serializer, deserializer))
        if not self._interceptors:
            return mc
        return intercepted(self, shape, method, serializer, deserializer, mc)

    # -- grpc.aio.Channel -----------------------------------------------------------------------
    def unary_unary(self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
                    _registered_method: Optional[bool] = False) -> Any:
        return self._multicallable(UnaryUnaryMultiCallable, "unary_unary", method, request_serializer,
                                   response_deserializer)

    def unary_stream(self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
                     _registered_method: Optional[bool] = False) -> Any:
        return self._multicallable(UnaryStreamMultiCallable, "unary_stream", method, request_serializer,
                                   response_deserializer)

    def stream_unary(self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
                     _registered_method: Optional[bool] = False) -> Any:
        return self._multicallable(StreamUnaryMultiCallable, "stream_unary", method, request_serializer,
                                   response_deserializer)

    def stream_stream(self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
                      _registered_method: Optional[bool] = False) -> Any:
        return self._multicallable(StreamStreamMultiCallable, "stream_stream", method, request_serializer,
                                   response_deserializer)

    async def close(self, grace: Optional[float] = None) -> None:
        """Like grpc.aio: calls still running after ``grace`` are cancelled."""
        if grace and self._active:
            waiters = [asyncio.ensure_future(call._finished()) for call in list(self._active)]
            await asyncio.wait(waiters, timeout=grace)
            for w in waiters:
                w.cancel()
        starting = [asyncio.ensure_future(c._until_started()) for c in self._active if c._stage is C.Stage.STARTING]
        if starting:  # a call still starting on a thread is cancelled once it exists, before the close
            await asyncio.wait(starting, timeout=START_WAIT_S)
        for call in list(self._active):
            call.cancel()  # as grpc.aio: "Locally cancelled by application!", CancelledError when awaited
        await in_thread(asyncio.get_running_loop(), self._sync.close)

    async def __aenter__(self) -> "Channel":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close(None)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        if self._warm:
            return grpc.ChannelConnectivity.READY
        if try_to_connect:
            asyncio.get_running_loop().create_task(self.channel_ready())
        return grpc.ChannelConnectivity.IDLE

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        while self.get_state() == last_observed_state:
            await asyncio.sleep(0.01)

    async def channel_ready(self) -> None:
        """Wait (off the loop) until the sync channel connects."""
        loop = asyncio.get_running_loop()
        while not self._warm:
            ready = grpc.channel_ready_future(self._sync)
            try:
                await in_thread(loop, ready.result, 1.0)
                self._warm = True
            except grpc.FutureTimeoutError:
                continue
            finally:
                ready.cancel()


def fits_at_once(request: Any) -> bool:
    """Whether a call with this request message may start from the loop: writing a large
    request may wait for ring room (for the server, perhaps this very loop, to read), so
    it starts on a thread. Sizes are known for bytes and protobuf messages; a request of
    another type starts on a thread too."""
    if request is None:
        return True
    if isinstance(request, (bytes, bytearray, memoryview)):
        return len(request) <= LOOP_START_MAX
    size = getattr(request, "ByteSize", None)
    return size is not None and size() <= LOOP_START_MAX


def _started(start: Callable[[], Any]) -> Any:
    try:
        return start()
    except Exception as exc:
        return C._FailedStart(exc)


class _MultiCallable:
    __slots__ = ("_channel", "_sync")

    def __init__(self, channel: Channel, sync_multicallable: Any) -> None:
        self._channel = channel
        self._sync = sync_multicallable


class UnaryUnaryMultiCallable(_MultiCallable, grpc.aio.UnaryUnaryMultiCallable):
    __slots__ = ()

    def __call__(self, request: Any, *, timeout: Optional[float] = None, metadata: Any = None, credentials: Any = None,
                 wait_for_ready: Optional[bool] = None, compression: Any = None) -> C.UnaryUnaryCall:
        loop = asyncio.get_running_loop()
        if not wait_for_ready:  # the fast path: connected, a small request
            started = self._sync.start_unary(request, timeout, C.as_pairs(metadata) if metadata else None,
                                             LOOP_START_MAX)
            if started is not None:
                call = C.FastUnaryCall(loop, self._channel, *started)
                self._channel._active.add(call)
                return call
        call = C.UnaryUnaryCall(loop, timeout)
        start = functools.partial(self._sync.start, request, timeout, C.as_pairs(metadata), wait_for_ready)
        self._channel._start(call, start, wait_for_ready, request)
        return call


class UnaryStreamMultiCallable(_MultiCallable, grpc.aio.UnaryStreamMultiCallable):
    __slots__ = ()

    def __call__(self, request: Any, *, timeout: Optional[float] = None, metadata: Any = None, credentials: Any = None,
                 wait_for_ready: Optional[bool] = None, compression: Any = None) -> C.UnaryStreamCall:
        call = C.UnaryStreamCall(asyncio.get_running_loop(), timeout)
        start = functools.partial(self._sync, request, timeout, C.as_pairs(metadata), None, wait_for_ready)
        self._channel._start(call, start, wait_for_ready, request)
        return call


class StreamUnaryMultiCallable(_MultiCallable, grpc.aio.StreamUnaryMultiCallable):
    __slots__ = ()

    def __call__(self, request_iterator: Any = None, timeout: Optional[float] = None, metadata: Any = None,
                 credentials: Any = None, wait_for_ready: Optional[bool] = None, compression: Any = None
                 ) -> C.StreamUnaryCall:
        call = C.StreamUnaryCall(asyncio.get_running_loop(), timeout)
        requests = call._requests(request_iterator)
        start = functools.partial(self._sync.future, requests, timeout, C.as_pairs(metadata), None, wait_for_ready)
        self._channel._start(call, start, wait_for_ready)
        return call


class StreamStreamMultiCallable(_MultiCallable, grpc.aio.StreamStreamMultiCallable):
    __slots__ = ()

    def __call__(self, request_iterator: Any = None, timeout: Optional[float] = None, metadata: Any = None,
                 credentials: Any = None, wait_for_ready: Optional[bool] = None, compression: Any = None
                 ) -> C.StreamStreamCall:
        call = C.StreamStreamCall(asyncio.get_running_loop(), timeout)
        requests = call._requests(request_iterator)
        start = functools.partial(self._sync, requests, timeout, C.as_pairs(metadata), None, wait_for_ready)
        self._channel._start(call, start, wait_for_ready)
        return call
