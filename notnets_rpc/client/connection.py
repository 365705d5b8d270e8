"""The client end of one channel slot: send frames, read replies, wake waiting calls.

Threads share a connection. There is no receiver thread on the fast path: a thread
that waits for its call takes the *reader* token (a non-blocking lock), polls the
response ring and hands frames to whichever call they belong to; other waiting threads
block on a private lock until their call is ready or the token is free. Calls that
nobody waits for (futures, streams, callbacks) are served by the channel's pump thread
(channel.py), which takes the token only when no caller wants it. A thread waiting for
request-ring room holds no lock and reads responses meanwhile (docs/rpc.md, "Concurrency").

Liveness: while waiting, the reader watches the server's directory entry; a changed
generation, a dead pid (same host), a heartbeat that stands still for NOTNETS_STALE_MS,
the server's drop verdict or someone else's claim on our slot ends every call with
UNAVAILABLE. The connection is then BROKEN and the channel opens a new one on the next
call.
"""

from __future__ import annotations

import enum
import itertools
import os
import threading
import time
import weakref
from collections import deque
from functools import partial
from typing import Any, Callable, Dict, Optional, Sequence

import grpc

from ..wire import frames as F
from ..wire import layout as L
from ..backoff import Backoff, tunables
from ..budget import Budget
from .call import WAIT_DONE, CallState, _NOTHING
from ..errors import ChecksumError, ProtocolError
from ..wire.messages import as_view, on_chunk, sink_slot, takes_buffers
from ..pool import Endpoint, Pool, pid_alive, stale_ms
from ..wire.ring import SMALL_FRAME
from ..wire.extents import F_EXTENT, REF, RETURNED, RETURNED_STATUS, parse_ref, returned_status
from ..lane_claims import REQUESTS, ChannelLanes
from ..status import OK, code_from_wire

_allocate_lock = threading.Lock
_monotonic = time.monotonic
LIVENESS_PERIOD = 0.1
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


def try_lock() -> deque:
    """A lock that is only ever tried, never waited for: ``pop()`` takes it (IndexError:
    another thread holds it), ``append(True)`` gives it back, and it is false while held.

    Why not ``threading.Lock``: its ``acquire(False)`` parses its arguments with
    ``PyArg_ParseTupleAndKeywords``, ~1,000 instructions for an acquire and release
    against ~340 for a deque's ``pop`` and ``append`` (CPython 3.11), and a unary call
    takes two such locks. Each of the two is one C call, atomic under the GIL."""
    return deque((True,))


_CALL = F.CALL
_STATUS = F.STATUS
_MESSAGE = F.MESSAGE
_BARE = F.F_BARE
_MORE = F.F_MORE
_HAS_MESSAGE = F.F_HAS_MESSAGE
_END = F.F_END_STREAM
_CALL_HEAD = F.CALL_HEAD
_UNARY = _HAS_MESSAGE | _END


class Stage(enum.Enum):
    """Where a connection is; it only moves forward (``Connection._end``)."""

    OPEN = "open"        # calls may start
    BROKEN = "broken"    # the server is gone (or a ring failed a check): calls end UNAVAILABLE
    CLOSED = "closed"    # the channel let go of it; its slot is free again


class ConnectionBroken(Exception):
    """The server behind this connection is gone; carries the details for UNAVAILABLE."""


class AcceptTimeout(ConnectionBroken):
    """The server did not accept the channel within the time it was given."""


def _handed_back(state: CallState, request: Any) -> Any:
    """The reply of a call whose request the server handed back (wire/extents.py,
    RETURNED): the request as the caller gave it, before its deserializer."""
    if type(request) is not bytes:  # the caller's buffer may change after the call: a private copy
        request = bytes(request)
    return memoryview(request) if state.deserializer is as_view else request


