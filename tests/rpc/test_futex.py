"""Sleeping on a word of a shared mapping (memory._Futex via ctypes, memory._NativeFutex via
notnets_rpc._native): both implementations, the same behaviour, and the whole RPC path
on the fallback."""

from __future__ import annotations

import mmap
import threading
import time

import pytest

import notnets_rpc
from notnets_rpc import memory
from notnets_rpc.memory import Memory

pytestmark = pytest.mark.timeout(60)

try:
    from notnets_rpc import _native
except ImportError:  # not built: only the fallback is tested
    _native = None

IMPLEMENTATIONS = [pytest.param(memory._Futex, id="ctypes"),
                   pytest.param(lambda: memory._NativeFutex(_native), id="native",
                                marks=pytest.mark.skipif(_native is None or not hasattr(_native, "futex_wait"),
                                                         reason="notnets_rpc._native not built (make setup)"))]


@pytest.fixture
def shared():
    m = mmap.mmap(-1, 1 << 16)  # MAP_SHARED, as a pool is
    mem = Memory(m)
    assert mem.can_wait
    yield mem
    mem.release()
    m.close()


@pytest.mark.parametrize("make", IMPLEMENTATIONS)
def test_a_waiter_is_woken_by_a_store_and_a_wake(make, shared):
    futex = make()
    addr = shared._base + 64
    returned = threading.Event()
    slept = []

    def waiter():
        t = time.monotonic()
        assert futex.wait(addr, 0, 10.0) is True
        slept.append(time.monotonic() - t)
        returned.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.2)  # let it reach the kernel sleep (a wake before that is covered by the compare)
    assert not returned.is_set()
    shared.store(64, 1)
    futex.wake(addr)
    assert returned.wait(5.0)
    thread.join()
    assert slept[0] < 5.0  # woken, not timed out (10 s)


@pytest.mark.parametrize("make", IMPLEMENTATIONS)
def test_a_word_that_already_changed_or_a_timeout_returns_at_once(make, shared):
    futex = make()
    addr = shared._base + 128
    shared.store(128, 7)
    t = time.monotonic()
    assert futex.wait(addr, 6, 10.0) is True  # EAGAIN: the value differs
    assert futex.wait(addr, 7, 0.01) is True  # ETIMEDOUT
    assert time.monotonic() - t < 2.0
    futex.wake(addr)  # nobody sleeps: a no-op


@pytest.mark.parametrize("make", IMPLEMENTATIONS)
def test_a_word_the_kernel_refuses_says_false(make):
    assert make().wait(8, 0, 0.01) is False  # EFAULT: an unmapped address


def test_the_native_calls_check_their_arguments():
    if _native is None or not hasattr(_native, "futex_wait"):
        pytest.skip("notnets_rpc._native not built (make setup)")
    with pytest.raises(TypeError):
        _native.futex_wait(8, 0)
    with pytest.raises(TypeError):
        _native.futex_wait("x", 0, 1.0)


def test_calls_between_processes_of_one_host_sleep_and_wake_through_the_fallback(monkeypatch, serve, pool_path):
    """The same-host RPC path with the ctypes futex (what runs when _native is not built)."""
    monkeypatch.setattr(memory, "_FUTEX", memory._Futex())
    serve()
    with notnets_rpc.insecure_channel("notnets:t", pool=pool_path) as channel:
        echo = channel.unary_unary("/test.T/Echo")
        for i in range(20):
            assert echo(b"%d" % i, timeout=10) == b"%d" % i
            time.sleep(0.03)  # long enough for both sides to reach their kernel sleeps
        assert channel._conn.futex and channel._conn.mem.can_wait  # the kernel took every wait
