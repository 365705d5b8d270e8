"""Mixed concurrent load on one server process (tests/rpc/load.py): the server keeps
serving and keeps its heartbeat while threads and processes mix sizes up to 1 MiB,
deadlines, cancellations and streams. Bounded: 12 s of load."""

from __future__ import annotations

import json
import threading
import time

import notnets_rpc

from . import load
from .test_processes import peers  # noqa: F401 - fixture

SECONDS = 12.0


def test_mixed_load_keeps_serving_and_beating(peers, blank_path):  # noqa: F811
    notnets_rpc.create_pool(blank_path, 256 << 20)  # 1 MiB rings, as in the issue
    server = peers.start("serve", blank_path, "load", "8", module="rpc.load")
    peers.expect(server, "serving")
    children = [peers.start("client", blank_path, "load", "2", str(SECONDS), str(seed), host=host, module="rpc.load")
                for seed, host in ((1, 0), (2, 1), (3, 0), (4, 1))]
    watch = load.HeartbeatWatch(blank_path, "load")
    tally = load.Tally()
    channel = notnets_rpc.insecure_channel("notnets:load", pool=blank_path)
    ended = []
    runner = threading.Thread(target=lambda: ended.append(load.run_threads(channel, 16, SECONDS, 7, tally)))
    try:
        runner.start()
        while runner.is_alive() or any(c.poll() is None for c in children):
            watch.sample()
            time.sleep(0.05)
            assert watch.max_age < 1.0, f"server heartbeat stood still for {watch.max_age:.2f} s"
            assert server.poll() is None, "the server process died"
        outcomes = dict(tally.snapshot())
        details = dict(tally.details)
        for child in children:
            out, err = child.communicate(timeout=30)
            assert child.returncode == 0, err
            report = json.loads(out.strip().splitlines()[-1])
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
