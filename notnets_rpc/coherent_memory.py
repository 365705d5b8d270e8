"""Pool memory with software coherence: every access follows the write-back rule.

On a pool formatted for software coherence (docs/pool-layout.md, "Software coherence")
nothing may rely on hardware to move bytes between hosts. Every access of the RPC
layer goes through a ``Memory`` (memory.py), so the rule is kept here, once, for all of
it (rings, frames, claims, directory, heartbeats):

- before a load or read: invalidate the lines read (another host may have written them;
  without this a reader keeps its own stale copy);
- before a store or a write that covers a line only in part: invalidate that line (the
  line may hold another host's bytes, say the previous owner of a channel slot's server
  line; writing back a stale copy of them would undo that host's write);
- after a store or a write: write back the lines written, then fence. So everything a
  word publishes is on the device before the word is stored, and the word follows.

``ops`` is what cxl.ops_for gives for the mapping: the instructions on a DAX device, the
model on a host's view of a ``coherence: none`` pool, nothing on a coherent file.
Defining load/store/... here turns off the rings' direct indexing (memory.views), so no
access escapes. No ``__slots__``, so that this class combines with farmem.FarMemory.
"""

from __future__ import annotations

import struct
from typing import Any

from .memory import Buffer, Memory

LINE = 64


class SoftwareCoherent(Memory):
    """``Memory`` that writes back after every write and invalidates before every read."""

    def __init__(self, buf: Buffer, writable: bool, ops: Any, *more: Any) -> None:
        super().__init__(buf, writable, *more)
        self.ops = ops

    def _before_write(self, off: int, n: int) -> None:
        """Invalidate the lines that [off, off+n) covers only in part."""
        end = off + n
        first, last = off - off % LINE, (end - 1) - (end - 1) % LINE
        if off != first or n < LINE:
            self.ops.invalidate(first, min(LINE, self.size - first))
        if last != first and end % LINE:
            self.ops.invalidate(last, min(LINE, self.size - last))

    # -- reads ---------------------------------------------------------------------------------
    def load(self, off: int) -> int:
        self.ops.invalidate(off, 8)
        return super().load(off)

    def read(self, off: int, n: int) -> bytes:
        self.check(off, n)
        self.ops.invalidate(off, n)
        return super().read(off, n)

    def read_into(self, off: int, dest: memoryview) -> None:
        self.check(off, len(dest))
        self.ops.invalidate(off, len(dest))
        super().read_into(off, dest)

    def unpack(self, st: struct.Struct, off: int) -> tuple:
        self.check(off, st.size)
        self.ops.invalidate(off, st.size)
        return super().unpack(st, off)

    def wait_word(self, off: int, expected: int, timeout: float) -> None:
        self.ops.invalidate(off, 8)
        super().wait_word(off, expected, timeout)

    # -- writes --------------------------------------------------------------------------------
    def store(self, off: int, value: int) -> None:
        self.ops.invalidate(off, 8)
        super().store(off, value)
        self.ops.flush(off, 8)

    def write(self, off: int, data: Any) -> None:
        n = data.nbytes if isinstance(data, memoryview) else len(data)
        self.check(off, n)
        if n:
            self._before_write(off, n)
            super().write(off, data)
            self.ops.flush(off, n)

    def pack(self, st: struct.Struct, off: int, *values: Any) -> None:
        self.check(off, st.size)
        self._before_write(off, st.size)
        super().pack(st, off, *values)
        self.ops.flush(off, st.size)

    def fill(self, off: int, n: int, value: int = 0) -> None:
        self.check(off, n)
        if n:
            self._before_write(off, n)
            super().fill(off, n, value)
            self.ops.flush(off, n)
