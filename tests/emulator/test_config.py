"""guest.json and guest.env: what the guest learns about itself before it boots."""

import json
import subprocess
from pathlib import Path

import pytest

from emulator.errors import UserError
from emulator.image import guest_config as config
from emulator.topology.model import parse_topology

TOPOLOGY = """
name: t
network: true
pools:
  - {name: pool-a, size: 256M, backing: shm}
  - {name: poolB, size: 512M, backing: shm}
hosts:
  - {name: h0, pools: [pool-a, poolB]}
  - {name: h1, pools: [poolB]}
"""


def topo(text: str = TOPOLOGY):
    return parse_topology(text, memory_probe=lambda: None)


def test_guest_json_lists_the_hosts_pools_in_order(tmp_path: Path):
    t = topo()
    host = t.host("h0")
    path = config.write_guest_config(tmp_path / "hosts" / "h0", t, host, tmp_path)
    data = json.loads(path.read_text())
    assert path == tmp_path / "hosts" / "h0" / "guest.json"
    assert data["host"] == "h0" and data["host_id"] == 0
    assert [p["name"] for p in data["pools"]] == ["pool-a", "poolB"]
    assert data["pools"][1] == {"name": "poolB", "uuid": t.pool("poolB").uuid,
                                "serial": t.pool("poolB").serial, "size": 512 << 20, "coherence": "coherent"}
    assert data["state_dir"] == str(tmp_path)
    assert data["network"] == {"address": "169.254.100.1/24", "mac": "52:54:00:4e:00:00",
                               "hosts": {"h0": "169.254.100.1", "h1": "169.254.100.2"}}
    assert data["path"].startswith(data["venv"] + "/bin:")
    assert data["agent_ports"] == 4
    assert "-ERMS" in data["env"]["GLIBC_TUNABLES"], "the template's guest_env reaches the guest"


def test_command_env_lays_the_host_over_the_template_env(tmp_path: Path):
    from guest.agent import command_env

    t = topo()
    data = config.guest_config(t, t.host("h0"), tmp_path)
    data["env"] = {**data["env"], "NOTNETS_HOST": "spoofed", "EXTRA": "1"}
    env = command_env(data, [])
    assert env["GLIBC_TUNABLES"] == data["env"]["GLIBC_TUNABLES"] and env["EXTRA"] == "1"
    assert env["NOTNETS_HOST"] == "h0", "what the host says about itself wins"


def test_commands_are_interposed_unless_the_topology_says_no(tmp_path: Path):
    from guest.agent import command_env
    from guest.pools import PoolDevice

    device = [PoolDevice("pool-a", "/dev/dax0.0", 256 << 20, 0, "region0")]
    t = topo()
    assert t.interpose is True
    data = config.guest_config(t, t.host("h0"), tmp_path)
    assert command_env(data, device)["NOTNETS_INTERPOSE"] == "1"
    assert "NOTNETS_INTERPOSE" not in command_env(data, []), "no pool yet: nothing to interpose with"
    off = topo(TOPOLOGY.replace("network: true", "network: true\ninterpose: false"))
    assert off.interpose is False and off.with_backend("sim").interpose is False
    assert "NOTNETS_INTERPOSE" not in command_env(config.guest_config(off, off.host("h0"), tmp_path), device)


def test_every_guest_resolves_every_host_name(tmp_path: Path):
    from guest.agent import hosts_file, write_hosts_file

    t = topo()
    data = config.guest_config(t, t.host("h1"), tmp_path)
    lines = hosts_file(data).splitlines()
    assert lines[0].startswith("127.0.0.1") and "169.254.100.1\th0" in lines and "169.254.100.2\th1" in lines
    target = tmp_path / "hosts"
    write_hosts_file(data, str(target))
    assert target.read_text() == hosts_file(data)
    quiet = tmp_path / "untouched"
    write_hosts_file(config.guest_config(topo(TOPOLOGY.replace("network: true", "network: false")), t.host("h1"),
                                         tmp_path), str(quiet))
    assert not quiet.exists(), "no network: the guest's /etc/hosts stays the machine's"


def test_second_host_gets_its_own_address_and_pools(tmp_path: Path):
    t = topo()
    data = config.guest_config(t, t.host("h1"), tmp_path)
    assert data["network"]["address"] == "169.254.100.2/24"
    assert [p["name"] for p in data["pools"]] == ["poolB"]


def test_no_network_no_address(tmp_path: Path):
    t = topo(TOPOLOGY.replace("network: true", "network: false"))
    assert config.guest_config(t, t.host("h0"), tmp_path)["network"] is None


