"""Client call objects of ``notnets_rpc.aio``: grpc.aio's four call shapes over a sync call.

Each wraps one call of the sync layer (``ClientCall``: a ``grpc.Future``, an iterator of
responses for response streams). Nothing here blocks the event loop: a unary-unary
call is polled from the loop without waiting (``PolledResponse``), then, if slow,
waited for by a thread; for the other shapes the sync call's done callback (run by the
channel's pump thread) wakes the loop through ``call_soon_threadsafe``; responses of a
stream are read by a thread of their own and handed over through an ``Inbox``; request
streams are pulled by the sync layer's request thread, one message at a time, from the
loop.
"""

from __future__ import annotations

import asyncio
import enum
import os
import queue
import threading
import time
from typing import Any, Callable, List, Optional

import grpc
import grpc.aio
from grpc.aio import EOF, AioRpcError, Metadata, UsageError

from ..client.call import ClientCall
from .bridge import Inbox, in_thread

OK = grpc.StatusCode.OK
_END = object()
_sched_yield = os.sched_yield
POLL_BUDGET = 0.005    # seconds the loop polls a unary call before a thread waits for it
YIELD_EVERY = 20e-6    # a waiting call's poll yields the CPU at most once in this long, however many calls poll
_last_yield = [0.0]


def _yield_cpu() -> None:
    """Let another process have this CPU (see ``spin``), but once per ``YIELD_EVERY`` at
    most: every waiting call polls once per turn of the loop."""
    now = time.monotonic()
    if now - _last_yield[0] >= YIELD_EVERY:
        _last_yield[0] = now
        _sched_yield()


class Stage(enum.Enum):
    STARTING = 0   # the sync call is being started on a thread (the channel is connecting)
    RUNNING = 1
    DONE = 2       # settled: the sync call is done and the loop knows


def as_metadata(pairs: Any) -> Metadata:
    return Metadata.from_tuple(tuple(pairs or ()))


def as_pairs(metadata: Any) -> Optional[tuple]:
    """Request metadata as the sync layer takes it (a grpc.aio.Metadata iterates as pairs)."""
    if metadata is None:
        return None
    return tuple(tuple(item) for item in metadata)


