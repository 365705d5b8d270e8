"""What a sim host is told: the agent's config plus pool files, sockets and the far-memory model."""

from __future__ import annotations

import json

from emulator.backends.sim.config import FARMEM_ENV, SIM_SOCKETS, sim_config
from emulator.topology.model import parse_topology

TOPOLOGY = """\
name: cfg
backend: sim
pools:
  - {name: fast, size: 16M}
  - {name: far, size: 16M, latency_ns: 400}
hosts:
  - {name: a, pools: [fast, far]}
  - {name: b, pools: [fast]}
"""


def _config(host: str, tmp_path):
    topo = parse_topology(TOPOLOGY, memory_probe=lambda: None)
    backing = {"fast": "/dev/shm/x-fast", "far": "/dev/shm/x-far"}
    return sim_config(topo, topo.host(host), tmp_path / "state", backing, "netns")


def test_pools_are_files_and_sockets_live_in_the_host_dir(tmp_path):
    config = _config("a", tmp_path)
    assert config["pool_files"] == {"fast": "/dev/shm/x-fast", "far": "/dev/shm/x-far"}
    assert [p["name"] for p in config["pools"]] == ["fast", "far"]
    host_dir = str(tmp_path / "state" / "hosts" / "a")
    assert config["host_dir"] == host_dir
    assert len(config["sockets"]) == SIM_SOCKETS
    assert all(s.startswith(host_dir + "/agent") for s in config["sockets"])
    assert config["env_script"] == host_dir + "/env.sh"
    assert config["isolation"] == "netns" and config["host_id"] == 0


def test_far_memory_model_only_for_pools_that_set_one(tmp_path):
    a = _config("a", tmp_path)
    assert json.loads(a["extra_env"][FARMEM_ENV]) == {"/dev/shm/x-far": {"latency_ns": 400.0}}
    assert _config("b", tmp_path)["extra_env"] == {}, "off unless configured"
    assert _config("b", tmp_path)["env"] == {}, "sim hosts run natively: no TCG workarounds"


NONCOHERENT = """\
name: nc
backend: sim
pools:
  - {name: plain, size: 16M}
  - {name: soft, size: 16M, coherence: software}
  - {name: model, size: 16M, coherence: none, evictions_per_s: 50, seed: 9}
hosts:
  - {name: a, pools: [plain, soft, model]}
  - {name: b, pools: [model]}
"""


def test_a_non_coherent_pool_is_seen_through_the_hosts_own_view(tmp_path):
    topo = parse_topology(NONCOHERENT, memory_probe=lambda: None)
    backing = {"plain": "/dev/shm/x-plain", "soft": "/dev/shm/x-soft", "model": "/dev/shm/x-model"}
    dirs = {"model": "/dev/shm/x-model.coherence"}
    a = sim_config(topo, topo.host("a"), tmp_path / "state", backing, "netns", dirs)
    b = sim_config(topo, topo.host("b"), tmp_path / "state", backing, "netns", dirs)
    assert a["pool_files"] == {"plain": "/dev/shm/x-plain", "soft": "/dev/shm/x-soft",
                               "model": "/dev/shm/x-model.coherence/host-0.view"}
    assert b["pool_files"] == {"model": "/dev/shm/x-model.coherence/host-1.view"}
    assert b["coherence_models"] == [{"pool": "model", "dir": "/dev/shm/x-model.coherence", "evictions_per_s": 50.0,
                                      "seed": 9}]
    assert [p["coherence"] for p in a["pools"]] == ["coherent", "software", "none"]


NETWORKED = TOPOLOGY + "network: true\n"


def test_hosts_on_the_bridge_are_named_at_their_qemu_addresses(tmp_path):
    topo = parse_topology(NETWORKED, memory_probe=lambda: None)
    backing = {"fast": "/dev/shm/x-fast", "far": "/dev/shm/x-far"}
    config = sim_config(topo, topo.host("b"), tmp_path / "state", backing, "bridge")
    assert config["network"] == {"address": "169.254.100.2/24", "mac": "52:54:00:4e:00:01", "hosts": {"a": "169.254.100.1", "b": "169.254.100.2"}}


def test_hosts_on_the_machines_network_are_named_at_its_loopback(tmp_path):
    """pidns: the hosts share the machine's network, where 169.254.100.x reaches nobody."""
    topo = parse_topology(NETWORKED, memory_probe=lambda: None)
    backing = {"fast": "/dev/shm/x-fast", "far": "/dev/shm/x-far"}
    config = sim_config(topo, topo.host("b"), tmp_path / "state", backing, "pidns")
    assert config["network"] == {"address": None, "hosts": {"a": "127.0.0.1", "b": "127.0.0.1"}}
    assert _config("a", tmp_path)["network"] is None, "no network: nothing to name, as on QEMU"
