"""A model of a CXL pool that hardware does not keep coherent between hosts (pure logic).

Each host sees the pool through its own **view** (what its CPU caches hold; shared by
the host's processes, as their caches are) and keeps a **base**: what it last exchanged
with the device, line by line. A line of a view is dirty where view != base (stores
that were not written back) and stale where device != base (another host wrote it back
since). Bytes move between a view and the device only here:

    write_back  (CLWB)        a dirty line goes to the device whole; base := view
    invalidate  (CLFLUSHOPT)  write back if dirty, then take what the device holds
    evict                     what a cache does on its own: the same as invalidate

Conflicts the model can see, and reports (``Conflict``):
    overwrite   a write-back over a line that another host wrote back since this host
                last synced it: the other host's words are lost (same words: two writers
                of one word; other words: two writers of one line, false sharing)
    both-dirty  at a write-back, another host holds unsynced changes to the same line:
                whichever writes back second loses the other's
A missing invalidate is not a conflict: the reader just keeps reading its stale view.

Granularity is the 64-byte line, as on x86: a write-back carries every byte of the line.
A refetch only replaces the 8-byte words that the device changed since the last sync,
so that a store a process of the same host makes into a clean line at the same moment
is not undone (hardware orders the two; the model cannot lock out plain stores).

The buffers are anything memoryview takes; ``writers`` holds one u16 per line (host id +
1 of the last host that wrote the line back, 0 for none). Callers serialise: one lock
per host around each call, and one lock for the device (noncoherent_views.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

LINE = 64
WORD = 8
CHUNK = 4096  # compared in one piece before looking at lines (most of a pool is in sync)
_WORDS = range(0, LINE, WORD)


@dataclass(frozen=True)
class Conflict:
    """One lost or about-to-be-lost update, as the model saw it."""

    kind: str                  # "overwrite" | "both-dirty"
    host: int                  # the host that wrote the line back
    offset: int                # byte offset of the line in the pool
    other: Optional[int]       # the other host (None: unknown)
    words: Tuple[int, ...]     # byte offsets of the other host's words at stake
    same_words: bool           # the two hosts changed the same word (else other words of one line)

    def describe(self, region: Optional[str] = None) -> str:
        other = "another host" if self.other is None else f"host {self.other}"
        where = f"line 0x{self.offset:x}" + (f" ({region})" if region else "")
        words = ", ".join(f"0x{w:x}" for w in self.words)
        what = "the same words" if self.same_words else "other words of the line (false sharing)"
        if self.kind == "overwrite":
            return (f"lost update: host {self.host} wrote back {where} over words {words} that {other} wrote back "
                    f"since host {self.host} last synced it; both changed {what}")
        return (f"lost update ahead: host {self.host} wrote back {where} while {other} holds unsynced changes to "
                f"words {words} of it; both changed {what}")

    def as_dict(self, region: Optional[str] = None) -> dict:
        return {"kind": self.kind, "host": self.host, "offset": self.offset, "other": self.other,
                "words": list(self.words), "same_words": self.same_words, "region": region,
                "message": self.describe(region)}


def _diff_words(a: bytes, b: bytes, at: int) -> List[int]:
    """Offsets (from ``at``) of the 8-byte words where two lines differ."""
    return [at + w for w in _WORDS if a[w : w + WORD] != b[w : w + WORD]]


def _line_range(size: int, off: int, n: int) -> Tuple[int, int]:
    if off < 0 or n < 0 or off + n > size:
        raise ValueError(f"range [{off}, {off + n}) outside the pool (size {size})")
    if n == 0:
        return off, off
    return off - off % LINE, min(size, -(-(off + n) // LINE) * LINE)


def _chunks(start: int, end: int):
    a = start
    while a < end:
        b = min(end, (a // CHUNK + 1) * CHUNK)
        yield a, b
        a = b


class HostCache:
    """One host's side of the model: its view and base against the shared device.

    ``peers`` are the other hosts as (host id, view, base), read only, to see
    both-dirty lines."""

    def __init__(self, host: int, device: Any, view: Any, base: Any, writers: Any,
                 peers: Sequence[Tuple[int, Any, Any]] = ()) -> None:
        self.host = host
        self.device = memoryview(device).cast("B")
        self.view = memoryview(view).cast("B")
        self.base = memoryview(base).cast("B")
        self.size = min(len(self.device), len(self.view), len(self.base))
        self.size -= self.size % WORD
        self.writers = memoryview(writers).cast("B").cast("H")
        if len(self.writers) * LINE < self.size:
            raise ValueError(f"writers table holds {len(self.writers)} lines, the pool has {self.size} bytes")
        self.peers = [(h, memoryview(v).cast("B"), memoryview(b).cast("B")) for h, v, b in peers]

    # -- the three operations -------------------------------------------------------------
    def write_back(self, off: int, n: int) -> List[Conflict]:
        """CLWB of every line in [off, off+n): dirty lines go to the device."""
        return self._sync(off, n, False)

    def invalidate(self, off: int, n: int) -> List[Conflict]:
        """CLFLUSHOPT of every line in [off, off+n): write back what is dirty, then refetch."""
        return self._sync(off, n, True)

    def _sync(self, off: int, n: int, refetch: bool) -> List[Conflict]:
        start, end = _line_range(self.size, off, n)
        conflicts: List[Conflict] = []
        for a, b in _chunks(start, end):
            view = bytes(self.view[a:b])
            base = bytes(self.base[a:b])
            device = bytes(self.device[a:b])
            if view != base:
                conflicts.extend(self._write_back(a, b, view, base, device))
                if not refetch:
                    continue
                base, device = bytes(self.base[a:b]), bytes(self.device[a:b])
            if refetch and device != base:
                self._refetch(a, b, device, base)
        return conflicts

    def _write_back(self, a: int, b: int, view: bytes, base: bytes, device: bytes) -> List[Conflict]:
        conflicts: List[Conflict] = []
        dirty = [i for i in range(0, b - a, LINE) if view[i : i + LINE] != base[i : i + LINE]]
        if device != base:
            for i in dirty:
                if device[i : i + LINE] != base[i : i + LINE]:
                    conflicts.append(self._overwrite(a + i, view[i : i + LINE], base[i : i + LINE],
                                                     device[i : i + LINE]))
        conflicts.extend(self._both_dirty(a, b, view, base, dirty))
        if device == base:  # nothing stale here: the snapshot goes out in one piece
            self.device[a:b] = view
            self.base[a:b] = view
        else:  # only dirty lines go: a clean stale line must not revert another host's write
            for i in dirty:
                self.device[a + i : a + i + LINE] = view[i : i + LINE]
                self.base[a + i : a + i + LINE] = view[i : i + LINE]
        mark = self.host + 1
        for i in dirty:
            self.writers[(a + i) // LINE] = mark
        return conflicts

    def evict(self, line: int) -> List[Conflict]:
        """The cache drops line number ``line`` on its own (written back if dirty)."""
        return self.invalidate(line * LINE, LINE)

    def reset(self) -> None:
        """The host starts again (a reboot): its caches hold nothing, so view and base become
        what the device holds. Stores it had not written back are lost, as on hardware."""
        for a, b in _chunks(0, self.size):
            device = bytes(self.device[a:b])
            if bytes(self.view[a:b]) != device or bytes(self.base[a:b]) != device:
                self.view[a:b] = device
                self.base[a:b] = device

    # -- what a view holds -------------------------------------------------------------------
    def dirty_lines(self, off: int = 0, n: Optional[int] = None) -> List[int]:
        """Offsets of lines with stores not written back."""
        return self._differing(self.view, off, n)

    def stale_lines(self, off: int = 0, n: Optional[int] = None) -> List[int]:
        """Offsets of lines that another host wrote back since this host synced them."""
        return self._differing(self.device, off, n)

    # -- helpers -------------------------------------------------------------------------------
    def _differing(self, other: memoryview, off: int, n: Optional[int]) -> List[int]:
        start, end = _line_range(self.size, off, self.size - off if n is None else n)
        out = []
        for a, b in _chunks(start, end):
            x, base = bytes(other[a:b]), bytes(self.base[a:b])
            if x != base:
                out.extend(a + i for i in range(0, b - a, LINE) if x[i : i + LINE] != base[i : i + LINE])
        return out

    def _refetch(self, a: int, b: int, device: bytes, base: bytes) -> None:
        """Take the words the device changed since the last sync (see the module docstring):
        runs of changed words are copied in one piece, each word by an aligned store."""
        dq = memoryview(device).cast("Q").tolist()
        changed = [k for k, (d, s) in enumerate(zip(dq, memoryview(base).cast("Q").tolist())) if d != s]
        view, basev = self.view, self.base
        i = 0
        while i < len(changed):
            j = i
            while j + 1 < len(changed) and changed[j + 1] == changed[j] + 1:
                j += 1
            lo, hi = changed[i] * WORD, (changed[j] + 1) * WORD
            view[a + lo : a + hi] = device[lo:hi]
            basev[a + lo : a + hi] = device[lo:hi]
            i = j + 1

    def _overwrite(self, at: int, view: bytes, base: bytes, device: bytes) -> Conflict:
        theirs = _diff_words(device, base, at)
        mine = set(_diff_words(view, base, at))
        last = self.writers[at // LINE]
        return Conflict("overwrite", self.host, at, last - 1 if last else None, tuple(theirs),
                        any(w in mine for w in theirs))

    def _both_dirty(self, a: int, b: int, view: bytes, base: bytes, dirty: List[int]) -> List[Conflict]:
        out: List[Conflict] = []
        for host, pview, pbase in self.peers:
            pv, pb = bytes(pview[a:b]), bytes(pbase[a:b])
            if pv == pb:
                continue
            for i in dirty:
                if pv[i : i + LINE] != pb[i : i + LINE]:
                    theirs = _diff_words(pv[i : i + LINE], pb[i : i + LINE], a + i)
                    mine = set(_diff_words(view[i : i + LINE], base[i : i + LINE], a + i))
                    out.append(Conflict("both-dirty", self.host, a + i, host, tuple(theirs),
                                        any(w in mine for w in theirs)))
        return out
