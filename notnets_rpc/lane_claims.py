"""Taking and giving back extent lanes (wire/extents.py) in this host's partition.

A lane is held by one process for one direction of one channel, from the first message
too large for half a ring until the channel ends; its holder is the lane's only writer.
Claims are made under the host lock (``Mapping.host_lock``), like channel slots, so the
lane table of a host is written by that host's processes only, one at a time.

A lane whose holder is dead (its pid is gone: same host, so the check is sound) is
taken over by the next claimer; a live holder gives its lane back when its channel
ends (client close, server drop), whatever the reader did. A holder that is alive and
never lets go keeps only its host's lanes from others, who then send in chunks.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Optional, Tuple

from .errors import ProtocolError
from .mapping import is_char_device
from .pool import Pool, pid_alive
from .wire import layout as L
from .wire.extents import IN_LANE, LaneReader, LaneWriter, lane_bounds, parse_ref

REQUESTS, RESPONSES = 0, 1


def claim_lane(pool: Pool, direction: int, host: int, slot: int, channel_gen: int, pid: int
               ) -> Optional[Tuple[int, int]]:
    """(index, generation) of a lane now held by ``pid``, or None when all are taken."""
    lay = pool.layout
    if not lay.lanes or pool.lost is not None:
        return None
    mem = pool.mem
    with pool.mapping.host_lock():
        for index in range(lay.lanes_per_host):
            off = lay.lane_ctl(pool.host_id, index)
            gen, state = L.unpack_state(mem.load(off + L.LANE_CLAIM))
            if state == L.LANE_HELD and pid_alive(mem.load(off + L.LANE_PID)):
                continue
            gen = (gen + 1) & L.GEN_MASK or 1
            mem.store(off + L.LANE_PID, pid)
            mem.store(off + L.LANE_CHANNEL, (host << 16) | slot | ((channel_gen & 0xFFFFFFFF) << 32))
            mem.store(off + L.LANE_DIRECTION, direction)
            mem.store(off + L.LANE_HEAD, 0)
            mem.store(off + L.LANE_CLAIM, L.pack_state(gen, L.LANE_HELD))
            return index, gen
    return None


def release_lane(pool: Pool, index: int, generation: int) -> None:
    """Give a lane back (only if it is still ours: same generation)."""
    if pool.lost is not None:
        return
    off = pool.layout.lane_ctl(pool.host_id, index)
    with pool.mapping.host_lock():
        gen, state = L.unpack_state(pool.mem.load(off + L.LANE_CLAIM))
        if gen == generation and state == L.LANE_HELD:
            pool.mem.store(off + L.LANE_CLAIM, L.pack_state(gen, L.LANE_FREE))


class ChannelLanes:
    """One side of one channel: the lane it writes (claimed at its first large message,
    held until ``close``) and the peer's lane it reads (bound at the first reference).

    ``tail_off``: our word in the channel block where we publish what we read of the
    peer's lane; ``peer_tail_off``: the peer's word that says what it read of ours.
    ``peer_host``: the peer's lanes must lie in that host's partition."""

    CLAIM_RETRY = 1.0  # seconds between claims when every lane of our host was taken

    def __init__(self, pool: Pool, direction: int, host: int, slot: int, channel_gen: int, tail_off: int,
                 peer_tail_off: int, peer_host: int, revoke: bool) -> None:
        self.pool, self.direction = pool, direction
        self.host, self.slot, self.channel_gen = host, slot, channel_gen
        self.tail_off, self.peer_tail_off, self.peer_host = tail_off, peer_tail_off, peer_host
        self.revoke = revoke
        self.lock = threading.Lock()  # one writer at a time, lane frame and its reference in the same order
        self.writer: Optional[LaneWriter] = None
        self.reader: Optional[LaneReader] = None
        self._claim: Optional[Tuple[int, int]] = None
        self._tried = -1e9
        self._broken = False
        self.closed = False
        # views of our lanes need direct memory (software coherence, cost models: copies)
        self.direct = pool.mem.views() is not None
        # a DAX device (CXL memory, or QEMU's emulated window) is far memory: read once into
        # local memory rather than twice (parse, then compare a reply); a file is local memory
        self.far = is_char_device(pool.path)

    def writer_for(self, n: int) -> Optional[LaneWriter]:
        """(``lock`` held) Our lane if a message of ``n`` bytes can go there, else None."""
        w = self.writer
        if w is None:
            if self._broken or self.closed:
                return None
            now = time.monotonic()
            if now - self._tried < self.CLAIM_RETRY:
                return None
            self._tried = now
            self._claim = claim_lane(self.pool, self.direction, self.host, self.slot, self.channel_gen, os.getpid())
            if self._claim is None:
                return None
            w = self.writer = LaneWriter(self.pool.mem, self.pool.layout, self.pool.host_id, self._claim[0],
                                         self.peer_tail_off)
        return w if w.fits(n) else None

    def put(self, cid: int, n: int, parts: Any) -> Optional[bytes]:
        """(``lock`` held) Write a message into our lane; its reference, or None (send chunks)."""
        w = self.writer_for(n)
        if w is None:
            return None
        try:
            position = w.put_message(cid, n, parts)
        except ProtocolError:  # the reader published a tail that makes no sense: chunks from now on
            self._broken = True
            self.writer = None
            return None
        return None if position is None else w.ref(position, n)

    def take(self, ref: Any, cid: int, lend: bool) -> Tuple[Any, Any]:
        """(the reader of our rings) The message a reference names: (view or bytes, loan)."""
        lane, how, position, n = parse_ref(ref)
        if how != IN_LANE:
            raise ProtocolError("a returned extent where the peer's own was expected")
        r = self.reader
        if r is None:
            first, stop = lane_bounds(self.pool.layout, self.peer_host)
            if not first <= lane < stop:
                raise ProtocolError(f"extent lane {lane} is not in the peer's partition")
            r = self.reader = LaneReader(self.pool.mem, self.pool.layout, lane, self.tail_off)
            r.revoke = self.revoke
        elif lane != r.lane:
            raise ProtocolError(f"extent in lane {lane}, but this channel's peer writes lane {r.lane}")
        r.viewer = _lend if lend and self.direct else None
        return r.take(position, cid, n)

    def settle(self) -> None:
        if self.reader is not None and self.reader.loans:
            self.reader.settle()

    def close(self) -> None:
        """The channel ended: views of the peer's lane end, our lane goes back."""
        self.closed = True
        r = self.reader
        if r is not None:
            for loan in list(r.loans):
                if loan.evict is not None:
                    loan.evict()
                loan.end()
        with self.lock:
            self.writer = None
            claim, self._claim = self._claim, None
        if claim is not None:
            release_lane(self.pool, *claim)


def _lend(kind: int, flags: int, cid: int, aux: int, n: int) -> bool:
    return True
