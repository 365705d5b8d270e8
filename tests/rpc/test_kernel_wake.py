"""Who may wake whom: peers on one kernel that map one pool file wake each other from
futex sleeps whatever their host ids (sim hosts); peers whose kernel words differ never
futex each other (docs/pool-layout.md, "Waking"). The real two-sim-host case is in
tests/sim/test_sim_wake.py."""

from __future__ import annotations

import os
import time

import pytest

import notnets_rpc
from notnets_rpc import pool as pool_module
from notnets_rpc.client.connection import Connection
from notnets_rpc.memory import _FUTEX, Memory
from notnets_rpc.pool import Pool
from notnets_rpc.wire import layout as L

from .noncoherent_fixtures import model_pool

pytestmark = pytest.mark.timeout(120)
needs_futex = pytest.mark.skipif(_FUTEX is None, reason="no futex (NOTNETS_FUTEX=0): nobody sleeps in the kernel")


def test_the_kernel_word_names_one_kernel_and_one_file():
    word = L.kernel_word(b"b1d2\n", 45, 7)
    assert word == L.kernel_word(b"b1d2", 45, 7) != 0  # the newline of /proc's file is not part of it
    assert len({word, L.kernel_word(b"b1d3", 45, 7), L.kernel_word(b"b1d2", 46, 7), L.kernel_word(b"b1d2", 45, 8)}) == 4
    assert 0 < word < 1 << 64


def test_a_pool_publishes_its_kernel_word_and_judges_peers_by_it(pool_path, tmp_path, monkeypatch):
    monkeypatch.delenv("NOTNETS_BOOT_ID", raising=False)
    with open(pool_module.BOOT_ID, "rb") as f:
        boot = f.read()
    st = os.stat(pool_path)
    pool = Pool.acquire(pool_path, host_id=0)
    try:
        assert pool.mem.can_wait and pool.kernel == L.kernel_word(boot, st.st_dev, st.st_ino)
        other = L.kernel_word(b"another boot", st.st_dev, st.st_ino)
        assert pool.shares_futex(0, other)            # one host id is one host, whatever it says
        assert pool.shares_futex(3, pool.kernel)      # another host id on this kernel: a sim host
        assert not pool.shares_futex(3, other)        # another kernel: a VM
        assert not pool.shares_futex(3, 0)            # a peer that never futexes
        ep = pool.publish("kw", os.getpid())
        assert ep.kernel == pool.kernel == pool.mem.load(pool.layout.dir_entry(0, ep.slot) + L.DIR_KERNEL)
        assert pool.read_endpoint(0, ep.slot).kernel == pool.kernel
        slot, _gen = pool.claim_channel(ep, os.getpid())
        assert pool.mem.load(pool.layout.channel(0, slot) + L.CH_CLIENT_KERNEL) == pool.kernel
        pool.mem.can_wait = False  # (a DAX device: never a futex)
        assert not pool.shares_futex(0, pool.kernel) and not pool.shares_futex(3, pool.kernel)
    finally:
        pool.release()
    monkeypatch.setattr(pool_module, "BOOT_ID", str(tmp_path / "missing"))
    monkeypatch.delenv("NOTNETS_BOOT_ID", raising=False)
    again = Pool.acquire(pool_path, host_id=1)
    try:
        assert again.kernel == 0 and not again.shares_futex(0, 0)  # no boot id: cannot tell, so never
    finally:
        again.release()


def _spy(monkeypatch) -> list:
    """(what, offset) of every futex wait and wake of this process."""
    seen: list = []
    wait, wake = Memory.wait_word, Memory.wake_word

    def spy_wait(self, off, expected, timeout):
        seen.append(("wait", off))
        wait(self, off, expected, timeout)

    def spy_wake(self, off):
        seen.append(("wake", off))
        wake(self, off)

    monkeypatch.setattr(Memory, "wait_word", spy_wait)
    monkeypatch.setattr(Memory, "wake_word", spy_wake)
    return seen


