"""Boot progress and other status lines on stderr, one line per event, prefixed per host.

Hosts boot concurrently, so each event is a whole line ("host0: ready in 6.1 s ...")
written under a lock: lines of different hosts never mix.
"""

from __future__ import annotations

import sys
import threading
from typing import Optional, TextIO


class Progress:
    """Writes ``[prefix: ]message`` lines to stderr (or ``stream``)."""

    def __init__(self, stream: Optional[TextIO] = None, quiet: bool = False) -> None:
        self.stream = stream
        self.quiet = quiet
        self._lock = threading.Lock()

    def say(self, message: str, host: Optional[str] = None) -> None:
        if self.quiet:
            return
        line = f"{host}: {message}" if host else message
        stream = self.stream or sys.stderr
        with self._lock:
            stream.write(line + "\n")
            stream.flush()

    def host(self, host: str):
        """A one-argument ``say`` bound to ``host``."""
        return lambda message: self.say(message, host)
