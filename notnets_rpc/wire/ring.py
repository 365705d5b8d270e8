"""Single-producer single-consumer byte rings of frames in shared memory.

Pure: a ring is a data region plus two control words, ``head`` (bytes ever written,
stored only by the producer) and ``tail`` (bytes ever consumed, stored only by the
consumer). The producer copies a whole frame and only then stores ``head``; the
consumer copies the frame out and only then stores ``tail``. Nothing here waits or
sleeps: ``try_write`` says False when there is no room and ``read`` says None when
there is nothing; callers decide how to wait (backoff.py).

With the pool's frame checksums on (layout.FLAG_FRAME_CRC), a frame's body is followed
by a CRC-32 (u32, little-endian) of its 16 header bytes and its body, inside the frame's
8-byte padding; a frame whose CRC does not match is consumed and reported as a
``ChecksumError`` naming its call, so that only that call ends (DATA_LOSS). Checked
rings take the careful paths (``try_write``, ``_read_any``).

A frame never wraps. When it does not fit before the end of the ring, the producer
fills the rest with a PAD frame (or, when fewer than 16 bytes remain, with nothing:
the consumer skips such a stub by rule) and starts again at offset 0.

Zero copy on the receiving side: a reader with a ``viewer`` may take a large frame's
body as a read-only view of the ring instead of a copy (loans.py); the tail it
publishes then stops at the oldest view still lent.
"""

from __future__ import annotations

import struct
import sys
import zlib
from collections import deque
from typing import TYPE_CHECKING, Callable, Optional, Sequence, Tuple

if TYPE_CHECKING:  # any object with Memory's methods will do; wire/ imports no I/O
    from ..memory import Memory

from ..errors import ChecksumError, ProtocolError
from .frames import ALIGN, FRAME_MAGIC, HEADER, HEADER_BYTES, MAX_KIND, PAD
from .loans import Loan

# The direct paths pack and parse a header in place in the ring, with native field
# stores and loads (one per field: on an emulated CXL window every access is a device
# access, and the little-endian codecs go byte by byte). Same bytes as HEADER on x86.
_NATIVE = struct.Struct("@IBBHII")
if sys.byteorder != "little" or _NATIVE.size != HEADER_BYTES:  # pragma: no cover - x86 only in practice
    _NATIVE = HEADER
_pack_into = _NATIVE.pack_into
_unpack_from = _NATIVE.unpack_from

CRC_BYTES = 4
_CRC = struct.Struct("<I")
SINK_MIN = 16384  # bodies at least this large are offered to the reader's sink
SMALL_FRAME = 4096  # bodies up to this size are joined with their header and copied once
# the careful path reads this much or less (what was written and lies before the ring's end)
# in one access: a lone small frame costs one copy instead of a header and a body copy
ONE_COPY = 512
VIEW_MIN = 65536  # bodies from this size on may be lent as views (below it a copy costs less than a loan)
_COUNTER_LIMIT = 2**64 - 2**32  # counters are u64; 2**32 margin covers one frame plus a pad
Frame = Tuple[int, int, int, int, Optional[bytes]]  # kind, flags, call_id, aux, body (None: went to the sink)


class _RingEnd:
    """What both ends of a ring hold: its region, its two counters' offsets, and direct
    views of the memory for the hot paths (none when a cost model or checksums must see
    every access)."""

    __slots__ = ("mem", "data", "size", "head_off", "tail_off", "_view", "_words", "_hidx", "_tidx", "crc", "_ring",
                 "_raw", "_body0")

    def __init__(self, mem: Memory, data: int, size: int, head_off: int, tail_off: int, crc: bool) -> None:
        mem.check(data, size)
        mem.check(head_off, 8)
        mem.check(tail_off, 8)
        self.mem, self.data, self.size = mem, data, size
        self.head_off, self.tail_off = head_off, tail_off
        self.crc = crc
        views = None if crc else mem.views()  # no views: every frame takes the checked path
        self._view, self._words = views if views is not None else (None, None)
        self._hidx, self._tidx = head_off >> 3, tail_off >> 3
        # the ring's bytes alone: direct paths index it by ring offset (no ``data +`` per access)
        self._ring = self._view[data : data + size] if self._view is not None else None
        # bodies are copied through ``_raw`` by pool offset (``_body0 + pos`` is the body of
        # the frame at ring offset ``pos``): the mapping itself where it is an mmap, whose
        # slices are ``bytes`` in one C call (~560 instructions less per copy out than a
        # memoryview slice and ``tobytes``, ~210 less per copy in)
        self._raw = None if views is None else getattr(mem, "raw", None) or _Bytes(self._view)
        self._body0 = data + HEADER_BYTES


