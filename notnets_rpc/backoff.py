"""How a thread waits for shared memory to change: spin, then yield, then sleep.

Spinning gives the lowest latency but holds the GIL and a core; sched_yield lets other
threads of this process (and other processes) run; sleeping frees the core when idle.
The phase lengths are iteration counts, not clock reads, so the hot path costs one
increment. Tunables (environment): NOTNETS_SPIN (iterations, default 400),
NOTNETS_YIELDS (default 2000), NOTNETS_MAX_SLEEP_US (default 1000).
"""

from __future__ import annotations

import os
import time

_sched_yield = os.sched_yield
_sleep = time.sleep


def _env_int(name: str, default: int) -> int:
    try:
        return max(0, int(os.environ.get(name, default)))
    except ValueError:
        return default


SPIN = _env_int("NOTNETS_SPIN", 400)
YIELDS = _env_int("NOTNETS_YIELDS", 2000)
MAX_SLEEP = _env_int("NOTNETS_MAX_SLEEP_US", 1000) / 1e6
MIN_SLEEP = 50e-6


class Backoff:
    """Call ``pause()`` after each empty poll and ``reset()`` after useful work.

    ``pause()`` returns True when the caller should run its slow checks (deadlines,
    peer liveness): every 16th yield and after every sleep, never while spinning.
    """

    __slots__ = ("n", "spin", "yield_until", "sleep", "max_sleep")

    def __init__(self, spin: int = SPIN, yields: int = YIELDS, max_sleep: float = MAX_SLEEP) -> None:
        self.n = 0
        self.spin = spin
        self.yield_until = spin + yields
        self.sleep = MIN_SLEEP
        self.max_sleep = max(max_sleep, MIN_SLEEP)

    def reset(self) -> None:
        self.n = 0
        self.sleep = MIN_SLEEP

    @property
    def sleeping(self) -> bool:
        return self.n > self.yield_until

    def pause(self) -> bool:
        n = self.n = self.n + 1
        if n <= self.spin:
            return False
        if n <= self.yield_until:
            _sched_yield()
            return not n & 15
        _sleep(self.sleep)
        if self.sleep < self.max_sleep:
            self.sleep = min(self.sleep * 2, self.max_sleep)
        return True
