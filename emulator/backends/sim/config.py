"""What a simulated host is told about itself: the guest agent's config, plus sim fields.

A sim host runs the same agent as a VM (guest/agent.py), so it gets the same guest.json
content (emulator/image/guest_config.py), with what differs for a process tree added:
- ``pool_files``: each pool's backing file, which the host maps directly (no CXL);
- ``sockets``: the unix sockets it serves the agent protocol on (STATE/hosts/HOST/agentN.sock);
- ``env_script``: where the agent writes the environment commands get (the VM's
  /run/notnets would be the machine's own /run here);
- ``isolation``: netns (own network with only a loopback, own mount and PID namespaces),
  bridge (``network: true``: own network namespace on the run's bridge, network.py), pidns
  (own mount and PID namespaces on the machine's network: ``network: true`` where no
  bridge could be made) or none;
- ``network``: as for a VM, the host's address and every host's, which sim_host.py puts
  in the /etc/hosts of the host's mount namespace; where the hosts share the machine's
  network (pidns) every name is 127.0.0.1 there;
- ``extra_env``: the far-memory model of the host's pools (NOTNETS_FARMEM), when the
  topology gives one;
- ``coherence_models``: for each pool with ``coherence: none``, the model directory,
  eviction rate and seed: the host maps its own view of the pool (``pool_files`` names
  it) and runs an evictor (notnets_rpc/noncoherent_evictor.py; docs/coherence.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from emulator.image.guest_config import guest_config

from emulator.topology.model import Host, Topology

SIM_SOCKETS = 8  # concurrent agent clients (exec, status, ...) per host
FARMEM_ENV = "NOTNETS_FARMEM"  # read by notnets_rpc.farmem
LOOPBACK = "127.0.0.1"


def farmem_spec(topology: Topology, host: Host, backing: Mapping[str, str]) -> dict[str, dict[str, float]]:
    """{backing path: {latency_ns?, bandwidth_gbps?}} for the host's pools that set a model.

    Only what the topology gives is passed: notnets_rpc.farmem fills a missing parameter
    with its published default. A pool that sets neither is plain memory. (No import of
    notnets_rpc here: it pulls in grpc, and `up` must stay fast.)
    """
    spec: dict[str, dict[str, float]] = {}
    for pool in topology.host_pools(host):
        model = {key: value for key, value in (("latency_ns", pool.latency_ns),
                                               ("bandwidth_gbps", pool.bandwidth_gbps)) if value is not None}
        if model:
            spec[backing[pool.name]] = model
    return spec


def view_path(model_dir: str, host: Host) -> str:
    """The host's view of a non-coherent pool (the name notnets_rpc.noncoherent_views reads)."""
    return str(Path(model_dir) / f"host-{host.index}.view")


def sim_config(topology: Topology, host: Host, state_dir: Path, backing: Mapping[str, str],
               isolation: str, model_dirs: Mapping[str, str] = {}) -> dict[str, Any]:
    """The content of STATE/hosts/HOST/sim.json (pure, so tests can check it).

    ``model_dirs``: pool name -> model directory, for the pools with coherence none."""
    config = guest_config(topology, host, state_dir)
    host_dir = Path(config["host_dir"])
    config["pool_files"] = {pool.name: view_path(model_dirs[pool.name], host) if pool.name in model_dirs
                            else backing[pool.name] for pool in topology.host_pools(host)}
    config["coherence_models"] = [
        {"pool": pool.name, "dir": model_dirs[pool.name], "evictions_per_s": pool.evictions_per_s, "seed": pool.seed}
        for pool in topology.host_pools(host) if pool.name in model_dirs]
    config["sockets"] = [str(host_dir / f"agent{i}.sock") for i in range(SIM_SOCKETS)]
    config["env_script"] = str(host_dir / "env.sh")
    config["isolation"] = isolation
    if config["network"] and isolation != "bridge":  # one network, the machine's: its loopback
        config["network"] = {"address": None, "hosts": {name: LOOPBACK for name in config["network"]["hosts"]}}
    config["env"] = {}  # the QEMU template's guest_env works around TCG; sim hosts run natively
    farmem = farmem_spec(topology, host, backing)
    config["extra_env"] = {FARMEM_ENV: json.dumps(farmem, sort_keys=True)} if farmem else {}
    return config


def write_sim_config(host_dir: Path, config: dict[str, Any]) -> Path:
    path = host_dir / "sim.json"
    tmp = path.with_name("sim.json.tmp")
    tmp.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
