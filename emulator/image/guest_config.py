"""What a guest needs to know about itself, written by the host before the VM boots.

Two files in STATE/hosts/HOST/, read through the writable 9p share:
- guest.env: a few shell assignments for init.sh (busybox sh cannot parse JSON): where
  to mount the state dir, which Python runs the agent, the network address;
- guest.json: everything the agent needs: host name and id, the pools with uuid,
  serial and size, project paths, the state dir.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from emulator.backends.qemu.command import load_template, mac_address
from emulator.errors import UserError
from emulator.paths import REPO_ROOT
from emulator.topology.model import Host, Topology

CONFIG_VERSION = 1
NETWORK_PREFIX = "169.254.100."
NETWORK_BITS = 24
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def network_address(host: Host) -> str:
    """The guest's static link-local address: 169.254.100.<host id + 1>/24."""
    if not 0 <= host.index <= 253:
        raise UserError(f"host {host.name}: host id {host.index} does not fit the /24 guest network (254 hosts at most)")
    return f"{guest_ip(host.index)}/{NETWORK_BITS}"


def guest_ip(index: int) -> str:
    """The address of the host with id ``index`` on the run's network (without the prefix)."""
    return f"{NETWORK_PREFIX}{index + 1}"


def guest_python(project: Path = REPO_ROOT) -> Path:
    """The interpreter the guest runs: the project's .venv, as on the host."""
    venv_python = project / ".venv" / "bin" / "python"
    if venv_python.exists():
        return venv_python
    return Path(sys.executable)


HOSTROOT_CACHE_MODES = ("mmap", "none", "loose")


def hostroot_cache() -> str:
    """The 9p cache mode of the guest's view of this machine's root:
    $NOTNETS_HOSTROOT_CACHE, else the template's ``hostroot_cache`` (mmap)."""
    mode = os.environ.get("NOTNETS_HOSTROOT_CACHE") or str(load_template().get("hostroot_cache", "mmap"))
    if mode not in HOSTROOT_CACHE_MODES:
        raise UserError(f"NOTNETS_HOSTROOT_CACHE={mode!r}: expected one of {', '.join(HOSTROOT_CACHE_MODES)}")
    return mode


def liveness_window_ms(topology: Topology, cores: int | None = None) -> int:
    """NOTNETS_STALE_MS for the run's VMs: how long a peer's heartbeat may stand still
    before the RPC layer counts it dead, scaled by how far the run's vCPUs overcommit
    this machine's cores. A guest that gets 1/k of a core is k times slower at
    everything, rescheduling its heartbeat thread included: eight one-vCPU TCG guests on
    two cores missed the 3 s window under load (the mesh benchmark failed at setup).
    The peer cannot tell starvation from a freeze, so the window stays the same in the
    host's own time, not in ours. A caller's NOTNETS_STALE_MS (forwarded) still wins."""
    from notnets_rpc.pool import stale_ms  # the base: the RPC layer's default or this machine's setting

    vcpus = sum(h.cpus for h in topology.hosts)
    overcommit = -(-vcpus // max(cores or os.cpu_count() or 1, 1))
    return stale_ms() * max(overcommit, 1)


def guest_config(topology: Topology, host: Host, state_dir: Path) -> dict[str, Any]:
    """The content of guest.json (a pure function, so tests can check it)."""
    state = Path(os.path.abspath(state_dir))
    python = guest_python()
    venv = python.parent.parent
    return {
        "version": CONFIG_VERSION,
        "host": host.name,
        "host_id": host.index,
        "pools": [
            {"name": pool.name, "uuid": pool.uuid, "serial": pool.serial, "size": pool.size,
             "coherence": pool.coherence}
            for pool in topology.host_pools(host)
        ],
        "project": str(REPO_ROOT),
        "venv": str(venv),
        "python": str(python),
        "path": f"{venv / 'bin'}:{BASE_PATH}",
        "state_dir": str(state),
        "host_dir": str(state / "hosts" / host.name),
        "network": {"address": network_address(host), "mac": mac_address(host),
                    "hosts": {h.name: guest_ip(h.index) for h in topology.hosts}} if topology.network else None,
        "interpose": topology.interpose,
        "pool_hosts": topology.pool_hosts,
        "agent_ports": int(load_template()["agent_ports"]),
        "env": {**{str(k): str(v) for k, v in (load_template().get("guest_env") or {}).items()},
                "NOTNETS_STALE_MS": str(liveness_window_ms(topology))},
        "hostroot_cache": hostroot_cache(),
    }


def guest_env(config: dict[str, Any]) -> str:
    """guest.env for init.sh: shell assignments, every value quoted."""
    values = {
        "NOTNETS_HOST": config["host"],
        "NOTNETS_HOST_ID": str(config["host_id"]),
        "NOTNETS_STATE_DIR": config["state_dir"],
        "NOTNETS_PROJECT": config["project"],
        "NOTNETS_PYTHON": config["python"],
        "NOTNETS_PATH": config["path"],
        "NOTNETS_NET_ADDR": (config["network"] or {}).get("address", ""),
        "NOTNETS_NET_MAC": (config["network"] or {}).get("mac", ""),
        "NOTNETS_HOSTROOT_CACHE": config.get("hostroot_cache", "mmap"),
    }
    lines = ["# Written by the host (emulator/image/guest_config.py) for the guest's init.sh; do not edit."]
    lines += [f"{key}={shlex.quote(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def write_guest_config(host_dir: Path, topology: Topology, host: Host, state_dir: Path) -> Path:
    """Write guest.json and guest.env into ``host_dir``; return the guest.json path."""
    config = guest_config(topology, host, state_dir)
    host_dir = Path(host_dir)
    expected = Path(config["host_dir"])
    if host_dir.resolve() != expected.resolve():
        raise UserError(f"host {host.name}: its files must be in {expected} (the guest looks there), not {host_dir}")
    host_dir.mkdir(parents=True, exist_ok=True)
    path = host_dir / "guest.json"
    _write_atomically(path, json.dumps(config, indent=2) + "\n")
    _write_atomically(host_dir / "guest.env", guest_env(config))
    agent_log = host_dir / "agent.log"  # the guest appends to it; private like the rest
    os.close(os.open(agent_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    os.chmod(agent_log, 0o600)
    return path


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
