"""Extents: messages larger than half a ring, carried in a lane and handed over by reference.

A message that does not fit half a ring would otherwise travel in chunks, one in flight,
each copied in and out (docs/results.md, "Large messages"). Instead its writer puts it
whole, as one MESSAGE frame, into an *extent lane*: a 4 MiB region of the pool held by
the writer for one direction of one channel (layout.py, claimed through lane_claims.py),
and sends a 24-byte reference in the channel's ring in its place: a CALL (unary
request) or MESSAGE frame with ``F_EXTENT`` set, whose message part is ``REF``:

    u32 lane (host * lanes_per_host + index) | u32 how | u64 position | u64 length

``how`` is ``IN_LANE`` (the frame at ``position`` of the writer's lane) or ``RETURNED``
(the receiver's *own* request extent at ``position``, handed back: the response is
byte for byte the request -- a handler that answers with the request view it was
given, or an echo whose reply serializes to the request's bytes -- so the server
writes nothing and the client answers from the request it still holds in its own
memory, never reading the pool for it).

Ownership: the lane's holder is its only writer (``LaneWriter``, a ring writer that
never waits: no room means chunks); the reader consumes frames in order
(``LaneReader``: a ring reader, so frames are lent as views exactly as ring frames are,
loans.py) and publishes its tail in its own word of the channel block. A frame is freed
when the reader's view of it ends (dropped, released, the call over, revoked). A
frame whose reference never came (its call was cancelled before the reference left)
is skipped unread when a later reference names a position past it.

Every field of a reference and every lane frame header is untrusted: a lane that is
not the one this channel's writer uses, a position behind what was read or inside a
frame, a frame of another call or length, all raise ``ProtocolError`` (a server drops
that client's channel, a client ends that call; nobody else's). A writer whose reader publishes a nonsense tail gets
``ProtocolError`` from its lane and falls back to chunks.

Pure: no locks, no clocks, no I/O.
"""

from __future__ import annotations

import struct
from typing import Any, Optional, Tuple

from ..errors import ProtocolError
from .frames import (ALIGN, F_HAS_HEADERS, F_HAS_MESSAGE, FRAME_MAGIC, HEADER, HEADER_BYTES, MESSAGE, PAD, STATUS_HEAD,
                     frame_bytes)
from .layout import LANE_HEAD, Layout
from .ring import RingReader, RingWriter

F_EXTENT = 0x20  # CALL / MESSAGE: the message is an extent, its body ends with a REF
REF = struct.Struct("<IIQQ")
IN_LANE, RETURNED = 0, 1
# the STATUS frame that ends a unary call OK with its request handed back: no details, no
# metadata (an empty initial set: no HEADERS went first), the RETURNED reference as the message
RETURNED_STATUS = F_HAS_HEADERS | F_HAS_MESSAGE | F_EXTENT
_EMPTY_STATUS = STATUS_HEAD.pack(0, 0, 0)


def lane_bounds(layout: Layout, host: int) -> Tuple[int, int]:
    """Global lane numbers [first, stop) of ``host``'s partition."""
    return host * layout.lanes_per_host, (host + 1) * layout.lanes_per_host


def parse_ref(raw: Any) -> Tuple[int, int, int, int]:
    """(lane, how, position, length) of a reference; ``ProtocolError`` if it is not one."""
    if len(raw) != REF.size:
        raise ProtocolError(f"extent reference of {len(raw)} bytes (expected {REF.size})")
    lane, how, position, length = REF.unpack(bytes(raw))
    if how not in (IN_LANE, RETURNED) or position % ALIGN or length >= 1 << 32:
        raise ProtocolError(f"bad extent reference (how {how}, position {position}, length {length})")
    return lane, how, position, length


def returned_status(lane: int, position: int, n: int) -> bytes:
    """The body of that STATUS frame for the request extent at ``position`` of ``lane``
    (``n`` bytes): the same bytes the general status path writes for it, so that both
    sides can build it once and compare it whole."""
    return _EMPTY_STATUS + REF.pack(lane, RETURNED, position, n)


