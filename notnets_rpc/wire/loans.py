"""Frames lent out of a ring as read-only views, and when their bytes may be reused.

A large frame body can be handed to its reader as a ``memoryview`` of the ring itself
instead of being copied out (``ring.RingReader``'s viewer). Its ring bytes must then
not be overwritten until the view is given back, so the consumer does not publish the
ring's tail past a frame that is still lent: the published tail stops at the oldest
loan, while the reader goes on reading the frames behind it. The producer simply sees
less room; the wire format does not change.

A loan ends when the view it tracks is dropped (its last reference goes away), when
somebody calls ``release()`` on that view, when its owner ends it (``Loan.end``: the
call it belongs to is over), or when the reader revokes it because more than half the
ring behind it has been read (``RingReader.settle``; the owner first copies out what it
has not handed on yet, ``Loan.evict``). Ending releases the view, so any
later use of it raises ``ValueError`` instead of reading bytes the peer may have
overwritten. Slices taken from a view share its memory but are separate objects: they
are not tracked (copy with ``bytes(view)`` what must outlive the view).

Only the ring's reader looks at loans (``done``); another thread may only ``end`` one.
Pure: no locks, no clocks, no I/O.
"""

from __future__ import annotations

import weakref
from typing import Callable, Optional


class Loan:
    """One lent frame: ring counters ``[start, stop)`` and the view that keeps it."""

    __slots__ = ("start", "stop", "ref", "ending", "evict")

    def __init__(self, start: int, stop: int, view: memoryview) -> None:
        self.start = start
        self.stop = stop
        self.ref: "weakref.ref[memoryview]" = weakref.ref(view)
        self.ending = False
        # evict(): before a revocation, the owner copies out what it holds but has not
        # handed on yet (a response still queued for its caller), so that only views
        # already given away are released
        self.evict: Optional[Callable[[], None]] = None

    def track(self, view: memoryview) -> None:
        """Follow ``view`` (a slice of the lent body, say the message inside a CALL frame)
        instead of the body: the loan lasts as long as this view does."""
        self.ref = weakref.ref(view)

    def view(self) -> Optional[memoryview]:
        return self.ref()

    def end(self) -> None:
        """The owner is done (its call ended): release the view now; any thread may call it."""
        self.ending = True
        view = self.ref()
        if view is not None:
            try:
                view.release()
            except BufferError:  # exported (a parser still holds its buffer): done() retries
                pass

    def done(self) -> bool:
        """True once the ring bytes may be reused (the view is gone or released)."""
        view = self.ref()
        if view is None:
            return True
        if self.ending:
            try:
                view.release()
            except BufferError:
                return False
            return True
        try:
            view.nbytes
        except ValueError:  # released by whoever holds it
            return True
        return False
