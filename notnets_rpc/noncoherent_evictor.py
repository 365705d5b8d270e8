"""A host's cache dropping lines on its own, for the non-coherent pool model.

Real caches write back and drop lines when they need the room, at moments no program
chooses; so a line may reach the device before the program writes it back, and a stale
line may be refetched before the program invalidates it. The sim backend runs one
evictor per host of a ``coherence: none`` pool, each time the host starts:

    python -m notnets_rpc.noncoherent_evictor MODEL_DIR HOST_ID RATE SEED

First it empties the host's caches (a host that starts again has lost what it had not
written back) and prints "ready"; the host starts its programs only then. Then it
evicts RATE lines a second, chosen uniformly over the pool by a generator seeded with
SEED and the host id (the order repeats; the timing against the programs' stores does
not), until killed (the host's end takes it along). With RATE 0 it exits after "ready".
"""

from __future__ import annotations

import random
import sys
import threading
from typing import Optional

from .noncoherent import LINE
from .noncoherent_views import HostView, ModelError


class Evictor:
    """Evicts ``rate`` random lines a second from one host's view: a dirty line is written
    back, a stale one refetched (noncoherent.HostCache.evict)."""

    def __init__(self, view: HostView, rate: float, seed: int, tick: float = 0.01) -> None:
        self.view = view
        self.rate = rate
        self.rng = random.Random(f"{seed}/{view.host}")
        self.tick = tick
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.evicted = 0

    def step(self, count: int) -> None:
        lines = self.view.size // LINE
        for _ in range(count):
            self.view.evict(self.rng.randrange(lines))
        self.evicted += count

    def run(self) -> None:
        owed = 0.0
        while not self._stop.wait(self.tick):
            owed += self.rate * self.tick
            count = int(owed)
            owed -= count
            if count:
                self.step(count)

    def start(self) -> "Evictor":
        self._thread = threading.Thread(target=self.run, name=f"evictor-host{self.view.host}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def main(argv: list[str]) -> int:
    if len(argv) != 5:
        sys.stderr.write("usage: python -m notnets_rpc.noncoherent_evictor MODEL_DIR HOST_ID RATE SEED\n")
        return 2
    try:
        host, rate, seed = int(argv[2]), float(argv[3]), int(argv[4])
        view = HostView(argv[1], host)
    except (ValueError, ModelError) as exc:
        sys.stderr.write(f"noncoherent_evictor: {exc}\n")
        return 2
    view.reset()
    print("ready", flush=True)
    if rate > 0:
        Evictor(view, rate, seed).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