class _Bytes:
    """``_raw`` for memory that is not an mmap (a bytearray, a memoryview): the same
    slicing, through the memoryview."""

    __slots__ = ("_view",)

    def __init__(self, view: memoryview) -> None:
        self._view = view

    def __getitem__(self, span: slice) -> bytes:
        return self._view[span].tobytes()

    def __setitem__(self, span: slice, data: bytes) -> None:
        self._view[span] = data


class RingWriter(_RingEnd):
    """The producer end. Keeps its own head; reloads the consumer's tail only when short."""

    __slots__ = ("head", "_tail", "_limit")

    def __init__(self, mem: Memory, data: int, size: int, head_off: int, tail_off: int, head: int = 0,
                 crc: bool = False) -> None:
        super().__init__(mem, data, size, head_off, tail_off, crc)
        self.head = head
        self._tail = head
        self._limit = -1
        self._relimit()

    def _relimit(self) -> None:
        """Where ``put``'s one check lets a frame end: before the cached tail's room runs
        out, before the ring's end (no pad needed) and before the counter limit; -1 (never)
        when every access must go through ``mem``."""
        if self._words is not None:
            head, size = self.head, self.size
            self._limit = min(self._tail + size, head - head % size + size, _COUNTER_LIMIT)

    @property
    def max_frame(self) -> int:
        return self.size

    def _free(self) -> int:
        tail = self.mem.load(self.tail_off)
        used = self.head - tail
        if used < 0 or used > self.size or tail % ALIGN:
            raise ProtocolError(f"ring consumer counter out of range (head {self.head}, tail {tail})")
        self._tail = tail
        return self.size - used

    def is_empty(self) -> bool:
        """True when the consumer has read everything written so far."""
        return self._free() == self.size

    def put(self, kind: int, flags: int, call_id: int, aux: int, body: bytes) -> bool:
        """``try_write`` of a one-part body, in as few steps as possible.

        The hot path of every small call: when the frame ends before ``_limit`` (room by
        the cached tail, no wrap, direct memory) it is the header packed in place, one
        copy of the body and one store; anything else takes ``try_write``."""
        n = len(body)
        head = self.head
        end = head + ((n + 23) & -8)  # HEADER_BYTES + n, 8-aligned
        if end > self._limit:
            return self.try_write(kind, flags, call_id, aux, (body,), n)
        pos = head % self.size
        ring = self._ring
        _pack_into(ring, pos, n, kind, flags, 0x4E4E, call_id, aux)  # FRAME_MAGIC
        at = self._body0 + pos
        self._raw[at : at + n] = body
        self.head = end
        self._words[self._hidx] = end
        return True

    def try_write(self, kind: int, flags: int, call_id: int, aux: int, parts: Sequence[bytes], body_len: int) -> bool:
        """Append one frame whose body is ``parts`` back to back; False if it does not fit yet."""
        size = self.size
        crc = self.crc
        flen = (HEADER_BYTES + body_len + (CRC_BYTES if crc else 0) + ALIGN - 1) & ~(ALIGN - 1)
        head = self.head
        pos = head % size
        if flen > size - pos or flen > size - (head - self._tail) or head >= _COUNTER_LIMIT:
            pos = self._make_room(flen)
            if pos < 0:
                self._relimit()
                return False
            head = self.head
        mem = self.mem
        at = self.data + pos
        if body_len <= SMALL_FRAME:  # one copy: header and body together
            data = HEADER.pack(body_len, kind, flags, FRAME_MAGIC, call_id, aux) + b"".join(parts)
            if len(data) != HEADER_BYTES + body_len:
                raise ValueError("frame parts do not add up to body_len")
            if crc:
                data += _CRC.pack(zlib.crc32(data))
            head += flen
            self.head = head
            mem.publish(at, data, self.head_off, head)
            self._relimit()
            return True
        header = HEADER.pack(body_len, kind, flags, FRAME_MAGIC, call_id, aux)
        mem.write(at, header)
        check = zlib.crc32(header) if crc else 0
        at += HEADER_BYTES
        end = at + body_len
        for part in parts:
            n = len(part)
            if n:
                if at + n > end:
                    raise ValueError("frame parts do not add up to body_len")
                mem.write(at, part)
                if crc:
                    check = zlib.crc32(part, check)
                at += n
        if at != end:
            raise ValueError("frame parts do not add up to body_len")
        if crc:
            mem.write(at, _CRC.pack(check))
        head += flen
        self.head = head
        mem.store(self.head_off, head)
        self._relimit()
        return True

    def _make_room(self, flen: int) -> int:
        """Slow path: reload the consumer's tail, pad to the end if needed.

        Returns the ring offset to write at, or -1 if the frame does not fit yet.
        """
        size = self.size
        if flen > size:
            raise ValueError(f"frame of {flen} bytes cannot fit a {size}-byte ring")
        head = self.head
        if head >= _COUNTER_LIMIT:
            raise ProtocolError("ring counter exhausted")
        pos = head % size
        room = size - pos
        free = self._free()
        if flen > room:
            if room > free:
                return -1
            if room >= HEADER_BYTES:
                self.mem.pack(HEADER, self.data + pos, room - HEADER_BYTES, PAD, 0, FRAME_MAGIC, 0, 0)
            head += room
            self.head = head
            self.mem.store(self.head_off, head)  # let the consumer skip the pad right away
            free -= room
            pos = 0
        if flen > free:
            return -1
        return pos


