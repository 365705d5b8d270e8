"""The server's view of its channels: finding new ones, dropping dead ones, counters.

A mixin of ``server.Server``: the table of accepted channels, kept by the poller
(doorbells, accept) and the monitor (reclaiming dead clients, publishing counters).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable, Dict, Optional

import grpc

from ..wire import frames as F
from ..wire import layout as L
from ..wire.messages import sink_slot
from ..lane_claims import RESPONSES, ChannelLanes
from ..pool import Pool, now_ms, pid_alive, stale_ms
from .call import ServerCall
from .outbox import Outbox

_log = logging.getLogger("notnets_rpc.server")
_UNARY_CALL = F.F_HAS_MESSAGE | F.F_END_STREAM
_monotonic = time.monotonic


# no plain call's prefix: its length 0 says so (server._drain)
NO_CALL = (bytes(17), 0, None, None, False)


class ServerChannel:
    """A client's channel as the server holds it."""

    __slots__ = ("host", "slot", "generation", "ctl", "claim_off", "claim_word", "rx", "tx", "outbox", "calls", "peer",
                 "client_pid", "beat", "beat_seen", "dropped", "released", "calls_done", "errors", "bytes_in",
                 "bytes_out", "same_process", "futex", "client_sleep", "lanes", "extent_in", "words", "claim_idx",
                 "sleep_idx", "last_call", "last_timed", "crowd_seen", "_bump_pass")

    def __init__(self, pool: Pool, host: int, slot: int, generation: int, claim_word: int, client_pid: int,
                 max_receive: int, window: int, reserve: Callable[[ServerCall, int], bool],
                 bump_pass: Callable[[], None] = lambda: None) -> None:
        self.host, self.slot, self.generation = host, slot, generation
        self.ctl = pool.layout.channel(host, slot)
        self.claim_off = self.ctl + L.CH_CLAIM
        self.claim_word = claim_word
        self.rx, self.tx = pool.server_rings(host, slot)
        calls: Dict[int, ServerCall] = {}
        self.calls = calls

        def sink(kind: int, flags: int, cid: int, aux: int, n: int) -> Optional[memoryview]:
            call = calls.get(cid) if kind == F.MESSAGE else None
            if call is None or call.request_done or aux > max_receive:
                return None
            if call.partial is None and n != aux and not reserve(call, aux):
                return None  # over the server's budget: _on_frame fails the call
            return sink_slot(call, aux, n, max_receive)

        self.rx.sink = sink
        # large unary requests are lent as views of the ring (ring.py, loans.py): the poller
        # hands them to buffer-taking parsers or copies them out, and ends the loan with the call
        self.rx.viewer = lambda kind, flags, cid, aux, n: kind == F.CALL and flags == _UNARY_CALL
        self.rx.revoke = False  # a request view lasts as long as its call: a slow handler holds only its client
        self._bump_pass = bump_pass  # wakes the clients asleep on the server's pass word (Server._bump_pass)
        self.outbox = Outbox(self.tx, window, self._wake_client)
        self.client_pid = client_pid
        self.peer = f"notnets:host{host}/pid{client_pid}"
        self.beat = pool.mem.load(self.ctl + L.CH_CLIENT_HEARTBEAT)
        self.beat_seen = _monotonic()
        self.dropped = False   # stop reading and writing (also set on a ring error)
        self.released = False  # removed from the server, verdict written
        self.calls_done = self.errors = self.bytes_in = self.bytes_out = 0
        self.crowd_seen = 0  # bytes_in at the monitor's last look (ChannelTable._publish_crowd)
        self.same_process = host == pool.host_id and client_pid == os.getpid()
        # the client and we wake each other from futex sleeps (same host, or same kernel: sim hosts)
        self.futex = pool.shares_futex(host, pool.mem.load(self.ctl + L.CH_CLIENT_KERNEL))
        self.client_sleep = self.ctl + L.CH_CLIENT_SLEEP  # the client's "asleep in the kernel" word
        # the unary fast path reads the claim and sleep words by index when the pool is plain
        # memory (``words`` None: through ``mem``); sleep_idx 0: never wake, -1: look through ``mem``
        views = pool.mem.views()
        self.words = views[1] if views is not None else None
        self.claim_idx = self.claim_off >> 3
        self.sleep_idx = 0 if not self.futex else self.client_sleep >> 3 if views is not None else -1
        self.last_call = NO_CALL  # (CALL body up to the message, its length, method, handler, parses views): server._drain
        self.last_timed = NO_CALL  # the same for the last plain call with a timeout, its timeout field left out
        # messages larger than half a ring: responses in our lane, requests in the client's (extents.py)
        self.lanes = (ChannelLanes(pool, RESPONSES, host, slot, generation, self.ctl + L.CH_REQ_LANE_TAIL,
                                   self.ctl + L.CH_RESP_LANE_TAIL, host, revoke=False)
                      if pool.layout.lanes else None)
        self.extent_in: Optional[tuple] = None  # (call id, message, reference, lane, position, length) of the extent call running inline

    def _wake_client(self) -> None:
        """After writing a frame: a client on our kernel asleep in the kernel on the ring head."""
        if self.futex:
            tx = self.tx
            asleep = tx.mem.load(self.client_sleep)
            if asleep == L.SLEEP_ON_PASS:
                self._bump_pass()
            elif asleep:
                tx.mem.wake_word(tx.head_off)


