"""One heartbeat thread per process.

Clients publish a heartbeat word per channel, servers one per endpoint; a stalled word
tells the other side that this process is gone (or frozen). One daemon thread calls
every registered beat function every ``PERIOD`` seconds; it exists only while
something is registered, and a forked child starts with none.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Callable, Dict

PERIOD = 0.1
_log = logging.getLogger(__name__)


class Beater:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._beats: Dict[int, Callable[[], None]] = {}
        self._next = 0
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()

    def register(self, beat: Callable[[], None]) -> int:
        with self._lock:
            self._next += 1
            key = self._next
            self._beats[key] = beat
            if self._thread is None or not self._thread.is_alive():
                self._wake = threading.Event()
                self._thread = threading.Thread(target=self._run, args=(self._wake,), name="notnets-heartbeat",
                                                daemon=True)
                self._thread.start()
            return key

    def unregister(self, key: int) -> None:
        with self._lock:
            self._beats.pop(key, None)
            if not self._beats:
                self._wake.set()
                self._thread = None

    def _run(self, wake: threading.Event) -> None:
        while not wake.wait(PERIOD):
            with self._lock:
                beats = list(self._beats.values())
            for beat in beats:
                try:
                    beat()
                except Exception:  # a dead pool must not kill the other beats
                    _log.debug("heartbeat failed", exc_info=True)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._beats = {}
        self._thread = None
        self._wake = threading.Event()


BEATER = Beater()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=BEATER._after_fork)
