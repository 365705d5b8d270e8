"""``grpc.Server`` over a NotNets pool (plus, optionally, the same services over TCP).

Threads:
- one *leader* poller reads every accepted channel's request ring. It runs unary-unary
  handlers inline (no thread hand-off on the fast path) and hands streaming calls to
  the thread pool;
- a monitor promotes a new leader when a handler has held the current one for more
  than PROMOTE_AFTER seconds (so a slow or blocking handler never stalls the others),
  enforces deadlines and reclaims the channels of clients that died;
- the process's beat thread (liveness.BEATER) publishes heartbeats and counters.
None of them waits for ring room: answers that do not fit go to the channel's outbox
(outbox.py). docs/rpc.md, "Concurrency", has the whole picture.

New channels are found through the per-host doorbell words in the host table (one
load per host every few polls); a channel whose claim word changes is dropped.
"""

from __future__ import annotations

import collections
import enum
import logging
import os
import queue
import struct
import threading
import time
from concurrent import futures
from typing import Any, Dict, List, Optional, Sequence, Tuple

import grpc

from ..wire import frames as F
from ..wire import layout as L
from ..backoff import ONE_CPU, Backoff, tunables
from ..options import message_limits
from ..errors import ChecksumError, EndpointInUseError, ProtocolError
from ..wire.messages import as_bytes, as_view, on_chunk, takes_buffers
from ..wire.extents import F_EXTENT, RETURNED_STATUS, parse_ref, returned_status
from ..pool import BeatWatch, Endpoint, Pool, stale_ms
from ..budget import Budget
from .call import ANSWERED, END_OF_REQUESTS, LATER, AbortError, CachedHandler, RequestIterator, ServerCall, UnaryCall
from .channels import NO_CALL, ChannelTable, ServerChannel
from .malloc_policy import ARENA_OPTION, DEFAULT_ARENAS, keep_freed, limit_arenas, release_free_memory
from .replies import Replies
from ..liveness import BEATER
from ..status import as_metadata

try:
    from grpc._utilities import DictionaryGenericHandler
except ImportError:  # older grpcio: nothing is cacheable
    class DictionaryGenericHandler:  # type: ignore[no-redef]
        pass

_log = logging.getLogger(__name__)
_monotonic = time.monotonic
PROMOTE_AFTER = 0.005
IDLE_NAP = 0.05  # how long the monitor sleeps between looks while the server is idle
# ... and while it serves. On a one-CPU host every wake of the monitor preempts the poller
# and forces it to hand over the GIL: at 2 ms it took ~14% of a TCG guest's CPU. There it
# looks every 40 ms, and PROMOTE_AFTER after seeing a handler run (see _maybe_promote).
BUSY_NAP = 0.04 if ONE_CPU else 0.002
CLIENT_CHECK_PERIOD = 0.5
TRIM_AFTER = 2.0  # seconds of idling after traffic before freed memory goes back to the system
KERNEL_SLEEP_FACTOR = 10  # an idle server asleep in the kernel wakes every 10 x the idle sleep to look around
# A server with NOTNETS_CROWD_AT callers or more (default 0: never) is crowded (they and it
# outnumber the CPUs): its same-host callers sleep as soon as they have called
# (client/connection.py) and it keeps polling for QUIET_SPELL after its last call, so that one
# end stays awake and only one end ever wakes the other
QUIET_SPELL = 0.005
_sched_yield = os.sched_yield
_SLEEP_ON_PASS = L.SLEEP_ON_PASS
_UNAVAILABLE_SHUTDOWN = "Cancelling all calls"
_CALL_HEAD_SIZE = F.CALL_HEAD.size
_unpack_call_head = F.CALL_HEAD.unpack_from
_TIMEOUT = struct.Struct("<Q")  # the CALL head's first field, timeout_us
_TIMEOUT_SIZE = _TIMEOUT.size
_unpack_timeout = _TIMEOUT.unpack_from
_UNARY_CALL = F.F_HAS_MESSAGE | F.F_END_STREAM
_STATUS = F.STATUS
_CALL = F.CALL
_BIG = 16384  # requests from this size on are handed to buffer-taking parsers as a view
_BARE = F.F_BARE


class Stage(enum.Enum):
    """Where a server is; it only moves forward (``Server._shut_down``)."""

    NEW = "new"            # handlers and endpoints may be added
    SERVING = "serving"    # published, polling, answering
    DRAINING = "draining"  # new calls refused; in-flight ones get the grace period
    STOPPED = "stopped"    # nothing runs; wait_for_termination returns


class _Demoted(Exception):
    """This poller lost the leader role while it ran a handler inline: it must stop
    reading rings at once (a new leader reads them)."""


def _take_back(box: list) -> bool:
    """Pop the inline box; False if the monitor popped it first (list.pop is atomic)."""
    try:
        box.pop()
        return True
    except IndexError:
        return False


class _HandlerCallDetails(collections.namedtuple("_HandlerCallDetails", ("method", "invocation_metadata")),
                          grpc.HandlerCallDetails):
    pass



def check_generic_handlers(generic_rpc_handlers: Sequence[grpc.GenericRpcHandler]) -> None:
    """grpcio's check, at registration rather than at the first call: a handler without
    ``service`` raises AttributeError."""
    for handler in generic_rpc_handlers:
        if not hasattr(handler, "service"):
            raise AttributeError(f"{handler!r} must have a service method")

