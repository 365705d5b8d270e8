"""``grpc.Channel`` over a NotNets pool: the object ``insecure_channel("notnets:NAME")`` returns.

Generated stubs call ``unary_unary``/``unary_stream``/``stream_unary``/``stream_stream``
and get multicallables with grpcio's signatures. The channel connects lazily (first
call) and reconnects after the server went away, like a grpc channel in
TRANSIENT_FAILURE: a call without ``wait_for_ready`` fails fast with UNAVAILABLE, a call
with it waits for a server until its deadline.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import time
from collections import deque
from typing import Any, Callable, Iterator, Optional, Sequence, Tuple

import grpc

from ..wire import frames as F
from ..wire.messages import as_bytes
from .call import WAIT_DONE, CallState, ClientCall
from .connection import AcceptTimeout, Connection, ConnectionBroken
from ..budget import Budget
from ..errors import PoolError, PoolNotReadyError
from ..liveness import BEATER
from ..pool import Pool, default_pool_path, stale_ms
from ..options import message_limits
from ..status import OK

_log = logging.getLogger(__name__)
_monotonic = time.monotonic
SCHEME = "notnets:"
ACCEPT_TRY = 1.0  # seconds a directory entry gets to accept a channel while others remain




class _DeadConnection:
    """Stands in for a connection behind a call that failed before it started."""

    broken = "not connected"

    def wait(self, state: CallState, what: int, until: Optional[float]) -> bool:
        return True

    def add_callback(self, state: CallState, callback: Callable[[], None]) -> bool:
        return False

    def add_done_callback(self, state: CallState, fn: Callable[[Any], None]) -> None:
        fn(state.handle)

    def unary_value(self, state: CallState) -> None:
        return None

    def fail_locally(self, *args: Any, **kwargs: Any) -> None:
        pass

    def unattend(self, state: CallState) -> None:
        pass

    def read_arrived(self) -> None:
        pass


_DEAD = _DeadConnection()


def failed_call(code: grpc.StatusCode, details: str) -> Tuple[Any, CallState]:
    state = CallState(0, None, None, True)
    state.done, state.code, state.details, state.initial = True, code, details, ()
    return _DEAD, state


class Stage(enum.Enum):
    """Where a channel is (the names of ``grpc.ChannelConnectivity``). It moves only
    through ``Channel._move``, and never out of SHUTDOWN, which only ``Channel._end``
    enters."""

    IDLE = "idle"                              # no connection yet: the first call connects
    READY = "ready"                            # a connection is open
    TRANSIENT_FAILURE = "transient_failure"    # connecting failed or the connection broke: the next call reconnects
    SHUTDOWN = "shutdown"                      # closed: calls raise ValueError, nothing runs


_CONNECTIVITY = {Stage.IDLE: grpc.ChannelConnectivity.IDLE, Stage.READY: grpc.ChannelConnectivity.READY,
                 Stage.TRANSIENT_FAILURE: grpc.ChannelConnectivity.TRANSIENT_FAILURE,
                 Stage.SHUTDOWN: grpc.ChannelConnectivity.SHUTDOWN}


class Channel(grpc.Channel):
    def __init__(self, target: str, pool: Optional[str] = None, options: Optional[Sequence[Tuple[str, Any]]] = None) -> None:
        name = target[len(SCHEME):] if target.startswith(SCHEME) else target
        name = name.lstrip("/")
        if not name:
            raise ValueError(f"{target!r}: expected notnets:NAME")
        self._name = name
        self._pool_path = default_pool_path(pool)
        self._max_receive, self._max_send = message_limits(options)
        self._budget = Budget.from_options(options)  # partly received messages, across calls (budget.py)
        self._pool: Optional[Pool] = None
        self._conn: Optional[Connection] = None
        self._beat_key: Optional[int] = None
        self._lock = threading.RLock()  # held while connecting (serialises connects, and the pool's release)
        self._stage_lock = threading.Lock()  # held for one stage change only
        self._stage = Stage.IDLE
        self._callbacks: deque = deque()
        self._pump_event = threading.Event()
        self._pump_thread: Optional[threading.Thread] = None
        self._subscriptions: dict = {}
        self._probe_pool()

    def _probe_pool(self) -> None:
        """Fail early on a file that is not a pool; an absent or all-zero one may come later."""
        if not os.path.exists(self._pool_path):
            return
        try:
            self._pool = Pool.acquire(self._pool_path)
        except PoolNotReadyError:
            pass  # a server may create or format it before the first call

    # -- connecting ---------------------------------------------------------------------------
    def _connection(self, deadline: Optional[float], wait_for_ready: Optional[bool]) -> Connection:
        conn = self._conn
        if conn is not None and conn.broken is None:
            return conn
        with self._lock:
            if self._stage is Stage.SHUTDOWN:
                raise ValueError("Cannot invoke RPC on closed channel!")
            conn = self._conn
            if conn is not None and conn.broken is None:
                return conn
            self._drop_connection()
            end = deadline if deadline is not None else _monotonic() + (3600.0 if wait_for_ready else 0.0)
            while True:
                try:
                    conn = self._connect(deadline)
                except (ConnectionBroken, PoolError) as exc:
                    self._move(Stage.TRANSIENT_FAILURE)
                    if not wait_for_ready or _monotonic() >= end or self._stage is Stage.SHUTDOWN:
                        raise ConnectionBroken(str(exc)) from None
                    time.sleep(0.05)
                    continue
                if not self._adopt(conn):  # closed while we connected
                    conn.close(grpc.StatusCode.CANCELLED, "Channel closed!")
                    raise ValueError("Cannot invoke RPC on closed channel!")
                return conn

    def _move(self, stage: Stage, broken: Optional[Connection] = None) -> bool:
        """The one place the stage changes (but SHUTDOWN: ``_end``). ``broken``: only if
        that connection is still the current one (a late break of an old one is no news)."""
        with self._stage_lock:
            if self._stage is Stage.SHUTDOWN or (broken is not None and broken is not self._conn):
                return False
            self._stage = stage
            return True

    def _adopt(self, conn: Connection) -> bool:
        """A new connection becomes the channel's: READY; False if the channel was closed."""
        with self._stage_lock:
            if self._stage is Stage.SHUTDOWN:
                return False
            self._conn = conn
            self._stage = Stage.READY
            self._beat_key = BEATER.register(conn.heartbeat)
        conn.on_broken = self._on_broken
        if conn.broken is not None:  # broke before it could tell us
            self._on_broken(conn)
        return True

    def _on_broken(self, conn: Connection) -> None:
        """(whichever thread broke ``conn``) the next call reconnects."""
        self._move(Stage.TRANSIENT_FAILURE, broken=conn)

    @property
    def stage(self) -> Stage:
        return self._stage

    def _connect(self, deadline: Optional[float]) -> Connection:
        if self._pool is not None and self._pool.lost is not None:  # truncated: map it afresh (or fail)
            lost, self._pool = self._pool, None
            lost.release()
        if self._pool is None:
            self._pool = Pool.acquire(self._pool_path)
        pool = self._pool
        found = pool.candidates(self._name)
        if not found:
            raise ConnectionBroken(f"no live server publishes {self._name!r} in {self._pool_path}")
        failure = None
        for i, endpoint in enumerate(found):
            # one entry may be a leftover or a forgery: give each a short handshake while
            # others remain to be tried, the last one the full stale interval
            wait = ACCEPT_TRY if i + 1 < len(found) else stale_ms() / 1000 + 1.0
            full = _monotonic() + wait
            limit = full if deadline is None else min(full, max(deadline, _monotonic() + 0.5))
            slot, generation = pool.claim_channel(endpoint, os.getpid())
            conn = Connection(pool, endpoint, slot, generation, self._max_receive, self._max_send,
                              self._queue_callbacks, self._budget)
            try:
                conn.await_accept(limit)
            except ConnectionBroken as exc:
                pool.close_channel(slot, generation)
                if isinstance(exc, AcceptTimeout) and limit < full:
                    # the call's deadline ended the wait, not the entry: no evidence against
                    # it (marking it refused made the next calls UNAVAILABLE on a busy host)
                    raise
                pool.refused(endpoint)
                failure = exc
                continue
            except BaseException:
                pool.close_channel(slot, generation)
                raise
            return conn
        raise failure

    def _drop_connection(self) -> None:
        """(connect lock held) Let go of a broken connection before connecting again."""
        with self._stage_lock:
            conn, self._conn = self._conn, None
            beat, self._beat_key = self._beat_key, None
        if beat is not None:
            BEATER.unregister(beat)
        if conn is not None:
            try:
                conn.close(grpc.StatusCode.UNAVAILABLE, conn.broken or "connection dropped")
            except Exception:
                _log.debug("closing a broken connection failed", exc_info=True)

    # -- calls ----------------------------------------------------------------------------------
    def _start(self, method: bytes, request: Any, serializer: Optional[Callable], deserializer: Optional[Callable],
               timeout: Optional[float], metadata: Any, wait_for_ready: Optional[bool], unary_request: bool,
               unary_response: bool) -> Tuple[Any, CallState]:
        deadline = None if timeout is None else _monotonic() + timeout
        payload = None
        if unary_request:
            if serializer is None:
                if request is None:  # grpcio: its serializing step fails
                    return failed_call(grpc.StatusCode.INTERNAL, "Exception serializing request!")
                if not isinstance(request, (bytes, bytearray, memoryview)):
                    raise TypeError(f"Argument 'message' has incorrect type (expected bytes, got "
                                    f"{type(request).__name__})")
                payload = request
            else:
                try:
                    payload = serializer(request)
                    if not isinstance(payload, (bytes, bytearray, memoryview)):
                        raise TypeError(f"serializer returned {type(payload).__name__}, not bytes")
                except Exception:
                    return failed_call(grpc.StatusCode.INTERNAL, "Exception serializing request!")
            if len(payload) > self._max_send:
                return failed_call(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                   f"Sent message larger than max ({len(payload)} vs. {self._max_send})")
        try:
            md = F.encode_metadata(metadata) if metadata else b""
        except ValueError:
            return failed_call(grpc.StatusCode.INTERNAL, "Invalid metadata")
        for attempt in (0, 1):
            try:
                conn = self._connection(deadline, wait_for_ready)
                return conn, conn.start_call(method, deadline, md, payload, unary_request, deserializer,
                                             unary_response)
            except ConnectionBroken as exc:
                if self._stage is Stage.SHUTDOWN:  # closed while this call waited for a server
                    return failed_call(grpc.StatusCode.CANCELLED, "Channel closed!")
                if attempt or (deadline is not None and _monotonic() >= deadline):
                    code = grpc.StatusCode.UNAVAILABLE
                    if deadline is not None and _monotonic() >= deadline:
                        code = grpc.StatusCode.DEADLINE_EXCEEDED
                    return failed_call(code, f"NotNets: {exc}" if code is grpc.StatusCode.UNAVAILABLE
                                       else "Deadline Exceeded")
        raise AssertionError("unreachable")

    def pump_for(self, call: ClientCall) -> None:
        """The pump reads for a call from ``start()`` from now on, as for a ``future()``:
        its caller stopped polling it and waits for its done callback."""
        self._unattended(call._conn, call._state)

    def _unattended(self, conn: Any, state: CallState) -> ClientCall:
        call = ClientCall(conn, state)
        if not state.done:
            conn.unattend(state)
            self._ensure_pump()
        return call

    def _stream_requests(self, conn: Any, state: CallState, requests: Iterator, serializer: Optional[Callable]) -> None:
        if state.done:
            return
        threading.Thread(target=_consume_requests, args=(conn, state, requests, serializer),
                         name="notnets-requests", daemon=True).start()

    # -- pump: unattended calls and callbacks --------------------------------------------------------
    def _queue_callbacks(self, callbacks: list) -> None:
        self._callbacks.extend(callbacks)
        self._ensure_pump()
        self._pump_event.set()

    def _ensure_pump(self) -> None:
        if self._pump_thread is None or not self._pump_thread.is_alive():
            with self._lock:
                if self._pump_thread is None or not self._pump_thread.is_alive():
                    self._pump_thread = threading.Thread(target=self._pump_loop, name="notnets-pump", daemon=True)
                    self._pump_thread.start()
        self._pump_event.set()

    def _pump_loop(self) -> None:
        while True:
            while self._callbacks:
                callback = self._callbacks.popleft()
                try:
                    callback()
                except Exception:
                    _log.exception("NotNets call callback raised")
            if self._stage is Stage.SHUTDOWN and not self._callbacks:
                return
            conn = self._conn
            if conn is not None and conn.unattended and conn.broken is None:
                conn.expire_deadlines(_monotonic())
                if conn.reader and not conn.want_reader:  # (the reader token is free)
                    conn.pump(_monotonic() + 0.05)
                else:
                    self._pump_event.wait(0.002)
                    self._pump_event.clear()
            else:
                self._pump_event.wait(0.1)
                self._pump_event.clear()

    # -- grpc.Channel -------------------------------------------------------------------------------
    def unary_unary(self, method: str, request_serializer: Optional[Callable] = None,
                    response_deserializer: Optional[Callable] = None, _registered_method: Optional[bool] = False
                    ) -> "UnaryUnary":
        return UnaryUnary(self, method, request_serializer, response_deserializer)

    def unary_stream(self, method: str, request_serializer: Optional[Callable] = None,
                     response_deserializer: Optional[Callable] = None, _registered_method: Optional[bool] = False
                     ) -> "UnaryStream":
        return UnaryStream(self, method, request_serializer, response_deserializer)

    def stream_unary(self, method: str, request_serializer: Optional[Callable] = None,
                     response_deserializer: Optional[Callable] = None, _registered_method: Optional[bool] = False
                     ) -> "StreamUnary":
        return StreamUnary(self, method, request_serializer, response_deserializer)

    def stream_stream(self, method: str, request_serializer: Optional[Callable] = None,
                      response_deserializer: Optional[Callable] = None, _registered_method: Optional[bool] = False
                      ) -> "StreamStream":
        return StreamStream(self, method, request_serializer, response_deserializer)

    def subscribe(self, callback: Callable[[grpc.ChannelConnectivity], None], try_to_connect: bool = False) -> None:
        stop = threading.Event()
        self._subscriptions[callback] = stop
        threading.Thread(target=self._watch, args=(callback, try_to_connect, stop), name="notnets-connectivity",
                         daemon=True).start()

    def unsubscribe(self, callback: Callable[[grpc.ChannelConnectivity], None]) -> None:
        stop = self._subscriptions.pop(callback, None)
        if stop is not None:
            stop.set()

    def _watch(self, callback: Callable, try_to_connect: bool, stop: threading.Event) -> None:
        last = None
        while not stop.is_set() and self._stage is not Stage.SHUTDOWN:
            if try_to_connect and self._stage is not Stage.READY:
                try:
                    self._connection(None, False)
                except (ConnectionBroken, ValueError):
                    pass
            state = _CONNECTIVITY[self._stage]
            if state is grpc.ChannelConnectivity.SHUTDOWN:
                break
            if state != last:
                last = state
                try:
                    callback(state)
                except Exception:
                    _log.exception("connectivity callback raised")
            stop.wait(0.1)
        if self._stage is Stage.SHUTDOWN and last is not grpc.ChannelConnectivity.SHUTDOWN and not stop.is_set():
            callback(grpc.ChannelConnectivity.SHUTDOWN)

    def close(self) -> None:
        self._end()

    def _end(self) -> None:
        """The one way a channel ends (``close``, ``with``, garbage collection): SHUTDOWN
        first, under the stage lock only, so that no call or connect starts and a thread
        connecting with wait_for_ready gives up; then the connection's calls end
        CANCELLED, the pump and the watchers stop, and the pool is let go (under the
        connect lock: a connect still running finishes first, within its bounded wait)."""
        with self._stage_lock:
            if self._stage is Stage.SHUTDOWN:
                return
            self._stage = Stage.SHUTDOWN
            conn, self._conn = self._conn, None
            beat, self._beat_key = self._beat_key, None
        if beat is not None:
            BEATER.unregister(beat)
        if conn is not None:
            conn.close(grpc.StatusCode.CANCELLED, "Channel closed!")
        self._pump_event.set()
        if self._pump_thread is not None and self._pump_thread is not threading.current_thread():
            self._pump_thread.join(timeout=1.0)
        for stop in list(self._subscriptions.values()):
            stop.set()
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.release()

    def __enter__(self) -> "Channel":
        return self

    def __exit__(self, *exc: Any) -> bool:
        self.close()
        return False

    def __del__(self) -> None:
        try:
            if self._conn is not None:
                self._end()
        except Exception:
            pass


