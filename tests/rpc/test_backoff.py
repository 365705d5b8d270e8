"""The waiting tunables (NOTNETS_SPIN & co.) are read when a channel connects or a server
starts, not when notnets_rpc is imported (docs/environment.md)."""

from __future__ import annotations

import time

import pytest

import notnets_rpc
from notnets_rpc import backoff as B
from notnets_rpc.backoff import Backoff, Tunables, tunables

pytestmark = pytest.mark.timeout(60)


def test_tunables_follow_the_environment(monkeypatch):
    monkeypatch.setenv("NOTNETS_SPIN", "7")
    monkeypatch.setenv("NOTNETS_YIELD_US", "3000")
    monkeypatch.setenv("NOTNETS_MAX_SLEEP_US", "500")
    monkeypatch.setenv("NOTNETS_IDLE_SLEEP_US", "2000")
    monkeypatch.setenv("NOTNETS_WAKE_YIELD_US", "100")
    monkeypatch.setenv("NOTNETS_CROWD_AT", "5")
    monkeypatch.setenv("NOTNETS_GUEST_NAP_US", "80")
    assert tunables() == (7, 0.003, 0.0005, 0.002, 0.0001, 5, 80e-6)
    monkeypatch.delenv("NOTNETS_CROWD_AT")
    assert tunables().crowd_at == 0  # never crowded unless asked
    monkeypatch.setenv("NOTNETS_SPIN", "nonsense")
    assert tunables().spin == 400  # a bad value falls back to the default
    backoff = Backoff(tunables(), spin=0, max_sleep=0.01)
    assert (backoff.spin, backoff.yield_time, backoff.max_sleep) == (0, 0.003, 0.01)


def test_a_channel_and_a_server_read_them_when_they_start(serve, pool_path, monkeypatch):
    monkeypatch.setenv("NOTNETS_SPIN", "9")
    monkeypatch.setenv("NOTNETS_IDLE_SLEEP_US", "1500")
    server = serve()
    with notnets_rpc.insecure_channel("notnets:t", pool=pool_path) as channel:
        assert channel.unary_unary("/test.T/Echo")(b"x", timeout=10) == b"x"
        assert channel._conn._tune.spin == 9  # (its backoff does not spin: the server is in this process)
    assert server._tune.spin == 9 and server._tune.idle_sleep == 0.0015


# -- how a waiter waits: spin, yield, sleep, and what it learns (pure: yields are counted,
# the sleeper is a list; the clock only matters for the long yield phase)

@pytest.fixture
def yields(monkeypatch):
    made = []
    monkeypatch.setattr(B, "_sched_yield", lambda: made.append(1))
    return made


def _tune(spin: int, yield_time: float) -> Tunables:
    return Tunables(spin, yield_time, 0.001, 0.001, 0.0)


def _pauses_until_sleep(b: Backoff, slept: list, limit: int = 100000) -> int:
    for n in range(1, limit):
        b.pause()
        if slept:
            return n
    raise AssertionError("never slept")


def test_a_woken_waiter_sleeps_right_after_spinning_and_a_few_yields(yields):
    slept: list = []
    b = Backoff(_tune(8, 1.0), sleeper=slept.append, woken=True)
    assert _pauses_until_sleep(b, slept) <= 8 + 16  # the spin, one round of 16 yields: not a second of them
    assert slept == [b.max_sleep]


def test_a_waiter_nobody_wakes_keeps_yielding_for_its_yield_time(yields):
    slept: list = []
    b = Backoff(_tune(8, 0.05), sleeper=slept.append)
    for _ in range(2000):  # far more pauses than the woken waiter needs; 50 ms not over yet
        b.pause()
    assert not slept and len(yields) == 2000 - 8


def test_an_answer_that_came_while_asleep_halves_the_spin_of_a_woken_waiter(yields):
    slept: list = []
    b = Backoff(_tune(64, 1.0), sleeper=slept.append, woken=True)
    _pauses_until_sleep(b, slept)
    b.reset()
    assert b.spin == 32
    for _ in range(10):  # then answers come while it spins: the budget grows back
        b.pause()
        b.reset()
    assert b.spin == 64


def _late_answer(b: Backoff, slept: list) -> None:
    """One wait whose answer comes only once the waiter slept (a call down a chain)."""
    _pauses_until_sleep(b, slept)
    slept.clear()
    b.reset()


def _spins_before_yielding(b: Backoff, yields: list) -> int:
    """How many pauses of the next wait spin before the first yield (the wait is then
    answered while yielding, and so teaches nothing)."""
    yields.clear()
    for n in range(1, 1000):
        b.pause()
        if yields:
            b.restart()
            return n - 1
    raise AssertionError("never yielded")


