"""Running examples/unmodified in emulated hosts and reading the pool's counters of the
endpoint an interposed server published (sim and QEMU tests alike)."""

from __future__ import annotations

import json
import time

from harness.cli import REPO, Emu

EXAMPLES = REPO / "examples" / "unmodified"
EXPECTED = (EXAMPLES / "expected-output.txt").read_text()
CALLS_PER_CLIENT = 7  # client.py / client_aio.py: 2 greeter calls, 5 routes calls


def endpoint_calls(emu: Emu, pool: str, name: str) -> int:
    """Calls the live endpoint ``name`` has served, or -1 if it is not published (or the
    pool is not formatted yet: the first server formats it)."""
    result = emu("pool", "inspect", pool, "--json", timeout=60)
    if result.returncode != 0:
        assert "not a NotNets pool" in result.stderr, result.stderr
        return -1
    live = [s["calls"] for s in json.loads(result.stdout)["services"] if s["name"] == name and s["state"] == "live"]
    return sum(live) if live else -1


def wait_calls(emu: Emu, pool: str, name: str, at_least: int, timeout: float) -> int:
    """The endpoint's call count once it reaches ``at_least`` (counters are published with
    the server's heartbeat), or its count after ``timeout``."""
    end = time.monotonic() + timeout
    while True:
        calls = endpoint_calls(emu, pool, name)
        if calls >= at_least or time.monotonic() > end:
            return calls
        time.sleep(0.2)
