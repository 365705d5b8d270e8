"""How many turns the event loop polls the pool before its polls also yield the CPU.

A poll from the loop never waits, but a loop that only polls keeps its CPU: when the
peer it waits for runs on that very CPU (two processes on one core of a busy machine),
the answer comes only once the loop yields it (``os.sched_yield``); when the peer runs
elsewhere, each yield hands the CPU to whatever else is waiting for it, for tens of
microseconds. Measured here: polling 32 turns before yielding gave the sync API's
latency in most runs and ten times it in the others; yielding from the third turn, two
to four times it in all. So the budget is learnt per channel (client) or server, as
``backoff.Backoff`` learns its spin: an answer that came while the loop only polled
means the peer runs elsewhere (double the budget); one that came right after the first
yield means it needed our CPU (halve it). An answer always takes a few turns, so a low
budget would never see the first case: every ``PROBE``-th wait uses the whole budget.
"""

from __future__ import annotations

SPIN_MAX = 64
SPIN_FLOOR = 2
PROBE = 16


class SpinBudget:
    __slots__ = ("turns", "_waits")

    def __init__(self) -> None:
        self.turns = SPIN_MAX
        self._waits = 0

    def budget(self) -> int:
        """Turns the next wait may poll before it also yields."""
        self._waits += 1
        return SPIN_MAX if not self._waits % PROBE else self.turns

    def learn(self, waited: int, budget: int) -> None:
        """The wait that had ``budget`` saw its answer after ``waited`` empty polls."""
        if not waited:
            return
        if waited <= budget:  # while polling only: the peer runs elsewhere
            self.turns = min(SPIN_MAX, max(self.turns * 2, budget))
        elif waited <= budget + 2:  # right after the first yields: it needed our CPU
            self.turns = max(SPIN_FLOOR, self.turns // 2)