@needs_futex
@pytest.mark.parametrize("kernel", ["same", "other"])
def test_a_client_under_another_host_id_is_woken_only_on_the_same_kernel(serve, pool_path, monkeypatch, kernel):
    """Server on host 0, client on host 1, in this process. On the same kernel the client
    sleeps on its ring head and the server's wake ends each sleep (a lost wake would hold
    a call for 30 s); with another kernel word neither side ever waits on or wakes a futex."""
    monkeypatch.setenv("NOTNETS_SPIN", "0")
    monkeypatch.setenv("NOTNETS_MAX_SLEEP_US", "30000000")
    server = serve("kw")
    if kernel == "other":
        monkeypatch.setenv("NOTNETS_BOOT_ID", "another-kernel")  # the client's Pool is made after this
    monkeypatch.setenv(notnets_rpc.HOST_ID_ENV, "1")
    seen = _spy(monkeypatch)
    with notnets_rpc.insecure_channel("notnets:kw", pool=pool_path) as channel:
        sleep = channel.unary_unary("/test.T/Sleep")
        assert sleep(b"0.01", timeout=30) == b"slept"
        (ch,) = server._channels.values()
        assert ch.host == 1 and ch.futex is (kernel == "same")
        head = ch.tx.head_off  # the response ring head: the client sleeps on it, the server wakes it
        del seen[:]
        for _ in range(3):  # (0.3 s: longer than 16 yields on a loaded machine, so the client sleeps)
            t = time.monotonic()
            assert sleep(b"0.3", timeout=30) == b"slept"
            assert time.monotonic() - t < 10, "a sleep ran to its limit: the wake was lost"
        if kernel == "same":
            assert seen.count(("wait", head)) >= 3 and seen.count(("wake", head)) >= 3, seen
        else:
            assert seen == [], "peers with different kernel words used a futex"


@needs_futex
def test_a_server_that_claims_our_kernel_but_never_wakes_costs_only_its_calls_their_sleep_limits(
        serve, pool_path, monkeypatch):
    """Its word matches ours, so the client sleeps on a futex; no wake ever comes, and every
    sleep ends by its limit (1 ms): the calls complete, slower."""
    server = serve("liar")
    monkeypatch.setenv(notnets_rpc.HOST_ID_ENV, "1")
    seen = _spy(monkeypatch)
    with notnets_rpc.insecure_channel("notnets:liar", pool=pool_path) as channel:
        sleep = channel.unary_unary("/test.T/Sleep")
        assert sleep(b"0", timeout=30) == b"slept"
        (ch,) = server._channels.values()
        assert ch.futex
        ch.futex, ch.sleep_idx = False, 0  # the server no longer wakes this client
        del seen[:]
        for _ in range(10):
            assert sleep(b"0.02", timeout=5) == b"slept"
        head = ch.tx.head_off
        assert seen.count(("wait", head)) >= 10, seen  # it slept on the futex, again and again
        assert ("wake", head) not in seen


@needs_futex
def test_a_client_that_claims_our_kernel_but_never_kicks_costs_only_its_calls(serve, peers, pool_path, monkeypatch):
    """The server believes the client wakes it and sleeps on its kick word; the client never
    kicks. The server's sleeps end by their limit, so the liar's calls complete, and an
    honest client of another process is served alongside."""
    server = serve("quiet")
    monkeypatch.setenv(notnets_rpc.HOST_ID_ENV, "1")
    monkeypatch.setattr(Connection, "wake_server", lambda self: None)
    seen = _spy(monkeypatch)
    with notnets_rpc.insecure_channel("notnets:quiet", pool=pool_path) as channel:
        echo = channel.unary_unary("/test.T/Echo")
        assert echo(b"x", timeout=30) == b"x"
        (ch,) = server._channels.values()
        assert ch.futex and server._futex_ok
        honest = peers.start("calls", pool_path, "quiet", "300")
        for i in range(30):
            time.sleep(0.02)  # the server goes back to sleep on its kick word
            assert echo(b"%d" % i, timeout=5) == b"%d" % i
        assert ("wait", server._kick_off) in seen  # it did sleep on the word nobody kicked
        peers.expect(honest, "ok", timeout=60)


def test_a_pool_on_a_device_publishes_no_kernel_word(pool_path, monkeypatch):
    """A DAX device (a QEMU guest's pool) is never futexed (it oopses Linux 6.1): its users
    publish 0, so nobody expects a wake from them nor sends them one."""
    monkeypatch.setattr(pool_module, "is_char_device", lambda path: True)
    pool = Pool.acquire(pool_path, host_id=2)
    try:
        assert not pool.mem.can_wait and pool.kernel == 0
        assert not pool.shares_futex(2, 0) and not pool.shares_futex(0, 0)
        ep = pool.publish("dax", os.getpid())
        assert pool.mem.load(pool.layout.dir_entry(2, ep.slot) + L.DIR_KERNEL) == 0
    finally:
        pool.release()


def test_two_hosts_views_of_a_non_coherent_model_never_futex_each_other():
    """Each host maps its own view file (noncoherent_views.py): a futex on one view's page
    reaches nobody on the other, so their kernel words differ though the kernel is one."""
    for model in model_pool():
        views = [Pool.acquire(model.view(h), h) for h in (0, 1)]
        try:
            assert all(v.kernel for v in views) and views[0].kernel != views[1].kernel
            assert not views[0].shares_futex(1, views[1].kernel)
        finally:
            for v in views:
                v.release()