class _FailedStart:
    """Stands in for the sync call when starting raised (a closed channel)."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Call(grpc.aio.Call):
    """What every shape shares: start, settle, status, cancel, callbacks.

    Defaults live on the class (lists are made when first needed), so that a call that
    never needs them sets few attributes."""

    _owner: Any = None  # the aio channel that started it
    _stage = Stage.STARTING
    _sync: Any = None
    _waiters: "List[asyncio.Future] | tuple" = ()
    _callbacks: Optional[List[Callable]] = None
    _cancelled_here = False
    _start_waiters: "List[asyncio.Future] | tuple" = ()
    _deadline: Optional[float] = None

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: Optional[float]) -> None:
        self._loop = loop
        if timeout is not None:
            self._deadline = time.monotonic() + timeout

    # -- lifecycle (loop thread) ---------------------------------------------------------------
    def _begin(self, sync: Any) -> None:
        """The sync call exists (or failed to start): follow it to its end."""
        self._sync = sync
        waiters, self._start_waiters = self._start_waiters, ()
        for w in waiters:
            if not w.done():
                w.set_result(None)
        if isinstance(sync, _FailedStart):
            self._settle()
            return
        self._stage = Stage.RUNNING
        if self._cancelled_here:
            sync.cancel()
        self._on_started()
        self._follow(sync)

    def _follow(self, sync: Any) -> None:
        """How the loop learns that the sync call ended: its done callback (run on the
        channel's pump thread); unary-unary calls are polled instead (PolledResponse)."""
        sync.add_done_callback(self._sync_done)

    def _on_started(self) -> None:
        """Hook for the shapes (request streams start pulling)."""

    def _sync_done(self, _sync: Any) -> None:
        """The sync call is done; called on the pump thread (or at once, on ours)."""
        try:
            self._loop.call_soon_threadsafe(self._settle)
        except RuntimeError:  # loop closed
            pass

    def _settle(self) -> None:
        if self._stage is Stage.DONE:
            return
        self._stage = Stage.DONE
        owner = self._owner
        if owner is not None:
            owner._settled(self, self._final_code())
        if self._waiters:
            waiters, self._waiters = self._waiters, ()
            for w in waiters:
                if not w.done():
                    w.set_result(None)
        if self._callbacks:
            callbacks, self._callbacks = self._callbacks, None
            for cb in callbacks:
                cb(self)

    def _final_code(self) -> Optional[grpc.StatusCode]:
        """(settled) The call's status code; None if it never started."""
        sync = self._sync
        return None if isinstance(sync, _FailedStart) else sync.code()

    def _waiter(self) -> asyncio.Future:
        """A future of its own for each await: cancelling one awaiting task cancels only it."""
        w = self._loop.create_future()
        if self._stage is Stage.DONE:
            w.set_result(None)
        elif self._waiters:
            self._waiters.append(w)
        else:
            self._waiters = [w]
        return w

    async def _finished(self) -> None:
        if self._stage is not Stage.DONE:
            await self._waiter()

    def _error(self) -> BaseException:
        sync = self._sync
        if isinstance(sync, _FailedStart):
            return sync.exc
        if self._cancelled_here:
            return asyncio.CancelledError()
        return AioRpcError(sync.code(), as_metadata(sync.initial_metadata()), as_metadata(sync.trailing_metadata()),
                           sync.details(), sync.debug_error_string())

    # -- grpc.aio.RpcContext -------------------------------------------------------------------
    def cancelled(self) -> bool:
        if self._stage is not Stage.DONE or isinstance(self._sync, _FailedStart):
            return False
        return self._sync.code() is grpc.StatusCode.CANCELLED

    def done(self) -> bool:
        if self._stage is Stage.DONE or self._cancelled_here:
            return True
        return self._sync is not None and self._sync.done()

    def time_remaining(self) -> Optional[float]:
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic())

    def cancel(self) -> bool:
        if self.done():
            return False
        self._cancelled_here = True
        if self._sync is not None:
            self._sync.cancel()
        return True

    def add_done_callback(self, callback: Callable) -> None:
        if self._stage is Stage.DONE:
            callback(self)
            return
        if self._callbacks is None:
            self._callbacks = []
        self._callbacks.append(callback)

    # -- grpc.aio.Call --------------------------------------------------------------------------
    async def initial_metadata(self) -> Metadata:
        if self._stage is Stage.STARTING:
            await self._until_started()
        sync = self._sync
        if isinstance(sync, _FailedStart):
            return Metadata()
        if sync.done():
            return as_metadata(sync.initial_metadata())
        return as_metadata(await in_thread(self._loop, sync.initial_metadata))

    async def _until_started(self) -> None:
        if self._sync is None:
            w = self._loop.create_future()
            self._start_waiters = [*self._start_waiters, w]
            await w

    async def trailing_metadata(self) -> Metadata:
        await self._finished()
        if isinstance(self._sync, _FailedStart):
            return Metadata()
        return as_metadata(self._sync.trailing_metadata())

    async def code(self) -> grpc.StatusCode:
        await self._finished()
        if isinstance(self._sync, _FailedStart):
            return grpc.StatusCode.UNKNOWN
        return self._sync.code()

    async def details(self) -> str:
        await self._finished()
        if isinstance(self._sync, _FailedStart):
            return str(self._sync.exc)
        return self._sync.details()

    async def wait_for_connection(self) -> None:
        if self._stage is Stage.STARTING:
            await self._until_started()
        if self._stage is Stage.DONE and not isinstance(self._sync, _FailedStart) and self._sync.code() is not OK:
            raise self._error()

    def __str__(self) -> str:
        if self._stage is not Stage.DONE:
            return f"<{type(self).__name__} of notnets_rpc.aio in progress>"
        return f"<{type(self).__name__} of notnets_rpc.aio: {self._sync}>"

    __repr__ = __str__


