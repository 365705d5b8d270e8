"""Runs inside a sim host for tests/sim/test_sim_wake.py: a client of a test-service
server (``python -m rpc.peer serve``) on another sim host, that reports how it waited.

    python wake_peer.py NAME

Prints ``futex F`` (whether the connection sleeps on a futex its server wakes), then
``client waits N longest S``: three 0.3 s Sleep calls, the futex sleeps they took and the
longest of them (run it with NOTNETS_MAX_SLEEP_US large, so that a lost wake shows as a
sleep that long); then, once the server's poller is seen asleep in the kernel (its sleep
word), ``server asleep kicked K call S``: how often this call bumped its kick word and
how long the call took (a server that is not woken sleeps 10 x NOTNETS_IDLE_SLEEP_US).
The pool is $NOTNETS_POOL; run with tests/ on PYTHONPATH.
"""

from __future__ import annotations

import sys
import time

import notnets_rpc
from notnets_rpc.memory import Memory
from notnets_rpc.pool import Pool
from notnets_rpc.wire import layout as L


def main(name: str) -> int:
    waits: list = []
    real = Memory.wait_word

    def spy(self, off, expected, timeout):
        t = time.monotonic()
        real(self, off, expected, timeout)
        waits.append(time.monotonic() - t)

    Memory.wait_word = spy
    pool = Pool.acquire()
    try:
        ep = pool.resolve(name)
        assert ep is not None, f"no endpoint {name}"
        entry = pool.server_wake_entry(ep)
        print(f"futex {pool.shares_futex(ep.host, ep.kernel)}", flush=True)
        with notnets_rpc.insecure_channel(f"notnets:{name}") as channel:
            sleep = channel.unary_unary("/test.T/Sleep")
            echo = channel.unary_unary("/test.T/Echo")
            assert echo(b"warm", timeout=60) == b"warm"
            del waits[:]
            for _ in range(3):  # 0.3 s: longer than 16 yields on a loaded machine
                assert sleep(b"0.3", timeout=60) == b"slept"
            print(f"client waits {len(waits)} longest {max(waits, default=0):.3f}", flush=True)
            deadline = time.monotonic() + 20
            while not pool.mem.load(entry + L.DIR_SLEEP):
                if time.monotonic() > deadline:
                    print("server never slept", flush=True)
                    return 1
                time.sleep(0.01)
            kick = pool.mem.load(entry + L.DIR_KICK)
            t = time.monotonic()
            assert echo(b"wake", timeout=60) == b"wake"
            took = time.monotonic() - t
            print(f"server asleep kicked {pool.mem.load(entry + L.DIR_KICK) - kick} call {took:.3f}", flush=True)
    finally:
        pool.release()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
