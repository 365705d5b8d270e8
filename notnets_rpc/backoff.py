"""How a thread waits for shared memory to change: spin, then yield, then sleep.

Spinning gives the lowest latency but holds the GIL and a core; sched_yield lets other
threads of this process (and other processes) run; sleeping frees the core when idle.
The spin phase is counted in iterations (the hot path costs one increment) and adapts
to whether spinning pays (see ``Backoff.reset``); the yield
phase lasts a fixed time since the last useful work, so that a peer that pauses for a
few milliseconds between calls (say, to serialize a large message) still finds us
awake; after that the sleep doubles up to a cap, each asked for with a fine timer slack
(``fine_timers``). Tunables (environment, see
docs/environment.md) are read by ``tunables()`` when a channel connects or a server
starts, not at import and not per wait: the owner passes them to each ``Backoff``.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from typing import Callable, NamedTuple, Optional

_sched_yield = os.sched_yield
_sleep = time.sleep
_monotonic = time.monotonic


def _env_int(name: str, default: int) -> int:
    try:
        return max(0, int(os.environ.get(name, default)))
    except ValueError:
        return default


class Tunables(NamedTuple):
    spin: int          # NOTNETS_SPIN: polls before the first yield (the adaptive budget's maximum)
    yield_time: float  # NOTNETS_YIELD_US: seconds of yielding after the last useful work
    max_sleep: float   # NOTNETS_MAX_SLEEP_US: cap of the doubling sleep, seconds
    idle_sleep: float  # NOTNETS_IDLE_SLEEP_US: an idle server's poll sleep, seconds
    wake_yield: float = 0.0  # NOTNETS_WAKE_YIELD_US: the yield phase of a waiter its peer wakes (Backoff woken)
    crowd_at: int = 0  # NOTNETS_CROWD_AT: callers that crowd a server, 0: never (serving/channels.py)
    nap: float = 0.0  # NOTNETS_GUEST_NAP_US: a one-vCPU host's nap while waiting on another host, 0: spin and yield


def tunables() -> Tunables:
    """The waiting tunables as the environment says now (one read per channel or server)."""
    return Tunables(_env_int("NOTNETS_SPIN", 400), _env_int("NOTNETS_YIELD_US", 20000) / 1e6,
                    _env_int("NOTNETS_MAX_SLEEP_US", 1000) / 1e6, _env_int("NOTNETS_IDLE_SLEEP_US", 1000) / 1e6,
                    _env_int("NOTNETS_WAKE_YIELD_US", 0) / 1e6, _env_int("NOTNETS_CROWD_AT", 0),
                    _env_int("NOTNETS_GUEST_NAP_US", GUEST_NAP_US) / 1e6)


MIN_SLEEP = 50e-6
GUEST_NAP_US = 0  # the default of NOTNETS_GUEST_NAP_US
SPIN_FLOOR = 16
PROBE = 16  # a waiter whose spin budget fell to 0 spins SPIN_FLOOR polls once every PROBE waits
TIMER_SLACK_NS = 5000
_PR_SET_TIMERSLACK = 29
_fine = threading.local()


def fine_timers() -> None:
    """Ask the kernel to end this thread's sleeps within 5 us of their time (once per thread).

    A thread's timer slack (50 us by default) lets the kernel end a sleep up to that
    much late, to batch wake-ups, and a 50 us sleep took twice its time here
    (docs/results.md, "Waiting under load: yields, sleeps and timer slack"). A waiter that nobody can wake (a peer on another host) and an idle server sleep
    50 us to 1 ms at a time, so the slack was up to half of every short sleep. The
    setting stays with the thread, so its owner's own sleeps end on time too."""
    if getattr(_fine, "done", False):
        return
    _fine.done = True
    try:
        ctypes.CDLL(None).prctl(_PR_SET_TIMERSLACK, TIMER_SLACK_NS, 0, 0, 0)
    except (OSError, AttributeError):  # no prctl (not Linux): sleeps keep the kernel's slack
        pass


ONE_CPU = (os.cpu_count() or 1) == 1  # an emulated host with one vCPU: a peer on another host cannot share it


