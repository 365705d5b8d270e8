"""How the sim backend makes and unmakes a run's network (emulator/backends/sim/network.py),
with `ip` faked: the steps, their order, what is recorded before each, and what a failure
leaves (nothing). The real namespaces are tested in test_sim_network.py."""

from __future__ import annotations

import json

import pytest

from emulator.backends.sim import backend as sim_backend
from emulator.backends.sim import network
from emulator.progress import Progress
from emulator.runs.state import RunState
from emulator.topology.model import parse_topology
from guest import sim_host

TOPOLOGY = """\
name: n
backend: sim
network: true
pools:
  - {name: pool0, size: 16M}
hosts:
  - {name: a, pools: [pool0]}
  - {name: b, pools: [pool0]}
"""


class FakeIp:
    """Records `ip` commands; fails the one whose words contain ``fail_on``."""

    def __init__(self, fail_on: tuple[str, ...] = ()) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.namespaces: set[str] = set()
        self.fail_on = fail_on

    def __call__(self, *args: str, batch=()) -> None:
        """One command, or a batch of them as ``ip [-n NS] -batch -`` runs them."""
        for command in batch or [()]:
            self.one(*args, *command)

    def one(self, *args: str) -> None:
        self.calls.append(args)
        if self.fail_on and all(word in args for word in self.fail_on):
            raise network.NetworkError(f"`ip {' '.join(args)}`: Operation not supported")
        if args[:2] == ("netns", "add"):
            if args[2] in self.namespaces:
                raise network.NetworkError(f"`ip {' '.join(args)}`: File exists")
            self.namespaces.add(args[2])
        if args[:2] == ("netns", "delete"):
            if args[2] not in self.namespaces:
                raise network.NetworkError(f"`ip {' '.join(args)}`: No such file or directory")
            self.namespaces.discard(args[2])


@pytest.fixture
def fake_ip(monkeypatch):
    ip = FakeIp()
    monkeypatch.setattr(network, "_ip", ip)
    monkeypatch.setattr(network, "listed", lambda: set(ip.namespaces))
    return ip


def test_names_are_per_run_and_per_state_dir():
    bridge, hosts = network.namespace_names("r", "/s1/r", ["a", "b"])
    assert hosts == {"a": f"{bridge}-a", "b": f"{bridge}-b"} and bridge.startswith("notnets-r-")
    assert network.namespace_names("r", "/s2/r", ["a"])[0] != bridge, "two state roots, one run name"
    assert network.namespace_names("r", "/s1/r", ["a"])[0] == bridge


def test_each_host_gets_its_namespace_its_qemu_address_and_a_port_on_the_bridge(fake_ip):
    recorded: list[str] = []

    def record(name: str) -> None:
        assert name not in fake_ip.namespaces, "recorded after it was made: a failure would leak it"
        recorded.append(name)

    network.create("br-ns", [(0, "ns-a"), (5, "ns-b")], record)
    assert recorded == ["br-ns", "ns-a", "ns-b"] and fake_ip.namespaces == {"br-ns", "ns-a", "ns-b"}
    assert ("-n", "br-ns", "link", "add", "br0", "type", "bridge") in fake_ip.calls
    assert ("-n", "br-ns", "link", "add", "h5", "type", "veth", "peer", "name", "eth0", "netns", "ns-b") in fake_ip.calls
    assert ("-n", "br-ns", "link", "set", "h5", "master", "br0", "up") in fake_ip.calls
    assert ("-n", "ns-b", "addr", "add", "169.254.100.6/24", "dev", "eth0") in fake_ip.calls
    assert ("-n", "ns-a", "link", "set", "lo", "up") in fake_ip.calls
    assert all(call[0] == "-n" for call in fake_ip.calls if call[:1] != ("netns",)), \
        "a link made outside the run's namespaces would be on the machine"


def test_remove_deletes_each_and_a_missing_one_is_no_error(fake_ip):
    fake_ip.namespaces = {"x", "y"}
    assert network.remove(["x", "gone", "y"]) == []
    assert fake_ip.namespaces == set()


