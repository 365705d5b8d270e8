"""Many callers of one server: the crowd word, the pass word and who stays awake.

A server whose callers (with it) outnumber the CPUs says so in its DIR_CROWD word; its
same-host callers then sleep in the kernel as soon as they have called, on the server's
DIR_PASS word, and the server wakes all the sleepers of a pass with one FUTEX_WAKE after
it has answered them (docs/rpc.md, "A crowded server"). NOTNETS_CROWD_AT sets how many callers
crowd a server (default: the CPU count), so these tests do not depend on the machine.
"""

from __future__ import annotations

import time

import pytest

import notnets_rpc
from emulator.backends.qemu.process import cpu_seconds
from notnets_rpc.memory import _FUTEX, Memory
from notnets_rpc.wire import layout as L

pytestmark = pytest.mark.timeout(120)
# without a futex (NOTNETS_FUTEX=0) nobody sleeps in the kernel, so no caller counts
needs_futex = pytest.mark.skipif(_FUTEX is None, reason="no futex (NOTNETS_FUTEX=0): nobody sleeps in the kernel")


def _spy_waits(monkeypatch) -> list:
    """Offsets of every word anybody in this process sleeps on (Memory.wait_word)."""
    waits: list = []
    real = Memory.wait_word

    def spy(self, off, expected, timeout):
        waits.append(off)
        real(self, off, expected, timeout)

    monkeypatch.setattr(Memory, "wait_word", spy)
    return waits


def _until_crowd(server, echo, at_least: int) -> None:
    """Call until the server's monitor has published at least ``at_least`` callers."""
    mem = server._pool.mem
    deadline = time.monotonic() + 20
    while mem.load(server._crowd_off) < at_least:
        assert echo(b"warm", timeout=5) == b"warm"
        assert time.monotonic() < deadline, "the server never counted its caller"


@needs_futex
def test_a_caller_of_a_crowded_server_sleeps_on_its_pass_word_and_the_pass_wakes_it(serve, pool_path, monkeypatch):
    monkeypatch.setenv("NOTNETS_CROWD_AT", "1")
    monkeypatch.setenv("NOTNETS_MAX_SLEEP_US", "30000000")  # a lost wake would hold a call for 30 s
    waits = _spy_waits(monkeypatch)
    server = serve("crowd1")
    with notnets_rpc.insecure_channel("notnets:crowd1", pool=pool_path) as channel:
        echo = channel.unary_unary("/test.T/Echo")
        _until_crowd(server, echo, 1)
        mem = server._pool.mem
        before = mem.load(server._pass_off)
        del waits[:]
        for i in range(200):
            assert echo(b"%d" % i, timeout=5) == b"%d" % i
        slept = waits.count(server._pass_off)
        assert slept > 0  # (a caller in the server's process never spins: it slept)
        assert server._channels and all(L.SLEEP_ON_PASS != mem.load(ch.client_sleep)
                                        for ch in server._channels.values())
        assert mem.load(server._pass_off) - before >= slept  # a pass bumped the word for each sleep


@needs_futex
@pytest.mark.parametrize("crowd_at", ["2", None], ids=["below-crowd-at", "crowd-at-unset"])
def test_a_lone_caller_sleeps_on_its_ring_and_the_pass_word_stays(serve, pool_path, monkeypatch, crowd_at):
    if crowd_at is None:
        monkeypatch.delenv("NOTNETS_CROWD_AT", raising=False)  # the default: never crowded
    else:
        monkeypatch.setenv("NOTNETS_CROWD_AT", crowd_at)
    waits = _spy_waits(monkeypatch)
    server = serve("crowd2")
    with notnets_rpc.insecure_channel("notnets:crowd2", pool=pool_path) as channel:
        echo = channel.unary_unary("/test.T/Echo")
        mem = server._pool.mem
        for i in range(200):
            assert echo(b"%d" % i, timeout=5) == b"%d" % i
        deadline = time.monotonic() + 20
        while not all(ch.crowd_seen == ch.bytes_in > 0 for ch in server._channels.values()):
            time.sleep(0.005)  # until the monitor has counted our calls (one caller: not crowded)
            assert time.monotonic() < deadline, "the monitor never counted the calls"
        assert server._crowd == 0 and mem.load(server._crowd_off) == 0  # below NOTNETS_CROWD_AT: 0
        assert mem.load(server._pass_off) == 0
        assert server._pass_off not in waits  # (it sleeps on its ring head, if at all)


@needs_futex
def test_no_wake_is_lost_among_concurrent_callers_of_a_crowded_server(serve, peers, pool_path, monkeypatch):
    """Six client processes call at once; each sleeps up to 5 s when not woken, so one lost
    wake fails its call (DEADLINE_EXCEEDED after 4 s) and its process."""
    monkeypatch.setenv("NOTNETS_CROWD_AT", "2")
    server = serve("crowd6")
    clients = [peers.start("unary", pool_path, "crowd6", "400", "4", NOTNETS_CROWD_AT="2",
                           NOTNETS_MAX_SLEEP_US="5000000") for _ in range(6)]
    for proc in clients:
        assert proc.wait(90) == 0, proc.stderr.read()
    assert server._pool.mem.load(server._pass_off) > 0  # they slept on the pass word and were woken
    deadline = time.monotonic() + 10
    while server._crowd:  # and once they are gone, the server is not crowded any more
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert server._pool.mem.load(server._crowd_off) == 0


def test_a_server_idles_within_a_few_percent_of_a_core_after_a_crowded_burst(peers, pool_path):
    """After the crowd leaves, the server stops polling (the quiet spell) and sleeps: its
    CPU, read from /proc over two seconds of idling, stays under 10% of a core (the
    benchmark's figure is ~1%; the bound leaves room for a loaded machine)."""
    server = peers.start("serve", pool_path, "crowdidle", NOTNETS_CROWD_AT="2")
    peers.expect(server, "serving")
    clients = [peers.start("unary", pool_path, "crowdidle", "300", "10", NOTNETS_CROWD_AT="2") for _ in range(4)]
    for proc in clients:
        assert proc.wait(90) == 0, proc.stderr.read()
    before, t0 = cpu_seconds(server.pid), time.monotonic()
    time.sleep(2.0)  # the interval measured, not an event waited for
    used = (cpu_seconds(server.pid) - before) / (time.monotonic() - t0)
    assert used < 0.10, f"idle server used {used:.1%} of a core"


def test_callers_on_another_kernel_do_not_crowd_a_server(serve, peers, pool_path, monkeypatch):
    """They cannot sleep on its word nor be woken: the server neither counts them nor
    bumps its pass word for them (it keeps its usual back-off)."""
    monkeypatch.setenv("NOTNETS_CROWD_AT", "1")
    server = serve("crowdfar")
    # another boot id: another kernel, as a VM is
    client = peers.start("idle", pool_path, "crowdfar", host=1, NOTNETS_CROWD_AT="1", NOTNETS_BOOT_ID="another-kernel")
    peers.expect(client, "ready")
    (ch,) = server._channels.values()
    assert ch.host == 1 and not ch.futex
    deadline = time.monotonic() + 20
    while ch.crowd_seen != ch.bytes_in:  # the monitor has looked at the call
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert ch.bytes_in and server._crowd == 0 and not server._crowded
    assert server._pool.mem.load(server._crowd_off) == 0
    assert server._pool.mem.load(server._pass_off) == 0
