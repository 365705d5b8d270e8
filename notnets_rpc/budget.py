"""How many bytes of partly received messages a server, or a client channel, holds at once.

A chunked message announces its total size in its first frame, and the receiver makes
one buffer of that size so that every chunk is copied once, straight from the ring. A
peer could announce 128 MiB in a 16-byte frame and never send the rest; so every such
buffer is charged to one budget per server (and one per client channel), and a message
that would exceed it ends its call with RESOURCE_EXHAUSTED before anything is allocated.
The charge is returned when the message is complete or its call ends.
"""

from __future__ import annotations

import threading
from typing import Any, Optional, Sequence, Tuple

DEFAULT_LIMIT = 256 << 20
OPTION = "notnets.max_reassembly_bytes"


class Budget:
    __slots__ = ("limit", "used", "_lock")

    @classmethod
    def from_options(cls, options: Optional[Sequence[Tuple[str, Any]]]) -> "Budget":
        """The budget an ``OPTION`` among grpc-style options asks for (default 256 MiB)."""
        return cls(int(dict(options or ()).get(OPTION, DEFAULT_LIMIT)))

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def take(self, n: int) -> bool:
        with self._lock:
            if self.used + n > self.limit:
                return False
            self.used += n
            return True

    def give(self, n: int) -> None:
        with self._lock:
            self.used -= n
