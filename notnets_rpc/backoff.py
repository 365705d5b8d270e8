"""How a thread waits for shared memory to change: spin, then yield, then sleep.

Spinning gives the lowest latency but holds the GIL and a core; sched_yield lets other
threads of this process (and other processes) run; sleeping frees the core when idle.
The spin phase is counted in iterations (the hot path costs one increment); the yield
phase lasts a fixed time since the last useful work, so that a peer that pauses for a
few milliseconds between calls (say, to serialize a large message) still finds us
awake; after that the sleep doubles up to a cap. Tunables (environment):
NOTNETS_SPIN (iterations, default 400), NOTNETS_YIELD_US (default 20000),
NOTNETS_MAX_SLEEP_US (default 1000).
"""

from __future__ import annotations

import os
import time

_sched_yield = os.sched_yield
_sleep = time.sleep
_monotonic = time.monotonic


def _env_int(name: str, default: int) -> int:
    try:
        return max(0, int(os.environ.get(name, default)))
    except ValueError:
        return default


SPIN = _env_int("NOTNETS_SPIN", 400)
YIELD_TIME = _env_int("NOTNETS_YIELD_US", 20000) / 1e6
MAX_SLEEP = _env_int("NOTNETS_MAX_SLEEP_US", 1000) / 1e6
MIN_SLEEP = 50e-6


class Backoff:
    """Call ``pause()`` after each empty poll and ``reset()`` after useful work.

    ``pause()`` returns True when the caller should run its slow checks (deadlines,
    peer liveness): every 16th yield and after every sleep, never while spinning.
    """

    __slots__ = ("n", "spin", "yield_time", "yield_end", "sleep", "max_sleep", "sleeping")

    def __init__(self, spin: int = SPIN, yield_time: float = YIELD_TIME, max_sleep: float = MAX_SLEEP) -> None:
        self.spin = spin
        self.yield_time = yield_time
        self.max_sleep = max(max_sleep, MIN_SLEEP)
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self.yield_end = 0.0
        self.sleep = MIN_SLEEP
        self.sleeping = False

    def pause(self) -> bool:
        n = self.n = self.n + 1
        if n <= self.spin:
            return False
        if not self.sleeping:
            if n & 15:
                _sched_yield()
                return False
            now = _monotonic()
            if not self.yield_end:
                self.yield_end = now + self.yield_time
            if now < self.yield_end:
                _sched_yield()
                return True
            self.sleeping = True
        _sleep(self.sleep)
        if self.sleep < self.max_sleep:
            self.sleep = min(self.sleep * 2, self.max_sleep)
        return True