class Backoff:
    """Call ``pause()`` after each empty poll and ``reset()`` after useful work.

    ``pause()`` returns True when the caller should run its slow checks (deadlines,
    peer liveness): every 16th yield and after every sleep, never while spinning.
    """

    __slots__ = ("n", "spin", "spin_max", "yield_time", "yield_end", "sleep", "max_sleep", "sleeping", "sleeper",
                 "forced", "learn", "woken", "tune", "budget", "waits")

    def __init__(self, tune: Tunables, spin: Optional[int] = None, yield_time: Optional[float] = None,
                 max_sleep: Optional[float] = None, sleeper: Optional[Callable[[float], None]] = None,
                 learn: bool = True, woken: bool = False) -> None:
        """``tune``: the owner's tunables (``tunables()``); ``spin``, ``yield_time`` and
        ``max_sleep`` override them for waits with needs of their own.

        ``sleeper(seconds)``: how to sleep in the last phase; a same-host peer can be
        woken early from a kernel sleep (memory.Memory.wait_word), so it sleeps
        ``max_sleep`` at once instead of doubling up to it.

        ``learn=False`` keeps the spin budget whole: for a peer on another host when this
        host has a single CPU (a QEMU guest), the peer cannot be waiting for our CPU; a
        late answer only means a slow peer (an emulated host takes hundreds of
        microseconds per call), and halving the spin would turn every wait into system
        calls. With several CPUs the peer may be a process on this very machine under
        another host id (simulated hosts), so we keep learning (see ``remote_peer``).

        ``woken=True``: the peer wakes us from the kernel sleep the moment it answers (a
        same-host server answering a client, same-host clients calling a server). Then
        the yield phase is short (``tune.wake_yield``; 0 means one round of 16 yields)
        and an answer that came only while we slept also halves the spin: a waiter that
        yields stays runnable, and with more waiters than CPUs (8 clients of one server
        on 2 cores, the tiers of a call chain) the yielders share the CPUs with the one
        process that has work, while a sleeper leaves them to it. The budget doubles
        back as soon as answers come while spinning, so a lone client on an idle
        machine keeps spinning."""
        self.spin = self.spin_max = self.budget = tune.spin if spin is None else spin
        self.waits = 0
        self.learn = learn
        self.tune = tune
        self.woken = False
        self.yield_time = tune.yield_time if yield_time is None else yield_time
        if woken:
            self.wakeable(True)
        self.max_sleep = max(tune.max_sleep if max_sleep is None else max_sleep, MIN_SLEEP)
        self.sleeper = sleeper
        self.restart()

    def reset(self) -> None:
        """Useful work arrived: adapt the spin budget, then start over.

        Work that arrives while spinning means the peer runs on another CPU: spinning
        pays, keep (double) the budget. Work that only arrives after we started
        yielding means spinning was wasted -- typically the peer shares our CPU and
        cannot run while we spin -- so halve it, down to ``SPIN_FLOOR``; a waiter its
        peer wakes (``woken``) drops below that to nothing: a budget at 0 spins
        ``SPIN_FLOOR`` polls once every ``PROBE`` waits (``restart``), and an answer
        within that probe brings the budget back. A waiter nobody wakes (a peer on
        another host) keeps the floor: without spinning it would only yield, which on a
        loaded machine is the slowest way to notice an answer, and a sim chain fell into
        millisecond rounds with the budget at 0.

        Why to 0 for woken waiters: in a call chain of depth 3 on a 2-CPU machine
        (4 processes: the client, the 3 tiers), every waiter's answer comes long after
        its spin, yet 16 polls per wait (a client's call, a tier's call downstream,
        each tier's idle poller) kept those processes runnable while the one with the
        work needed a CPU: without the spin a chain costs less time and less CPU
        (docs/results.md, "Call chains: where a hop's time goes";
        scripts/trace_chain.py and scripts/handoff_floor.py measure it).
        """
        n = self.n
        if n and not self.forced and self.learn:
            if n <= self.spin:
                if self.budget < self.spin_max:
                    self.budget = min(self.spin_max, max(SPIN_FLOOR, self.budget * 2))
            elif (self.woken or not self.sleeping) and self.budget > (0 if self.woken else SPIN_FLOOR):
                half = self.budget // 2
                self.budget = half if half >= SPIN_FLOOR else 0 if self.woken else SPIN_FLOOR
        self.restart()

    def spun(self, spin: int) -> None:
        """The answer came within ``spin`` polls of a wait that did not call ``pause``
        (a caller's own spin loop): spinning pays, as in ``reset``."""
        if self.learn:
            self.spin = self.budget = min(self.spin_max, max(SPIN_FLOOR, spin * 2))

    def wakeable(self, woken: bool) -> None:
        """Say whether the peers wake us (a server's clients come and go): the yield phase
        is ``tune.wake_yield`` (at most the current one) or ``tune.yield_time``."""
        if woken != self.woken:
            self.woken = woken
            self.yield_time = min(self.yield_time, self.tune.wake_yield) if woken else self.tune.yield_time

    def restart(self) -> None:
        """Start a new wait without learning anything from the last one (its spin: the
        budget, or a ``SPIN_FLOOR`` probe every ``PROBE`` waits when the budget is 0)."""
        budget = self.budget
        if not budget:
            self.waits += 1
            budget = 0 if self.waits % PROBE else min(SPIN_FLOOR, self.spin_max)
        self.spin = budget
        self.n = 0
        self.forced = False
        self.yield_end = 0.0
        self.sleep = MIN_SLEEP
        self.sleeping = False

    def skip_spin(self) -> None:
        """This wait must not spin (another thread of the process needs the GIL)."""
        self.n = self.spin
        self.forced = True

    @staticmethod
    def remote_peer(peer_on_other_host: bool) -> bool:
        """Whether to stop learning: only for a peer on another host seen from a one-CPU host."""
        return peer_on_other_host and ONE_CPU

    def pause(self) -> bool:
        n = self.n = self.n + 1
        if n <= self.spin:
            return False
        if not self.learn and not self.sleeping and self.tune.nap:
            return self._nap()
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
            fine_timers()
        if self.sleeper is not None:
            self.sleeper(self.max_sleep)
            return True
        _sleep(self.sleep)
        if self.sleep < self.max_sleep:
            self.sleep = min(self.sleep * 2, self.max_sleep)
        return True

    def _nap(self) -> bool:
        """Wait on a peer on another host from a one-vCPU host: short sleeps of fixed length
        until ``yield_time`` has passed since the last useful work, then the sleep phase."""
        now = _monotonic()
        if not self.yield_end:
            self.yield_end = now + self.yield_time
            self.budget = self.spin_max = min(self.spin_max, SPIN_FLOOR)  # (from the next wait on)
            fine_timers()
        if now >= self.yield_end:
            self.sleeping = True
            return self.pause()
        nap = self.tune.nap
        if self.sleeper is not None:
            self.sleeper(nap)
        else:
            _sleep(nap)
        return True
