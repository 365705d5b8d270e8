"""The echo client's timing loops, shared by the bench client (notnets_bench/client.py),
the local echo client (notnets_bench/echo/client.py, which scripts/bench_rpc.py runs).

Every loop is closed (one call outstanding), warms up first (the first calls pay for
connection setup), and returns ``(samples_ns, elapsed_s)`` for stats.summarize. A
:class:`Budget` says when a point has measured enough; the loop body stays inline in
each function, so that nothing but the call itself sits between the two clock reads.
"""

from __future__ import annotations

import math
import queue
import time
from typing import Any, Callable, Iterator

CLOCK = time.perf_counter_ns
Loop = Callable[..., "tuple[list[int], float]"]


class Budget:
    """When a point has measured enough: the call count, or the time once the minimum is in."""

    def __init__(self, calls: int, seconds: float = math.inf, min_calls: int = 0) -> None:
        self.calls = calls
        self.seconds = seconds
        self.min_calls = min(min_calls, calls) if seconds != math.inf else calls
        self.started = CLOCK()

    def done(self, n: int) -> bool:
        if n >= self.calls:
            return True
        return n >= self.min_calls and (CLOCK() - self.started) / 1e9 >= self.seconds


def run_unary(call: Callable[[Any], Any], request: Any, budget: Budget, warmup: int) -> tuple[list[int], float]:
    """``call`` is any unary-unary callable: a stub method, or a raw-bytes multicallable."""
    for _ in range(warmup):
        call(request)
    samples: list[int] = []
    budget.started = start = CLOCK()
    while not budget.done(len(samples)):
        t = CLOCK()
        call(request)
        samples.append(CLOCK() - t)
    return samples, (CLOCK() - start) / 1e9


def run_stream(bidi: Callable[[Iterator[Any]], Iterator[Any]], request: Any, budget: Budget,
               warmup: int) -> tuple[list[int], float]:
    """One bidi call; each sample is one message's round trip through it."""
    requests: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
    stop = object()
    replies: Iterator[Any] = bidi(iter(requests.get, stop))
    for _ in range(warmup):
        requests.put(request)
        next(replies)
    samples: list[int] = []
    budget.started = start = CLOCK()
    while not budget.done(len(samples)):
        t = CLOCK()
        requests.put(request)
        next(replies)
        samples.append(CLOCK() - t)
    elapsed = (CLOCK() - start) / 1e9
    requests.put(stop)
    for _ in replies:
        pass
    return samples, elapsed


def run_server_stream(server_stream: Callable[[int], Iterator[Any]], budget: Budget,
                      warmup: int) -> tuple[list[int], float]:
    """One call of ``budget.calls`` replies (``server_stream(count)`` starts it); a sample
    is the gap between two replies."""
    for _ in server_stream(max(1, warmup)):
        pass
    samples: list[int] = []
    start = last = CLOCK()
    for _ in server_stream(budget.calls):
        now = CLOCK()
        samples.append(now - last)
        last = now
    return samples, (CLOCK() - start) / 1e9


def run_idle(call: Callable[[Any], Any], request: Any, budget: Budget, warmup: int,
             idle: float = 2.0) -> tuple[list[int], float]:
    """Each sample is the first call after ``idle`` seconds of silence (the server has
    backed off to sleeping); the elapsed time counts the calls only."""
    for _ in range(warmup):
        call(request)
    samples: list[int] = []
    while not budget.done(len(samples)):
        time.sleep(idle)
        t = CLOCK()
        call(request)
        samples.append(CLOCK() - t)
    return samples, sum(samples) / 1e9