class UnaryResponse:
    """``await call``: the response, or the call's error (settled by the sync call's done
    callback, run on the channel's pump thread, for a request stream's call)."""

    def __await__(self):
        w = self._waiter()
        try:
            yield from w.__await__()
        except asyncio.CancelledError:
            self.cancel()
            raise
        return self._response()

    def _response(self) -> Any:
        sync = self._sync
        if isinstance(sync, _FailedStart):
            raise sync.exc
        if sync.code() is OK:
            try:
                return sync.result(0)
            except grpc.RpcError:  # the response did not deserialize: now INTERNAL
                pass
        raise self._error()


class PolledResponse(UnaryResponse):
    """``await call`` for a unary-unary call, read from the event loop itself.

    The call is started without the channel's pump (``UnaryUnary.start``); the loop
    polls the response ring with ``ClientCall.poll()``, which never waits: the awaiting
    coroutine polls once per turn of the loop (a bare ``yield``, so every other task and
    callback runs in between), or, when nobody awaits the call itself, a callback of the
    call's does. After ``POLL_BUDGET`` seconds (or at the deadline) the channel's pump
    thread takes over, with the done callback. A response
    that comes back while the loop polls thus costs no thread hand-off at all. After
    as many empty polls as the channel's ``SpinBudget`` allows, a call's polls also yield
    the CPU (``_yield_cpu``).
    """

    _polling = False   # the loop polls this call (until it is settled or handed to a thread)
    _inline = False    # ... from the coroutine that awaits it
    _polls = 0
    _budget = 0
    _poll_end = 0.0
    _handed = False    # the channel's pump thread reads for it
    _fresh = False     # just written from the loop: the answer cannot be there before the loop turns

    def _follow(self, sync: Any) -> None:
        self._state = sync._state
        self._conn = sync._conn
        self._start_polling()
        self._loop.call_soon(self._poll_step)

    def _start_polling(self) -> None:
        self._polling = True
        self._budget = self._owner._spin.budget()
        self._poll_end = time.monotonic() + POLL_BUDGET

    def _poll_once(self) -> bool:
        """One look (``Connection.read_arrived``: what the response ring holds now, never
        waiting); True once the call is settled or handed to a thread."""
        state = self._state
        if not state.done:
            self._conn.read_arrived()
        if state.done:
            self._polling = False
            self._owner._spin.learn(self._polls, self._budget)
            self._settle()
            return True
        n = self._polls = self._polls + 1
        if n > self._budget:
            _yield_cpu()
        if not n & 15:
            now = time.monotonic()
            if now >= self._poll_end or (self._deadline is not None and now >= self._deadline):
                self._hand_over()
                return True
        return False

    def _hand_over(self) -> None:
        """Stop polling: the channel's pump thread reads for the call from now on (it
        also ends it at its deadline and watches the server's liveness) and the done
        callback wakes the loop. One thread for all slow calls, not one each: with 16
        waiter threads contending for the GIL a loaded machine stalled the loop for
        ~0.5 s at a time (tests/aio/test_loop_free.py)."""
        self._polling = False
        self._handed = True
        self._owner._sync.pump_for(self._sync)
        self._sync.add_done_callback(self._sync_done)

    def _poll_step(self) -> None:
        if self._polling and not self._inline and not self._poll_once():
            self._loop.call_soon(self._poll_step)

    def _poll_here(self) -> bool:
        """Whether the coroutine that awaits the call polls it (nobody else does)."""
        return self._polling and not self._inline

    def __await__(self):
        if self._poll_here():
            self._inline = True
            try:
                if self._fresh and not self._state.done:
                    yield
                while not self._poll_once():
                    yield  # one turn of the loop
            except BaseException:  # cancelled while polling (CancelledError thrown in)
                self.cancel()
                raise
            finally:
                self._inline = False
        if self._stage is not Stage.DONE:
            return (yield from super().__await__())
        return self._response()

    def cancel(self) -> bool:
        cancelled = super().cancel()
        if cancelled and self._polling and self._sync is not None:
            self._polling = False
            self._loop.call_soon(self._settle)
        return cancelled


