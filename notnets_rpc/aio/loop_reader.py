"""The event loop as the reader of a server's rings, while calls keep coming.

A sync ``notnets_rpc.Server`` reads its rings on a poller thread. When that thread hands
an async call to the loop, it hands the reading over too (``Server.pass_lead``): from
then on the loop itself looks at every ring once per turn (``Server.poll_rings``, which
never waits), so the calls that follow are read, run and answered on the loop with no
thread hand-off. Between looks every other task and callback runs; after the empty
looks a ``SpinBudget`` allows, each look also yields the CPU (``os.sched_yield``), like
a waiting poller thread; after NOTNETS_YIELD_US without work (when a poller thread would start to sleep)
the loop gives the reading back to a poller thread (``Server.unlead``), which sleeps
until the next call.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from typing import Any

from ..backoff import tunables
from .spin import SpinBudget



_log = logging.getLogger("notnets_rpc.aio.server")
_sched_yield = os.sched_yield
_monotonic = time.monotonic


class LoopReader:
    """Reads a sync server's rings from one event loop (its thread's id is the leader's)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sync_server: Any) -> None:
        self._loop = loop
        self._server = sync_server
        self.me = threading.get_ident()  # created on the loop's thread
        self.reading = False
        self._empty = 0
        self._last_work = 0.0
        self._idle_after = tunables().yield_time  # seconds without work before a poller thread takes over
        self.looks = 0  # (tests) looks taken
        self._spin = SpinBudget()  # empty looks before each look also yields the CPU
        self._budget = self._spin.budget()
        self._poll: Any = None  # the server's poll_rings
        self._ready: Any = None  # the loop's ready queue (asyncio's own loop), and our handle in it
        self._handle: Any = None

    def lead(self) -> None:
        """(loop) The server passed us the reading: look at the rings every turn from now on."""
        if self.reading:
            return
        self.reading = True
        self._empty = 0
        self._last_work = _monotonic()
        self._poll = self._server.poll_rings
        self._again()

    def _again(self) -> None:
        """Look again next turn: the one handle appended to the loop's ready queue, as
        ``call_soon`` would append a new one (a turn costs a third less); ``call_soon``
        on a loop that keeps its queue elsewhere (not asyncio's own)."""
        ready = self._ready = getattr(self._loop, "_ready", None)
        if ready is None:
            self._loop.call_soon(self._look)
            return
        self._handle = asyncio.Handle(self._look, (), self._loop)
        ready.append(self._handle)

    def _look(self) -> None:
        try:
            worked = self._poll(self.me)
        except Exception:  # a bug of ours (what a peer sends ends in the server's _drain): a thread reads on
            _log.exception("NotNets: reading the rings from the event loop failed")
            self.reading = False
            self._server.unlead(self.me)
            return
        self.looks += 1
        if worked:
            self._spin.learn(self._empty, self._budget)
            self._budget = self._spin.budget()
            self._empty = 0
            self._last_work = _monotonic()
        elif worked is None:  # a poller thread reads now (the server was stopped, or promoted one)
            self.reading = False
            return
        else:
            n = self._empty = self._empty + 1
            if n > self._budget:
                _sched_yield()
            if not n & 15 and _monotonic() - self._last_work > self._idle_after:
                self.reading = False
                self._server.unlead(self.me)
                return
        ready = self._ready
        if ready is not None:
            ready.append(self._handle)
        else:
            self._loop.call_soon(self._look)
