"""Sim hosts with ``network: true``: each in a network namespace of its own on the run's
private bridge, with the address it has on QEMU (169.254.100.<id+1>) and an /etc/hosts
naming every host, so host:port means the same on both backends and two hosts serving one
port do not collide; every namespace goes at `down` and after a failed `up`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from harness.cli import REPO, Emu, pool_files, run_namespaces, running_under

pytestmark = [pytest.mark.timeout(120)]

PEER = REPO / "tests" / "sim" / "net_peer.py"
PORT = 50051
TOPOLOGY = """\
name: {name}
backend: sim
network: true
pools:
  - {{name: pool0, size: 16M, backing: shm}}
hosts:
  - {{name: host0, pools: [pool0]}}
  - {{name: host1, pools: [pool0]}}
  - {{name: host2}}
"""
ADDRESSES = {"host0": "169.254.100.1", "host1": "169.254.100.2", "host2": "169.254.100.3"}


def _bridged() -> bool:
    from shutil import which

    return os.geteuid() == 0 and os.environ.get("NOTNETS_SIM_ISOLATION") != "none" and which("ip") is not None


def machine_links() -> list[str]:
    done = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, timeout=10, check=True)
    return sorted(line.split(":")[1].strip() for line in done.stdout.splitlines())


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    if not _bridged():
        pytest.skip("needs root and iproute2 for the hosts' network namespaces")
    base = tmp_path_factory.mktemp("simnet")
    name = f"snet{os.getpid()}"
    topo = base / "topo.yaml"
    topo.write_text(TOPOLOGY.format(name=name))
    emu = Emu(base / "state", base)
    before = {"links": machine_links(), "hosts": Path("/etc/hosts").read_bytes()}
    try:
        up = emu("up", str(topo), timeout=60)
        assert up.returncode == 0, up.stderr
        yield emu, name, up, before
    finally:
        emu.cleanup()
        assert running_under(str(emu.state)) == [], "processes outlived the test"
        assert pool_files(name) == [], "pool files left behind"
        assert run_namespaces(name) == [], "network namespaces left behind"


def ask(emu: Emu, host: str, target: str, wait: float = 10.0) -> subprocess.CompletedProcess:
    address, port = target.rsplit(":", 1)
    return emu("exec", host, "--", f"python {PEER} ask {address} {port} {wait}", timeout=60)


def serve(emu: Emu, host: str) -> None:
    started = emu("exec", "-d", host, "--", f"python {PEER} serve {PORT}", timeout=30)
    assert started.returncode == 0, started.stderr


def test_status_shows_each_hosts_address_on_the_runs_bridge(net):
    emu, name, up, before = net
    data = emu.status()
    assert data["accel"] == "bridge" and "private bridge" in data["accel_note"]
    assert {h["name"]: h["addresses"] for h in data["hosts"]} == {h: [a] for h, a in ADDRESSES.items()}
    assert {h["accel"] for h in data["hosts"]} == {"bridge"}
    text = emu("status", timeout=30)
    rows = {line.split()[0]: line.split() for line in text.stdout.splitlines()[2:5]}
    assert text.stdout.splitlines()[1].split()[4] == "ADDRESSES"
    assert {host: row[4] for host, row in rows.items()} == ADDRESSES
    namespaces = run_namespaces(name)
    assert len(namespaces) == 4 and sorted(n.rsplit("-", 1)[-1] for n in namespaces if "-host" in n) == \
        ["host0", "host1", "host2"]
    assert machine_links() == before["links"], "the run's links live in its namespaces, not on the machine"


def test_every_host_resolves_every_name_and_the_machine_keeps_its_hosts_file(net):
    emu, _, _, before = net
    result = emu("exec", "host2", "--", "getent hosts host0 host1 host2; hostname", timeout=30)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split("\n")
    assert [line.split() for line in lines[:3]] == [[a, h] for h, a in ADDRESSES.items()]
    assert lines[3] == "host2"
    assert Path("/etc/hosts").read_bytes() == before["hosts"], "the machine's /etc/hosts was touched"


def test_a_host_has_its_loopback_and_the_runs_network_only(net):
    emu, _, _, _ = net
    result = emu("exec", "host1", "--", "ip -o link show | cut -d: -f2 | cut -d@ -f1; ip -4 route", timeout=30)
    assert result.returncode == 0, result.stderr
    lines = [line.strip() for line in result.stdout.splitlines()]
    assert lines[:2] == ["lo", "eth0"], lines
    assert [line.split()[:3] for line in lines[2:]] == [["169.254.100.0/24", "dev", "eth0"]], \
        "a route out of the run's network"


def test_two_hosts_serve_one_port_and_a_third_reaches_each_by_name_and_address(net):
    emu, _, _, _ = net
    serve(emu, "host0")
    serve(emu, "host1")  # the same port: it collides unless each host has its own
    for target, expected in (("host0", "host0"), ("host1", "host1"),
                             (ADDRESSES["host0"], "host0"), (ADDRESSES["host1"], "host1")):
        result = ask(emu, "host2", f"{target}:{PORT}")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == expected, target
    assert ask(emu, "host0", f"localhost:{PORT}", wait=0).stdout.strip() == "host0"
    nobody = ask(emu, "host2", f"localhost:{PORT}", wait=0)
    assert nobody.returncode == 1 and "refused" in nobody.stderr, "host2 saw another host's port on its loopback"


def test_a_killed_host_comes_back_with_its_address(net):
    emu, name, _, _ = net
    namespaces = run_namespaces(name)
    assert emu("fault", "host1", "kill", timeout=30).returncode == 0
    assert run_namespaces(name) == namespaces, "a killed host keeps its namespace for its restart"
    gone = ask(emu, "host2", f"host1:{PORT}", wait=0)
    assert gone.returncode == 1, "host1's server outlived its host"
    restart = emu("fault", "host1", "restart", timeout=60)
    assert restart.returncode == 0, restart.stderr
    serve(emu, "host1")
    result = ask(emu, "host2", f"host1:{PORT}")
    assert result.returncode == 0 and result.stdout.strip() == "host1", result.stderr
    assert [h["addresses"] for h in emu.status()["hosts"] if h["name"] == "host1"] == [[ADDRESSES["host1"]]]


def test_zz_down_removes_every_namespace(net):
    emu, name, _, before = net
    down = emu("down", timeout=60)
    assert down.returncode == 0, down.stderr
    assert run_namespaces(name) == []
    assert machine_links() == before["links"]


def test_a_failed_up_removes_the_network(tmp_path, monkeypatch):
    """host1 exits at once (its command is ``false``): `up` fails after the network was made."""
    if not _bridged():
        pytest.skip("needs root and iproute2 for the hosts' network namespaces")
    from emulator.backends.sim import backend as sim_backend
    from emulator.errors import UserError
    from emulator.progress import Progress
    from emulator.runs.lifecycle import bring_up
    from emulator.topology.model import load_topology

    name = f"snetfail{os.getpid()}"
    topo = tmp_path / "t.yaml"
    topo.write_text(TOPOLOGY.format(name=name))
    monkeypatch.setenv("NOTNETS_STATE", str(tmp_path / "state"))
    real_argv = sim_backend.host_argv
    seen: list[list[str]] = []

    def failing_host1(isolation, config_path, netns=None):
        argv = real_argv(isolation, config_path, netns)
        seen.append(argv)
        return argv[:argv.index("--") + 1] + ["false"] if "/host1/" in str(config_path) else argv

    monkeypatch.setattr(sim_backend, "host_argv", failing_host1)
    try:
        with pytest.raises(UserError, match="host host1 did not become ready"):
            bring_up(load_topology(topo), "auto", Progress(quiet=True))
        assert len(seen) == 3 and all(argv[0] == "nsenter" for argv in seen), "the hosts were not on the bridge"
        assert run_namespaces(name) == []
        assert running_under(str(tmp_path / "state")) == []
    finally:
        Emu(tmp_path / "state", tmp_path).cleanup()
