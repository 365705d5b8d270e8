"""Handing results between the sync layer's threads and an asyncio event loop.

The pool is waited on by threads (the channel's pump, the server's pollers and
handler threads); the event loop never waits on it. A thread hands a result to the
loop with ``loop.call_soon_threadsafe`` (one write to the loop's self-pipe), and
``Inbox`` batches those wake-ups so that a burst of messages costs one.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import Any, Callable


class Inbox:
    """A queue that threads put into and one coroutine at a time gets from."""

    __slots__ = ("_loop", "_items", "_waiter", "_scheduled", "_lock")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._items: deque = deque()
        self._waiter: Any = None
        self._scheduled = False
        self._lock = threading.Lock()

    def put(self, item: Any) -> None:
        """From any thread (the loop's included)."""
        self._items.append(item)
        with self._lock:
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._wake)
        except RuntimeError:  # the loop is closed: nobody is left to wake
            pass

    def _wake(self) -> None:
        with self._lock:
            self._scheduled = False
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Any:
        while not self._items:
            self._waiter = self._loop.create_future()
            if self._items:
                break
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()

    def get_nowait(self, default: Any = None) -> Any:
        return self._items.popleft() if self._items else default


def in_thread(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> "asyncio.Future[Any]":
    """Run a blocking ``fn`` on a daemon thread of its own; a future of the loop gets its
    outcome. Daemon, unlike the loop's default executor: a wait that never ends (a
    server's wait_for_termination) neither holds up the loop's shutdown nor the process's."""
    fut = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if fut.done():
            return
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)

    def run() -> None:
        try:
            value, ok = fn(*args), True
        except BaseException as exc:  # handed to the awaiting coroutine
            value, ok = exc, False
        try:
            loop.call_soon_threadsafe(settle, ok, value)
        except RuntimeError:
            pass

    threading.Thread(target=run, name="notnets-aio-wait", daemon=True).start()
    return fut
