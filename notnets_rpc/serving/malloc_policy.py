"""What a server asks of glibc's malloc so that its memory returns after a burst.

Measured with scripts/soak_rpc.py (60 s of mixed load, 64 B-1 MiB messages, then 10 s
idle; docs/rpc.md, "Memory"): Python's own allocations (tracemalloc) end where they
started, but glibc keeps the freed heap. Every thread that mallocs gets an arena of its
own (up to 8 per CPU), and ``malloc_trim`` gives back free chunks inside arenas and the
top of the main arena only -- never the top of a thread's arena, which glibc shrinks
only past a trim threshold that large frees raise to twice their size. A server runs a
poller, a monitor and its pool's workers, so each burst leaves a few MiB in each of them.
Under CPython those threads allocate while holding the GIL, so separate arenas buy no
parallelism (small blocks come from pymalloc and glibc's per-thread tcache, which need no
arena lock): one arena, trimmed after idling, returns what the burst took.

Large messages: glibc's defaults make each fresh buffer of a megabyte or more cost page
faults. Its mmap threshold starts at 128 KiB and rises only as large blocks are freed,
and the trim threshold follows at twice that, so a heap top freed after a call goes back
to the kernel. A 1 MiB protobuf echo holds about 5 MiB at once in its handler (the
parsed request, the ``payload`` bytes, the reply, its encoding and the serialized bytes).
With the defaults nearly every page of those buffers faults on every call, and the
faults cost the call ten times its work (docs/results.md, "Large messages: where a 1 MiB
protobuf echo's time goes"). So the server keeps freed memory in the heap during bursts
(``keep_freed``) and the idle trim above gives it back.
"""

from __future__ import annotations

import ctypes
import os
from typing import Optional

M_ARENA_MAX = -8  # glibc's mallopt parameter numbers
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
KEEP_BYTES = 32 << 20  # blocks below this come from the heap; this much freed top stays until the idle trim
_KEEP_ENV = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")
_KEEP_TUNABLES = ("glibc.malloc.trim_threshold", "glibc.malloc.mmap_threshold")
ARENA_OPTION = "notnets.malloc_arena_max"  # server option: arenas to allow (0: leave malloc as it is)
DEFAULT_ARENAS = 1

_libc: Optional[ctypes.CDLL] = None


def _glibc() -> Optional[ctypes.CDLL]:
    global _libc
    if _libc is None:
        try:
            libc = ctypes.CDLL(None)
            libc.mallopt, libc.malloc_trim  # noqa: B018 - glibc has both; musl and others may not
        except (OSError, AttributeError):
            return None
        _libc = libc
    return _libc


def limit_arenas(arenas: int) -> bool:
    """Allow at most ``arenas`` malloc arenas from now on (threads that already have one
    keep it). A MALLOC_ARENA_MAX in the environment wins, as does ``arenas`` = 0.
    False when nothing was changed."""
    libc = _glibc()
    if arenas <= 0 or libc is None or "MALLOC_ARENA_MAX" in os.environ:
        return False
    return bool(libc.mallopt(M_ARENA_MAX, arenas))


def keep_freed(arenas: int) -> bool:
    """Keep freed heap memory for the next burst instead of returning it at each free:
    blocks under ``KEEP_BYTES`` come from the heap, and up to ``KEEP_BYTES`` of freed top
    stays (``release_free_memory`` returns it when the server idles). Skipped when the
    environment sets either threshold (``MALLOC_*_THRESHOLD_`` or their GLIBC_TUNABLES), and with ``arenas`` = 0 (the server
    option's "leave malloc alone"). False when nothing was changed."""
    libc = _glibc()
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if (arenas <= 0 or libc is None or any(name in os.environ for name in _KEEP_ENV)
            or any(name in tunables for name in _KEEP_TUNABLES)):
        return False
    # (setting either threshold ends glibc's own adjustment of both: set both)
    return bool(libc.mallopt(M_MMAP_THRESHOLD, KEEP_BYTES)) & bool(libc.mallopt(M_TRIM_THRESHOLD, KEEP_BYTES))


def release_free_memory() -> None:
    """Give freed heap memory back to the system (after a burst, when idle)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
