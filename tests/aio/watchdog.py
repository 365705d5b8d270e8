"""A task that sleeps in short ticks and records how late each tick woke: a loop that
stood still (waited on the pool, ran blocking code) shows as a large lag."""

from __future__ import annotations

import asyncio
import time
from typing import List


class Watchdog:
    def __init__(self, tick: float) -> None:
        self.tick = tick
        self.lags: List[float] = []
        self._stop = asyncio.Event()
        self._task = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        while not self._stop.is_set():
            due = time.monotonic() + self.tick
            await asyncio.sleep(self.tick)
            self.lags.append(time.monotonic() - due)

    async def stop(self) -> List[float]:
        self._stop.set()
        await self._task
        return self.lags