def _consume_requests(conn: Connection, state: CallState, requests: Iterator, serializer: Optional[Callable]) -> None:
    with conn.lock:
        conn.senders += 1
    try:
        for request in requests:
            if state.done:
                return
            try:
                payload = request if serializer is None else serializer(request)
            except Exception:
                conn.fail_locally(state, grpc.StatusCode.INTERNAL, "Exception serializing request!", cancel=True)
                return
            if not conn.await_window(state):
                return
            conn.send_message(state, payload, False)
            state.sent += len(payload)
        if not state.done:
            conn.send_half_close(state)
    except ConnectionBroken:
        pass
    except Exception:
        _log.exception("Exception iterating requests!")
        conn.fail_locally(state, grpc.StatusCode.UNKNOWN, "Exception iterating requests!", cancel=True)
    finally:
        with conn.lock:
            conn.senders -= 1


class _MultiCallable:
    __slots__ = ("_channel", "_method", "_serializer", "_deserializer", "_prefix", "_head", "_timed")

    def __init__(self, channel: Channel, method: str, serializer: Optional[Callable],
                 deserializer: Optional[Callable]) -> None:
        self._channel = channel
        self._method = method.encode("utf-8") if isinstance(method, str) else bytes(method)
        self._serializer = None if serializer is as_bytes else serializer  # buffers go into the ring as they are
        self._deserializer = deserializer
        # CALL body up to the message, for calls without deadline and metadata
        self._timed: Tuple[Optional[float], bytes] = (0.0, b"")  # (timeout, _call_body(timeout)) of the last one
        self._prefix = self._call_body(None)
        self._head = len(self._prefix)

    def _call_body(self, timeout: Optional[float], metadata: bytes = b"") -> bytes:
        """The CALL body up to the message, as Connection.start_call writes it, for the
        fast paths that write it themselves. Without metadata, the last one is kept: callers
        pass the same timeout over and over (a chain's tiers, say)."""
        if not metadata:
            timed = self._timed  # (one tuple: threads may replace it, never tear it)
            if timed[0] == timeout and timed[1]:
                return timed[1]
        body = (F.CALL_HEAD.pack(0 if timeout is None else max(1, int(timeout * 1e6)), len(self._method),
                                 len(metadata)) + self._method + metadata)
        if not metadata:
            self._timed = (timeout, body)
        return body


