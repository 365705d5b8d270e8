"""Client-side calls: the light state the reader updates, and the grpc-facing object.

``CallState`` is what the connection's reader writes into (under the connection lock);
it is a plain object because a blocking unary call that succeeds never needs more,
and building an exception object costs more than the rest of such a call.

``ClientCall`` plays every grpc role for a call that needs one, like grpcio's
rendezvous: returned by ``future()`` and by streaming calls, raised as the
``grpc.RpcError`` of a failed call, and handed to ``with_call`` users.
"""

from __future__ import annotations

import sys
from collections import deque
import time
from typing import Any, Callable, Optional

import grpc

from ..status import OK, as_metadata, format_status

WAIT_DONE, WAIT_MESSAGE, WAIT_HEADERS = 0, 1, 2
_NOTHING = object()


class CallState:
    """Fields written by the reader; defaults live on the class so a call sets four."""

    done = False
    code: Optional[grpc.StatusCode] = None
    details: str = ""
    initial: Optional[tuple] = None
    trailing: tuple = ()
    messages: Optional[deque] = None
    partial: Any = None  # messages.Partial of a message that spans several frames
    reserved = 0  # bytes of ``partial`` charged to the channel's reassembly budget (budget.py)
    sent = 0  # request-stream bytes sent (the sending thread writes) ...
    credit = 0  # ... and credited back by the server's WINDOW frames (the reader writes)
    waiter: Any = None
    callbacks: Optional[list] = None
    done_callbacks: Optional[list] = None
    cancelled = False
    attended = True
    response: Any = _NOTHING
    handle: Any = None  # the ClientCall, once one exists (for done callbacks)
    # (lane, position, request, the STATUS body a hand-back would be) of a request sent in our
    # lane; None for every other call, whatever flags a STATUS frame for it carries
    extent: Optional[tuple] = None

    def __init__(self, call_id: int, deadline: Optional[float], deserializer: Optional[Callable], unary: bool) -> None:
        self.id = call_id
        self.deadline = deadline
        self.deserializer = deserializer
        self.unary = unary

    def ready(self, what: int) -> bool:
        if self.done:
            return True
        if what == WAIT_MESSAGE:
            return bool(self.messages)
        if what == WAIT_HEADERS:
            return self.initial is not None
        return False


class ClientCall(grpc.RpcError, grpc.Call, grpc.Future):
    def __init__(self, conn: Any, state: CallState) -> None:
        self._conn = conn
        self._state = state
        state.handle = self

    # -- helpers -------------------------------------------------------------------------------
    def _wait(self, what: int, timeout: Optional[float] = None) -> bool:
        state = self._state
        if state.ready(what):
            return True
        until = None if timeout is None else time.monotonic() + timeout
        return self._conn.wait(state, what, until)

    def _value(self) -> Any:
        """The unary response, deserialized once (failure -> INTERNAL, like grpcio)."""
        state = self._state
        if state.response is _NOTHING:
            value = self._conn.unary_value(state)
            if state.code is not OK:
                raise self
            return value
        return state.response

    # -- grpc.RpcContext / grpc.Call ------------------------------------------------------------
    def is_active(self) -> bool:
        return not self._state.done

    def time_remaining(self) -> Optional[float]:
        deadline = self._state.deadline
        if deadline is None:
            return None
        return max(0.0, deadline - time.monotonic())

    def cancel(self) -> bool:
        if self._state.done:
            return False
        self._conn.fail_locally(self._state, grpc.StatusCode.CANCELLED, "Locally cancelled by application!",
                                cancel=True)
        return True

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return self._conn.add_callback(self._state, callback)

    def poll(self) -> bool:
        """Without blocking: read what has arrived on the call's connection (unless another
        thread is reading it); whether the call is done. For a call from ``start()``."""
        state = self._state
        if not state.done:
            self._conn.read_arrived()
        return state.done

    def initial_metadata(self) -> tuple:
        self._wait(WAIT_HEADERS)
        return as_metadata(self._state.initial)

    def trailing_metadata(self) -> tuple:
        self._wait(WAIT_DONE)
        return as_metadata(self._state.trailing)

    def code(self) -> grpc.StatusCode:
        self._wait(WAIT_DONE)
        return self._state.code

    def details(self) -> Optional[str]:
        self._wait(WAIT_DONE)
        return self._state.details

    def debug_error_string(self) -> str:
        return f"notnets: {self._state.code} {self._state.details!r}"

    # -- grpc.Future -----------------------------------------------------------------------------
    def cancelled(self) -> bool:
        return self._state.cancelled

    def running(self) -> bool:
        return not self._state.done

    def done(self) -> bool:
        return self._state.done

    def _settle(self, timeout: Optional[float]) -> None:
        if not self._wait(WAIT_DONE, timeout):
            raise grpc.FutureTimeoutError()
        if self._state.cancelled:
            raise grpc.FutureCancelledError()

    def result(self, timeout: Optional[float] = None) -> Any:
        self._settle(timeout)
        if self._state.code is OK:
            return self._value() if self._state.unary else None
        raise self

    def exception(self, timeout: Optional[float] = None) -> Optional[grpc.RpcError]:
        self._settle(timeout)
        return None if self._state.code is OK else self

    def traceback(self, timeout: Optional[float] = None) -> Any:
        self._settle(timeout)
        if self._state.code is OK:
            return None
        try:
            raise self
        except grpc.RpcError:
            return sys.exc_info()[2]

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        self._conn.add_done_callback(self._state, fn)

    # -- response iterator ------------------------------------------------------------------------
    def __iter__(self) -> "ClientCall":
        return self

    def __next__(self) -> Any:
        state = self._state
        if not state.messages and not state.done:
            self._conn.wait(state, WAIT_MESSAGE, None)
        if state.messages:
            raw = state.messages.popleft()
            if state.deserializer is None:
                return raw
            try:
                return state.deserializer(raw)
            except Exception:
                self._conn.fail_locally(state, grpc.StatusCode.INTERNAL, "Exception deserializing response!",
                                        cancel=True)
                raise self from None
        if state.code is OK:
            raise StopIteration()
        raise self

    next = __next__

    # -- presentation -------------------------------------------------------------------------------
    def __str__(self) -> str:
        if not self._state.done:
            return "<NotNets RPC in progress>"
        return format_status(self._state.code, self._state.details)

    __repr__ = __str__
