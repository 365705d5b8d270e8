"""Unmodified grpc programs across two QEMU hosts: over the pool by default (interposition;
the endpoint's counters, read from the host through the run's backing file, count the
calls) and, with NOTNETS_INTERPOSE=0, over the hosts' network, addressed by host name
(every guest's /etc/hosts names every host): the same output both ways."""

from __future__ import annotations

import os

import pytest

from harness.cli import Emu, pool_files, qemu_available, running_under
from harness.unmodified import CALLS_PER_CLIENT, EXAMPLES, EXPECTED, endpoint_calls, wait_calls

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def test_unmodified_programs_across_qemu_hosts(tmp_path):
    reason = qemu_available()
    if reason:
        pytest.skip(reason)
    name = f"qgrpc{os.getpid()}"
    topo = tmp_path / "t.yaml"
    topo.write_text(f"name: {name}\nnetwork: true\npools:\n  - {{name: pool0, size: 256M, backing: shm}}\n"
                    "hosts:\n  - {name: host0, pools: [pool0]}\n  - {name: host1, pools: [pool0]}\n")
    emu = Emu(tmp_path / "state", tmp_path)
    try:
        up = emu("up", str(topo), "--accel", "tcg", timeout=400)
        assert up.returncode == 0, up.stderr
        status = emu.status()
        assert [h["addresses"] for h in status["hosts"]] == [["169.254.100.1"], ["169.254.100.2"]]
        pool = status["pools"][0]["backing"]
        started = emu("exec", "-d", "host0", "--", f"python {EXAMPLES / 'server_aio.py'} --port '[::]:50051'",
                      timeout=60)
        assert started.returncode == 0, started.stderr
        assert wait_calls(emu, pool, "host0:50051", 0, 180) == 0, "the server published host0:50051"
        over_pool = emu("exec", "host1", "--", f"python {EXAMPLES / 'client.py'} --target host0:50051",
                        timeout=300)
        assert over_pool.returncode == 0, over_pool.stderr
        assert over_pool.stdout == EXPECTED
        assert wait_calls(emu, pool, "host0:50051", CALLS_PER_CLIENT, 30) == CALLS_PER_CLIENT
        over_tcp = emu("exec", "host1", "--", f"python {EXAMPLES / 'client_aio.py'} --target host0:50051",
                       env={"NOTNETS_INTERPOSE": "0"}, timeout=300)
        assert over_tcp.returncode == 0, over_tcp.stderr
        assert over_tcp.stdout == EXPECTED
        assert endpoint_calls(emu, pool, "host0:50051") == CALLS_PER_CLIENT, "TCP calls left the pool alone"
    finally:
        emu("down", timeout=120)
        emu.cleanup()
        assert running_under(str(emu.state)) == [], "processes outlived the test"
        assert pool_files(name) == [], "pool files left behind"