def test_a_woken_waiter_whose_answers_come_late_stops_spinning_and_probes(yields):
    slept: list = []
    b = Backoff(_tune(64, 1.0), sleeper=slept.append, woken=True)
    for _ in range(3):  # 64 -> 32 -> 16 -> 0
        _late_answer(b, slept)
    assert b.budget == 0
    spins = [_spins_before_yielding(b, yields) for _ in range(2 * B.PROBE)]
    assert spins.count(B.SPIN_FLOOR) == 2 and spins.count(0) == 2 * B.PROBE - 2  # a probe every PROBE waits
    while b.spin == 0:  # up to the next probe; it is answered while it spins: spinning pays again
        _spins_before_yielding(b, yields)
    for _ in range(3):
        b.pause()
    b.reset()
    assert b.budget == b.spin == B.SPIN_FLOOR  # and it doubles from there while answers come while spinning
    b.pause()
    b.reset()
    assert b.budget == b.spin == 2 * B.SPIN_FLOOR


def test_a_waiter_nobody_wakes_keeps_the_spin_floor(yields):
    b = Backoff(_tune(64, 0.0), sleeper=lambda s: None)
    for _ in range(4):  # answers that come while it yields (its yield phase is over at once: it sleeps)
        b.sleeping = False
        b.n = b.spin + 1
        b.reset()
    assert b.budget == b.spin == B.SPIN_FLOOR  # a peer on another host: never 0, never a probe
    assert [_spins_before_yielding(b, yields) for _ in range(2 * B.PROBE)] == [B.SPIN_FLOOR] * 2 * B.PROBE


def test_a_callers_own_spin_loop_teaches_the_budget(yields):
    b = Backoff(_tune(64, 1.0), woken=True)
    b.budget = b.spin = 0
    b.spun(0)  # (a probe has spin SPIN_FLOOR; the loop found the answer at once)
    assert b.budget == b.spin == B.SPIN_FLOOR
    b.spun(b.spin)
    b.spun(b.spin)
    assert b.budget == b.spin == 64  # never above the maximum
    b.learn = False
    b.budget = b.spin = 16
    b.spun(16)
    assert b.spin == 16  # a waiter that does not learn keeps its budget


def test_an_answer_after_a_sleep_leaves_the_spin_of_a_waiter_nobody_wakes(yields):
    slept: list = []
    b = Backoff(_tune(64, 0.0), sleeper=slept.append)
    _pauses_until_sleep(b, slept)
    b.reset()
    assert b.spin == 64  # an idle server sleeping between bursts learns nothing from them


def test_wakeable_switches_a_waiter_between_the_two(yields):
    slept: list = []
    b = Backoff(_tune(4, 1.0), sleeper=slept.append)
    b.wakeable(True)
    assert _pauses_until_sleep(b, slept) <= 4 + 16
    b.wakeable(False)
    b.restart()
    slept.clear()
    for _ in range(500):
        b.pause()
    assert not slept and b.yield_time == 1.0


def _guest_tune(spin: int, yield_time: float, nap: float) -> Tunables:
    return Tunables(spin, yield_time, 0.001, 0.001, 0.0, 0, nap)


def test_a_waiter_nobody_wakes_on_a_one_cpu_host_naps_instead_of_yielding(yields):
    slept: list = []
    b = Backoff(_guest_tune(400, 0.05, 80e-6), sleeper=slept.append, learn=False)
    for _ in range(400 + 50):  # the spin, then naps of the nap's length: never a yield, never the sleep phase
        b.pause()
    assert not yields and slept == [80e-6] * 50 and not b.sleeping
    b.reset()
    assert b.spin == B.SPIN_FLOOR  # from the next wait on it spins the floor, not the whole budget


def test_naps_end_with_the_yield_time_then_the_sleep_phase_follows(yields):
    slept: list = []
    b = Backoff(_guest_tune(4, 0.0, 80e-6), sleeper=slept.append, learn=False)
    for _ in range(4 + 3):
        b.pause()
    assert not yields and slept == [b.max_sleep] * 3 and b.sleeping  # the yield time is over at once


def test_naps_are_only_for_waiters_nobody_wakes_from_a_one_cpu_host(yields):
    slept: list = []
    b = Backoff(_guest_tune(4, 0.05, 80e-6), sleeper=slept.append)  # learn=True: another CPU may be the peer's
    for _ in range(4 + 100):
        b.pause()
    assert not slept and len(yields) == 100
    b = Backoff(_guest_tune(4, 0.05, 0.0), sleeper=slept.append, learn=False)  # NOTNETS_GUEST_NAP_US=0
    for _ in range(4 + 100):
        b.pause()
    assert not slept and len(yields) == 200