class Connection:
    def __init__(self, pool: Pool, endpoint: Endpoint, slot: int, generation: int, max_receive: int,
                 max_send: int, on_callback: Callable[[list], None], budget: Budget) -> None:
        self.pool = pool
        self.endpoint = endpoint
        self.slot = slot
        self.generation = generation
        self.mem = pool.mem
        self.ctl = pool.layout.channel(pool.host_id, slot)
        self.tx, self.rx = pool.client_rings(slot)
        self.rx.sink = self._sink
        self.rx.viewer = self._viewer
        self._fast: "tuple[int, Optional[Callable]]" = (0, None)  # the unregistered fast-path call
        self.chunk = pool.layout.chunk_bytes
        # messages larger than half a ring: requests in our lane, responses in the server's (extents.py)
        self.lanes = (ChannelLanes(pool, REQUESTS, pool.host_id, slot, generation, self.ctl + L.CH_RESP_LANE_TAIL,
                                   self.ctl + L.CH_REQ_LANE_TAIL, endpoint.host, revoke=True)
                      if pool.layout.lanes else None)
        self.request_window = pool.layout.ring_bytes  # a request stream's bytes ahead of its handler
        self.max_receive = max_receive
        self.max_send = max_send
        self.budget = budget  # the channel's, for partly received messages (budget.py)
        self.lock = threading.Lock()
        self.tx_lock = try_lock()  # held for one request ring write
        self.reader = try_lock()  # the reader token: held by the thread that polls the response ring
        self.calls: Dict[int, CallState] = {}
        self._ids = itertools.count(1)
        self.want_reader = 0
        self.broken: Optional[str] = None  # why the connection left OPEN (checked on every call)
        self.stage = Stage.OPEN
        self.released = False
        self.unattended = 0
        self._cancels: deque = deque()  # ids of calls that ended here, CANCEL not written yet
        self.senders = 0  # threads streaming requests: they need the GIL, so readers yield instead of spinning
        self._on_callback = on_callback
        self.on_broken: Optional[Callable[["Connection"], None]] = None  # the channel's: it reconnects next time
        self.same_process = endpoint.host == pool.host_id and endpoint.pid == os.getpid()
        # same kernel (same host, or sim hosts): sleep in the kernel after spinning and let
        # the server wake us (and we it)
        self.futex = pool.shares_futex(endpoint.host, endpoint.kernel)
        self.sleep_off = self.ctl + L.CH_CLIENT_SLEEP
        entry = pool.server_wake_entry(endpoint) if self.futex else None
        self.server_sleep = None if entry is None else entry + L.DIR_SLEEP
        self.server_kick = None if entry is None else entry + L.DIR_KICK
        views = self.mem.views()
        self._words = views[1] if views is not None else None
        # the fast path reads the server's sleep word by index (0: not by index, through wake_server)
        # (-1: it must be read through ``mem``, by wake_server)
        self._server_sleep_idx = 0 if self.server_sleep is None else self.server_sleep >> 3 if views is not None else -1
        # the server's DIR_CROWD word by index (0: never crowded); not 0 while the server is
        # crowded, which it alone decides (serving/channels.py, _publish_crowd)
        self._crowd_idx = 0 if entry is None or views is None else (entry + L.DIR_CROWD) >> 3
        self._pass_off = 0 if entry is None else entry + L.DIR_PASS  # crowded: sleep on this word (_sleep)
        # payload bytes (plus the CALL head and method) that go as one CALL frame on the fast path
        self.fast_max = min(self.chunk, self.max_send)
        self._claim = L.pack_state(generation, L.CH_OPEN)
        self._tune = tunables()  # read once per connection, never per wait
        self._backoff = self._new_backoff()
        self._peer_beat = (endpoint.heartbeat_ms, _monotonic())
        self._lost_key = pool.on_lost(self.break_)  # the pool file shrank: stop touching it
        self._last_check = _monotonic()

    def _new_backoff(self) -> Backoff:
        # a server in this very process needs the GIL to answer: do not spin
        sleeper = self._sleep if self.futex else None
        if self.same_process:
            return Backoff(self._tune, spin=0, sleeper=sleeper)
        return Backoff(self._tune, sleeper=sleeper, learn=not Backoff.remote_peer(self.endpoint.host != self.pool.host_id),
                       woken=self.futex)

    def wake_server(self) -> None:
        """After writing a frame: if the server's poller sleeps in the kernel, kick and wake it."""
        off = self.server_sleep
        if off is not None and self.mem.load(off):
            kick = self.server_kick
            self.mem.store(kick, self.mem.load(kick) + 1)
            self.mem.wake_word(kick)

    def _sleep(self, timeout: float) -> None:
        """Sleep in the kernel on the response ring's head until the server moves it (and,
        seeing our sleep word, wakes us), or ``timeout``; on a crowded server, on its pass
        word (it bumps and wakes it once per pass that answered a sleeper)."""
        mem = self.mem
        rx = self.rx
        if self._crowd_idx and self._words[self._crowd_idx]:
            # a crowded server wakes all its sleepers of a pass at once, on its pass word
            mem.store(self.sleep_off, L.SLEEP_ON_PASS)
            seen = mem.load(self._pass_off)
            if mem.load(rx.head_off) == rx.tail:
                mem.wait_word(self._pass_off, seen, timeout)
            mem.store(self.sleep_off, 0)
            return
        mem.store(self.sleep_off, L.SLEEP_ON_HEAD)
        head = mem.load(rx.head_off)
        if head == rx.tail:
            mem.wait_word(rx.head_off, head, timeout)
        mem.store(self.sleep_off, 0)

    # -- handshake -------------------------------------------------------------------------------
    def await_accept(self, deadline: float) -> None:
        """Wait for the server to accept this slot (it polls its doorbells)."""
        want = L.pack_state(self.generation, L.ACC_ACCEPTED)
        self.wake_server()
        # plain sleeps: the server's accept changes no word we could sleep on in the kernel
        # (a kernel sleep on the response ring lasted its whole timeout)
        backoff = Backoff(self._tune, spin=0 if self.same_process else None)
        off = self.ctl + L.CH_ACCEPT
        while True:
            word = self.mem.load(off)
            if word == want:
                return
            gen, verdict = L.unpack_state(word)
            if gen == self.generation and verdict != L.ACC_NONE:
                raise ConnectionBroken(f"server refused the channel ({L.ACC_NAMES.get(verdict, verdict)})")
            if backoff.pause():
                now = _monotonic()
                if now >= deadline:
                    raise AcceptTimeout("server did not accept the channel in time")
                if now - self._last_check > LIVENESS_PERIOD:
                    self._check_peer(now)

    # -- sending ------------------------------------------------------------------------------------
    def start_call(self, method: bytes, deadline: Optional[float], metadata: bytes, payload: Optional[bytes],
                   end_stream: bool, deserializer: Optional[Callable], unary_response: bool) -> CallState:
        """Register a call and send its CALL frame (plus the first message if it fits)."""
        if self.broken is not None:
            raise ConnectionBroken(self.broken)
        cid = next(self._ids) & 0xFFFFFFFF or next(self._ids)
        state = CallState(cid, deadline, deserializer, unary_response)
        self.calls[cid] = state
        timeout_us = 0 if deadline is None else max(1, int((deadline - _monotonic()) * 1e6))
        n = _CALL_HEAD.size + len(method) + len(metadata)
        if payload is not None and n + len(payload) <= self.chunk:
            flags = _HAS_MESSAGE | _END if end_stream else _HAS_MESSAGE
            self.send(_CALL, flags, cid, 0, (_CALL_HEAD.pack(timeout_us, len(method), len(metadata)), method,
                                             metadata, payload), n + len(payload), state)
        elif not (payload is not None and end_stream and self.lanes is not None
                  and self._call_with_extent(state, timeout_us, method, metadata, payload, n)):
            self.send(_CALL, 0, cid, 0, (_CALL_HEAD.pack(timeout_us, len(method), len(metadata)), method, metadata),
                      n, state)
            if payload is not None:
                self.send_message(state, payload, end_stream)
        return state

    def _call_with_extent(self, state: CallState, timeout_us: int, method: bytes, metadata: bytes, payload: Any,
                          n: int) -> bool:
        """A unary request too large for half a ring: the message into our lane, its
        reference in the CALL frame (wire/extents.py). The call keeps the request, so
        that a response the server hands back as the request itself (RETURNED) is
        answered from our own memory. False: no lane room, send chunks."""
        size = len(payload)
        if size > self.max_send:
            return False  # send_message says why
        lanes = self.lanes
        with lanes.lock:
            ref = lanes.put(state.id, size, (payload,))
            if ref is None:
                return False
            lane, _how, position, _n = REF.unpack(ref)  # (ours: valid)
            # what the server writes when it hands the request back (returned_status), to compare whole
            state.extent = (lane, position, payload, returned_status(lane, position, size))
            self.send(_CALL, _UNARY | F_EXTENT, state.id, 0,
                      (_CALL_HEAD.pack(timeout_us, len(method), len(metadata)), method, metadata, ref),
                      n + len(ref), state)
        return True

    def _take_extent(self, state: CallState, ref: bytes) -> Any:
        """The message an extent reference names: a view of the server's lane for
        buffer-taking deserializers, else bytes; or, handed back, our own request."""
        lanes = self.lanes
        if lanes is None:
            raise ProtocolError("an extent reference on a pool without lanes")
        lane, how, position, n = parse_ref(ref)
        lend = takes_buffers(state.deserializer)
        if how == RETURNED:
            sent = state.extent
            if sent is None or (lane, position) != sent[:2] or n != len(sent[2]):
                raise ProtocolError("a returned extent that is not this call's request")
            state.extent = None
            return _handed_back(state, sent[2])
        body, loan = lanes.take(ref, state.id, lend)
        if loan is not None:  # revoked while still queued: copied first (the loan must not keep the call alive)
            loan.evict = partial(self._evict, weakref.ref(state))
        return body

    def unary_fast(self, prefix: bytes, payload: bytes, deserializer: Optional[Callable],
                   deadline: Optional[float] = None) -> Any:
        """A blocking unary call without metadata, in as few steps as possible.

        ``prefix`` is the CALL body up to the message (its timeout field says ``deadline``
        to the server); prefix and ``payload`` fit one frame (``fast_max``). The spin
        phase is far shorter than any deadline, and a call that leaves it is registered
        with ``deadline``, which ``wait`` then enforces.

        Returns the raw response when the answer came back as a bare STATUS frame while
        this thread held the reader token and spun; otherwise the call's ``CallState``,
        which the caller finishes through ``wait`` like any other. On the fast path the
        call is never registered: only this thread reads the response ring meanwhile, so
        nobody else needs to find it. It is registered the moment it leaves that path
        (another frame, a slow answer, a full ring, a broken connection).
        """
        if self.broken is not None:
            raise ConnectionBroken(self.broken)
        reader = self.reader
        try:
            reader.pop()  # (try_lock: take the token)
        except IndexError:
            return self._unary_shared(prefix, payload, deserializer, deadline)
        cid = next(self._ids) & 0xFFFFFFFF or next(self._ids)
        sent = False
        tx_lock = self.tx_lock
        try:  # never wait for the request lock while holding the reader token
            tx_lock.pop()
        except IndexError:
            pass
        else:
            try:
                if self._cancels:
                    self._flush_cancels()
                sent = self.tx.put(_CALL, _UNARY, cid, 0, prefix + payload)  # one copy into the ring
            except ProtocolError as exc:
                self._release_reader()
                self.break_(f"corrupted request ring: {exc}")
                raise ConnectionBroken(self.broken) from None
            except BaseException:
                self._release_reader()
                raise
            finally:
                tx_lock.append(True)
        if not sent:  # a full request ring: wait for room without the token (the server may need us to read)
            state = self._register(cid, deserializer, deadline)
            self._release_reader()
            self.send(_CALL, _UNARY, cid, 0, (prefix, payload), len(prefix) + len(payload), state)
            return state
        state = None
        self._fast = (cid, deserializer)
        try:
            idx = self._server_sleep_idx
            if idx and (idx < 0 or self._words[idx]):
                self.wake_server()
            read = self.rx.read
            backoff = self._backoff
            # the server's callers and the server outnumber the CPUs: spinning or yielding
            # takes CPU from the server, so sleep at once (it wakes us after the pass that
            # answers us), then look once, still on the fast path
            crowded = self._crowd_idx and self._words[self._crowd_idx]
            if crowded:
                self._sleep(backoff.max_sleep)
                spin, tries = backoff.spin_max, 1  # (nothing learnt about spinning)
            else:
                tries = spin = backoff.spin
            for _ in range(tries):
                frame = read()
                if frame is not None:
                    kind, flags, fcid, _aux, body = frame
                    if fcid == cid and kind == _STATUS and flags & _BARE:
                        if spin < backoff.spin_max:  # the answer came while spinning: spinning pays
                            backoff.spun(spin)
                        reader.append(True)  # (_release_reader, inline)
                        if self.want_reader:
                            self._hand_over()
                        return body
                    break
            else:
                frame = None
            state = self._register(cid, deserializer, deadline)
            if frame is not None:
                self._dispatch(frame)
                if state.done:
                    return state
                backoff.restart()
            else:
                backoff.restart()
                backoff.n = spin  # spun already: go on yielding, then sleeping
                if crowded:
                    backoff.sleeping = True  # (no yields either)
            self._read_until(state, WAIT_DONE, None, False, fresh=False)
            return state
        except ChecksumError as exc:
            if state is None:
                state = self._register(cid, deserializer, deadline)
            self._on_bad_frame(exc)
            self._read_until(state, WAIT_DONE, None, False, fresh=False)
            return state
        except ProtocolError as exc:
            self.break_(f"corrupted response ring: {exc}")
            if state is None:
                state = self._register(cid, deserializer, deadline)
            return state
        finally:
            if state is not None:  # (the fast return released the token itself)
                self._release_reader()

    def _release_reader(self) -> None:
        self.reader.append(True)
        if self.want_reader:
            self._hand_over()

    def _register(self, cid: int, deserializer: Optional[Callable], deadline: Optional[float] = None) -> CallState:
        """Make a fast-path call visible to the reader, or end it if the connection broke."""
        state = CallState(cid, deadline, deserializer, True)
        self.calls[cid] = state
        if self.broken is not None:
            self.fail_locally(state, UNAVAILABLE, f"NotNets server unavailable: {self.broken}")
        return state

    def _unary_shared(self, prefix: bytes, payload: bytes, deserializer: Optional[Callable],
                      deadline: Optional[float]) -> CallState:
        """Another thread reads the response ring: register, send, and wait like any call."""
        cid = next(self._ids) & 0xFFFFFFFF or next(self._ids)
        state = CallState(cid, deadline, deserializer, True)
        self.calls[cid] = state
        self.send(_CALL, _UNARY, cid, 0, (prefix, payload), len(prefix) + len(payload), state)
        return state

    def send_message(self, state: CallState, payload: bytes, end_stream: bool) -> None:
        n = len(payload)
        if n > self.max_send:
            self.fail_locally(state, grpc.StatusCode.RESOURCE_EXHAUSTED,
                              f"Sent message larger than max ({n} vs. {self.max_send})", cancel=True)
            return
        chunk = self.chunk
        end = _END if end_stream else 0
        if n <= chunk:
            self.send(_MESSAGE, end, state.id, n, (payload,), n, state)
            return
        lanes = self.lanes
        if lanes is not None:  # whole, in our lane (wire/extents.py); no room: chunks
            with lanes.lock:
                ref = lanes.put(state.id, n, (payload,))
                if ref is not None:
                    self.send(_MESSAGE, end | F_EXTENT, state.id, 0, (ref,), len(ref), state)
                    return
        view = memoryview(payload)
        for start in range(0, n, chunk):
            piece = view[start : start + chunk]
            last = start + chunk >= n
            self.send(_MESSAGE, end if last else _MORE, state.id, n, (piece,), len(piece), state)
            if state.done:
                return

    def await_window(self, state: CallState) -> bool:
        """(a request-streaming thread, holding nothing) Wait until the call may send
        another message: fewer than ``request_window`` bytes sent that its handler has not
        taken yet (the server credits them back with WINDOW frames). A slow handler so
        waits alone; the channel's other calls go on. False if the call ended."""
        window = self.request_window
        if state.sent - state.credit < window:
            return not state.done
        backoff = Backoff(self._tune, spin=0, max_sleep=0.002)
        while state.sent - state.credit >= window:
            if state.done:
                return False
            if self.broken is not None:
                raise ConnectionBroken(self.broken)
            self._read_some()  # the credit may be waiting in the ring with nobody reading
            if backoff.pause():
                now = _monotonic()
                if state.deadline is not None and now >= state.deadline:
                    self.fail_locally(state, grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", cancel=True)
                    return False
                if now - self._last_check > LIVENESS_PERIOD:
                    self._check_peer(now)
        return not state.done

    def send_half_close(self, state: CallState) -> None:
        self.send(F.HALF_CLOSE, 0, state.id, 0, (), 0, state)

    def send(self, kind: int, flags: int, cid: int, aux: int, parts: Sequence[Any], n: int,
             state: Optional[CallState]) -> None:
        """Write one frame, waiting for room; gives up if the call ends or the server dies.

        While it waits it holds nothing: the request lock is taken for one attempt at a
        time, and between attempts this thread reads responses whenever nobody else does
        (the server may be waiting for us to read before it takes more requests)."""
        tx_lock = self.tx_lock
        backoff = None
        try:
            while True:
                try:
                    tx_lock.pop()
                except IndexError:
                    pass
                else:
                    try:
                        if self._cancels:
                            self._flush_cancels()
                        if self.tx.try_write(kind, flags, cid, aux, parts, n):
                            self.wake_server()
                            return
                    finally:
                        tx_lock.append(True)
                    self.wake_server()  # it may be asleep with a full ring to drain
                if backoff is None:
                    backoff = self._new_backoff()
                    backoff.skip_spin()
                if self.broken is not None:
                    raise ConnectionBroken(self.broken)
                if state is not None and state.done:
                    return
                self._read_some()
                if backoff.pause():
                    now = _monotonic()
                    if state is not None and state.deadline is not None and now >= state.deadline:
                        self.fail_locally(state, grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", cancel=True)
                        return
                    if now - self._last_check > LIVENESS_PERIOD:
                        self._check_peer(now)
        except ProtocolError as exc:
            self.break_(f"corrupted request ring: {exc}")
            raise ConnectionBroken(self.broken) from None

    def read_arrived(self) -> None:
        """Dispatch what the response ring holds now, without waiting, unless another
        thread is reading it (that thread dispatches it). notnets_rpc.aio polls with this
        from its event loop, which must never wait on the pool."""
        self._read_some()

    def _read_some(self) -> None:
        """Read what the response ring holds now, if no other thread is reading it."""
        reader = self.reader
        try:
            reader.pop()
        except IndexError:
            return
        try:
            read = self.rx.read
            for _ in range(64):
                frame = read()
                if frame is None:
                    break
                self._dispatch(frame)
        except ChecksumError as exc:
            self._on_bad_frame(exc)
        except ProtocolError as exc:
            self.break_(f"corrupted response ring: {exc}")
        finally:
            reader.append(True)
            if self.want_reader:
                self._hand_over()

    def try_send_cancel(self, cid: int) -> None:
        """Tell the server a call ended here; never waits (a full ring: the CANCEL is sent
        by the next thread that writes or reads)."""
        if self.broken is not None:
            return
        self._cancels.append(cid)
        tx_lock = self.tx_lock
        try:
            tx_lock.pop()
        except IndexError:
            return
        try:
            self._flush_cancels()
        finally:
            tx_lock.append(True)

    def _flush_cancels(self) -> None:
        """(request lock held) CANCEL frames for the calls that ended here, while they fit."""
        cancels = self._cancels
        try:
            while cancels:
                if not self.tx.try_write(F.CANCEL, 0, cancels[0], 0, (), 0):
                    return
                cancels.popleft()
            self.wake_server()
        except ProtocolError as exc:
            cancels.clear()
            self.break_(f"corrupted request ring: {exc}")

    # -- waiting and reading ------------------------------------------------------------------------------
    def wait(self, state: CallState, what: int, until: Optional[float]) -> bool:
        """Block until ``state`` is ready for ``what``; False if ``until`` passed first."""
        reader = self.reader
        while True:
            if state.ready(what):
                return True
            try:
                reader.pop()
                taken = True
            except IndexError:
                taken = False
            if taken:
                try:
                    self._read_until(state, what, until, False)
                finally:
                    reader.append(True)
                    if self.want_reader:
                        self._hand_over()
            else:  # another thread reads: wait for it to hand the token over
                waiter = _allocate_lock()
                waiter.acquire()
                with self.lock:
                    if state.ready(what):
                        return True
                    state.waiter = waiter
                    self.want_reader += 1
                if self.futex:
                    self.mem.wake_word(self.rx.head_off)  # a pump asleep in the kernel: hand over
                limit = 0.02
                if until is not None:
                    limit = min(limit, max(0.0, until - _monotonic()))
                waiter.acquire(timeout=limit)
                with self.lock:
                    if state.waiter is waiter:
                        state.waiter = None
                    self.want_reader -= 1
            if state.ready(what):
                return True
            now = _monotonic()
            if state.deadline is not None and now >= state.deadline:
                self.fail_locally(state, grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", cancel=True)
                return True
            if until is not None and now >= until:
                return False

    def _hand_over(self) -> None:
        """Wake one thread that waits, so that it can take the reader token."""
        with self.lock:
            for other in self.calls.values():
                w = other.waiter
                if w is not None:
                    other.waiter = None
                    w.release()
                    return

    def pump(self, until: float) -> None:
        """Read for unattended calls until ``until`` or until a caller wants the token."""
        reader = self.reader
        try:
            reader.pop()
        except IndexError:
            return
        try:
            self._read_until(None, WAIT_DONE, until, True)
        finally:
            reader.append(True)
            if self.want_reader:
                self._hand_over()

    def _read_until(self, state: Optional[CallState], what: int, until: Optional[float], pumping: bool,
                    fresh: bool = True) -> None:
        """(reader token held) Read and dispatch until ``state`` is ready for ``what``,
        ``until`` passes, the connection breaks or (pumping) a caller wants the token."""
        while True:
            try:
                return self._read_loop(state, what, until, pumping, fresh)
            except ChecksumError as exc:
                self._on_bad_frame(exc)
                fresh = False

    def _on_bad_frame(self, exc: ChecksumError) -> None:
        """A frame failed its checksum: its call (if it names one of ours) ends DATA_LOSS."""
        state = self.calls.get(exc.call_id)
        if state is not None:
            self.fail_locally(state, grpc.StatusCode.DATA_LOSS, f"Response data corrupted: {exc}", cancel=True)

    def _read_loop(self, state: Optional[CallState], what: int, until: Optional[float], pumping: bool,
                   fresh: bool) -> None:
        read = self.rx.read
        dispatch = self._dispatch
        if pumping:
            backoff = Backoff(self._tune, spin=0, yield_time=0.001, sleeper=self._sleep if self.futex else None)
        else:
            backoff = self._backoff
            if fresh:
                backoff.restart()
            if self.senders:
                backoff.skip_spin()
        deadline = state.deadline if state is not None else None
        if until is not None and (deadline is None or until < deadline):
            deadline = until
        if state is not None and state.ready(what):
            return
        try:
            while True:
                frame = read()
                if frame is not None:
                    dispatch(frame)
                    backoff.reset()
                    if state is not None and state.ready(what):
                        return
                    if self.senders:
                        backoff.skip_spin()
                    continue
                if self.broken is not None:
                    return
                if backoff.pause():
                    now = _monotonic()
                    if now - self._last_check > LIVENESS_PERIOD:  # first: whoever reads must watch the server
                        self._check_peer(now)
                        if pumping:
                            self.expire_deadlines(now)
                    if deadline is not None and now >= deadline:
                        return
                    if state is not None and state.ready(what):
                        return
                    if pumping and (self.want_reader or not self.unattended):
                        return
                    if state is not None and self.want_reader and (backoff.sleeping or self.futex):
                        return  # let a waiting thread have a turn
        except ChecksumError:
            raise
        except ProtocolError as exc:
            self.break_(f"corrupted response ring: {exc}")
        except ConnectionBroken:
            pass

    def _dispatch(self, frame: tuple) -> None:
        kind, flags, cid, aux, body = frame
        state = self.calls.get(cid)
        if state is None:
            return  # a late frame for a call that already ended (cancelled, deadline)
        if type(body) is memoryview:  # lent by the ring: if revoked while still queued, it is copied first
            self.rx.loan.evict = partial(self._evict, weakref.ref(state))  # (the loan must not keep the call alive)
        if kind == _STATUS and flags & _BARE:
            if len(body) > self.max_receive:
                self.fail_locally(state, grpc.StatusCode.RESOURCE_EXHAUSTED,
                                  f"Received message larger than max ({len(body)} vs. {self.max_receive})", cancel=True)
                return
            with self.lock:
                if state.done:
                    return
                if state.messages is None:
                    state.messages = deque((body,))
                else:
                    state.messages.append(body)
                if state.initial is None:
                    state.initial = ()
                state.code = OK
                state.done = True
                del self.calls[cid]
                if not state.attended:
                    self.unattended -= 1
                w = state.waiter
                if w is not None:
                    state.waiter = None
                    w.release()
                if state.callbacks is None and state.done_callbacks is None:
                    return
                callbacks = self._take_callbacks(state)
            self._on_callback(callbacks)
            return
        if flags == RETURNED_STATUS and kind == _STATUS:  # an extent request handed back as the reply
            sent = state.extent
            if sent is not None and aux == 0 and body == sent[3]:  # OK, nothing else: end it here
                state.extent = None
                self._end_call(state, OK, "", (), (), _handed_back(state, sent[2]), False)
                return
        try:
            if kind == _STATUS:
                initial, details, trailing, at = F.parse_status(body)
                message = body[at:] if flags & _HAS_MESSAGE else None
                if type(body) is memoryview:  # lent by the ring: the message view is what keeps the loan
                    details = details.tobytes()
                    if message is not None:
                        self.rx.loan.track(message)
                if flags & F_EXTENT:  # the message is an extent: its reference ends the STATUS frame
                    if message is None:
                        raise ProtocolError("an extent status without its reference")
                    n = parse_ref(message)[3]
                    if n > self.max_receive:  # (the unread lane frame is skipped with the next reference)
                        self.fail_locally(state, grpc.StatusCode.RESOURCE_EXHAUSTED,
                                          f"Received message larger than max ({n} vs. {self.max_receive})", cancel=True)
                        return
                    message = self._take_extent(state, bytes(message))
                if message is not None and len(message) > self.max_receive:
                    self.fail_locally(state, grpc.StatusCode.RESOURCE_EXHAUSTED,
                                      f"Received message larger than max ({len(message)} vs. {self.max_receive})",
                                      cancel=True)
                    return
                self._complete(state, code_from_wire(aux), details.decode("utf-8", "replace"),
                               F.decode_metadata(trailing),
                               F.decode_metadata(initial) if flags & F.F_HAS_HEADERS else None, message)
            elif kind == _MESSAGE:
                self._on_message(state, flags, aux, body)
            elif kind == F.WINDOW:
                state.credit += aux
            elif kind == F.HEADERS:
                md = F.decode_metadata(body)
                with self.lock:
                    if state.initial is None:
                        state.initial = md
                    self._wake(state)
            else:
                raise ProtocolError(f"unexpected {F.KIND_NAMES.get(kind, kind)} frame from the server")
        except ProtocolError as exc:
            self.fail_locally(state, grpc.StatusCode.INTERNAL, f"Malformed frame from the server: {exc}", cancel=True)

    def _on_message(self, state: CallState, flags: int, aux: int, body: Optional[bytes]) -> None:
        if flags & F_EXTENT:
            if flags & _MORE:
                raise ProtocolError("an extent marked as a chunk")
            aux = parse_ref(body)[3]
            if aux <= self.max_receive:  # (over it: ends below; the unread lane frame is skipped later)
                body = self._take_extent(state, body)
                flags &= ~F_EXTENT
        if aux > self.max_receive:
            self.fail_locally(state, grpc.StatusCode.RESOURCE_EXHAUSTED,
                              f"Received message larger than max ({aux} vs. {self.max_receive})", cancel=True)
            return
        if body is not None and state.partial is None and flags & _MORE and not self._reserve(state, aux):
            self.fail_locally(state, grpc.StatusCode.RESOURCE_EXHAUSTED,
                              f"Client out of buffer space for partly received messages ({self.budget.limit} bytes)",
                              cancel=True)
            return
        whole = on_chunk(state, flags & _MORE, aux, body, takes_buffers(state.deserializer))
        if whole is not None:
            if state.reserved:
                self._unreserve(state)
            self._deliver(state, whole)

    def _sink(self, kind: int, flags: int, cid: int, aux: int, n: int) -> Optional[memoryview]:
        """Ring sink: large chunks go straight into their call's message buffer, charged to
        the channel's budget before it is made (over it: None, and ``_on_message`` ends
        the call)."""
        if kind != _MESSAGE:
            return None
        state = self.calls.get(cid)
        if state is None or aux > self.max_receive:
            return None
        if state.partial is None and n != aux and not self._reserve(state, aux):
            return None
        return sink_slot(state, aux, n, self.max_receive)

    def _reserve(self, state: CallState, n: int) -> bool:
        """Charge a partly received message of ``n`` bytes to the channel's budget; False
        when it does not fit or the call has ended (nothing to hold it for)."""
        with self.lock:
            if state.done or not self.budget.take(n):
                return False
            state.reserved = n
            return True

    def _unreserve(self, state: CallState) -> None:
        with self.lock:
            n, state.reserved = state.reserved, 0
        self.budget.give(n)

    def _viewer(self, kind: int, flags: int, cid: int, aux: int, n: int) -> bool:
        """Ring viewer: lend a whole response message in one frame to a call whose
        deserializer takes buffers (``as_view``, protobuf) instead of copying it out."""
        if kind == _STATUS:
            if not flags & (_BARE | _HAS_MESSAGE):
                return False
        elif kind != _MESSAGE or flags & _MORE or n != aux:
            return False
        state = self.calls.get(cid)
        if state is not None:
            return takes_buffers(state.deserializer)
        fast_cid, deserializer = self._fast
        return cid == fast_cid and takes_buffers(deserializer)

    def _end_loans(self) -> None:
        """The slot goes back (and its rings to the next client): views of them still
        queued become copies, views already handed out are released."""
        for loan in list(self.rx.loans):
            if loan.evict is not None:
                loan.evict()
            loan.end()
        if self.lanes is not None:
            self.lanes.close()

    def _evict(self, ref: "weakref.ref[CallState]") -> None:
        """(reader) Views of the ring still queued for the call become copies (the ring
        needs their bytes back; views already handed to the caller are released)."""
        state = ref()
        if state is None:
            return
        with self.lock:
            if state.messages and any(type(m) is memoryview for m in state.messages):
                state.messages = deque(m.tobytes() if type(m) is memoryview else m for m in state.messages)

    def _deliver(self, state: CallState, message: bytes) -> None:
        with self.lock:
            if state.messages is None:
                state.messages = deque()
            state.messages.append(message)
            if state.initial is None:
                state.initial = ()
            self._wake(state)

    @staticmethod
    def _wake(state: CallState) -> None:
        w = state.waiter
        if w is not None:
            state.waiter = None
            w.release()

    def _complete(self, state: CallState, code: grpc.StatusCode, details: Optional[str], trailing: tuple,
                  initial: Optional[tuple], message: Optional[bytes]) -> None:
        """(reader) the server's STATUS ended the call."""
        self._end_call(state, code, details, trailing, initial, message, False)

    @staticmethod
    def _take_callbacks(state: CallState) -> list:
        todo = []
        if state.callbacks:
            todo.extend(state.callbacks)
            state.callbacks = None
        if state.done_callbacks:
            handle = state.handle
            todo.extend((lambda fn=fn: fn(handle)) for fn in state.done_callbacks)
            state.done_callbacks = None
        return todo

    def unary_value(self, state: CallState) -> Any:
        """The single response of a finished unary call (INTERNAL if it is missing or bad)."""
        if state.response is not _NOTHING:
            return state.response
        if not state.messages:
            state.code, state.details = grpc.StatusCode.INTERNAL, "No response message received"
            return None
        raw = state.messages.popleft()
        if state.deserializer is None:
            state.response = raw
        else:
            try:
                state.response = state.deserializer(raw)
            except Exception:
                state.code, state.details = grpc.StatusCode.INTERNAL, "Exception deserializing response!"
                return None
        return state.response

    def fail_locally(self, state: CallState, code: grpc.StatusCode, details: str, cancel: bool = False) -> None:
        """End a call from the client side (cancel, deadline, local error, lost server)."""
        self._end_call(state, code, details, (), None, None, cancel)

    def _end_call(self, state: CallState, code: grpc.StatusCode, details: Optional[str], trailing: tuple,
                  initial: Optional[tuple], message: Optional[bytes], cancel: bool) -> None:
        """The one way a client call ends (the bare-STATUS branch of ``_dispatch`` does the
        same steps inline, on the hot path): done once, under the lock; its waiter woken,
        its callbacks queued; the server told when we ended it (cancel, deadline)."""
        with self.lock:
            if state.done:
                return
            if message is not None:
                if state.messages is None:
                    state.messages = deque()
                state.messages.append(message)
            if state.initial is None:
                state.initial = initial if initial is not None else ()
            state.code = code
            state.details = details
            state.trailing = trailing
            if code is grpc.StatusCode.CANCELLED and cancel:
                state.cancelled = True
            state.done = True
            self.calls.pop(state.id, None)
            if not state.attended:
                self.unattended -= 1
            self._wake(state)
            callbacks = self._take_callbacks(state)
            reserved, state.reserved, state.partial = state.reserved, 0, None
        if reserved:
            self.budget.give(reserved)
        if cancel or code is grpc.StatusCode.DEADLINE_EXCEEDED:
            self.try_send_cancel(state.id)
        if callbacks:
            self._on_callback(callbacks)

    def add_callback(self, state: CallState, callback: Callable[[], None]) -> bool:
        with self.lock:
            if state.done:
                return False
            if state.callbacks is None:
                state.callbacks = []
            state.callbacks.append(callback)
            return True

    def add_done_callback(self, state: CallState, fn: Callable[[Any], None]) -> None:
        with self.lock:
            if not state.done:
                if state.done_callbacks is None:
                    state.done_callbacks = []
                state.done_callbacks.append(fn)
                return
        fn(state.handle)

    def unattend(self, state: CallState) -> None:
        """Mark a call that no thread may be waiting for: the pump serves it."""
        with self.lock:
            if state.attended and not state.done:
                state.attended = False
                self.unattended += 1

    def expire_deadlines(self, now: float) -> None:
        expired = [c for c in list(self.calls.values()) if c.deadline is not None and now >= c.deadline]
        for c in expired:
            self.fail_locally(c, grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", cancel=True)

    # -- liveness and teardown ----------------------------------------------------------------------
    def _check_peer(self, now: float) -> None:
        self._last_check = now
        if self.broken is not None:
            raise ConnectionBroken(self.broken)
        if self.pool.lost is not None:
            self.break_(self.pool.lost)
            raise ConnectionBroken(self.pool.lost)
        same, pid, beat = self.pool.endpoint_current(self.endpoint.index, self.endpoint.generation)
        reason = None
        if not same:
            reason = "server closed or restarted"
        elif self.endpoint.host == self.pool.host_id and not pid_alive(pid):
            reason = f"server process {pid} is gone"
        else:
            last_beat, seen = self._peer_beat
            if beat != last_beat:
                self._peer_beat = (beat, now)
            elif (now - seen) * 1000 > stale_ms():
                reason = f"server heartbeat stopped {now - seen:.1f} s ago"
        if reason is None:
            gen, verdict = L.unpack_state(self.mem.load(self.ctl + L.CH_ACCEPT))
            if gen == self.generation and verdict != L.ACC_ACCEPTED:
                reason = f"server dropped this channel ({L.ACC_NAMES.get(verdict, verdict)})"
            elif self.mem.load(self.ctl + L.CH_CLAIM) != self._claim:
                # someone else wrote our claim word: the server drops the channel, but can
                # only say so under a generation that is no longer ours
                reason = "this channel's slot was taken over by another claim"
        if reason is not None:
            self.break_(reason)
            raise ConnectionBroken(reason)

    def break_(self, reason: str) -> None:
        """The server is gone, a ring is corrupt or the pool was lost: every call ends
        UNAVAILABLE and no new one starts (the channel opens a new connection)."""
        self._end(Stage.BROKEN, UNAVAILABLE, f"NotNets server unavailable: {reason}", False, reason)

    def heartbeat(self) -> None:
        if self.pool.lost is not None:
            return
        mem = self.mem
        mem.store(self.ctl + L.CH_CLIENT_HEARTBEAT, int(time.time() * 1000))
        mem.store(self.ctl + L.CH_CALLS_STARTED, self.calls_started)

    @property
    def calls_started(self) -> int:
        """Calls this connection started: the ids handed out (none is counted on the fast path)."""
        return int(repr(self._ids)[6:-1]) - 1

    def close(self, code: grpc.StatusCode, details: str) -> None:
        """The channel lets go of this connection: calls end with ``code``, the slot is freed."""
        self._end(Stage.CLOSED, code, details, True, details)

    def _end(self, stage: "Stage", code: grpc.StatusCode, details: str, cancel: bool, reason: str) -> None:
        """The one way a connection ends: OPEN -> BROKEN -> CLOSED (or OPEN -> CLOSED).

        ``broken`` (the reason) is set with the first step, so that no new call starts;
        every call still registered ends; CLOSED also gives the slot back, once."""
        broke = False
        with self.lock:
            if self.stage is Stage.OPEN:
                self.stage, self.broken = stage, reason
                broke = stage is Stage.BROKEN
            elif stage is Stage.CLOSED and self.stage is Stage.BROKEN:
                self.stage = stage
            elif stage is not Stage.CLOSED or self.released:
                stage = None  # nothing more to do
            calls = list(self.calls.values())
            release = stage is Stage.CLOSED and not self.released
            if release:
                self.released = True
        for state in calls:
            self.fail_locally(state, code, details, cancel=cancel)
        if broke and self.on_broken is not None:
            self.on_broken(self)
        if release:
            self._end_loans()
            self.pool.forget_lost(self._lost_key)
            self.pool.drop_ring_pages(self.pool.host_id, self.slot)  # before another connection may claim the slot
            self.pool.close_channel(self.slot, self.generation)
