"""Async servicers behind the sync server: one bridged call per RPC.

Unary-unary handlers are answered from the loop (``answered_later``). When the loop
reads the call, a coroutine's first step runs right there, by hand, as a task's first
step would run (``UnaryContext.first_step``: current task, a context of its own) but
with no task made: a handler that answers in it (most do) costs a small context object
and its response goes back on the sync server's own fast path. A task is made only for
a handler that waits (it takes over the suspended coroutine, ``_resumed``), a plain
function runs on the server's threads, and the loop sends the outcome when it is done.
A call a poller thread read is handed to the loop, which then reads the rings itself
(``loop_reader``).

Streaming handlers run on the sync server's threads: for a coroutine (or async
generator) handler, the bridged handler runs it as a task on the server's event loop
(``asyncio.run_coroutine_threadsafe``) and waits, on its server thread, for what the
task produces: the messages of a response stream (through a queue, with a window of
``WINDOW`` messages that are queued but not yet written), initial metadata. Requests of
a request stream are fetched for the task on demand by a thread of the call's own.
When the RPC ends early (the client cancelled, the deadline passed, the server stops),
the sync context's callback cancels the task. Plain streaming handlers are left to the
sync server, which runs them on its threads (grpc.aio: its ``migration_thread_pool``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import inspect
import logging
import queue
import threading
import types
from typing import Any, Callable, List, Optional

import grpc
import grpc.aio
from grpc.aio import EOF, AbortError, UsageError

from ..serving.call import LATER
from .bridge import Inbox

_log = logging.getLogger("notnets_rpc.aio.server")

WINDOW = 16
_get_ident = threading.get_ident
_copy_context = contextvars.copy_context
_Task = asyncio.Task
_new_task = asyncio.Task.__new__
_new_object = object.__new__
_enter_task = getattr(asyncio.tasks, "_enter_task", None)  # what a task's step does around it (current_task)
_leave_task = getattr(asyncio.tasks, "_leave_task", None)
if _enter_task is None or _leave_task is None:  # an asyncio without them: every handler gets a task at once
    def _enter_task(loop: Any, task: Any) -> None:
        raise RuntimeError("asyncio.tasks._enter_task is missing")
_ANSWERED = object()  # what stepping a handler gives when it answered
_FIRST_STEP = contextlib.nullcontext()  # no lock: only the loop sees a call in its handler's first step
_END = object()
_MESSAGE, _HEADERS, _DONE = 0, 1, 2


def is_async(behaviour: Any) -> bool:
    return inspect.iscoroutinefunction(behaviour) or inspect.isasyncgenfunction(behaviour)


def bridged(handler: Optional[grpc.RpcMethodHandler], server: Any) -> Optional[grpc.RpcMethodHandler]:
    """``handler`` with its coroutine behaviour run on ``server``'s loop; a plain unary-unary
    one on the server's threads (grpc.aio's migration pool), so that it never holds the
    loop when the loop reads the rings; other plain ones unchanged (they run there anyway)."""
    if handler is None:
        return None
    if not handler.request_streaming and not handler.response_streaming:
        return grpc.unary_unary_rpc_method_handler(
            answered_later(handler.unary_unary, server, handler.response_serializer),
            request_deserializer=handler.request_deserializer)
    if handler.request_streaming:
        behaviour = handler.stream_stream if handler.response_streaming else handler.stream_unary
    else:
        behaviour = handler.unary_stream if handler.response_streaming else handler.unary_unary
    if not is_async(behaviour):
        return handler
    # Responses are serialized by the bridge: a failure is the handler's, as in grpc.aio.
    # Every bridged handler is given to the sync server as a response stream, a unary
    # response being a stream of one message (the same frames as a large unary response:
    # MESSAGE, then STATUS): the sync server runs unary-response handlers on its poller
    # and adds a poller only after one has been busy 5 ms, one at a time, so hundreds of
    # slow async calls would start a few dozen a second; streams run on its thread pool.
    des, ser = handler.request_deserializer, handler.response_serializer
    if handler.response_streaming:
        def serve(argument: Any, context: Any) -> Any:
            return _Run(server, context, handler.request_streaming, True, ser).stream(behaviour, argument)
    else:
        def serve(argument: Any, context: Any) -> Any:
            yield _Run(server, context, handler.request_streaming, False, ser).unary(behaviour, argument)
    make = grpc.stream_stream_rpc_method_handler if handler.request_streaming else grpc.unary_stream_rpc_method_handler
    return make(serve, request_deserializer=des)


def answered_later(behaviour: Callable, server: Any, serializer: Optional[Callable]) -> Callable:
    """A unary-unary handler for the sync server that returns at once: on the loop, a
    coroutine's first step runs right there (``UnaryContext.first_step``) and a handler
    that answers in it gets its serialized response sent on the sync server's own fast
    path; one that waits, or a plain function (on the server's threads), returns ``LATER``
    and the loop answers when it is done. Read by the loop itself, the call costs no
    thread hand-off; read by a poller thread, it costs one, and the loop takes over
    reading the rings (``Server.pass_lead``; not with interceptors, whose async lookup
    the reading thread waits for)."""
    asynchronous = is_async(behaviour)
    # the handler's own kind of context: what is the same for each of its calls is set once, here
    contexts = type("UnaryContext", (UnaryContext,), {
        "_server": server, "_serializer": staticmethod(serializer), "_behaviour": staticmethod(behaviour),
        "__slots__": ()})

    def serve(request: Any, call: Any) -> Any:
        if type(request) is memoryview:  # (``as_view``) a view of the request ring ends when we return:
            request = memoryview(request.tobytes())  # a handler that outlives this step needs its own bytes
        if _get_ident() != server._loop_thread:
            return _hand_over(server, serve, request, call)
        context = _new_object(contexts)
        context._sync = call
        if asynchronous:
            return context.first_step(request)
        context.wait_for(server._loop.run_in_executor(server._threads, behaviour, request, call))
        return LATER

    return serve


def _hand_over(server: Any, serve: Callable, request: Any, call: Any) -> Any:
    """(a poller thread read the call) Run ``serve`` on the loop, which reads the rings from now on."""
    passed = not server._interceptors and server._sync.pass_lead(server._loop_thread)
    try:
        server._loop.call_soon_threadsafe(_begin_handed_over, server, serve, request, call, passed)
    except RuntimeError:  # the loop is closed: nobody can run it
        server._sync.finish_later(call, None, (grpc.StatusCode.UNAVAILABLE, "Server is shutting down"))
    return LATER


def _begin_handed_over(server: Any, serve: Callable, request: Any, call: Any, passed: bool) -> None:
    """(loop) ``serve`` for a call a poller thread read: nobody takes a response back."""
    if passed:
        server._reader.lead()
    try:
        payload = serve(request, call)
    except Exception as exc:  # a bug of ours: the call still ends
        _log.exception("starting a handler failed")
        server._sync.finish_later(call, None, (grpc.StatusCode.UNKNOWN, f"Unexpected {type(exc)}: {exc}"))
        return
    if payload is not LATER:
        server._sync.finish_later(call, payload)


class _Ended(Exception):
    """The RPC ended before its task did (cancelled, deadline, shutdown)."""


class _Run:
    """One RPC of an async handler, seen from the server thread that serves it."""

    def __init__(self, server: Any, sync_context: Any, request_streaming: bool, response_streaming: bool,
                 serializer: Optional[Callable]) -> None:
        self.serializer = serializer
        self.server = server
        self.loop: asyncio.AbstractEventLoop = server._loop
        self.sync = sync_context
        self.response_streaming = response_streaming
        self.context = ServicerContext(self)
        self.future: Optional[concurrent.futures.Future] = None
        self.requests: Optional[_RequestPump] = None
        self.request_streaming = request_streaming
        self.out: Optional[queue.SimpleQueue] = None
        self.credit: Optional[asyncio.Semaphore] = None
        self.ended = False
        self.cancelled = False  # the RPC ended before its task did
        self.task_finished = False
        self.done_callbacks: Optional[List[Callable]] = None
        self.lock = threading.Lock()

    # -- the server thread's side ------------------------------------------------------------------
    def _submit(self, coro: Any) -> bool:
        self.future = asyncio.run_coroutine_threadsafe(self._guarded(coro), self.loop)
        if not self.sync.add_callback(self._terminated):
            self._terminated()
            return False
        return True

    def _terminated(self) -> None:
        """The sync call ended (any way; called by the sync server on some thread)."""
        if self.future is not None and not self.future.done():
            self.cancelled = True
            self._cancel_task()
        with self.lock:
            self.ended = True
            callbacks = self.task_finished and bool(self.done_callbacks)
        if self.requests is not None:
            self.requests.stop()
        if callbacks:
            self.loop.call_soon_threadsafe(self._run_done_callbacks)

    def _cancel_task(self) -> None:
        self.future.cancel()  # a concurrent future: the task is cancelled on its loop

    async def _guarded(self, coro: Any) -> Any:
        """The handler's task; done callbacks run once both it and the RPC have ended
        (grpc.aio's order: a handler being cancelled still sees done() False)."""
        try:
            return await coro
        finally:
            with self.lock:
                self.task_finished = True
                callbacks = self.ended and bool(self.done_callbacks)
            if callbacks:
                self.loop.call_soon(self._run_done_callbacks)

    def _run_done_callbacks(self) -> None:
        callbacks, self.done_callbacks = self.done_callbacks, None
        for cb in callbacks or ():
            try:
                cb(self.context)
            except Exception:
                _log.exception("RPC done callback raised")

    def _argument(self, argument: Any) -> Any:
        if not self.request_streaming:
            return argument
        self.requests = _RequestPump(self.loop, argument)
        return self.requests.iterate()

    def unary(self, behaviour: Callable, argument: Any) -> Any:
        coro = behaviour(self._argument(argument), self.context)
        self._submit(coro)
        return self._outcome()

    def stream(self, behaviour: Callable, argument: Any) -> Any:
        self.out = queue.SimpleQueue()
        self.credit = None
        arg = self._argument(argument)
        self._submit(self._stream_task(behaviour, arg))
        self.future.add_done_callback(lambda _f: self.out.put((_DONE, None)))
        while True:
            kind, item = self.out.get()
            if kind == _MESSAGE:
                yield self._serialize(item)
                self.loop.call_soon_threadsafe(self._give_credit)
            elif kind == _HEADERS:
                self.sync.send_initial_metadata(item)
            else:
                break
        self._outcome(unary=False)

    def _outcome(self, unary: bool = True) -> Any:
        try:
            result = self.future.result()
            return self._serialize(result) if unary else None
        except concurrent.futures.CancelledError:
            raise _Ended() from None
        except BaseException as exc:
            self._fail(exc)

    def _serialize(self, response: Any) -> Any:
        return response if self.serializer is None else self.serializer(response)

    def _fail(self, exc: BaseException) -> None:
        """The task raised: the status grpc.aio would send, set on the sync context."""
        status = self._status(exc)
        if status is None:
            raise _Ended() from None
        self.sync.abort(*status)

    def _status(self, exc: BaseException) -> Optional[tuple]:
        return _status_for(exc, self.context._aborted, self.sync, self.ended)

    # -- the loop's side ------------------------------------------------------------------------
    async def _stream_task(self, behaviour: Callable, argument: Any) -> None:
        if inspect.isasyncgenfunction(behaviour):
            async for response in behaviour(argument, self.context):
                await self.write(response)
        else:
            await behaviour(argument, self.context)

    def _give_credit(self) -> None:
        if self.credit is not None:
            self.credit.release()

    async def write(self, message: Any) -> None:
        if not self.response_streaming:
            raise UsageError("write() on an RPC without a response stream")
        if self.ended:
            raise asyncio.CancelledError()
        if self.credit is None:
            self.credit = asyncio.Semaphore(WINDOW)
        await self.credit.acquire()
        self.out.put((_MESSAGE, message))

    def send_headers(self, metadata: tuple) -> None:
        if self.response_streaming:
            self.out.put((_HEADERS, metadata))
        else:
            self.sync.send_initial_metadata(metadata)


def _status_for(exc: BaseException, aborted: Optional[tuple], sync: Any, ended: bool) -> Optional[tuple]:
    """(code, details) grpc.aio sends when a handler raised ``exc``; None when the RPC
    ended first (nothing is sent). ``aborted``: what ``await context.abort()`` was given."""
    if aborted is not None:
        code, details = aborted
        if code is grpc.StatusCode.OK:  # grpcio's documented rule (abort "must not be OK"), as its sync server
            _log.error("abort() called with StatusCode.OK; returning UNKNOWN")
            code, details = grpc.StatusCode.UNKNOWN, ""
        return code, details
    if getattr(sync, "aborted", False):  # a plain handler called the sync context's abort
        return sync.code_, sync.details_
    if isinstance(exc, asyncio.CancelledError) or ended:
        return None
    _log.error("Unexpected [%s] raised by servicer method [%s]", type(exc).__name__,
               getattr(sync, "method", "?"), exc_info=exc)
    return grpc.StatusCode.UNKNOWN, f"Unexpected {type(exc)}: {exc}"


@types.coroutine
def _answering(coro: Any, context: Any) -> Any:
    """A handler's coroutine, its response kept on ``context``: stepped with ``next()``,
    its end raises no StopIteration (an exception that reaches a Python frame costs a
    traceback, much of a first step's cost)."""
    context._response = yield from coro


async def _resumed(steps: Any, yielded: Any, context: Any) -> Any:
    """The rest of a handler whose first step ``UnaryContext.first_step`` ran by hand."""
    await _Rest(steps, yielded)
    return context._response


class _Rest:
    """Awaiting it resumes a coroutine that stopped at ``yielded`` (what its first step
    handed up: a future to wait for, or None), as a task would: its task gets each
    future to wait for, and the coroutine gets what the task sends or throws in."""

    __slots__ = ("_coro", "_yielded")

    def __init__(self, coro: Any, yielded: Any) -> None:
        self._coro = coro
        self._yielded = yielded

    def __await__(self) -> Any:
        coro, yielded = self._coro, self._yielded
        self._coro = self._yielded = None
        while True:
            try:
                yield yielded
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # (a cancellation, thrown in by the task)
                try:
                    yielded = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    yielded = coro.send(None)
                except StopIteration as stop:
                    return stop.value


def _step_now(loop: asyncio.AbstractEventLoop, task: "asyncio.Task[Any]") -> bool:
    """Run a task's first step at once instead of a turn of the loop later: the task of a
    handler that ``first_step`` began waits for the handler's future at once (a
    cancellation from now on cancels that future, as for any task). The step runs as the
    loop would run it; False, leaving it scheduled, if the loop keeps its queue elsewhere
    (not asyncio's own loop) or a task is running now."""
    ready = getattr(loop, "_ready", None)
    if not ready or asyncio.current_task(loop) is not None:
        return False
    handle = ready[-1]
    if getattr(handle._callback, "__self__", None) is not task:
        return False
    ready.pop()
    handle._run()
    return True

class _RequestPump:
    """Requests of a request stream, fetched for the task one at a time by a thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sync_requests: Any) -> None:
        self._loop = loop
        self._sync = sync_requests
        self._wants: "queue.SimpleQueue" = queue.SimpleQueue()
        self._inbox = Inbox(loop)
        self._thread: Optional[threading.Thread] = None
        self._eof = False

    async def read(self) -> Any:
        if self._eof:
            return EOF
        if self._thread is None:
            self._thread = threading.Thread(target=self._pump, name="notnets-aio-requests", daemon=True)
            self._thread.start()
        self._wants.put(True)
        item = await self._inbox.get()
        if item is _END:
            self._eof = True
            return EOF
        return item

    async def iterate(self):
        while True:
            item = await self.read()
            if item is EOF:
                return
            yield item

    def stop(self) -> None:
        self._wants.put(False)

    def _pump(self) -> None:
        while self._wants.get():
            try:
                item = next(self._sync)
            except StopIteration:
                item = _END
            except Exception:  # cancelled or a request that did not deserialize: the call's status says
                item = _END
            self._inbox.put(item)
            if item is _END:
                return


class _OnSyncCall(grpc.aio.ServicerContext):
    """What every async handler's context passes on to the sync call's context (``_sync``)."""

    _sync: Any
    _aborted: Optional[tuple] = None

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> None:
        if self._aborted is not None:
            raise UsageError("Abort already called!")
        self._aborted = (code, details)
        if trailing_metadata:
            self._sync.set_trailing_metadata(tuple(trailing_metadata))
        raise AbortError("Locally aborted.")

    async def abort_with_status(self, status: Any) -> None:
        await self.abort(status.code, status.details, status.trailing_metadata)

    def set_trailing_metadata(self, trailing_metadata: Any) -> None:
        self._sync.set_trailing_metadata(tuple(trailing_metadata))

    def trailing_metadata(self) -> Any:
        return self._sync.trailing_metadata()

    def invocation_metadata(self) -> Any:
        return self._sync.invocation_metadata()

    def set_code(self, code: grpc.StatusCode) -> None:
        self._sync.set_code(code)

    def set_details(self, details: str) -> None:
        self._sync.set_details(details)

    def code(self) -> Any:
        return self._sync.code()

    def details(self) -> Any:
        return self._sync.details()

    def set_compression(self, compression: Any) -> None:
        pass

    def disable_next_message_compression(self) -> None:
        pass

    def peer(self) -> str:
        return self._sync.peer()

    def peer_identities(self) -> Any:
        return self._sync.peer_identities()

    def peer_identity_key(self) -> Any:
        return self._sync.peer_identity_key()

    def auth_context(self) -> Any:
        return self._sync.auth_context()

    def time_remaining(self) -> Optional[float]:
        return self._sync.time_remaining()


class ServicerContext(_OnSyncCall):
    """A streaming handler's context: grpc.aio's ServicerContext over the sync call's context."""

    def __init__(self, run: _Run) -> None:
        self._run = run
        self._sync = run.sync

    async def read(self) -> Any:
        if self._run.requests is None:
            raise UsageError("read() on an RPC without a request stream")
        return await self._run.requests.read()

    async def write(self, message: Any) -> None:
        await self._run.write(message)

    async def send_initial_metadata(self, initial_metadata: Any) -> None:
        self._run.send_headers(tuple(initial_metadata))

    def cancelled(self) -> bool:
        return self._run.cancelled and self._run.task_finished

    def done(self) -> bool:
        return self._run.ended and self._run.task_finished

    def add_done_callback(self, callback: Callable) -> None:
        run = self._run
        with run.lock:
            if not (run.ended and run.task_finished):
                if run.done_callbacks is None:
                    run.done_callbacks = []
                run.done_callbacks.append(callback)
                return
        run.loop.call_soon(callback, self)


class UnaryContext(_OnSyncCall):
    """A unary-unary call on the loop: its handler's context and the call's state.

    Built with one field, the sync call: a handler that answers in its first step (the
    common case) needs no more. One that waits gets a task then (``first_step``), and
    the call a lock (``_terminated`` comes from any thread once the sync call can end
    under it)."""

    _callbacks: Optional[List[Callable]] = None
    _response: Any = None  # what the handler returned
    _future: Any = None  # the handler's task, or a plain handler's future, once it waits
    _lock: Any = _FIRST_STEP  # a real lock once the handler waits
    _ended = _finished = _cancelled = False  # the RPC ended / the handler is done / the RPC ended first

    _server: Any  # these three: class attributes of each handler's own subclass (``answered_later``)
    _serializer: Optional[Callable]
    _behaviour: Callable
    _sync: Any  # the sync call

    # -- running the handler (loop) ---------------------------------------------------------------
    def first_step(self, request: Any) -> Any:
        """Run a coroutine handler's first step right here, as the first step of a task
        (current task, a context of its own), with no task made unless it waits: the
        serialized response if it answered, else ``LATER`` (its task then goes on and
        ``_answer`` sends the outcome)."""
        loop = self._server._loop
        try:
            coro = self._behaviour(request, self)
        except Exception as exc:  # (it takes other arguments, say)
            return self._raised(exc)
        run_in = _copy_context()
        task = _new_task(_Task)  # made (as a task) only if the handler waits: ``current_task()`` meanwhile
        try:
            _enter_task(loop, task)
        except RuntimeError:  # a task runs now (this is no look of the loop reader's): a task as usual
            self.wait_for(_Task(coro, loop=loop, context=run_in))
            return LATER
        steps = _answering(coro, self)
        try:
            yielded = run_in.run(next, steps, _ANSWERED)
        except BaseException as exc:
            _leave_task(loop, task)
            return self._raised(exc)
        _leave_task(loop, task)
        if yielded is not _ANSWERED:  # it waits: the task is made now, and goes on from there
            cancels = task.cancelling()  # (the handler cancelled its own task: made now, it forgets)
            task.__init__(_resumed(steps, yielded, self), loop=loop, context=run_in)
            _step_now(loop, task)
            for _ in range(cancels):  # now that it waits: what it waits for is cancelled, as a task's step does
                task.cancel()
            self.wait_for(task)
            return LATER
        response = self._response
        serializer = self._serializer  # (``_payload``, inline: this is the path every answer takes)
        try:
            payload = response if serializer is None else serializer(response)
            if type(payload) is not bytes and not isinstance(payload, (bytearray, memoryview)):
                raise TypeError(f"serialized response is {type(payload).__name__}, not bytes")
        except Exception as exc:  # grpc.aio: the handler's exception
            return self._raised(exc)
        self._ended = self._finished = True  # answered: the RPC ends as well
        if self._callbacks:
            loop.call_soon(self._run_done_callbacks)
        return payload

    def wait_for(self, future: "asyncio.Future[Any]") -> None:
        """(loop) The handler goes on in ``future``: answer when it is done, cancel it if
        the RPC ends first."""
        self._lock = threading.Lock()
        self._future = future
        future.add_done_callback(self._answer)
        if not self._sync.add_callback(self._terminated):
            self._terminated()

    def _raised(self, exc: BaseException) -> Any:
        """The handler (first step) raised: its status sent."""
        if isinstance(exc, asyncio.CancelledError):  # it cancelled itself
            status: Optional[tuple] = (grpc.StatusCode.CANCELLED, "Cancelled")
        else:
            status = _status_for(exc, self._aborted, self._sync, False)
        if status is not None:
            self._server._sync.finish_later(self._sync, None, status)
        self._ended = self._finished = True
        if self._callbacks:
            self._server._loop.call_soon(self._run_done_callbacks)
        if not isinstance(exc, Exception) and not isinstance(exc, asyncio.CancelledError):
            raise exc  # (KeyboardInterrupt, SystemExit: out of the loop, as from a task)
        return LATER

    def _payload(self, response: Any) -> Any:
        serializer = self._serializer
        payload = response if serializer is None else serializer(response)
        if type(payload) is not bytes and not isinstance(payload, (bytearray, memoryview)):
            raise TypeError(f"serialized response is {type(payload).__name__}, not bytes")
        return payload

    def _answer(self, future: "asyncio.Future[Any]") -> None:
        """(loop) The handler is done: its response or its status to the client. Its done
        callbacks run once the RPC has ended too (grpc.aio's order: a handler being
        cancelled still sees done() False)."""
        with self._lock:
            self._finished = True
            ended_first = self._ended and bool(self._callbacks)
        if ended_first:
            self._server._loop.call_soon(self._run_done_callbacks)
        finish = self._server._sync.finish_later
        if future.cancelled():
            if not self._ended:  # the handler cancelled itself
                finish(self._sync, None, (grpc.StatusCode.CANCELLED, "Cancelled"))
            return
        exc = future.exception()
        if exc is None:
            try:
                payload = self._payload(future.result())
            except Exception as err:  # grpc.aio: the handler's exception
                exc = err
            else:
                finish(self._sync, payload)
                return
        status = _status_for(exc, self._aborted, self._sync, self._ended)
        if status is not None:
            finish(self._sync, None, status)

    def _terminated(self) -> None:
        """The sync call ended (any way; called by the sync server on some thread)."""
        future = self._future
        if not future.done():
            self._cancelled = True
            try:
                self._server._loop.call_soon_threadsafe(future.cancel)  # cancelled on its loop
            except RuntimeError:  # the loop is closed
                pass
        with self._lock:
            self._ended = True
            callbacks = self._finished and bool(self._callbacks)
        if callbacks:
            self._server._loop.call_soon_threadsafe(self._run_done_callbacks)

    def _run_done_callbacks(self) -> None:
        callbacks, self._callbacks = self._callbacks, None
        for cb in callbacks or ():
            try:
                cb(self)
            except Exception:
                _log.exception("RPC done callback raised")

    # -- grpc.aio.ServicerContext ---------------------------------------------------------------
    async def read(self) -> Any:
        raise UsageError("read() on an RPC without a request stream")

    async def write(self, message: Any) -> None:
        raise UsageError("write() on an RPC without a response stream")

    async def send_initial_metadata(self, initial_metadata: Any) -> None:
        self._sync.send_initial_metadata(tuple(initial_metadata))

    def cancelled(self) -> bool:
        return self._cancelled and self._finished

    def done(self) -> bool:
        return self._ended and self._finished

    def add_done_callback(self, callback: Callable) -> None:
        with self._lock:
            if not (self._ended and self._finished):
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(callback)
                return
        self._server._loop.call_soon(callback, self)
