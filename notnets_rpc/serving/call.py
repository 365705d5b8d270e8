"""A server-side call: its state and the ``grpc.ServicerContext`` handlers receive."""

from __future__ import annotations

import enum
import queue
import time
from typing import Any, Callable, Optional

import grpc

from ..status import as_metadata

END_OF_REQUESTS = object()
CANCELLED = object()
LATER = object()  # a unary-response handler's return: "answered later" (``Server.finish_later``)


class Stage(enum.Enum):
    """Where a server call is; it only moves forward, and only ``Replies._end`` (or the
    unary fast path, which does the same claim inline) moves it out of ACTIVE."""

    ACTIVE = "active"        # the handler may run and send
    ANSWERED = "answered"    # the final status is written or queued; nothing more is sent
    CANCELLED = "cancelled"  # ended by the client, a deadline, a lost channel, the server or shutdown


ACTIVE, ANSWERED, CANCELLED_STAGE = Stage.ACTIVE, Stage.ANSWERED, Stage.CANCELLED


class AbortError(Exception):
    """Raised by ``context.abort``; unwinds the handler, like grpcio's bare Exception."""


class ServerCall:
    """One call on the server; also the context its handler receives.

    Defaults live on the class so that a unary call only sets what it must. It is a
    ``grpc.ServicerContext`` by registration rather than inheritance: building an
    instance of an ABC subclass costs twice as much, on every call.
    """

    stage = ACTIVE
    code_: Optional[grpc.StatusCode] = None
    details_: Optional[str] = None
    trailing: Optional[tuple] = None
    initial: Optional[tuple] = None
    headers_sent = False
    aborted = False
    callbacks: Optional[list] = None
    requests: Optional[queue.SimpleQueue] = None
    partial: Any = None  # messages.Partial of a message that spans several frames
    request_done = False
    reserved = 0  # bytes charged to the server's reassembly budget (budget.py)
    queued = 0  # bytes of this call in its channel's outbox (outbox.py)
    # request window (request streaming): bytes queued for the handler (poller writes), taken
    # by it and credited back to the client (its thread writes): one writer each
    arrived = taken = credited = 0
    touched = False  # the handler set a code, details, metadata or a callback: no bare reply

    def __init__(self, server: Any, channel: Any, call_id: int, method: str, metadata: tuple,
                 deadline: Optional[float], handler: Any) -> None:
        self._server = server
        self.channel = channel
        self.call_id = call_id
        self.method = method
        self._metadata = metadata
        self.deadline = deadline
        self.handler = handler

    # -- grpc.RpcContext ---------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return self.stage is ACTIVE

    @property
    def cancelled(self) -> bool:
        return self.stage is CANCELLED_STAGE

    def is_active(self) -> bool:
        return self.stage is ACTIVE

    def time_remaining(self) -> Optional[float]:
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    def cancel(self) -> None:
        self._server._cancel_call(self, grpc.StatusCode.CANCELLED, "Cancelled by the server", notify_client=True)

    def add_callback(self, callback: Callable[[], None]) -> bool:
        with self._server._state_lock:
            if not self.active:
                return False
            if self.callbacks is None:
                self.callbacks = []
            self.callbacks.append(callback)
            self.touched = True
            return True

    # -- grpc.ServicerContext --------------------------------------------------------------------
    def invocation_metadata(self) -> tuple:
        return self._metadata

    def peer(self) -> str:
        return self.channel.peer

    def peer_identities(self) -> None:
        return None

    def peer_identity_key(self) -> None:
        return None

    def auth_context(self) -> dict:
        return {}

    def set_compression(self, compression: Any) -> None:
        pass

    def disable_next_message_compression(self) -> None:
        pass

    def send_initial_metadata(self, initial_metadata: Any) -> None:
        if self.headers_sent or self.initial is not None:
            raise ValueError("Initial metadata has already been sent!")
        self.initial = tuple(initial_metadata or ())
        self.touched = True
        if self.handler.response_streaming:
            self._server._send_headers(self)

    def set_trailing_metadata(self, trailing_metadata: Any) -> None:
        self.trailing = tuple(trailing_metadata or ())
        self.touched = True

    def trailing_metadata(self) -> Any:
        return as_metadata(self.trailing) if self.trailing else self.trailing

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        if code == grpc.StatusCode.OK:
            code, details = grpc.StatusCode.UNKNOWN, ""
        self.code_ = code
        self.details_ = details
        self.aborted = True
        self.touched = True
        raise AbortError()

    def abort_with_status(self, status: Any) -> None:
        self.trailing = tuple(status.trailing_metadata or ())
        self.touched = True
        self.abort(status.code, status.details)

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code_ = code
        self.touched = True

    def set_details(self, details: str) -> None:
        self.details_ = details
        self.touched = True

    def code(self) -> Optional[grpc.StatusCode]:
        return self.code_

    def details(self) -> Optional[str]:
        return self.details_


class UnaryCall(ServerCall):
    """A unary-unary call without metadata, run on the fast path: what a plain ServerCall
    would hold, with the constant parts as class attributes (a deadline, when it has one,
    is set on the instance).

    Built bare (``UnaryCall()``) and given its five fields by its one maker
    (``Server._run_unary``): a Python ``__init__`` costs ~830 instructions more per call
    in CPython 3.11 (the type call goes through ``slot_tp_init`` and a frame)."""

    request_done = True
    _metadata: tuple = ()
    deadline = None

    __init__ = object.__init__  # type: ignore[assignment]  # (fields: _server, channel, call_id, method, handler)


class CachedHandler(grpc.RpcMethodHandler):
    """A method handler's fields in slots: what ``Server._lookup`` caches per method.

    Why: grpc's handlers are namedtuples, whose fields CPython 3.11 reads through the
    generic attribute lookup (~160-230 instructions each); a slot takes ~60-80, and a
    unary call reads three (measured with callgrind)."""

    __slots__ = ("request_streaming", "response_streaming", "request_deserializer", "response_serializer",
                 "unary_unary", "unary_stream", "stream_unary", "stream_stream")

    def __init__(self, handler: Any) -> None:
        for name in CachedHandler.__slots__:
            setattr(self, name, getattr(handler, name, None))


class RequestIterator:
    """What a request-streaming handler iterates: messages the poller queued for it."""

    def __init__(self, call: ServerCall, deserializer: Optional[Callable]) -> None:
        self._call = call
        self._deserializer = deserializer

    def __iter__(self) -> "RequestIterator":
        return self

    def __next__(self) -> Any:
        item = self._call.requests.get()
        if item is END_OF_REQUESTS:
            self._call.requests.put(END_OF_REQUESTS)
            raise StopIteration()
        if item is CANCELLED:
            self._call.requests.put(CANCELLED)
            raise grpc.RpcError()
        self._call._server._took_request(self._call, len(item))
        if self._deserializer is None:
            return item
        try:
            return self._deserializer(item)
        except Exception:
            self._call._server._fail(self._call, grpc.StatusCode.INTERNAL, "Exception deserializing request!")
            raise grpc.RpcError() from None

    next = __next__


grpc.ServicerContext.register(ServerCall)