def _voluntary_switches() -> int:
    """This thread's voluntary context switches so far (each sleep that blocked is one; a
    sched_yield that gave the CPU away counts as involuntary)."""
    with open(f"/proc/self/task/{B.threading.get_native_id()}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("voluntary_ctxt_switches"))


def _wait_a_yield_time(nap: float) -> tuple:
    """In a fresh thread: a waiter nobody wakes (one-CPU host) waits out a 20 ms yield time;
    (its pauses after the spin, its voluntary context switches meanwhile)."""
    out: list = []

    def run() -> None:
        b = Backoff(_guest_tune(4, 0.02, nap), learn=False)
        before = _voluntary_switches()
        pauses = 0
        while not b.sleeping:
            b.pause()
            pauses += 1
        out.append((pauses - 4, _voluntary_switches() - before))

    t = B.threading.Thread(target=run)
    t.start()
    t.join(10)
    return out[0]


def test_a_napping_waiter_gives_its_cpu_away_where_a_yielding_one_keeps_it():
    """What the nap rule is for, seen from the kernel: in a one-vCPU guest a waiter whose
    peer is on another host should let the vCPU halt (free the machine's CPU for the
    guest with the work) or let a local peer run. Each nap is a sleep that blocks; the old
    rule's yields, with nothing else to run here, block never."""
    naps, switched = _wait_a_yield_time(50e-6)
    assert naps >= 10 and switched >= naps - 1  # (the last pause ends the phase without a nap)
    yields, switched = _wait_a_yield_time(0.0)
    assert yields > naps and switched <= 3  # (a page fault or the GIL at most, not one per yield)


def test_a_waiter_asks_for_fine_timers_once_it_sleeps(yields, monkeypatch):
    calls: list = []

    class Libc:
        def prctl(self, *args):
            calls.append(args)
            return 0

    monkeypatch.setattr(B.ctypes, "CDLL", lambda *a, **k: Libc())
    monkeypatch.setattr(B, "_fine", B.threading.local())  # as in a thread that never slept
    slept: list = []
    b = Backoff(_tune(4, 0.0), sleeper=slept.append)
    for _ in range(4 + 8):  # spinning and yielding: the thread's timers are left alone
        b.pause()
    assert not calls and not slept
    _pauses_until_sleep(b, slept)
    b.restart()
    _pauses_until_sleep(b, slept)
    assert calls == [(29, B.TIMER_SLACK_NS, 0, 0, 0)]  # PR_SET_TIMERSLACK, once per thread


def test_fine_timers_set_the_calling_threads_timer_slack():
    import ctypes
    import threading

    out: dict = {}

    def run() -> None:  # a fresh thread, where fine_timers has not run yet
        libc = ctypes.CDLL(None)
        libc.prctl(29, 50000, 0, 0, 0)  # the kernel's default, whatever this thread inherited
        B.fine_timers()
        out["slack"] = libc.prctl(30, 0, 0, 0, 0)  # PR_GET_TIMERSLACK

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert out["slack"] == B.TIMER_SLACK_NS


def test_a_caller_whose_answers_come_late_stops_spinning_and_is_woken(peers, blank_path, monkeypatch):
    """Across processes of one host: a handler that takes 20 ms (as a tier far down a call
    chain answers late). The caller's spin budget falls to 0, so it goes straight to the
    kernel sleep (after its yields), and each answer ends that sleep by a wake: the sleep
    asks for 30 s and every call returns in less than half of that (a lost wake would
    sleep the whole 30 s; a loaded machine stretches a wake, it does not make it 15 s)."""
    from notnets_rpc.client import connection

    notnets_rpc.create_pool(blank_path, 16 << 20)
    server = peers.start("serve", blank_path, "slow", "2", module="rpc.load")
    peers.expect(server, "serving")
    monkeypatch.setenv("NOTNETS_MAX_SLEEP_US", "30000000")
    sleeps: list = []
    sleep = connection.Connection._sleep

    def counted(self, timeout):
        t = time.monotonic()
        sleep(self, timeout)
        sleeps.append((timeout, time.monotonic() - t))
    monkeypatch.setattr(connection.Connection, "_sleep", counted)
    with notnets_rpc.insecure_channel("notnets:slow", pool=blank_path) as channel:
        slow = channel.unary_unary("/load.L/Slow")
        assert slow(b"5", timeout=60) == b"5"
        conn = channel._conn
        assert conn.futex and conn._backoff.woken  # same host: the server wakes us
        took = []
        for _ in range(20):
            t = time.monotonic()
            assert slow(b"20", timeout=60) == b"20"
            took.append(time.monotonic() - t)
        assert conn._backoff.budget == 0
        assert max(took) < 15.0, f"a call took {max(took):.3f} s: its sleep was not ended by a wake"
        assert sleeps and all(timeout == 30.0 for timeout, _ in sleeps)  # (a loaded machine may answer some
        # calls while the caller still yields)
        assert max(slept for _, slept in sleeps) < 15.0, [round(s, 4) for _, s in sleeps]