def _outcome(conn: Any, state: CallState) -> Any:
    """Wait for a unary-response call; its value, or raise it as a grpc.RpcError."""
    if not state.done:
        conn.wait(state, WAIT_DONE, None)
    if state.code is OK:
        value = conn.unary_value(state)
        if state.code is OK:
            return value
    raise ClientCall(conn, state)


class UnaryUnary(_MultiCallable, grpc.UnaryUnaryMultiCallable):
    __slots__ = ()

    def __call__(self, request: Any, timeout: Optional[float] = None, metadata: Any = None, credentials: Any = None,
                 wait_for_ready: Optional[bool] = None, compression: Any = None) -> Any:
        conn = self._channel._conn
        if conn is not None and not metadata and conn.broken is None and (timeout is None or timeout > 0):
            serializer = self._serializer
            if serializer is None:
                # anything else (a view, say): checked on the general path
                payload = request if type(request) is bytes or (type(request) is memoryview and request.itemsize == 1
                                                                and request.c_contiguous) else None
            else:
                try:
                    payload = serializer(request)
                except Exception:
                    payload = None
                if type(payload) is not bytes:
                    payload = None
            if payload is not None and len(payload) <= conn.fast_max - self._head:  # one frame, within max_send
                if timeout is None:
                    prefix, deadline = self._prefix, None
                else:  # the same CALL body with the timeout filled in, as start_call would write it
                    deadline = _monotonic() + timeout
                    prefix = self._call_body(timeout)
                try:
                    raw = conn.unary_fast(prefix, payload, self._deserializer, deadline)
                except ConnectionBroken:
                    raw = None
                if raw is not None:
                    if type(raw) is CallState:
                        return _outcome(conn, raw)
                    if len(raw) > conn.max_receive:
                        raise ClientCall(conn, failed_call(grpc.StatusCode.RESOURCE_EXHAUSTED, (
                            f"Received message larger than max ({len(raw)} vs. {conn.max_receive})"))[1])
                    deserializer = self._deserializer
                    if deserializer is None:
                        return raw
                    try:
                        return deserializer(raw)
                    except Exception:
                        state = failed_call(grpc.StatusCode.INTERNAL, "Exception deserializing response!")[1]
                        raise ClientCall(conn, state) from None
            elif payload is not None and len(payload) <= conn.max_send:  # too large for one frame: the general path, without serializing again
                conn, state = self._channel._start(self._method, payload, None, self._deserializer, timeout, None,
                                                   wait_for_ready, True, True)
                return _outcome(conn, state)
        conn, state = self._channel._start(self._method, request, self._serializer, self._deserializer, timeout,
                                           metadata, wait_for_ready, True, True)
        return _outcome(conn, state)

    def with_call(self, request: Any, timeout: Optional[float] = None, metadata: Any = None, credentials: Any = None,
                  wait_for_ready: Optional[bool] = None, compression: Any = None) -> Tuple[Any, ClientCall]:
        conn, state = self._channel._start(self._method, request, self._serializer, self._deserializer, timeout,
                                           metadata, wait_for_ready, True, True)
        return _outcome(conn, state), ClientCall(conn, state)

    def future(self, request: Any, timeout: Optional[float] = None, metadata: Any = None, credentials: Any = None,
               wait_for_ready: Optional[bool] = None, compression: Any = None) -> ClientCall:
        conn, state = self._channel._start(self._method, request, self._serializer, self._deserializer, timeout,
                                           metadata, wait_for_ready, True, True)
        return self._channel._unattended(conn, state)

    def start(self, request: Any, timeout: Optional[float] = None, metadata: Any = None,
              wait_for_ready: Optional[bool] = None) -> ClientCall:
        """``future()`` for a caller that reads the response itself: the channel's pump
        leaves the call alone (notnets_rpc.aio polls it from its event loop with
        ``ClientCall.poll()``, or waits for it on a thread) until ``Channel.pump_for``."""
        conn, state = self._channel._start(self._method, request, self._serializer, self._deserializer, timeout,
                                           metadata, wait_for_ready, True, True)
        return ClientCall(conn, state)

    def start_unary(self, request: Any, timeout: Optional[float], metadata: Any, max_bytes: int
                    ) -> Optional[Tuple[Connection, CallState]]:
        """The hook of notnets_rpc.aio's unary fast path: a call starts as the blocking
        fast path starts it (one CALL frame carrying the message, its body from
        ``_prefix`` when it has no timeout and no metadata) but returns at once,
        registered, for its caller to poll the response ring (``Connection.read_arrived``).
        None where the general path must start it: not connected, a timeout already
        passed, metadata that does not encode, a request that is not bytes, does not
        serialize to bytes, is larger than ``max_bytes`` or does not fit one frame."""
        conn = self._channel._conn
        if conn is None or conn.broken is not None or (timeout is not None and timeout <= 0):
            return None
        serializer = self._serializer
        if serializer is None:
            payload = request
        else:
            try:
                payload = serializer(request)
            except Exception:
                return None
        if type(payload) is not bytes:
            return None
        deadline = None if timeout is None else _monotonic() + timeout
        if metadata:
            try:
                prefix = self._call_body(timeout, F.encode_metadata(metadata))
            except ValueError:
                return None
        elif timeout is None:
            prefix = self._prefix
        else:
            prefix = self._call_body(timeout)
        if len(payload) + len(prefix) > conn.chunk or len(payload) > min(conn.max_send, max_bytes):
            return None
        try:
            return conn, conn._unary_shared(prefix, payload, self._deserializer, deadline)
        except ConnectionBroken:
            return None


