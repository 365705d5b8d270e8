"""Sixteen sim hosts on one pool: the emulator tells the formatter the host count
(NOTNETS_POOL_HOSTS), so host ids 8..15 get partitions and call each other."""

from __future__ import annotations

import json
import os

import pytest

from harness.cli import Emu, pool_files, running_under

pytestmark = [pytest.mark.timeout(240)]

HOSTS = 16


def test_hosts_above_eight_serve_and_call_over_the_pool(tmp_path):
    name = f"wide{os.getpid()}"
    topo = tmp_path / "topo.yaml"
    topo.write_text(f"name: {name}\nbackend: sim\npools:\n  - {{name: pool0, size: 16M, backing: shm}}\nhosts:\n"
                    + "".join(f"  - {{name: host{i}, pools: [pool0]}}\n" for i in range(HOSTS)))
    emu = Emu(tmp_path / "state", tmp_path)
    try:
        up = emu("up", str(topo), timeout=180)
        assert up.returncode == 0, up.stderr
        said = emu("exec", "host3", "--", "echo $NOTNETS_POOL_HOSTS", timeout=60)
        assert said.stdout.strip() == str(HOSTS), said.stderr
        served = emu("exec", "-d", "host12", "--", "python -m notnets_bench.echo.server --target notnets:echo-12",
                     timeout=60)
        assert served.returncode == 0, served.stderr
        for client in ("host15", "host9"):
            result = emu("exec", client, "--",
                          "python -m notnets_bench.echo.client --target notnets:echo-12 --calls 30 --warmup 2",
                          timeout=120)
            assert result.returncode == 0, result.stderr
            assert json.loads(result.stdout.strip().splitlines()[-1])["calls"] == 30
        backing = emu.status(name)["pools"][0]["backing"]
        inspected = emu("pool", "inspect", backing, "--json", timeout=60)
        snap = json.loads(inspected.stdout)
        assert snap["header"]["max_hosts"] == HOSTS  # formatted in host12 for the whole run
        assert [(s["name"], s["host"]) for s in snap["services"]] == [("echo-12", 12)]
        assert snap["services"][0]["calls"] >= 2 * 30  # both clients' calls were served there
        assert {c["host"] for c in snap["channels"]} == {9, 15}
    finally:
        emu.cleanup()
        assert running_under(str(emu.state)) == [], "processes outlived the test"
        assert pool_files(name) == [], "pool files left behind"