class StreamResponse:
    """``async for`` / ``read()`` over the responses, read by a thread of the call's own."""

    _inbox: Optional[Inbox] = None
    _eof = False

    def _ensure_reader(self) -> Inbox:
        inbox = self._inbox
        if inbox is None:
            inbox = self._inbox = Inbox(self._loop)
            threading.Thread(target=_read_responses, args=(self, inbox), name="notnets-aio-responses",
                             daemon=True).start()
        return inbox

    async def read(self) -> Any:
        if self._stage is Stage.STARTING:
            await self._until_started()
        if isinstance(self._sync, _FailedStart):
            raise self._sync.exc
        if not self._eof:
            try:
                item = await self._ensure_reader().get()
            except asyncio.CancelledError:
                self.cancel()
                raise
            if item is not _END:
                return item
            self._eof = True
        await self._finished()
        if self._sync.code() is OK:
            return EOF
        raise self._error()

    def __aiter__(self):
        return self._responses()

    async def _responses(self):
        while True:
            item = await self.read()
            if item is EOF:
                return
            yield item


def _read_responses(call: Any, inbox: Inbox) -> None:
    try:
        for message in call._sync:
            inbox.put(message)
    except grpc.RpcError:
        pass  # the status is the call's
    finally:
        inbox.put(_END)
        if call._sync.done():
            call._sync_done(call._sync)


class _Pulled:
    """The request iterator the sync layer's request thread consumes, for a request
    stream the loop produces: an async iterator, or ``call.write()``s."""

    def __init__(self, loop: asyncio.AbstractEventLoop, source: Any) -> None:
        self._loop = loop
        self._source = source  # an async iterator, or None for writes
        self._writes: "queue.SimpleQueue" = queue.SimpleQueue()
        self._pending: Any = None
        self.closed = False

    def __iter__(self) -> "_Pulled":
        return self

    def __next__(self) -> Any:
        if self.closed:
            raise StopIteration
        if self._source is None:
            item, taken = self._writes.get()
            if taken is not None:
                self._loop.call_soon_threadsafe(_resolve, taken)
            if item is _END:
                self.closed = True
                raise StopIteration
            return item
        self._pending = asyncio.run_coroutine_threadsafe(self._next(), self._loop)
        try:
            item = self._pending.result()
        except Exception:
            self.closed = True
            raise
        finally:
            self._pending = None
        if item is _END:
            self.closed = True
            raise StopIteration
        return item

    async def _next(self) -> Any:
        try:
            return await self._source.__anext__()
        except StopAsyncIteration:
            return _END

    def stop(self) -> None:
        """The call ended: unblock whatever the request thread waits for."""
        self.closed = True
        pending = self._pending
        if pending is not None:
            pending.cancel()
        self._writes.put((_END, None))


