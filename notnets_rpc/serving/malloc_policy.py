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
"""

from __future__ import annotations

import ctypes
import os
from typing import Optional

M_ARENA_MAX = -8  # glibc's mallopt parameter number
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


def release_free_memory() -> None:
    """Give freed heap memory back to the system (after a burst, when idle)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