class Server(ChannelTable, Replies, grpc.Server):
    def __init__(self, thread_pool: Optional[futures.Executor] = None, pool: Optional[str] = None,
                 handlers: Optional[Sequence[grpc.GenericRpcHandler]] = None,
                 interceptors: Optional[Sequence[grpc.ServerInterceptor]] = None,
                 options: Optional[Sequence[Tuple[str, Any]]] = None, maximum_concurrent_rpcs: Optional[int] = None,
                 compression: Any = None, host_id: Optional[int] = None) -> None:
        self._thread_pool = thread_pool if thread_pool is not None else futures.ThreadPoolExecutor(max_workers=10)
        self._pool_path = pool
        self._host_id = host_id
        self._options = list(options or ())
        self._max_receive, self._max_send = message_limits(options)
        self._budget = Budget.from_options(self._options)
        self._max_concurrent = maximum_concurrent_rpcs
        self._interceptors = list(interceptors or ())
        self._compression = compression
        self._generic: List[grpc.GenericRpcHandler] = []
        self._registered: Dict[str, grpc.RpcMethodHandler] = {}
        self._resolved: Dict[bytes, Tuple[str, grpc.RpcMethodHandler, bool, bool]] = {}
        self._registered_services: List[Tuple[str, dict]] = []
        self._tcp: Optional[grpc.Server] = None
        self._names: List[str] = []
        self._endpoints: Dict[int, Endpoint] = {}
        self._pool: Optional[Pool] = None
        self._state_lock = threading.Lock()
        self._leader_lock = threading.Lock()
        self._leader: Optional[int] = None
        self._inline_box: list = []  # [the call] while the leader runs its handler inline
        self._inline_seen: Tuple[Any, float] = (None, 0.0)  # the monitor's last look at the box
        self._inline_ok = maximum_concurrent_rpcs is None  # unary handlers may run on the poller
        self._pollers = 0
        self._outside_polls = 0  # looks at the rings by an event loop (poll_rings)
        self._threads_busy = 0  # handlers running on the thread pool
        self._local_client = False  # a client in this process: it needs the GIL, do not spin
        self._futex_ok = False      # every client is on this host: sleep in the kernel, they wake us
        self._remote_client = False  # a client on another host: keep the whole spin budget (Backoff.learn)
        self._sleep_off = 0
        self._kick_off = 0
        self._crowd_off = 0  # our DIR_CROWD word, and what it says (ChannelTable._publish_crowd)
        self._crowd = 0
        self._pass_off = 0  # our DIR_PASS word (_bump_pass); a reply went to a client asleep on it
        self._pass_due = False
        self._pass_lock = threading.Lock()
        self._crowded = False  # _crowd >= NOTNETS_CROWD_AT (ChannelTable._publish_crowd)
        self._crashes = 0
        self._poll_sleep = 50e-6
        self._max_pollers = max(2, int(getattr(self._thread_pool, "_max_workers", 16) or 16))
        self._channels: Dict[Tuple[int, int], ServerChannel] = {}
        self._active: Tuple[ServerChannel, ...] = ()
        self._bells: List[Optional[int]] = []
        self._host_table = b""
        self._deadlines: Dict[int, ServerCall] = {}
        self._stage = Stage.NEW
        self._draining = False  # mirrors stage >= DRAINING for the hot paths
        self._stopped = threading.Event()
        self._terminated = threading.Event()
        self._idle = False
        self._bare_limit = 0
        self._totals = [0, 0, 0, 0]
        self._backlog: Dict[ServerChannel, bool] = {}  # channels whose outbox holds frames
        self._settle_due: List[ServerChannel] = []  # request views given back by a demoted poller's handler
        self._beat_key: Optional[int] = None
        self._chunk = self._frame_limit = self._window = self._call_window = self._request_window = 0
        self._tune = tunables()  # NOTNETS_SPIN & co., read again when the server starts
        if handlers:
            self.add_generic_rpc_handlers(handlers)

    # -- registration ---------------------------------------------------------------------------
    def add_generic_rpc_handlers(self, generic_rpc_handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        check_generic_handlers(generic_rpc_handlers)
        self._generic.extend(generic_rpc_handlers)
        self._forget_resolved()
        if self._tcp is not None:
            self._tcp.add_generic_rpc_handlers(generic_rpc_handlers)

    def add_registered_method_handlers(self, service_name: str, method_handlers: Dict[str, Any]) -> None:
        for method, handler in method_handlers.items():
            self._registered[f"/{service_name}/{method}"] = handler
        self._forget_resolved()
        self._registered_services.append((service_name, method_handlers))
        if self._tcp is not None and hasattr(self._tcp, "add_registered_method_handlers"):
            self._tcp.add_registered_method_handlers(service_name, method_handlers)

    def _forget_resolved(self) -> None:
        """Handlers changed: look every method up again (also the channels' last calls)."""
        self._resolved = {}
        for ch in self._channels.values():
            ch.last_call = ch.last_timed = NO_CALL

    def add_endpoint(self, name: str) -> None:
        """Publish the services under ``name`` in the pool (clients use ``notnets:NAME``)."""
        L.encode_name(name)
        self._names.append(name)
        if self._stage is Stage.SERVING:
            self._publish(name)

    def add_insecure_port(self, address: str) -> int:
        return self._tcp_server().add_insecure_port(address)

    def add_secure_port(self, address: str, server_credentials: grpc.ServerCredentials) -> int:
        return self._tcp_server().add_secure_port(address, server_credentials)

    def _tcp_server(self) -> grpc.Server:
        if self._tcp is None:
            self._tcp = grpc.server(self._thread_pool, interceptors=self._interceptors or None,
                                    options=self._options or None, maximum_concurrent_rpcs=self._max_concurrent,
                                    compression=self._compression)
            if self._generic:
                self._tcp.add_generic_rpc_handlers(self._generic)
            for service, handlers in self._registered_services:
                if hasattr(self._tcp, "add_registered_method_handlers"):
                    self._tcp.add_registered_method_handlers(service, handlers)
        return self._tcp

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        if self._stage is not Stage.NEW:
            raise ValueError("Cannot start an already-started server")
        if self._names:
            self._attach_pool()
            for name in self._names:
                self._publish(name)
        self._stage = Stage.SERVING
        if self._pool is not None:
            self._start_threads()
        if self._tcp is not None:
            self._tcp.start()

    def _attach_pool(self) -> None:
        pool = self._pool = Pool.acquire(self._pool_path, self._host_id, format_if_empty=True)
        lay = pool.layout
        self._bells = [None] * lay.max_hosts
        self._chunk = self._bare_limit = self._frame_limit = lay.chunk_bytes
        self._window = 2 * lay.ring_bytes    # a channel's outbox before its requests wait (outbox.py)
        self._call_window = lay.chunk_bytes  # a streaming call's queued bytes before its handler waits
        self._request_window = lay.ring_bytes  # a request stream's bytes the client may send ahead of its handler
        self._futex_ok = pool.mem.can_wait
        pool.on_lost(self._abandon)

    def _abandon(self, reason: str) -> None:
        """(beat thread) The pool file shrank under us: end as ``stop`` does, but without
        touching the pool again (no statuses, no directory update) and without grace."""
        _log.error("NotNets server stops serving: %s", reason)
        for ch in list(self._channels.values()):
            ch.dropped = True  # nothing more is written to its rings
            ch.outbox.close()
        self._shut_down(0.0, reason)

    def _start_threads(self) -> None:
        """The poller, the monitor, and the heartbeat (on the process's beat thread, which
        only stores words: no channel, lock or ring can hold it up)."""
        self._tune = tunables()
        # before the poller, monitor and workers exist: they share one trimmable arena (malloc_policy.py)
        arenas = int(dict(self._options).get(ARENA_OPTION, DEFAULT_ARENAS))
        limit_arenas(arenas)
        keep_freed(arenas)  # fresh large buffers without page faults; the idle trim returns them
        self._beat_key = BEATER.register(self._beat)
        self._spawn_poller()
        threading.Thread(target=self._monitor, name="notnets-monitor", daemon=True).start()

    def _publish(self, name: str) -> None:
        if self._pool is None:
            self._attach_pool()
            if self._stage is Stage.SERVING:
                self._start_threads()
        limit = _monotonic() + stale_ms() / 1000 + 1.0
        first = next(iter(self._endpoints.values()), None)
        while True:
            try:
                ep = self._pool.publish(name, os.getpid(), wake_index=first.index if first else None)
                break
            except EndpointInUseError:
                # a holder on another host may have just died: wait for its heartbeat to go stale
                if _monotonic() > limit or self._held_locally(name):
                    raise
                time.sleep(0.1)
        self._endpoints[ep.index] = ep
        if first is None:
            self._sleep_off = self._pool.layout.dir_entry(ep.host, ep.slot) + L.DIR_SLEEP
            self._kick_off = self._pool.layout.dir_entry(ep.host, ep.slot) + L.DIR_KICK
            self._crowd_off = self._pool.layout.dir_entry(ep.host, ep.slot) + L.DIR_CROWD
            self._pass_off = self._pool.layout.dir_entry(ep.host, ep.slot) + L.DIR_PASS

    def _held_locally(self, name: str) -> bool:
        pool = self._pool
        for h, s, _ in pool.entries():
            if h != pool.host_id:
                continue
            ep = pool.read_endpoint(h, s)
            # seen beating, not merely not yet known: a restarted host numbers its processes
            # from 1 again, so a dead server's pid may exist (even be ours); its entry goes
            # stale within the retries of _publish and is taken over then
            if ep is not None and ep.name == name and pool.liveness(ep) == BeatWatch.ALIVE:
                return True
        return False

    def stop(self, grace: Optional[float]) -> threading.Event:
        if self._stage is Stage.NEW:
            self._stage = Stage.STOPPED
            self._terminated.set()
        else:
            self._shut_down(grace, None)
        return self._terminated

    def _shut_down(self, grace: Optional[float], lost: Optional[str]) -> None:
        """The one way a server ends (``stop``, or a pool lost under it): SERVING ->
        DRAINING now (new calls refused, directory entries say draining), then, on a
        thread of its own, in-flight calls get ``grace`` seconds, the rest are cancelled,
        channels released, entries closed -> STOPPED."""
        with self._state_lock:
            if self._stage is not Stage.SERVING:
                return
            self._stage = Stage.DRAINING
            self._draining = True
            self._inline_ok = False  # new unary calls are refused by _on_call from now on
        if self._pool is not None and lost is None:
            for ep in self._endpoints.values():
                self._pool.set_endpoint_state(ep, L.DIR_DRAINING)
        tcp_event = self._tcp.stop(grace) if self._tcp is not None else None
        threading.Thread(target=self._finish_stop, args=(grace, tcp_event, lost), name="notnets-stop",
                         daemon=True).start()

    def _finish_stop(self, grace: Optional[float], tcp_event: Optional[threading.Event], lost: Optional[str]) -> None:
        try:
            end = _monotonic() + (grace or 0.0)
            while self._in_flight() and _monotonic() < end:
                time.sleep(0.005)
            for ch in list(self._channels.values()):
                for call in list(ch.calls.values()):
                    self._cancel_call(call, grpc.StatusCode.UNAVAILABLE, lost or _UNAVAILABLE_SHUTDOWN,
                                      notify_client=lost is None)
            self._stopped.set()
            with self._leader_lock:
                self._leader = None
            pool = self._pool
            if pool is not None:
                for ep in self._endpoints.values():
                    pool.set_endpoint_state(ep, L.DIR_CLOSED)  # (these skip a lost pool)
                for ch in list(self._channels.values()):
                    self._drop_channel(ch, L.ACC_RELEASED)
                deadline = _monotonic() + 1.0
                while self._pollers and _monotonic() < deadline:
                    time.sleep(0.002)
                if self._beat_key is not None:
                    BEATER.unregister(self._beat_key)
                    self._beat_key = None
                self._publish_counters()
                self._pool = None
                pool.release()
            if tcp_event is not None:
                tcp_event.wait(5)
        finally:
            self._stage = Stage.STOPPED
            self._terminated.set()

    def wait_for_termination(self, timeout: Optional[float] = None) -> bool:
        return not self._terminated.wait(timeout)

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: Any) -> bool:
        self.stop(None).wait(5)
        return False

    # -- the poller --------------------------------------------------------------------------------
    def _spawn_poller(self) -> None:
        with self._leader_lock:
            self._pollers += 1
        threading.Thread(target=self._poll_loop, name="notnets-poller", daemon=True).start()

    def _poll_loop(self) -> None:
        me = threading.get_ident()
        with self._leader_lock:
            if self._leader is None and not self._stopped.is_set():
                self._leader = me
        try:
            mem = self._pool.mem
            backoff = Backoff(self._tune, max_sleep=self._tune.idle_sleep, sleeper=lambda seconds: self._sleep(mem, seconds))
            it = 0
            load = mem.load
            views = mem.views()  # plain memory: index the ring heads directly (no call per channel and poll)
            words = views[1] if views is not None else None
            quiet = 0  # empty passes since the last work while crowded
            quiet_end = 0.0
            while self._leader == me:
                worked = self._look_at_rings(me, load, words)
                if worked is None:
                    return
                it += 1
                if not it & 63 or backoff.sleeping:
                    self._discover()
                if (not worked and self._crowded and not backoff.sleeping and not self._local_client
                        and not self._threads_busy):
                    # crowded: our callers sleep and wait for us, so we stay awake (yielding now
                    # and then to a caller that shares our CPU) until a quiet spell has passed;
                    # not while a thread of this process needs the GIL (a client, a handler)
                    quiet += 1
                    if quiet & 15:
                        continue
                    now = _monotonic()
                    if not quiet_end:
                        quiet_end = now + QUIET_SPELL
                    if now < quiet_end:
                        _sched_yield()
                        continue
                    quiet_end, quiet = 0.0, 0
                    backoff.restart()
                    backoff.skip_spin()
                    backoff.sleeping = True  # polled for a whole spell: sleep as when idle
                if worked:
                    quiet_end, quiet = 0.0, 0
                    backoff.learn = not Backoff.remote_peer(self._remote_client)
                    if backoff.woken is not self._futex_ok:  # every client can wake us: yield briefly, then sleep
                        backoff.wakeable(self._futex_ok)
                    backoff.reset()
                    self._poll_sleep = 50e-6
                    if self._threads_busy or self._local_client:  # other threads here need the GIL
                        backoff.skip_spin()
                    self._idle = False
                elif backoff.pause():
                    self._idle = backoff.sleeping
        except Exception:
            # a bug of ours (what a peer sends ends in _drain): serve on, but a bug that
            # crashes every poll must not spin
            _log.exception("NotNets poller crashed")
            with self._leader_lock:
                if self._leader == me:
                    self._leader = None
                self._crashes += 1
                again = not self._stopped.is_set()
            if again:
                time.sleep(min(1.0, 0.05 * self._crashes))
                self._spawn_poller()
        finally:
            with self._leader_lock:
                self._pollers -= 1

    def _look_at_rings(self, me: int, load: Any, words: Any) -> Optional[bool]:
        """(``me`` reads the rings) Write what the outboxes hold, then drain every ring
        that has frames; whether there was work, None if ``me`` lost the leader role.
        ``load``/``words``: the pool's load, and its u64 view when it is plain memory."""
        worked = False
        if self._backlog:
            self._flush_backlog()
        if self._settle_due:  # the leader reads (and so publishes) every ring
            for ch in self._settle_due[:]:
                self._settle_due.remove(ch)
                ch.rx.settle()
            worked = True
        for ch in self._active:
            rx = ch.rx
            if ((rx._head != rx.tail or (words[rx._hidx] if words is not None else load(rx.head_off)) != rx.tail)
                    and not ch.outbox.full):
                worked = True
                if not self._drain(ch, me):
                    return None
        if self._pass_due or (worked and self._crowded):  # every answer written: one wake for the pass
            self._pass_due = False
            self._bump_pass()
        return worked

    def _bump_pass(self) -> None:
        """Wake every client asleep on our pass word (one system call however many).

        While crowded, after every pass that worked, whether or not a sleeper's flag was
        seen: a client reads the pass word before it looks at its ring and the kernel
        compares the word again, and we write the answers before the word, so a client
        that missed its answer missed this bump too and cannot sleep over it (its flag,
        by contrast, may reach us only after we looked: x86 lets a load pass a store).
        Poller and outbox flushes both bump it, so under a lock: a lost increment could
        leave the word unchanged for a client that read it in between."""
        off = self._pass_off
        pool = self._pool
        if not off or pool is None:  # (not published, or stopped meanwhile)
            return
        mem = pool.mem
        with self._pass_lock:
            mem.store(off, (mem.load(off) + 1) & 0xFFFFFFFF)
        mem.wake_word(off)

    def _sleep(self, mem: Any, seconds: float) -> None:
        """Idle: sleep in the kernel until a same-host client wakes us, or ``seconds``.

        Publishes "asleep" first and looks at every ring once more, so a frame written
        just before the flag was visible is not slept over.
        """
        off = self._sleep_off
        mem.store(off, 1)
        kick = mem.load(self._kick_off)
        for ch in self._active:
            rx = ch.rx
            if rx._head != rx.tail or mem.load(rx.head_off) != rx.tail:
                break
        else:
            self._idle = True
            if self._backlog:  # waiting for clients to read: they do not wake us, look again soon
                time.sleep(min(seconds, 100e-6))
            elif self._futex_ok:  # clients wake us; the timeout only bounds a lost wake or a new host
                mem.wait_word(self._kick_off, kick, seconds * KERNEL_SLEEP_FACTOR)
            else:  # a client on another host could not wake us
                time.sleep(min(seconds, self._poll_sleep))
                self._poll_sleep = min(self._poll_sleep * 2, seconds)
        mem.store(off, 0)

    def _drain(self, ch: ServerChannel, me: int) -> bool:
        """Handle up to 32 frames of one channel; False if this thread lost the leader role.

        A unary call to a cached method with no metadata -- the common
        case, and the one whose latency we are measured by -- goes straight to
        ``_run_unary`` from here; everything else through ``_on_call``/``_on_frame``."""
        if ch.dropped:
            return True
        rx = ch.rx
        words = ch.words
        if (words[ch.claim_idx] if words is not None else rx.mem.load(ch.claim_off)) != ch.claim_word:
            self._drop_channel(ch, L.ACC_RELEASED)
            return True
        read = rx.read
        resolved = self._resolved
        try:
            for _ in range(32):
                frame = read()
                if frame is None:
                    break
                kind, flags, cid, aux, body = frame
                # a plain unary call of the last plain call's method: the same bytes parse the same
                # (ch.last_call: the CALL body up to the message, its length, method, handler, parses views)
                if (kind == _CALL and flags == _UNARY_CALL and type(body) is bytes and body.startswith((last := ch.last_call)[0])
                        and last[1] and self._inline_ok and (n := len(body)) - last[1] <= self._max_receive):
                    _, at, method, handler, views = last
                    ch.bytes_in += n
                    self._run_unary(ch, cid, method, handler, memoryview(body)[at:] if n >= _BIG and views else body[at:])
                elif (kind == _CALL and flags == _UNARY_CALL and type(body) is bytes
                      and body.startswith((last := ch.last_timed)[0], _TIMEOUT_SIZE) and last[1] and self._inline_ok
                      and (n := len(body)) - last[1] <= self._max_receive):
                    # the same with a timeout (a chain's calls): all but the timeout field match the last such call
                    _, at, method, handler, views = last
                    ch.bytes_in += n
                    self._run_unary(ch, cid, method, handler, memoryview(body)[at:] if n >= _BIG and views else body[at:],
                                    _unpack_timeout(body)[0])
                elif kind == _CALL:
                    try:  # (free in 3.11 unless raised: no length check on the fast path)
                        timeout_us, mlen, mdlen = _unpack_call_head(body)
                    except struct.error:
                        F.parse_call(body)  # raises what a short CALL gets everywhere (the channel is rejected)
                        raise
                    at = _CALL_HEAD_SIZE + mlen
                    cached = (resolved.get(body[_CALL_HEAD_SIZE:at])
                              if flags == _UNARY_CALL and not mdlen and at <= len(body) else None)
                    if cached is not None and cached[2] and type(body) is bytes:
                        if timeout_us:
                            ch.last_timed = (body[_TIMEOUT_SIZE:at], at, cached[0], cached[1], cached[3])
                        else:
                            ch.last_call = (body[:at], at, cached[0], cached[1], cached[3])
                    loan = rx.loan if type(body) is memoryview else None  # a view of the ring, not a copy
                    if cached is not None and cached[2] and self._inline_ok and len(body) - at <= self._max_receive:
                        n = len(body)
                        ch.bytes_in += n
                        if loan is None:  # a large request is parsed where it lies in ``body``: no copy for the slice
                            self._run_unary(ch, cid, cached[0], cached[1],
                                            memoryview(body)[at:] if n >= _BIG and cached[3] else body[at:], timeout_us)
                        elif cached[3]:  # the parser (or an as_view handler) reads the ring itself
                            message = body[at:]
                            loan.track(message)
                            del body, frame
                            self._run_unary(ch, cid, cached[0], cached[1], message, timeout_us, loan=loan)
                            del message
                            rx.settle()
                        else:  # a handler that wants bytes: one copy, the ring space is free at once
                            message = body[at:].tobytes()
                            loan.end()
                            rx.settle()
                            self._run_unary(ch, cid, cached[0], cached[1], message, timeout_us)
                    else:
                        self._on_call(ch, flags, cid, body, loan)
                        if loan is not None:
                            rx.settle()
                else:
                    self._on_frame(ch, frame)
                if self._leader != me:
                    return False
                if ch.dropped or rx._head == rx.tail:  # nothing more that we know of: back to the poll loop
                    break
        except ChecksumError as exc:  # one frame is bad, the ring is fine: only its call ends
            call = ch.calls.get(exc.call_id)
            if call is not None:
                self._fail(call, grpc.StatusCode.DATA_LOSS, f"Request data corrupted: {exc}")
            elif exc.kind == _CALL:
                self._reject(ch, exc.call_id, grpc.StatusCode.DATA_LOSS, f"Request data corrupted: {exc}")
        except (ProtocolError, struct.error) as exc:
            _log.warning("dropping channel host%d/%d: %s", ch.host, ch.slot, exc)
            self._drop_channel(ch, L.ACC_REJECTED)
        except _Demoted:
            return False
        except Exception:  # whatever a peer's bytes provoke costs that peer's channel only
            _log.exception("dropping channel host%d/%d after an internal error", ch.host, ch.slot)
            self._drop_channel(ch, L.ACC_REJECTED)
        if ch.dropped and not ch.released:  # a response ring failed its checks
            self._drop_channel(ch, L.ACC_REJECTED)
        return self._leader == me

    def _on_frame(self, ch: ServerChannel, frame: tuple) -> None:
        kind, flags, cid, aux, body = frame
        if kind == F.CALL:
            self._on_call(ch, flags, cid, body)
            return
        call = ch.calls.get(cid)
        if kind == F.MESSAGE:
            if call is None or call.request_done:
                return  # (an extent it names stays unread: the next reference skips it)
            if flags & F_EXTENT:  # a whole message in the client's lane: one copy, streams keep no views
                if ch.lanes is None or flags & F.F_MORE:
                    raise ProtocolError("an extent reference where none may be")
                aux = parse_ref(body)[3]
                if aux <= self._max_receive:  # (over it: fails below)
                    body = ch.lanes.take(body, cid, False)[0]
                    flags &= ~F_EXTENT
            ch.bytes_in += len(body) if body is not None else aux
            if aux > self._max_receive:
                self._fail(call, grpc.StatusCode.RESOURCE_EXHAUSTED,
                           f"Received message larger than max ({aux} vs. {self._max_receive})")
                return
            if call.partial is None and flags & F.F_MORE and not self._reserve(call, aux):
                self._fail(call, grpc.StatusCode.RESOURCE_EXHAUSTED,
                           f"Server out of buffer space for partly received messages ({self._budget.limit} bytes)")
                return
            whole = on_chunk(call, flags & F.F_MORE, aux, body, takes_buffers(call.handler.request_deserializer))
            if whole is not None:
                if call.reserved:
                    self._unreserve(call)
                self._on_request(call, whole, flags & F.F_END_STREAM)
        elif kind == F.HALF_CLOSE:
            if call is not None:
                self._on_request(call, None, True)
        elif kind == F.CANCEL:
            if call is not None:
                self._cancel_call(call, grpc.StatusCode.CANCELLED, "Cancelled by the client", notify_client=False)
            elif ch.outbox.frames:  # answered already, but not all written: stop sending it
                ch.outbox.purge(cid)
        else:
            raise ProtocolError(f"unexpected {F.KIND_NAMES.get(kind, kind)} frame from a client")

    def _reserve(self, call: ServerCall, n: int) -> bool:
        """Charge a partly received message of ``n`` bytes to the server's budget (budget.py)."""
        if not self._budget.take(n):
            return False
        call.reserved = n
        return True

    def _unreserve(self, call: ServerCall) -> None:
        n, call.reserved = call.reserved, 0
        call.partial = None
        self._budget.give(n)

    def _on_call(self, ch: ServerChannel, flags: int, cid: int, body: bytes, loan: Any = None) -> None:
        """A CALL frame off the fast path (``_drain`` handles the plain unary one itself).
        ``loan``: ``body`` is a view of the ring, given back however the call goes on (a
        poller demoted meanwhile leaves the publishing to the leader)."""
        if loan is None:
            self._start_call(ch, flags, cid, body, None)
            return
        try:
            self._start_call(ch, flags, cid, body, loan)
        except _Demoted:
            loan.end()
            self._settle_due.append(ch)
            raise
        finally:
            loan.end()

    def _start_call(self, ch: ServerChannel, flags: int, cid: int, body: bytes, loan: Any) -> None:
        """Parsed by ``frames.parse_call``, which the property tests hammer. With ``loan``,
        only a cached unary method whose parser takes buffers keeps the view (until the
        call ends, ``_on_call``); everything else gets a copy and the ring space back at once."""
        timeout_us, method_raw, metadata_raw, at = F.parse_call(body)
        extent = None
        if flags & F_EXTENT:  # the message is in the client's lane (wire/extents.py)
            if ch.lanes is None or flags != _UNARY_CALL | F_EXTENT or loan is not None:
                raise ProtocolError("an extent reference where none may be")
            ref = body[at:]
            lane, _how, position, size = parse_ref(ref)
            if size > self._max_receive:  # the unread lane frame is skipped with the next reference
                self._reject(ch, cid, grpc.StatusCode.RESOURCE_EXHAUSTED,
                             f"Received message larger than max ({size} vs. {self._max_receive})")
                return
            cached = self._resolved.get(method_raw)
            # lent to as_view handlers (they may answer with the view itself) and, on a pool in
            # local memory, to parsers; on far memory (a DAX device) parsers and plain code get
            # one copy, which a reply of the same bytes is compared with without reading the pool again
            lend = (cached is not None and cached[2] and cached[3] and self._inline_ok and not metadata_raw
                    and (cached[1].request_deserializer is as_view or not ch.lanes.far))
            extent, loan = ch.lanes.take(ref, cid, lend)
            flags = _UNARY_CALL
            if cached is not None and cached[2] and self._inline_ok and not metadata_raw:
                # a reply that is this request (the view itself, or the same bytes) is handed back
                ch.extent_in = (cid, extent, ref, lane, position, size)
            body = body[:at]
        if loan is not None and extent is None:
            cached = self._resolved.get(method_raw)
            method_raw, metadata_raw = bytes(method_raw), bytes(metadata_raw)  # never a key or a name into the ring
            if cached is None or not cached[2] or not cached[3] or not self._inline_ok:
                body = body.tobytes()
                loan.end()
                loan = None
        ch.bytes_in += len(body) if extent is None else at + len(extent)
        if flags & F.F_HAS_MESSAGE and extent is None and len(body) - at > self._max_receive:
            self._reject(ch, cid, grpc.StatusCode.RESOURCE_EXHAUSTED,
                         f"Received message larger than max ({len(body) - at} vs. {self._max_receive})")
            return
        cached = self._resolved.get(method_raw)
        if cached is not None and not metadata_raw:
            method, handler, unary, _ = cached
            if unary and flags == _UNARY_CALL and self._inline_ok:
                message = body[at:] if extent is None else extent
                if loan is not None:
                    loan.track(message)
                    del body
                if extent is None:
                    self._run_unary(ch, cid, method, handler, message, timeout_us, loan)
                    return
                del extent
                demoted = False
                try:
                    self._run_unary(ch, cid, method, handler, message, timeout_us, loan)
                except _Demoted:  # a new leader reads the lanes now (and settles them at its next extent)
                    demoted = True
                    raise
                finally:
                    if ch.extent_in is not None and ch.extent_in[0] == cid:
                        ch.extent_in = None
                    del message
                    if not demoted:
                        ch.lanes.settle()  # the client may write its next extent where this one was
                return
            metadata: tuple = ()
        else:
            try:
                method = method_raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ProtocolError("method name is not UTF-8") from None
            metadata = as_metadata(F.decode_metadata(metadata_raw)) if metadata_raw else ()
            try:
                handler = self._lookup(method, metadata, method_raw)
            except Exception:
                _log.exception("looking up a handler for %s failed", method)
                handler = None
        if self._draining:
            self._reject(ch, cid, grpc.StatusCode.UNAVAILABLE, "Server is shutting down")
            return
        if self._max_concurrent is not None and self._in_flight() >= self._max_concurrent:
            self._reject(ch, cid, grpc.StatusCode.RESOURCE_EXHAUSTED, "Concurrent RPC limit exceeded!")
            return
        if handler is None:
            self._reject(ch, cid, grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
            return
        deadline = _monotonic() + timeout_us / 1e6 if timeout_us else None
        call = ServerCall(self, ch, cid, method, metadata, deadline, handler)
        ch.calls[cid] = call
        if deadline is not None:
            self._deadlines[id(call)] = call
        if handler.request_streaming:
            call.requests = queue.SimpleQueue()
            self._submit(call, None)
            if flags & F.F_HAS_MESSAGE:
                self._on_request(call, body[at:] if extent is None else extent, flags & F.F_END_STREAM)
        elif flags & F.F_HAS_MESSAGE:
            message = body[at:] if extent is None else extent
            if loan is not None:  # a cached unary-unary method (metadata, say): its handler runs inline
                loan.track(message)
                del body
            self._on_request(call, message, True)

    def _run_unary(self, ch: ServerChannel, cid: int, method: str, handler: Any, message: bytes,
                   timeout_us: int = 0, loan: Any = None) -> None:
        """The fast path: a unary-unary call whose request came in one frame, run inline.

        The inline box holds the running call until the handler returns; the monitor pops
        it to take the leader role away from a handler that runs too long (see
        ``_maybe_promote``). ``loan``: ``message`` is a view of the request ring, which
        the call gives back when it ends (whoever reads the ring next publishes it)."""
        call = UnaryCall()  # (its fields by hand: no __init__ frame)
        call._server = self
        call.channel = ch
        call.call_id = cid
        call.method = method
        call.handler = handler
        if timeout_us:
            call.deadline = _monotonic() + timeout_us / 1e6
            self._deadlines[id(call)] = call
        calls = ch.calls
        calls[cid] = call
        box = self._inline_box = [call]
        try:
            deserializer = handler.request_deserializer
            try:
                request = message if deserializer is None else deserializer(message)
            except Exception:
                self._fail(call, grpc.StatusCode.INTERNAL, "Exception deserializing request!")
                return
            try:
                response = handler.unary_unary(request, call)
            except Exception as exc:
                self._handler_raised(call, exc, "Exception calling application: {}")
                return
            if response is LATER:
                return
            serializer = handler.response_serializer
            try:
                payload = response if serializer is None or serializer is as_bytes else serializer(response)
                if type(payload) is not bytes and not isinstance(payload, (bytearray, memoryview)):
                    raise TypeError("serialized response is not bytes")
            except Exception:
                self._fail(call, grpc.StatusCode.INTERNAL, "Failed to serialize response!")
                return
            flags = _BARE
            if call.touched or len(payload) > self._bare_limit:
                # a reply that is this extent request (the view itself, or the same bytes) is
                # handed back in one STATUS frame, written here like a bare one (replies.py)
                back = ch.extent_in
                if back is None or call.touched or not self._is_request(back, cid, payload):
                    self._finish(call, payload)
                    return
                payload = returned_status(*back[3:])
                flags = RETURNED_STATUS
            # popping the call is the claim: a concurrent cancel finds it gone, and vice versa
            try:
                del calls[cid]  # (~120 instructions less than pop with a default)
            except KeyError:
                return
            call.stage = ANSWERED
            if timeout_us:
                self._deadlines.pop(id(call), None)
            outbox = ch.outbox
            lock = outbox.lock
            lock.acquire()  # straight to the ring unless something is queued before it (outbox.py)
            try:
                sent = not outbox.frames and not ch.dropped and ch.tx.put(_STATUS, flags, cid, 0, payload)
            finally:
                lock.release()
            if not sent:
                self._write(ch, _STATUS, flags, cid, 0, (payload,), len(payload), None)
            else:
                ch.bytes_out += len(payload)
                idx = ch.sleep_idx  # a same-host client asleep in the kernel: on the ring head, wake it;
                if idx:             # on our pass word, wake it with the others at the end of the pass
                    asleep = ch.words[idx] if idx > 0 else ch.tx.mem.load(ch.client_sleep)
                    if asleep == _SLEEP_ON_PASS:
                        self._pass_due = True
                    elif asleep:
                        ch.tx.mem.wake_word(ch.tx.head_off)
            ch.calls_done += 1
        finally:
            if loan is not None:
                loan.end()
            try:  # (_take_back, inline) the monitor took the box: a new leader reads the rings now
                box.pop()
            except IndexError:
                if loan is not None:
                    self._settle_due.append(ch)  # ... and publishes the request's ring space
                raise _Demoted() from None

    def _in_flight(self) -> int:
        return sum(len(ch.calls) for ch in self._active)

    def _on_request(self, call: ServerCall, message: Optional[bytes], end: int) -> None:
        handler = call.handler
        if handler.request_streaming:
            if message is not None:
                if call.arrived - call.taken >= self._request_window:  # the client ignored its window
                    self._fail(call, grpc.StatusCode.RESOURCE_EXHAUSTED,
                               f"Client sent past its request window ({self._request_window} bytes)")
                    return
                call.arrived += len(message)
                call.requests.put(message)
            if end:
                call.request_done = True
                call.requests.put(END_OF_REQUESTS)
            return
        if message is None:  # half-close with no request message
            if not call.request_done:
                self._fail(call, grpc.StatusCode.INTERNAL, "Client half-closed without a request message")
            return
        call.request_done = True
        if handler.response_streaming:
            self._submit(call, message)
        else:
            box = self._inline_box = [call]
            try:
                self._run_handler(call, message)
            finally:
                if not _take_back(box):
                    raise _Demoted()

    def _submit(self, call: ServerCall, message: Optional[bytes]) -> None:
        with self._leader_lock:
            self._threads_busy += 1  # counted from now: the worker needs the GIL to even start
        try:
            self._thread_pool.submit(self._run_in_thread, call, message)
        except RuntimeError:  # the pool was shut down
            with self._leader_lock:
                self._threads_busy -= 1
            self._fail(call, grpc.StatusCode.UNAVAILABLE, _UNAVAILABLE_SHUTDOWN)

    def _lookup(self, method: str, metadata: tuple, method_raw: bytes) -> Optional[grpc.RpcMethodHandler]:
        """Registered handlers first, then generic ones (grpcio's order).

        Results that cannot depend on metadata (registered methods, grpc's own
        dictionary handlers, no interceptors) are cached by method name.
        """
        if self._interceptors:
            return self._intercepted(0, _HandlerCallDetails(method, metadata))
        handler = self._registered.get(method)
        cacheable = True
        if handler is None and self._generic:
            details = _HandlerCallDetails(method, metadata)
            for generic in self._generic:
                if not isinstance(generic, DictionaryGenericHandler):
                    cacheable = False
                handler = generic.service(details)
                if handler is not None:
                    break
        if handler is not None and cacheable:
            unary = not handler.request_streaming and not handler.response_streaming
            self._resolved[method_raw] = (method, CachedHandler(handler), unary, takes_buffers(handler.request_deserializer))
        return handler

    def _intercepted(self, i: int, details: grpc.HandlerCallDetails) -> Optional[grpc.RpcMethodHandler]:
        if i == len(self._interceptors):
            handler = self._registered.get(details.method)
            if handler is not None:
                return handler
            for generic in self._generic:
                handler = generic.service(details)
                if handler is not None:
                    return handler
            return None
        return self._interceptors[i].intercept_service(lambda d: self._intercepted(i + 1, d), details)

    # -- running handlers -------------------------------------------------------------------------------
    def _run_in_thread(self, call: ServerCall, message: Optional[bytes]) -> None:
        try:
            self._run_handler(call, message)
        finally:
            with self._leader_lock:
                self._threads_busy -= 1

    def _run_handler(self, call: ServerCall, message: Optional[bytes]) -> None:
        handler = call.handler
        try:
            if handler.request_streaming:
                argument: Any = RequestIterator(call, handler.request_deserializer)
            elif handler.request_deserializer is None:
                argument = message
            else:
                try:
                    argument = handler.request_deserializer(message)
                except Exception:
                    self._fail(call, grpc.StatusCode.INTERNAL, "Exception deserializing request!")
                    return
            if handler.request_streaming:
                behavior = handler.stream_stream if handler.response_streaming else handler.stream_unary
            else:
                behavior = handler.unary_stream if handler.response_streaming else handler.unary_unary
            try:
                result = behavior(argument, call)
            except Exception as exc:
                self._handler_raised(call, exc, "Exception calling application: {}")
                return
            if not handler.response_streaming:
                if result is not LATER:
                    self._respond(call, result)
                return
            try:
                for response in result:
                    if not call.active:
                        break
                    payload = self._serialize(call, response)
                    if payload is None:
                        return
                    self._send_message(call, payload)
            except Exception as exc:
                self._handler_raised(call, exc, "Exception iterating responses: {}")
                return
            self._finish(call, None)
        except Exception:
            _log.exception("NotNets server failed a call")
            self._fail(call, grpc.StatusCode.INTERNAL, "NotNets server error")

    def _handler_raised(self, call: ServerCall, exc: Exception, template: str) -> None:
        if call.aborted or isinstance(exc, AbortError):
            self._fail(call, grpc.StatusCode.UNKNOWN, "RPC Aborted")
            return
        if not call.active:
            self._fail(call, grpc.StatusCode.CANCELLED, "Cancelled")
            return
        try:
            details = template.format(exc)
        except Exception:
            details = "Calling application raised unprintable Exception!"
        _log.exception(details)
        self._fail(call, grpc.StatusCode.UNKNOWN, details)

    def _serialize(self, call: ServerCall, response: Any) -> Optional[bytes]:
        serializer = call.handler.response_serializer
        try:
            payload = response if serializer is None or serializer is as_bytes else serializer(response)
            if not isinstance(payload, (bytes, bytearray, memoryview)):
                raise TypeError("serialized response is not bytes")
            return payload
        except Exception:
            self._fail(call, grpc.StatusCode.INTERNAL, "Failed to serialize response!")
            return None

    def _respond(self, call: ServerCall, response: Any) -> None:
        payload = self._serialize(call, response)
        if payload is not None:
            self._finish(call, payload)

    # -- monitor ----------------------------------------------------------------------------------------------
    def _monitor(self) -> None:
        """Promotions, deadlines and dead clients, each looked at when due (never waits on
        a ring: what it sends goes through the outboxes).

        Sleeps ``IDLE_NAP`` or ``BUSY_NAP`` between looks, less when a deadline or a
        running handler's promotion is due sooner."""
        last_clients = 0.0
        idle_since, trimmed, traffic = None, True, self._traffic()
        while not self._stopped.is_set():
            now = _monotonic()
            nap = self._maybe_promote(now)
            if self._deadlines:
                nap = min(nap, self._expire_deadlines(now))
            if now - last_clients >= CLIENT_CHECK_PERIOD:
                last_clients = now
                self._check_clients(now)
            self._publish_crowd()
            seen, traffic = traffic, self._traffic()
            if not self._idle or traffic != seen:  # (a burst between two looks leaves only its bytes)
                idle_since, trimmed = None, False
            elif idle_since is None:
                idle_since = now
            elif not trimmed and now - idle_since > TRIM_AFTER:
                trimmed = True
                release_free_memory()
                self._drop_idle_pages()
            self._stopped.wait(nap)

    def _expire_deadlines(self, now: float) -> float:
        """Cancel the calls whose deadline passed; seconds until the next one is due."""
        due = IDLE_NAP
        for call in list(self._deadlines.values()):
            deadline = call.deadline
            if deadline is None:
                continue
            if now >= deadline:
                self._cancel_call(call, grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", notify_client=True)
            else:
                due = min(due, deadline - now)
        return max(due, 0.001)

    def _maybe_promote(self, now: float) -> float:
        """Hand the leader role to a new poller when one inline handler held it too long;
        returns how long the monitor may sleep before it must look again.

        The running handler's box holds its sequence number; whoever pops it first --
        the poller when the handler returns, or this monitor -- decides: if we win, the
        old poller finds its box empty and leaves the rings to the new one (_Demoted).
        A handler seen running is looked at again once it could have run PROMOTE_AFTER;
        one that starts just after a look is noticed at the next (``BUSY_NAP`` later).
        """
        nap = IDLE_NAP if self._idle else BUSY_NAP
        box = self._inline_box
        try:
            running = box[0]
        except IndexError:
            return nap
        seen, since = self._inline_seen
        if running is not seen:
            self._inline_seen = (running, now)
            return min(nap, PROMOTE_AFTER)
        if now - since < PROMOTE_AFTER:
            return min(nap, since + PROMOTE_AFTER - now)
        if self._pollers >= self._max_pollers:
            return nap
        if not _take_back(box):
            return nap  # the handler returned just now
        with self._leader_lock:
            self._leader = None
            self._pollers += 1
        threading.Thread(target=self._poll_loop, name="notnets-poller", daemon=True).start()
        return nap

    # -- answering later, reading from an event loop (notnets_rpc.aio) ---------------------------------------
    def finish_later(self, call: ServerCall, response: Optional[bytes],
                     error: Optional[Tuple[grpc.StatusCode, str]] = None) -> None:
        """End a call whose handler returned ``LATER`` (from any thread, never waiting):
        with ``error``, that status; otherwise the serialized ``response`` with the code,
        details and metadata the handler set. A call that ended meanwhile stays ended."""
        if error is not None:
            call.code_, call.details_ = error
            self._fail(call, error[0], error[1])
        else:
            self._finish(call, response)

    def pass_lead(self, to: int) -> bool:
        """(a handler running inline on the thread that reads the rings) Hand the reading
        to ``to`` (an event loop's thread id), which reads with ``poll_rings`` from now on:
        this thread stops when the handler returns, as when the monitor promotes another
        poller. False if it cannot (another thread reads now, or the monitor took over)."""
        with self._leader_lock:
            if self._leader != threading.get_ident() or self._stopped.is_set() or not _take_back(self._inline_box):
                return False
            self._leader = to
            self._pollers += 1  # counted for ``to`` until it stops reading (poll_rings -> None, unlead)
            return True

    def poll_rings(self, me: int) -> Optional[bool]:
        """(``me`` reads the rings, see ``pass_lead``) One look at every ring, as a poller
        thread takes one per turn, never waiting; whether there was work. None when ``me``
        no longer reads them (the monitor promoted a poller thread, or the server stops)."""
        if self._leader == me:
            mem = self._pool.mem
            views = mem.views()
            worked = self._look_at_rings(me, mem.load, views[1] if views is not None else None)
            if worked is not None:
                self._outside_polls += 1
                if not self._outside_polls & 63:
                    self._discover()
                if self._leader == me:
                    return worked
        with self._leader_lock:
            self._pollers -= 1
        return None

    def unlead(self, me: int) -> None:
        """``me`` stops reading the rings (idle; not after ``poll_rings`` said None): a
        poller thread takes over."""
        with self._leader_lock:
            self._pollers -= 1
            if self._leader != me:
                return
            self._leader = None
        if not self._stopped.is_set():
            self._spawn_poller()

    # -- introspection (tests, tools) ----------------------------------------------------------------------------
    @property
    def endpoints(self) -> List[Endpoint]:
        return list(self._endpoints.values())

    def channel_count(self) -> int:
        return len(self._channels)
