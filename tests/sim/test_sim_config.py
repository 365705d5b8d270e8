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