def _resolve(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


class StreamRequest:
    """Requests from an iterator (sync or async) or from ``write()`` / ``done_writing()``."""

    _pulled: Optional[_Pulled] = None
    _writer = False
    _done_writing = False

    def _requests(self, request_iterator: Any) -> Any:
        """What the sync call consumes."""
        if request_iterator is not None and not hasattr(request_iterator, "__aiter__"):
            return iter(request_iterator)
        source = None if request_iterator is None else request_iterator.__aiter__()
        self._pulled = _Pulled(self._loop, source)
        self._writer = request_iterator is None
        return self._pulled

    def _settle(self) -> None:
        if self._pulled is not None:
            self._pulled.stop()
        super()._settle()

    async def write(self, request: Any) -> None:
        if self._pulled is None or not self._writer:
            raise UsageError("write() is only for calls made without a request iterator")
        if self._done_writing:
            raise UsageError("write() after done_writing()")
        if self.done():
            await self._finished()
            raise self._error() if self._sync.code() is not OK else UsageError("the RPC has already finished")
        taken = self._loop.create_future()
        self._pulled._writes.put((request, taken))
        done = self._waiter()
        await asyncio.wait((taken, done), return_when=asyncio.FIRST_COMPLETED)
        if not taken.done() and self._stage is Stage.DONE and self._sync.code() is not OK:
            raise self._error()

    async def done_writing(self) -> None:
        if self._pulled is None or not self._writer:
            raise UsageError("done_writing() is only for calls made without a request iterator")
        if not self._done_writing:
            self._done_writing = True
            self._pulled._writes.put((_END, None))


class UnaryUnaryCall(PolledResponse, Call, grpc.aio.UnaryUnaryCall):
    pass


class UnaryStreamCall(StreamResponse, Call, grpc.aio.UnaryStreamCall):
    pass


class StreamUnaryCall(UnaryResponse, StreamRequest, Call, grpc.aio.StreamUnaryCall):
    pass


class StreamStreamCall(StreamResponse, StreamRequest, Call, grpc.aio.StreamStreamCall):
    pass


class FastUnaryCall(UnaryUnaryCall):
    """A unary-unary call started by the fast path (``UnaryUnary.start_unary``: connected,
    a small request, no ``wait_for_ready``): one CALL frame written from the loop, then
    polled by the coroutine that awaits it, from the next turn of the loop on, which
    returns the response in the turn whose look finds it.

    Lean: it holds the sync layer's ``CallState`` and connection; the ``ClientCall`` that
    the rest of ``Call`` asks for (metadata, errors, cancel) is made only when asked for.
    Nothing polls it until someone waits for it (``await``, ``code()``, a done callback)
    or asks ``done()``, which looks at the ring itself: its answer waits in the ring (or
    is read by another call's poll) meanwhile, as grpc.aio's would in the socket."""

    _stage = Stage.RUNNING
    _fresh = True
    _client_call: Optional[ClientCall] = None

    def __init__(self, loop: asyncio.AbstractEventLoop, owner: Any, conn: Any, state: Any) -> None:
        self._loop = loop
        self._owner = owner
        self._conn = conn
        self._state = state
        self._deadline = state.deadline

    @property
    def _sync(self) -> ClientCall:
        call = self._client_call
        if call is None:
            call = self._client_call = ClientCall(self._conn, self._state)
        return call

    def _final_code(self) -> Optional[grpc.StatusCode]:
        return self._state.code

    def _ensure_polled(self) -> None:
        """Someone waits for the call other than by awaiting it: a callback polls it."""
        if not self._polling and not self._handed and self._stage is not Stage.DONE:
            self._start_polling()
            self._loop.call_soon(self._poll_step)

    def _waiter(self) -> asyncio.Future:
        self._ensure_polled()
        return super()._waiter()

    def add_done_callback(self, callback: Callable) -> None:
        super().add_done_callback(callback)
        self._ensure_polled()

    def done(self) -> bool:
        if self._stage is Stage.DONE or self._cancelled_here:
            return True
        state = self._state
        if not state.done and not self._polling:
            self._conn.read_arrived()
        return state.done

    def _poll_here(self) -> bool:
        if not self._polling and not self._handed and self._stage is not Stage.DONE:
            self._start_polling()
        return self._polling and not self._inline

    def _response(self) -> Any:
        state = self._state
        if state.code is OK:
            value = self._conn.unary_value(state)
            if state.code is OK:
                return value
        raise self._error()