class UnaryStream(_MultiCallable, grpc.UnaryStreamMultiCallable):
    __slots__ = ()

    def __call__(self, request: Any, timeout: Optional[float] = None, metadata: Any = None, credentials: Any = None,
                 wait_for_ready: Optional[bool] = None, compression: Any = None) -> ClientCall:
        conn, state = self._channel._start(self._method, request, self._serializer, self._deserializer, timeout,
                                           metadata, wait_for_ready, True, False)
        return self._channel._unattended(conn, state)


class StreamUnary(_MultiCallable, grpc.StreamUnaryMultiCallable):
    __slots__ = ()

    def _begin(self, requests: Iterator, timeout: Optional[float], metadata: Any, wait_for_ready: Optional[bool]
               ) -> Tuple[Any, CallState]:
        conn, state = self._channel._start(self._method, None, None, self._deserializer, timeout, metadata,
                                           wait_for_ready, False, True)
        self._channel._stream_requests(conn, state, requests, self._serializer)
        return conn, state

    def __call__(self, request_iterator: Iterator, timeout: Optional[float] = None, metadata: Any = None,
                 credentials: Any = None, wait_for_ready: Optional[bool] = None, compression: Any = None) -> Any:
        return _outcome(*self._begin(request_iterator, timeout, metadata, wait_for_ready))

    def with_call(self, request_iterator: Iterator, timeout: Optional[float] = None, metadata: Any = None,
                  credentials: Any = None, wait_for_ready: Optional[bool] = None, compression: Any = None
                  ) -> Tuple[Any, ClientCall]:
        conn, state = self._begin(request_iterator, timeout, metadata, wait_for_ready)
        return _outcome(conn, state), ClientCall(conn, state)

    def future(self, request_iterator: Iterator, timeout: Optional[float] = None, metadata: Any = None,
               credentials: Any = None, wait_for_ready: Optional[bool] = None, compression: Any = None) -> ClientCall:
        return self._channel._unattended(*self._begin(request_iterator, timeout, metadata, wait_for_ready))


class StreamStream(_MultiCallable, grpc.StreamStreamMultiCallable):
    __slots__ = ()

    def __call__(self, request_iterator: Iterator, timeout: Optional[float] = None, metadata: Any = None,
                 credentials: Any = None, wait_for_ready: Optional[bool] = None, compression: Any = None) -> ClientCall:
        conn, state = self._channel._start(self._method, None, None, self._deserializer, timeout, metadata,
                                           wait_for_ready, False, False)
        self._channel._stream_requests(conn, state, request_iterator, self._serializer)
        return self._channel._unattended(conn, state)