def test_guest_env_survives_the_shell(tmp_path: Path):
    """init.sh sources guest.env: every value must come back exactly, odd paths included."""
    t = topo()
    state = tmp_path / "state dir with 'quotes' and $dollar"
    config.write_guest_config(state / "hosts" / "h0", t, t.host("h0"), state)
    env_file = state / "hosts" / "h0" / "guest.env"
    out = subprocess.run(["sh", "-c", '. "$1"; printf "%s\\n" "$NOTNETS_STATE_DIR" "$NOTNETS_NET_ADDR" "$NOTNETS_HOST"',
                          "sh", str(env_file)], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == [str(state), "169.254.100.1/24", "h0"]


def test_host_dir_must_be_where_the_guest_looks(tmp_path: Path):
    t = topo()
    with pytest.raises(UserError, match="must be in"):
        config.write_guest_config(tmp_path / "elsewhere", t, t.host("h0"), tmp_path)


def test_too_many_hosts_for_the_subnet():
    from emulator.topology.model import Host

    assert config.network_address(Host("x", 253)) == "169.254.100.254/24"
    with pytest.raises(UserError, match="does not fit"):
        config.network_address(Host("x", 254))


def test_hostroot_cache_mode_from_the_template_or_the_environment(monkeypatch):
    """The guest's view of this machine's files: mmap (fresh at every open) unless asked."""
    import pytest

    from emulator.errors import UserError
    from emulator.image.guest_config import hostroot_cache

    monkeypatch.delenv("NOTNETS_HOSTROOT_CACHE", raising=False)
    assert hostroot_cache() == "mmap"
    monkeypatch.setenv("NOTNETS_HOSTROOT_CACHE", "loose")
    assert hostroot_cache() == "loose"
    monkeypatch.setenv("NOTNETS_HOSTROOT_CACHE", "fscache")
    with pytest.raises(UserError, match="NOTNETS_HOSTROOT_CACHE='fscache'"):
        hostroot_cache()


def test_pools_get_a_partition_for_every_host_of_the_run(tmp_path: Path):
    from guest.agent import command_env
    from guest.pools import PoolDevice

    device = [PoolDevice("poolB", "/dev/dax0.0", 256 << 20, 0, "region0")]
    small = topo()
    assert small.pool_hosts == 8  # up to eight hosts the rings stay as they were
    assert command_env(config.guest_config(small, small.host("h1"), tmp_path), device)["NOTNETS_POOL_HOSTS"] == "8"
    hosts = "".join(f"  - {{name: h{i}, pools: [poolB]}}\n" for i in range(16))
    wide = topo(TOPOLOGY.split("hosts:")[0] + "hosts:\n" + hosts.replace("poolB]", "poolB, pool-a]", 1))
    assert wide.pool_hosts == 16
    data = config.guest_config(wide, wide.host("h15"), tmp_path)
    assert data["host_id"] == 15 and data["pool_hosts"] == 16
    assert command_env(data, device)["NOTNETS_POOL_HOSTS"] == "16"
    assert "NOTNETS_POOL_HOSTS" not in command_env(data, []), "no pool, nothing to format"


def test_the_liveness_window_grows_with_the_overcommit_of_the_cores(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("NOTNETS_STALE_MS", raising=False)
    hosts = "".join(f"  - {{name: h{i}, pools: [poolB]}}\n" for i in range(8))
    eight = topo(TOPOLOGY.split("hosts:")[0] + "hosts:\n" + hosts.replace("poolB]", "poolB, pool-a]", 1))
    assert config.liveness_window_ms(eight, cores=2) == 12000  # 8 vCPUs on 2 cores: a quarter core each
    assert config.liveness_window_ms(eight, cores=8) == 3000  # no overcommit: the RPC layer's default
    assert config.liveness_window_ms(topo(), cores=2) == 3000
    monkeypatch.setenv("NOTNETS_STALE_MS", "1000")  # this machine's setting is the base
    assert config.liveness_window_ms(eight, cores=2) == 4000
    data = config.guest_config(eight, eight.host("h3"), tmp_path)
    assert data["env"]["NOTNETS_STALE_MS"] == str(config.liveness_window_ms(eight))


def test_sim_hosts_get_no_stretched_liveness_window(tmp_path: Path):
    from emulator.backends.sim.config import sim_config

    t = topo().with_backend("sim")
    data = sim_config(t, t.host("h0"), tmp_path, {"pool-a": "/dev/shm/a", "poolB": "/dev/shm/b"}, "none")
    assert "NOTNETS_STALE_MS" not in data["env"]  # sim hosts run natively, at the machine's speed
