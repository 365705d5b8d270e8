"""Mixed concurrent load on one server process (tests/rpc/load.py): the server keeps
serving and keeps its heartbeat while threads and processes mix sizes up to 1 MiB,
deadlines, cancellations and streams.

The work is a number of calls, not a time: every client runs until its share has ended
(90 s at most, and then the test fails naming what finished), so a loaded machine makes
the test slower, not different. The clients wait without spinning (NOTNETS_SPIN=0,
NOTNETS_YIELD_US=0: read when their channels connect): on two shared CPUs, two dozen
spinning client threads were most of the load that starved the server under test; the
server keeps its own settings."""

from __future__ import annotations

import json
import threading
import time

import pytest

import notnets_rpc

from . import load

pytestmark = pytest.mark.timeout(240)

LIMIT = 90.0        # seconds any client may take for its share
DRIVER_CALLS = 2400  # calls of the 16 threads in this process
CHILD_CALLS = 400   # calls of each client process (2 threads)
QUIET = {"NOTNETS_SPIN": "0", "NOTNETS_YIELD_US": "0"}


def test_mixed_load_keeps_serving_and_beating(peers, blank_path, monkeypatch):  # noqa: F811
    notnets_rpc.create_pool(blank_path, 256 << 20)  # 1 MiB rings, as in the issue
    server = peers.start("serve", blank_path, "load", "8", module="rpc.load")
    peers.expect(server, "serving")
    for key, value in QUIET.items():
        monkeypatch.setenv(key, value)
    children = [peers.start("client", blank_path, "load", "2", str(LIMIT), str(seed), str(CHILD_CALLS), host=host,
                            module="rpc.load")
                for seed, host in ((1, 0), (2, 1), (3, 0), (4, 1))]
    watch = load.HeartbeatWatch(blank_path, "load")
    tally = load.Tally()
    channel = notnets_rpc.insecure_channel("notnets:load", pool=blank_path)
    ended = []
    runner = threading.Thread(target=lambda: ended.append(load.run_threads(channel, 16, LIMIT, 7, tally,
                                                                              DRIVER_CALLS)))
    try:
        runner.start()
        while runner.is_alive() or any(c.poll() is None for c in children):
            watch.sample()
            time.sleep(0.05)
            assert watch.max_age < 1.0, f"server heartbeat stood still for {watch.max_age:.2f} s"
            assert server.poll() is None, "the server process died"
        outcomes = dict(tally.snapshot())
        assert sum(outcomes.values()) >= DRIVER_CALLS, f"only {outcomes} of {DRIVER_CALLS} calls ended in {LIMIT} s"
        details = dict(tally.details)
        for child in children:
            out, err = child.communicate(timeout=30)
            assert child.returncode == 0, err
            report = json.loads(out.strip().splitlines()[-1])
            assert sum(report["outcomes"].values()) >= CHILD_CALLS, f"a client process ended {report['outcomes']}"
            details.update(report["details"])
            for key, n in report["outcomes"].items():
                outcomes[key] = outcomes.get(key, 0) + n
    finally:
        channel.close()
        watch.close()
    assert ended == [True], "a client thread did not end"
    assert outcomes.get("OK", 0) > 100, outcomes
    bad = {code: n for code, n in outcomes.items() if code not in ("OK", "CANCELLED", "DEADLINE_EXCEEDED")}
    assert not bad, f"unexpected outcomes {bad} (all: {outcomes}; details: {details})"
    print(outcomes, f"heartbeat max age {watch.max_age:.2f} s")