class ChannelTable:
    """Discovery, acceptance, liveness and teardown of the channels a server serves."""

    def _discover(self) -> None:
        """Rescan the channel table of every host whose doorbell moved.

        One copy of the whole host table per poll (cheap when idle); a changed
        doorbell is then read properly, word by word.
        """
        pool = self._pool
        lay = pool.layout
        snapshot = pool.mem.read(lay.hosts_offset, lay.max_hosts * L.HOST_ENTRY_BYTES)
        if snapshot == self._host_table:
            return
        self._host_table = snapshot
        mem = pool.mem
        bells = self._bells
        for h in range(lay.max_hosts):
            v = mem.load(lay.host_entry(h) + L.HOST_CHANNEL_BELL)
            if v != bells[h]:
                bells[h] = v
                self._scan_host(h)

    def _scan_host(self, host: int) -> None:
        pool = self._pool
        mem = pool.mem
        lay = pool.layout
        for k in range(lay.channels):
            off = lay.channel(host, k)
            claim = mem.load(off + L.CH_CLAIM)
            ch = self._channels.get((host, k))
            if ch is not None and claim != ch.claim_word:
                self._drop_channel(ch, L.ACC_RELEASED)
                ch = None
            gen, state = L.unpack_state(claim)
            if state != L.CH_OPEN or ch is not None:
                continue
            index, dir_gen = L.unpack_target(mem.load(off + L.CH_TARGET))
            ours = self._endpoints.get(index)
            if ours is None:
                continue
            acc_gen, verdict = L.unpack_state(mem.load(off + L.CH_ACCEPT))
            if acc_gen == gen and verdict != L.ACC_NONE:
                continue  # already answered (by us, earlier)
            if dir_gen != ours.generation or self._draining:
                mem.store(off + L.CH_ACCEPT, L.pack_state(gen, L.ACC_REJECTED))
                continue
            self._accept(host, k, off, gen, claim)

    def _accept(self, host: int, slot: int, off: int, gen: int, claim: int) -> None:
        mem = self._pool.mem
        mem.store(off + L.CH_REQ_TAIL, 0)
        mem.store(off + L.CH_RESP_HEAD, 0)
        mem.store(off + L.CH_REQ_LANE_TAIL, 0)
        for field in (L.CH_CALLS_DONE, L.CH_ERRORS, L.CH_BYTES_IN, L.CH_BYTES_OUT):
            mem.store(off + field, 0)
        mem.store(off + L.CH_SERVER_PID, os.getpid())
        ch = ServerChannel(self._pool, host, slot, gen, claim, mem.load(off + L.CH_CLIENT_PID), self._max_receive,
                           self._window, self._reserve, self._bump_pass)
        with self._state_lock:
            self._channels[(host, slot)] = ch
            self._active = tuple(self._channels.values())
            self._local_client = any(c.same_process for c in self._active)
            self._futex_ok = self._pool.mem.can_wait and all(c.futex for c in self._active)
            self._remote_client = any(c.host != self._pool.host_id for c in self._active)
            mem.store(off + L.CH_ACCEPT, L.pack_state(gen, L.ACC_ACCEPTED))

    def _drop_channel(self, ch: ServerChannel, verdict: int) -> None:
        """Stop serving a channel (poller or monitor thread; only the first call acts)."""
        with self._state_lock:
            if ch.released:
                return
            ch.released = True
            ch.dropped = True
            ch.outbox.close()
            self._backlog.pop(ch, None)
            if self._channels.get((ch.host, ch.slot)) is ch:
                del self._channels[(ch.host, ch.slot)]
                self._active = tuple(self._channels.values())
                self._local_client = any(c.same_process for c in self._active)
                self._futex_ok = self._pool.mem.can_wait and all(c.futex for c in self._active)
                self._remote_client = any(c.host != self._pool.host_id for c in self._active)
        for call in list(ch.calls.values()):
            self._cancel_call(call, grpc.StatusCode.CANCELLED, "Channel went away", notify_client=False)
        if ch.lanes is not None:
            ch.lanes.close()  # our response lane goes back; views of the client's lane end
        pool = self._pool
        if pool is not None and pool.lost is None:
            mem = pool.mem
            with self._state_lock:  # never over a newer claim's verdict (_accept writes it under this lock)
                acc_gen, _ = L.unpack_state(mem.load(ch.ctl + L.CH_ACCEPT))
                if acc_gen == ch.generation:
                    mem.store(ch.ctl + L.CH_ACCEPT, L.pack_state(ch.generation, verdict))
            self._publish_channel_counters(ch)
            self._totals[0] += ch.calls_done
            self._totals[1] += ch.errors
            self._totals[2] += ch.bytes_in
            self._totals[3] += ch.bytes_out
            pool.drop_ring_pages(ch.host, ch.slot)  # its ring pages leave our RSS (refault if reused)

    def _traffic(self) -> int:
        """Bytes in and out so far (open channels and closed ones) and the open channels'
        count: the monitor sees from a change that calls ran since its last look."""
        active = self._active
        return sum(ch.bytes_in + ch.bytes_out for ch in active) + self._totals[2] + self._totals[3] + len(active)

    def _publish_crowd(self) -> None:
        """(monitor, each look) Publish how many same-host channels called since the last look.

        A same-host client reads it before it waits for a reply: when its server's
        callers and the server itself outnumber the CPUs, a client that spins or yields
        takes CPU from the one process that has the work, so it sleeps in the kernel at
        once and the server wakes it (client/connection.py). One store when the count
        changes, none per call."""
        pool = self._pool
        if pool is None or pool.lost is not None or not self._crowd_off:
            return
        callers = 0
        for ch in self._active:
            seen = ch.bytes_in
            if seen != ch.crowd_seen:
                ch.crowd_seen = seen
                callers += ch.futex  # (a caller on another kernel can neither sleep on our word nor be woken)
        # crowded only when asked for (NOTNETS_CROWD_AT): it halves 8 clients' calls/s on an
        # idle machine and doubles them on a loaded one (docs/results.md, "Many clients");
        # the word holds the callers while crowded, else 0: this server decides for its clients
        crowd_at = self._tune.crowd_at
        if not (crowd_at > 0 and callers >= crowd_at and pool.mem.can_wait):  # (they can sleep)
            callers = 0
        if callers != self._crowd:
            self._crowd = callers
            pool.mem.store(self._crowd_off, callers)  # (clients read it before they wait)
            self._crowded = callers > 0

    def _drop_idle_pages(self) -> None:
        """(monitor, once the server has idled) Unmap the ring pages of the channels still
        open: a burst touched them all, and only a new burst needs them again (the first
        lap of each ring then maps its pages afresh, one minor fault per page)."""
        pool = self._pool
        if pool is None or pool.lost is not None:
            return
        for ch in list(self._channels.values()):
            pool.drop_ring_pages(ch.host, ch.slot)

    def _beat(self) -> None:
        """(the process's beat thread) Heartbeat and counters into our directory entries.

        Only stores words of our own entries: no lock, no ring, nothing a channel can
        hold. An entry someone overwrote (another name, pid or state) is written again."""
        pool = self._pool
        if pool is None or pool.lost is not None:
            return
        mem = pool.mem
        pid = os.getpid()
        state = L.DIR_DRAINING if self._draining else L.DIR_LIVE
        for ep in list(self._endpoints.values()):
            off = pool.layout.dir_entry(ep.host, ep.slot)
            if (mem.load(off + L.DIR_STATE) != L.pack_state(ep.generation, state) or mem.load(off + L.DIR_PID) != pid
                    or L.read_name(mem, off) != ep.name):
                if self._stopped.is_set():
                    continue
                _log.warning("directory entry %d of %r was overwritten; publishing it again", ep.index, ep.name)
                L.write_name(mem, off, ep.name)
                mem.store(off + L.DIR_PID, pid)
                mem.store(off + L.DIR_KERNEL, pool.kernel)
                mem.store(off + L.DIR_STATE, L.pack_state(ep.generation, state))
        self._publish_counters()

    def _publish_counters(self) -> None:
        pool = self._pool
        if pool is None or pool.lost is not None:
            return
        mem = pool.mem
        t = now_ms()
        totals = list(self._totals)
        for ch in list(self._channels.values()):
            self._publish_channel_counters(ch)
            totals[0] += ch.calls_done
            totals[1] += ch.errors
            totals[2] += ch.bytes_in
            totals[3] += ch.bytes_out
        for ep in self._endpoints.values():
            off = pool.layout.dir_entry(ep.host, ep.slot)
            gen, _ = L.unpack_state(mem.load(off + L.DIR_STATE))
            if gen & L.DIR_GEN_MASK != ep.generation:
                continue
            mem.store(off + L.DIR_HEARTBEAT, t)
            for field, value in zip((L.DIR_CALLS, L.DIR_ERRORS, L.DIR_BYTES_IN, L.DIR_BYTES_OUT), totals):
                mem.store(off + field, value)

    def _publish_channel_counters(self, ch: ServerChannel) -> None:
        mem = self._pool.mem
        gen, _ = L.unpack_state(mem.load(ch.ctl + L.CH_CLAIM))
        if gen != ch.generation:
            return
        for field, value in ((L.CH_CALLS_DONE, ch.calls_done), (L.CH_ERRORS, ch.errors),
                             (L.CH_BYTES_IN, ch.bytes_in), (L.CH_BYTES_OUT, ch.bytes_out)):
            mem.store(ch.ctl + field, value)

    def _check_clients(self, now: float) -> None:
        """Reclaim channels whose client died: pid gone (same host) or heartbeat stalled."""
        pool = self._pool
        if pool is None or pool.lost is not None:
            return
        mem = pool.mem
        limit = stale_ms() / 1000
        for ch in list(self._channels.values()):
            if mem.load(ch.ctl + L.CH_CLAIM) != ch.claim_word:
                continue  # the poller drops it
            beat = mem.load(ch.ctl + L.CH_CLIENT_HEARTBEAT)
            if beat != ch.beat:
                ch.beat, ch.beat_seen = beat, now
            dead = (ch.host == pool.host_id and not pid_alive(ch.client_pid)) or now - ch.beat_seen > limit
            if dead:
                _log.info("reclaiming channel host%d/%d of dead client pid %d", ch.host, ch.slot, ch.client_pid)
                self._drop_channel(ch, L.ACC_RECLAIMED)

