"""Unmodified grpc programs (examples/unmodified) across two sim hosts, where interposition
is on by default: the client on host1 dials host0:50051, which no TCP route reaches (each
sim host has only its loopback), and gets its answers over the pool, whose counters count
the calls; with NOTNETS_INTERPOSE=0 the same client cannot reach host0. With ``network:
true`` the same programs, addressed by host name, print the same over the pool (by
default) and over TCP on the run's bridge (``interpose: false``)."""

from __future__ import annotations

import os

import pytest

from harness.cli import REPO, Emu, pool_files, run_namespaces, running_under, wait_until
from harness.unmodified import CALLS_PER_CLIENT, EXAMPLES, EXPECTED, endpoint_calls, wait_calls

pytestmark = [pytest.mark.timeout(180)]

TOPOLOGY = """\
name: {name}
backend: sim
pools:
  - {{name: pool0, size: 32M, backing: shm}}
hosts:
  - {{name: host0, pools: [pool0]}}
  - {{name: host1, pools: [pool0]}}
"""


def _isolated() -> bool:
    return os.geteuid() == 0 and os.environ.get("NOTNETS_SIM_ISOLATION") != "none"


@pytest.mark.parametrize("server,client", [("server_aio.py", "client.py"), ("server.py", "client_aio.py")])
def test_unmodified_programs_across_sim_hosts(tmp_path, server, client):
    if not _isolated():
        pytest.skip("needs root for the hosts' network namespaces (otherwise TCP could carry the calls)")
    name = f"simgrpc{os.getpid()}"
    topo = tmp_path / "t.yaml"
    topo.write_text(TOPOLOGY.format(name=name))
    emu = Emu(tmp_path / "state", tmp_path)
    try:
        up = emu("up", str(topo), timeout=60)
        assert up.returncode == 0, up.stderr
        pool = emu.status()["pools"][0]["backing"]
        started = emu("exec", "-d", "host0", "--", f"python {EXAMPLES / server} --port '[::]:50051'", timeout=30)
        assert started.returncode == 0, started.stderr
        assert wait_calls(emu, pool, "host0:50051", 0, 60) == 0, "the server published host0:50051"
        result = emu("exec", "host1", "--", f"python {EXAMPLES / client} --target host0:50051", timeout=120)
        assert result.returncode == 0, result.stderr
        assert result.stdout == EXPECTED
        assert wait_calls(emu, pool, "host0:50051", CALLS_PER_CLIENT, 10) == CALLS_PER_CLIENT
        # without interposition the same client has no way to host0
        plain = emu("exec", "host1", "--", f"python {EXAMPLES / client} --target host0:50051 2>&1",
                    env={"NOTNETS_INTERPOSE": "0"}, timeout=120)
        assert plain.returncode != 0 and "UNAVAILABLE" in plain.stdout
        assert endpoint_calls(emu, pool, "host0:50051") == CALLS_PER_CLIENT
    finally:
        emu("down", timeout=60)
        emu.cleanup()
        assert running_under(str(emu.state)) == [], "processes outlived the test"
        assert pool_files(name) == [], "pool files left behind"


def test_interpose_false_in_the_topology_turns_it_off(tmp_path):
    name = f"simnoint{os.getpid()}"
    topo = tmp_path / "t.yaml"
    topo.write_text(TOPOLOGY.format(name=name) + "interpose: false\n")
    emu = Emu(tmp_path / "state", tmp_path)
    try:
        up = emu("up", str(topo), timeout=60)
        assert up.returncode == 0, up.stderr
        result = emu("exec", "host1", "--", "echo interpose=${NOTNETS_INTERPOSE:-unset}", timeout=30)
        assert result.returncode == 0 and result.stdout.strip() == "interpose=unset", result
    finally:
        emu("down", timeout=60)
        emu.cleanup()
        assert pool_files(name) == [], "pool files left behind"


@pytest.mark.parametrize("interpose", [True, False], ids=["pool", "tcp"])
def test_unmodified_programs_by_host_name_on_the_runs_network(tmp_path, interpose):
    if not _isolated():
        pytest.skip("needs root for the hosts' network namespaces")
    name = f"snug{os.getpid()}"  # short: the agent sockets live under the state dir (108-byte limit)
    topo = tmp_path / "t.yaml"
    topo.write_text(TOPOLOGY.format(name=name) + "network: true\n" + ("" if interpose else "interpose: false\n"))
    emu = Emu(tmp_path / "state", tmp_path)
    try:
        up = emu("up", str(topo), timeout=60)
        assert up.returncode == 0, up.stderr
        status = emu.status()
        assert [h["addresses"] for h in status["hosts"]] == [["169.254.100.1"], ["169.254.100.2"]]
        pool = status["pools"][0]["backing"]
        started = emu("exec", "-d", "host0", "--", f"python {EXAMPLES / 'server_aio.py'} --port '[::]:50051'",
                      timeout=30)
        assert started.returncode == 0, started.stderr
        assert wait_until(lambda: "serving on port 50051" in emu("logs", "host0", timeout=30).stdout, 60)
        for client, target in (("client.py", "host0:50051"), ("client_aio.py", "host0:50051"),
                               ("client.py", "169.254.100.1:50051")):
            result = emu("exec", "host1", "--", f"python {EXAMPLES / client} --target {target}", timeout=120)
            assert result.returncode == 0, result.stderr
            assert result.stdout == EXPECTED, (client, target)
        if interpose:  # the server published its name and its address on the bridge: one endpoint
            assert wait_calls(emu, pool, "host0:50051", 3 * CALLS_PER_CLIENT, 10) == 3 * CALLS_PER_CLIENT
            assert endpoint_calls(emu, pool, "169.254.100.1:50051") == 3 * CALLS_PER_CLIENT
        else:
            assert endpoint_calls(emu, pool, "host0:50051") == -1, "interpose: false published in the pool"
            assert endpoint_calls(emu, pool, "169.254.100.1:50051") == -1
    finally:
        emu("down", timeout=60)
        emu.cleanup()
        assert running_under(str(emu.state)) == [], "processes outlived the test"
        assert pool_files(name) == [], "pool files left behind"
        assert run_namespaces(name) == [], "network namespaces left behind"


def test_the_example_run_files_print_the_same_over_the_pool_and_over_tcp(tmp_path):
    """examples/unmodified/two-hosts-sim.yaml (pool: no network) and two-hosts-sim-tcp.yaml
    (TCP by host name on the run's bridge, interpose: false), as the README runs them."""
    if not _isolated():
        pytest.skip("needs root for the hosts' network namespaces")
    emu = Emu(tmp_path / "state", REPO)
    outputs = {}
    try:
        for example, name in (("two-hosts-sim.yaml", f"ux{os.getpid()}"), ("two-hosts-sim-tcp.yaml", f"uxt{os.getpid()}")):
            result = emu("run", "-p", name, str(EXAMPLES / example), timeout=150)
            assert result.returncode == 0, result.stderr
            outputs[example] = "".join(line.removeprefix("[host1] ") + "\n" for line in result.stdout.splitlines()
                                       if line.startswith("[host1] "))
            assert run_namespaces(name) == [] and pool_files(name) == [], "run left its network or pool behind"
    finally:
        emu.cleanup()
        assert running_under(str(emu.state)) == [], "processes outlived the test"
    assert outputs["two-hosts-sim.yaml"] == outputs["two-hosts-sim-tcp.yaml"] == EXPECTED * 2