class RingReader(_RingEnd):
    """The consumer end. ``read`` returns one frame (skipping pads) and publishes the tail."""

    __slots__ = ("tail", "_head", "sink", "viewer", "loans", "loan", "_shown", "revoke", "_direct")

    def __init__(self, mem: Memory, data: int, size: int, head_off: int, tail_off: int, tail: int = 0,
                 crc: bool = False) -> None:
        super().__init__(mem, data, size, head_off, tail_off, crc)
        self.tail = tail  # bytes read; the published tail lags it while frames are lent (``_shown``, then)
        self._head = tail
        # sink(kind, flags, call_id, aux, body_len) -> writable memoryview or None: lets the
        # owner take a large body straight into its own buffer (one copy instead of two);
        # such frames come back with body None.
        self.sink: Optional[Callable[[int, int, int, int, int], Optional[memoryview]]] = None
        # viewer(kind, flags, call_id, aux, body_len) -> bool: lend this body as a read-only
        # view of the ring (no copy); such frames come back with a memoryview body and
        # ``loan`` set to its Loan. Only on direct memory (no checksums, no cost model).
        self.viewer: Optional[Callable[[int, int, int, int, int], bool]] = None
        self.loans: deque = deque()  # Loans in ring order; the published tail stops at the first
        self.loan: Optional[Loan] = None  # the loan of the last frame that came back as a view
        self._shown = tail
        self._direct = self._words  # while frames are lent, _words is None: read() takes the careful path
        self.revoke = True  # False: loans end only when their owner says so (a server's, with their call)

    def pending(self) -> bool:
        """Cheap check (one load) for the poll loop."""
        return self._head != self.tail or self.mem.load(self.head_off) != self.tail

    def backlog(self) -> int:
        """Bytes written but not yet consumed (for inspection)."""
        return self.mem.load(self.head_off) - self.tail

    def read(self) -> Optional[Frame]:
        """The next frame, or None. The common case -- one small frame that lies whole
        before the end of the ring -- is read here with direct indexing; pads, stubs,
        large bodies for the sink, anything suspicious and modelled memory take the
        careful path (``_read_any``), which re-reads the same header and raises on bad
        values."""
        tail = self.tail
        head = self._head
        if head == tail:
            words = self._words
            if words is None:
                return self._read_any()
            head = words[self._hidx]
            if head == tail:
                return None
            if head < tail or head - tail > self.size or head & 7:
                return self._read_any()
            self._head = head
        elif self._words is None:
            return self._read_any()
        size = self.size
        pos = tail % size
        if pos > size - 16:  # a stub too short for a header
            return self._read_any()
        ring = self._ring
        body_len, kind, flags, magic, call_id, aux = _unpack_from(ring, pos)
        end = tail + ((body_len + 23) & -8)  # HEADER_BYTES + body_len, 8-aligned
        if (magic != 0x4E4E or not 0 < kind < 7 or end > head or pos - tail + end > size  # FRAME_MAGIC, PAD
                or body_len >= SINK_MIN):
            return self._read_any()
        at = self._body0 + pos
        body = self._raw[at : at + body_len]
        self.tail = end
        self._words[self._tidx] = end
        return kind, flags, call_id, aux, body

    def settle(self) -> None:
        """(reader) Drop the loans that ended and publish the tail up to the oldest one
        still lent (or up to what was read, when none is).

        A view held while more than half the ring behind it has been read is revoked
        (released: using it raises ValueError), so that a reader who keeps views cannot
        stall the ring, and with it every call of the channel."""
        loans = self.loans
        while loans:
            first = loans[0]
            if not first.done():
                if not self.revoke or self.tail - first.start <= self.size // 2:
                    break
                if first.evict is not None:
                    first.evict()
                first.end()
                if not first.done():  # exported (a parser holds its buffer): wait for it
                    break
            loans.popleft()
        if not loans:
            self._words = self._direct
        shown = loans[0].start if loans else self.tail
        if shown != self._shown:
            self._shown = shown
            self.mem.store(self.tail_off, shown)

    def lent_bytes(self) -> int:
        """Ring bytes that cannot be reused yet because of lent frames (from the oldest on)."""
        return self.tail - self.loans[0].start if self.loans else 0

    def _read_any(self) -> Optional[Frame]:
        if self.loans:
            self.settle()
        mem = self.mem
        size = self.size
        while True:
            tail = self.tail
            head = self._head
            if head == tail:
                head = mem.load(self.head_off)
                if head == tail:
                    return None
                avail = head - tail
                if avail < 0 or avail > size or avail % ALIGN:
                    raise ProtocolError(f"ring producer counter out of range (head {head}, tail {tail})")
                self._head = head
            pos = tail % size
            room = size - pos
            if room < HEADER_BYTES:  # a stub too short for a pad header: skip by rule
                self._advance(tail + room)
                continue
            span = min(room, head - tail)
            if HEADER_BYTES <= span <= ONE_COPY:  # (often one small frame) header and body in one access to the pool
                blob = mem.read(self.data + pos, span)
                body_len, kind, flags, magic, call_id, aux = HEADER.unpack_from(blob)
            else:
                blob = None
                body_len, kind, flags, magic, call_id, aux = mem.unpack(HEADER, self.data + pos)
            if magic != FRAME_MAGIC or not 0 < kind <= MAX_KIND:
                raise ProtocolError(f"bad frame header at ring offset {pos} (kind {kind}, magic {magic:#x})")
            checked = self.crc and kind != PAD
            flen = (HEADER_BYTES + body_len + (CRC_BYTES if checked else 0) + ALIGN - 1) & ~(ALIGN - 1)
            if flen > room or flen > head - tail:
                raise ProtocolError(f"frame of {flen} bytes overruns the ring at offset {pos}")
            if kind == PAD:
                if flen != room:
                    raise ProtocolError(f"pad frame at offset {pos} does not reach the end of the ring")
                self._advance(tail + room)
                continue
            if (body_len >= VIEW_MIN and self.viewer is not None and self._view is not None
                    and self.lent_bytes() + flen <= size // 2 and self.viewer(kind, flags, call_id, aux, body_len)):
                at = self.data + pos + HEADER_BYTES
                body = self._view[at : at + body_len].toreadonly()
                self.loan = loan = Loan(tail, tail + flen, body)
                if not self.loans:
                    self._shown = tail  # what is published: everything read before the first loan
                    self._words = None  # read() takes the careful path, which settles first
                self.loans.append(loan)
                self.tail = tail + flen  # read, not published: settle() publishes once it ends
                return kind, flags, call_id, aux, body
            if blob is not None:  # the whole frame is in ``blob`` (flen <= head - tail, room)
                body = blob[HEADER_BYTES : HEADER_BYTES + body_len]
            elif body_len >= SINK_MIN and self.sink is not None:
                dest = self.sink(kind, flags, call_id, aux, body_len)
                if dest is not None:
                    if len(dest) != body_len:
                        raise ValueError("sink returned a buffer of the wrong size")
                    mem.read_into(self.data + pos + HEADER_BYTES, dest)
                    body = None
                else:
                    body = mem.read(self.data + pos + HEADER_BYTES, body_len)
            else:
                body = mem.read(self.data + pos + HEADER_BYTES, body_len) if body_len else b""
            if checked and blob is not None:
                check = zlib.crc32(blob[: HEADER_BYTES + body_len])
                stored = _CRC.unpack_from(blob, HEADER_BYTES + body_len)[0]
            elif checked:
                at = self.data + pos
                check = zlib.crc32(body if body is not None else dest, zlib.crc32(mem.read(at, HEADER_BYTES)))
                stored = _CRC.unpack(mem.read(at + HEADER_BYTES + body_len, CRC_BYTES))[0]
            tail += flen
            self._advance(tail)
            if checked and check != stored:
                raise ChecksumError(kind, flags, call_id, f"frame checksum mismatch at ring offset {pos}")
            return kind, flags, call_id, aux, body

    def _advance(self, tail: int) -> None:
        self.tail = tail
        if not self.loans:
            self.mem.store(self.tail_off, tail)