def test_a_network_that_cannot_be_made_is_removed_and_said(fake_ip, tmp_path):
    fake_ip.fail_on = ("veth", "h1")  # host b's port: after the bridge and a's namespace exist
    topology = parse_topology(TOPOLOGY, memory_probe=lambda: None)
    run = RunState(name="n", backend="sim", state_dir=str(tmp_path))
    isolation, note = sim_backend.SimBackend()._make_network(topology, run, sim_backend.NOTES["bridge"],
                                                             Progress(quiet=True))
    assert isolation == "pidns" and "no private network" in note and "Operation not supported" in note
    assert fake_ip.namespaces == set() and run.namespaces == []
    assert json.loads((tmp_path / "run.json").read_text())["namespaces"] == []


def test_stop_hosts_deletes_the_recorded_namespaces(fake_ip, tmp_path):
    run = RunState(name="n", backend="sim", state_dir=str(tmp_path), namespaces=["x", "x-a"])
    fake_ip.namespaces = {"x", "x-a", "other-run"}
    sim_backend.SimBackend().stop_hosts(run, Progress(quiet=True))
    assert fake_ip.namespaces == {"other-run"} and run.namespaces == []


def test_a_bridged_host_starts_inside_its_namespace(tmp_path):
    argv = sim_backend.host_argv("bridge", tmp_path / "sim.json", "ns-a")
    assert argv[:3] == ["nsenter", "--net=/run/netns/ns-a", "--"] and argv[3] == "unshare"
    assert "--net" not in argv and "slave" in argv
    assert "nsenter" not in sim_backend.host_argv("netns", tmp_path / "sim.json")
    with pytest.raises(ValueError):
        sim_backend.host_argv("bridge", tmp_path / "sim.json")


def test_the_host_binds_its_hosts_file_over_etc_hosts(tmp_path, monkeypatch):
    mounted: list[tuple[str, str]] = []
    monkeypatch.setattr(sim_host, "bind_mount", lambda source, target: mounted.append((source, target)))
    config = {"host_dir": str(tmp_path), "network": {"address": "169.254.100.2/24",
                                                     "hosts": {"b": "169.254.100.2", "a": "169.254.100.1"}}}
    assert sim_host.name_the_hosts(config)
    assert mounted == [(str(tmp_path / "hosts"), "/etc/hosts")]
    lines = (tmp_path / "hosts").read_text().splitlines()
    assert lines[0].split() == ["127.0.0.1", "localhost"]
    assert [line.split() for line in lines[2:]] == [["169.254.100.1", "a"], ["169.254.100.2", "b"]]
    assert not sim_host.name_the_hosts({"host_dir": str(tmp_path), "network": None}) and len(mounted) == 1


def test_namespaces_a_lost_earlier_run_left_are_removed_first(fake_ip, tmp_path):
    topology = parse_topology(TOPOLOGY, memory_probe=lambda: None)
    run = RunState(name="n", backend="sim", state_dir=str(tmp_path))
    bridge, hosts = network.namespace_names("n", str(tmp_path), ["a", "b"])
    fake_ip.namespaces = {hosts["b"], "notnets-n-other"}  # b's from a crashed run; another state dir's
    isolation, _ = sim_backend.SimBackend()._make_network(topology, run, sim_backend.NOTES["bridge"],
                                                          Progress(quiet=True))
    assert isolation == "bridge"
    assert fake_ip.namespaces == {bridge, hosts["a"], hosts["b"], "notnets-n-other"}
    assert ("netns", "delete", hosts["b"]) in fake_ip.calls and ("netns", "delete", "notnets-n-other") not in fake_ip.calls


@pytest.mark.skipif(network.missing_tool() != "", reason="needs iproute2")
def test_a_failed_batch_names_the_command_that_failed():
    """Real `ip`, with a command that makes nothing (a namespace without a name)."""
    with pytest.raises(network.NetworkError) as failed:
        network._ip(batch=[("netns", "list"), ("netns", "add")])
    assert str(failed.value) == "`ip netns add`: No netns name specified"
