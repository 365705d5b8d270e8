"""The frames a server has for one channel's response ring, and the rule that nobody waits.

A response ring fills when its client reads slowly, has died, or never reads at all.
Whoever sends (the poller answering a unary call inline, a worker thread streaming, the
monitor expiring a deadline) never waits for room: a frame that does not fit goes to
this channel's outbox, behind any frame already queued (order on the ring is order of
sending), and the sender goes on with other work. The poller flushes outboxes between
polls; senders flush before they append. The lock is held for one ring write or one
queue operation, never across a wait.

Flow control, in the spirit of HTTP/2 windows: ``queued`` counts each call's bytes in
the outbox; a streaming handler whose call has more than its window queued waits
(without any lock) until the client reads, and a cancelled or expired call's frames
are purged at once (``purge``). The channel's total (``nbytes``) is its connection
window: over ``limit`` the poller stops reading that channel's requests, so a client
that does not read its responses cannot grow the server's memory.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any, Callable, Optional, Sequence

from ..errors import ProtocolError
from ..wire.ring import RingWriter


class Outbox:
    __slots__ = ("tx", "lock", "frames", "nbytes", "limit", "broken", "_wake")

    def __init__(self, tx: RingWriter, limit: int, wake: Callable[[], None]) -> None:
        self.tx = tx
        self.lock = threading.Lock()
        self.frames: deque = deque()  # (cid, kind, flags, aux, parts, n, call)
        self.nbytes = 0
        self.limit = limit
        self.broken: Optional[str] = None  # the ring failed a check: nothing more is written
        self._wake = wake

    @property
    def full(self) -> bool:
        """Over the channel's window: stop taking requests from this channel for now."""
        return self.nbytes > self.limit

    def send(self, kind: int, flags: int, cid: int, aux: int, parts: Sequence[Any], n: int,
             call: Any = None) -> bool:
        """Write the frame now if the ring has room and nothing is queued, else queue it.
        False only when the channel is broken (the frame is dropped)."""
        with self.lock:
            if self.broken is not None:
                return False
            if not self.frames:
                try:
                    if self.tx.try_write(kind, flags, cid, aux, parts, n):
                        self._wake()
                        return True
                except ProtocolError as exc:
                    self.broken = str(exc)
                    return False
            self._queue(cid, kind, flags, aux, parts, n, call)
            return True

    def _queue(self, cid: int, kind: int, flags: int, aux: int, parts: Sequence[Any], n: int, call: Any) -> None:
        if any(type(p) is memoryview for p in parts):  # a view (of a lent request, say) may not outlive this call
            parts = tuple(p.tobytes() if type(p) is memoryview else p for p in parts)
        self.frames.append((cid, kind, flags, aux, parts, n, call))
        self.nbytes += n
        if call is not None:
            call.queued += n

    def flush(self) -> bool:
        """Write queued frames while they fit; True if the outbox is now empty."""
        if not self.frames:
            return True
        if not self.lock.acquire(False):
            return False  # someone else is writing: they flush on their way
        try:
            return self._flush_locked()
        finally:
            self.lock.release()

    def _flush_locked(self) -> bool:
        frames = self.frames
        wrote = False
        try:
            while frames:
                cid, kind, flags, aux, parts, n, call = frames[0]
                if not self.tx.try_write(kind, flags, cid, aux, parts, n):
                    break
                frames.popleft()
                self.nbytes -= n
                if call is not None:
                    call.queued -= n
                wrote = True
        except ProtocolError as exc:
            self.broken = str(exc)
            self._drop_all()
        if wrote:
            self._wake()
        return not frames

    def purge(self, cid: int) -> None:
        """Drop every queued frame of call ``cid`` (it was cancelled or expired)."""
        with self.lock:
            if not self.frames:
                return
            keep = deque()
            for frame in self.frames:
                if frame[0] == cid:
                    self.nbytes -= frame[5]
                    if frame[6] is not None:
                        frame[6].queued -= frame[5]
                else:
                    keep.append(frame)
            self.frames = keep

    def close(self) -> None:
        """The channel is gone: drop everything, refuse what comes."""
        with self.lock:
            if self.broken is None:
                self.broken = "channel closed"
            self._drop_all()

    def _drop_all(self) -> None:
        for frame in self.frames:
            if frame[6] is not None:
                frame[6].queued -= frame[5]
        self.frames.clear()
        self.nbytes = 0
