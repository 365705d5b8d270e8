"""How a waiter waits (notnets_rpc/backoff.py): spin, yield, sleep, and what it learns.

Pure: the yields are counted instead of made, the sleeper is a list, and the clock only
matters for the long yield phase of a waiter nobody wakes.
"""

from __future__ import annotations

import pytest

from notnets_rpc import backoff as B


@pytest.fixture
def yields(monkeypatch):
    made = []
    monkeypatch.setattr(B, "_sched_yield", lambda: made.append(1))
    return made


def _pauses_until_sleep(b: B.Backoff, slept: list, limit: int = 100000) -> int:
    for n in range(1, limit):
        b.pause()
        if slept:
            return n
    raise AssertionError("never slept")


def test_a_woken_waiter_sleeps_right_after_spinning_and_a_few_yields(yields, monkeypatch):
    monkeypatch.setattr(B, "WAKE_YIELD_TIME", 0.0)
    slept: list = []
    b = B.Backoff(spin=8, yield_time=1.0, sleeper=slept.append, woken=True)
    n = _pauses_until_sleep(b, slept)
    assert n <= 8 + 16  # the spin, then at most one round of 16 yields: no second of yielding
    assert slept == [b.max_sleep]


def test_a_waiter_nobody_wakes_keeps_yielding_for_its_yield_time(yields):
    slept: list = []
    b = B.Backoff(spin=8, yield_time=0.05, sleeper=slept.append)
    for _ in range(2000):  # far more pauses than the woken waiter needs; 50 ms not over yet
        b.pause()
    assert not slept and len(yields) == 2000 - 8


def test_an_answer_that_came_while_asleep_halves_the_spin_of_a_woken_waiter(yields, monkeypatch):
    monkeypatch.setattr(B, "WAKE_YIELD_TIME", 0.0)
    slept: list = []
    b = B.Backoff(spin=64, yield_time=1.0, sleeper=slept.append, woken=True)
    _pauses_until_sleep(b, slept)
    b.reset()
    assert b.spin == 32
    for _ in range(10):  # it answers while we spin again: the budget grows back
        b.pause()
        b.reset()
    assert b.spin == 64


def test_an_answer_after_a_sleep_leaves_the_spin_of_a_waiter_nobody_wakes(yields):
    slept: list = []
    b = B.Backoff(spin=64, yield_time=0.0, sleeper=slept.append)
    _pauses_until_sleep(b, slept)
    b.reset()
    assert b.spin == 64  # an idle server sleeping between bursts learns nothing from them


def test_wakeable_switches_a_waiter_between_the_two(yields, monkeypatch):
    monkeypatch.setattr(B, "WAKE_YIELD_TIME", 0.0)
    slept: list = []
    b = B.Backoff(spin=4, yield_time=1.0, sleeper=slept.append)
    b.wakeable(True, 1.0)
    assert _pauses_until_sleep(b, slept) <= 4 + 16
    b.wakeable(False, 1.0)
    b.restart()
    slept.clear()
    for _ in range(500):
        b.pause()
    assert not slept
