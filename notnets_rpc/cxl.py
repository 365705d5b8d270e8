"""Map a CXL pool and write back, invalidate and fence its cache lines, from any program.

A CXL device shared by several hosts is not kept coherent between them by hardware: a
store stays in the writer's CPU cache until written back, and a reader keeps its own
cached copy of a line until it invalidates it (docs/coherence.md). So a program that
shares a pool across hosts needs three operations besides loads and stores:

    m = cxl.map_pool("/dev/dax0.0")     # or a pool file
    m[0:5] = b"hello"; m.flush(0, 5)      # write back (CLWB, else CLFLUSHOPT/CLFLUSH; SFENCE)
    m.invalidate(0, 5); data = m[0:5]     # drop this host's copy, then read (CLFLUSHOPT; MFENCE)
    m.fence()                             # MFENCE

What they do depends on what the path is (``m.kind``):
    native    a DAX device (QEMU's emulated CXL device, real hardware): the instructions,
              through the C extension notnets_rpc._native that ``make setup`` builds
    fallback  a DAX device without that extension: nothing (correct only where hardware
              is coherent, as QEMU is); says so once with a RuntimeWarning
    model     a host's view of a pool that the simulator runs with ``coherence: none``
              (notnets_rpc.noncoherent_views): the model's write-back and refetch
    coherent  any other file (/dev/shm, hugetlbfs on one machine): nothing to do; the calls
              only check their range
``mode="native"`` asks for the instructions on any file (to measure them on the host);
$NOTNETS_CXL_MODE gives the mode when the caller gives none (notnets_rpc's pools).
Ranges are rounded out to whole 64-byte lines, as the hardware does.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Optional

from .mapping import Mapping, PathLike, is_char_device

LINE = 64
NATIVE_ENV = "NOTNETS_CXL_NATIVE"  # "0": use the pure-Python fallback although the extension is built
MODE_ENV = "NOTNETS_CXL_MODE"  # auto | native | coherent, when the caller gives no mode
MODES = ("auto", "native", "coherent")

try:
    from . import _native as _built
except ImportError:  # not built (no compiler, or setup not run): the fallback says so when used
    _built = None

_warned = False


def native() -> Any:
    """The C extension, or None when it is not built or $NOTNETS_CXL_NATIVE=0."""
    if os.environ.get(NATIVE_ENV, "1") == "0":
        return None
    return _built


def _check(size: int, off: int, n: int) -> None:
    if off < 0 or n < 0 or off + n > size:
        raise ValueError(f"range [{off}, {off + n}) outside the pool (size {size})")


class Coherent:
    """A pool whose hardware is coherent: write-back and invalidate have nothing to do."""

    kind = "coherent"

    def __init__(self, size: int) -> None:
        self.size = size

    def flush(self, off: int, n: int) -> None:
        _check(self.size, off, n)

    def invalidate(self, off: int, n: int) -> None:
        _check(self.size, off, n)

    def fence(self) -> None:
        pass

    def close(self) -> None:
        pass


class Fallback(Coherent):
    """A device without the C extension: Python has no way to write back a line."""

    kind = "fallback"

    def __init__(self, size: int) -> None:
        super().__init__(size)
        global _warned
        if not _warned:
            _warned = True
            warnings.warn("notnets_rpc.cxl: the native extension is not available (run `make setup`, or "
                          f"{NATIVE_ENV}=0 is set); flush, invalidate and fence do nothing, which is correct "
                          "only on coherent hardware", RuntimeWarning, stacklevel=3)


class Native:
    """CLWB/CLFLUSHOPT/CLFLUSH and fences on the lines of ``buf`` (the extension checks ranges)."""

    kind = "native"

    def __init__(self, buf: Any, module: Any) -> None:
        self._buf = buf
        self._writeback = module.writeback
        self._invalidate = module.invalidate
        self.fence = module.fence

    def flush(self, off: int, n: int) -> None:
        self._writeback(self._buf, off, n)

    def invalidate(self, off: int, n: int) -> None:
        self._invalidate(self._buf, off, n)

    def close(self) -> None:
        self._buf = None


def ops_for(path: PathLike, buf: Any, mode: Optional[str] = None) -> Any:
    """The flush/invalidate/fence implementation for ``buf``, the mapping of ``path``."""
    source = "mode" if mode else MODE_ENV
    mode = mode or os.environ.get(MODE_ENV) or "auto"
    if mode not in MODES:
        raise ValueError(f"{source} must be one of {', '.join(MODES)}, got {mode!r}")
    size = len(memoryview(buf))
    if mode == "coherent":
        return Coherent(size)
    if mode == "auto":
        from . import noncoherent_views

        view = noncoherent_views.open_view(path)
        if view is not None:
            return view
        if not is_char_device(path):
            return Coherent(size)
    module = native()
    return Native(buf, module) if module is not None else Fallback(size)


class CxlMapping:
    """A mapped pool: a writable buffer (``m.buf``, or index ``m`` itself) plus ``flush``,
    ``invalidate`` and ``fence`` for its cache lines; ``kind`` says which implementation
    runs (see the module docstring)."""

    def __init__(self, path: PathLike, writable: bool = True, mode: Optional[str] = None) -> None:
        self._mapping = Mapping(path, writable)
        try:
            self.ops = ops_for(path, self._mapping.mm, mode)
        except BaseException:
            self._mapping.close()
            raise
        self.path = self._mapping.path
        self.size = self._mapping.size
        self.buf = memoryview(self._mapping.mm)[: self.size]
        self.kind = self.ops.kind
        self.flush = self.ops.flush
        self.invalidate = self.ops.invalidate
        self.fence = self.ops.fence

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key: Any) -> Any:
        return self.buf[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self.buf[key] = value

    def close(self) -> None:
        self.ops.close()
        self.buf.release()
        self._mapping.close()

    def __enter__(self) -> "CxlMapping":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def map_pool(path: PathLike, writable: bool = True, mode: Optional[str] = None) -> CxlMapping:
    """Map the pool at ``path`` (a file or /dev/daxN.M); see the module docstring."""
    return CxlMapping(path, writable, mode)