class LaneWriter(RingWriter):
    """The holder's end of a lane: whole messages as one frame each, never waiting."""

    __slots__ = ("lane",)

    def __init__(self, mem: Any, layout: Layout, host: int, index: int, tail_off: int) -> None:
        super().__init__(mem, layout.lane_data(host, index), layout.lane_bytes,
                         layout.lane_ctl(host, index) + LANE_HEAD, tail_off)
        self.lane = host * layout.lanes_per_host + index

    def fits(self, n: int) -> bool:
        return frame_bytes(n) <= self.size

    def put_message(self, cid: int, n: int, parts: Any) -> Optional[int]:
        """Write one message (``parts``, ``n`` bytes) as a MESSAGE frame; its position, or
        None when the lane has no room now (the caller sends chunks instead)."""
        if not self.try_write(MESSAGE, 0, cid, n, parts, n):
            return None
        return self.head - frame_bytes(n)

    def ref(self, position: int, n: int) -> bytes:
        return REF.pack(self.lane, IN_LANE, position, n)


class LaneReader(RingReader):
    """The reader's end of one peer's lane: frames read in order, lent as the ring's are."""

    __slots__ = ("lane",)

    def __init__(self, mem: Any, layout: Layout, lane: int, tail_off: int, tail: int = 0) -> None:
        host, index = divmod(lane, layout.lanes_per_host)
        super().__init__(mem, layout.lane_data(host, index), layout.lane_bytes,
                         layout.lane_ctl(host, index) + LANE_HEAD, tail_off, tail=tail)
        self.lane = lane

    def take(self, position: int, cid: int, n: int) -> Tuple[Any, Any]:
        """The message at ``position``: (body, loan). ``body`` is a read-only view of the
        lane when the viewer lends it (``loan`` then ends it), else bytes (``loan`` None).
        Frames before ``position`` whose reference never came are skipped unread."""
        self.settle()
        if position < self.tail:
            raise ProtocolError(f"extent at {position} was read already (lane read up to {self.tail})")
        while self.tail < position:
            self._skip_one(position)
        self.loan = None
        frame = self.read()
        if frame is None:
            raise ProtocolError(f"extent at {position} announced but not in the lane")
        kind, _flags, fcid, aux, body = frame
        if self.tail - frame_bytes(len(body)) != position:
            raise ProtocolError(f"extent at {position} does not start a frame")
        if kind != MESSAGE or fcid != cid or aux != n or len(body) != n:
            raise ProtocolError(f"extent at {position} is not the message of call {cid} ({n} bytes)")
        return body, (self.loan if type(body) is memoryview else None)

    def _skip_one(self, limit: int) -> None:
        """Consume one frame (or pad) ahead of ``limit`` without reading its body."""
        mem = self.mem
        size = self.size
        tail = self.tail
        head = mem.load(self.head_off)
        if head < tail or head - tail > size or head % ALIGN:
            raise ProtocolError(f"lane producer counter out of range (head {head}, tail {tail})")
        if head < limit:
            raise ProtocolError(f"extent at {limit} lies past what the lane holds ({head})")
        self._head = head
        pos = tail % size
        room = size - pos
        if room < HEADER_BYTES:
            self._advance(tail + room)
            return
        body_len, kind, _flags, magic, _cid, _aux = mem.unpack(HEADER, self.data + pos)
        if magic != FRAME_MAGIC or kind not in (MESSAGE, PAD):
            raise ProtocolError(f"bad lane frame header at offset {pos}")
        flen = room if kind == PAD else frame_bytes(body_len)
        if flen > room or tail + flen > limit and kind != PAD:
            raise ProtocolError(f"extent at {limit} lies inside a lane frame")
        self._advance(tail + flen)
