"""The QEMU command line of one host: a pure function of topology, host and paths.

Kept pure (no files opened, nothing started) so that ``up --dry-run`` prints exactly
what ``up`` runs and tests can check the argv without QEMU. The machine itself is
described by a template in ``qemu-configs/`` (data, not code).

Template fields: host, host_id, accel, cpu, cpus, memory, maxmem, kernel, initrd,
append, identity, state_dir, console_socket, console_log, qmp_socket, identity_socket;
per agent port: port,
agent_socket; per pool: i, backing, size, lsa, lsa_size, bus_nr, serial, window; with a
network: vde_socket, mac.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

from emulator.errors import UserError
from emulator.paths import REPO_ROOT
from emulator.sizes import format_size, parse_size
from emulator.topology.model import Host, Topology

CONFIG_DIR = REPO_ROOT / "qemu-configs"
DEFAULT_TEMPLATE = CONFIG_DIR / "q35-cxl.yaml"


@dataclass(frozen=True)
class HostPaths:
    """Where one host's files live on the machine running QEMU."""

    state_dir: str
    kernel: str
    initrd: str
    qmp_socket: str
    console_socket: str
    console_log: str
    agent_sockets: tuple[str, ...]
    pool_backing: Mapping[str, str]  # pool name -> backing file
    lsa: Mapping[str, str]  # pool name -> this host's label file for it
    vde_socket: Optional[str] = None
    identity_socket: str = ""  # the notnets.identity port (a restored guest learns who it is there)

    @classmethod
    def in_state_dir(
        cls,
        state_dir: Path | str,
        host: str,
        kernel: str,
        initrd: str,
        pool_backing: Mapping[str, str],
        pools: tuple[str, ...] | list[str],
        agent_ports: int = 4,
        network: bool = False,
    ) -> "HostPaths":
        """The standard layout: every per-host file under ``STATE/hosts/HOST/``."""
        state = Path(state_dir)
        hdir = state / "hosts" / host
        return cls(
            state_dir=str(state),
            kernel=kernel,
            initrd=initrd,
            qmp_socket=str(hdir / "qmp.sock"),
            console_socket=str(hdir / "console.sock"),
            console_log=str(hdir / "console.log"),
            agent_sockets=tuple(str(hdir / f"agent{i}.sock") for i in range(agent_ports)),
            pool_backing={name: pool_backing[name] for name in pools},
            lsa={name: str(hdir / f"{name}.lsa") for name in pools},
            vde_socket=str(state / "vde") if network else None,
            identity_socket=str(hdir / "identity.sock"),
        )


@lru_cache(maxsize=8)
def _load_template_cached(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as err:
        raise UserError(f"{path}: cannot load QEMU template: {err}") from None
    if not isinstance(data, dict) or "base" not in data:
        raise UserError(f"{path}: not a QEMU template (no 'base' section)")
    return data


def load_template(path: Path | str = DEFAULT_TEMPLATE) -> dict[str, Any]:
    """The machine template as data."""
    return _load_template_cached(str(path))


def _expand(groups: list[list[str]], values: Mapping[str, Any]) -> list[str]:
    argv: list[str] = []
    for group in groups:
        for word in group:
            try:
                argv.append(str(word).format(**values))
            except KeyError as err:
                raise UserError(f"QEMU template uses unknown field {err}") from None
    return argv


def _round_up(value: int, align: int) -> int:
    return -(-value // align) * align


def mac_address(host: Host) -> str:
    """A locally administered MAC that encodes the host id (52:54:00 is QEMU's prefix)."""
    return f"52:54:00:4e:{(host.index >> 8) & 0xFF:02x}:{host.index & 0xFF:02x}"


def _one_machine_option(words: list[str]) -> list[str]:
    """Merge ``-M a -M b`` into ``-M a,b``: QEMU 7.2 refuses cxl-fmw.N spread over several
    -M options ("Parameters 'cxl-fmw.*' used inconsistently")."""
    values = [words[i + 1] for i in range(0, len(words) - 1, 2) if words[i] == "-M"]
    if not values or len(values) * 2 != len(words):
        return words
    return ["-M", ",".join(values)]


def build_qemu_argv(
    topology: Topology,
    host: Host,
    paths: HostPaths,
    accel: str = "tcg",
    template: Mapping[str, Any] | None = None,
    identity: str = "cmdline",
) -> list[str]:
    """The full argv (binary first) of the VM for ``host``.

    ``identity``: "cmdline" names the host on the kernel command line; "port" makes a
    boot template's guest, which waits for its name on the notnets.identity port.
    """
    tpl = template if template is not None else load_template()
    accel_values = tpl["accel"].get(accel)
    if accel_values is None:
        raise UserError(f"unknown accelerator {accel!r} (expected one of: {', '.join(tpl['accel'])})")
    pools = topology.host_pools(host)
    values: dict[str, Any] = {
        "host": host.name,
        "host_id": host.index,
        "cpus": host.cpus,
        "memory": format_size(host.memory),
        "maxmem": format_size(host.memory + parse_size(tpl["maxmem_extra"])),
        "kernel": paths.kernel,
        "initrd": paths.initrd,
        "state_dir": paths.state_dir,
        "console_socket": paths.console_socket,
        "console_log": paths.console_log,
        "qmp_socket": paths.qmp_socket,
        "identity_socket": paths.identity_socket,
        **accel_values,
    }
    identities = tpl.get("identity") or {}
    if identity not in identities:
        raise UserError(f"the QEMU template has no identity mode {identity!r}")
    values["identity"] = str(identities[identity]).format(**values)
    values["append"] = str(tpl["append"]).format(**values)
    argv = [str(tpl["binary"])] + _expand(tpl["base"], values)
    for port, socket_path in enumerate(paths.agent_sockets):
        argv += _expand(tpl["agent_port"], {**values, "port": port, "agent_socket": socket_path})
    if paths.identity_socket:
        argv += _expand(tpl.get("identity_port") or [], values)
    window_align = parse_size(tpl["window_align"])
    windows: list[str] = []
    for i, pool in enumerate(pools):
        pool_values = {
            **values,
            "i": i,
            "backing": paths.pool_backing[pool.name],
            "size": format_size(pool.size),
            "lsa": paths.lsa[pool.name],
            "lsa_size": tpl["lsa_size"],
            "bus_nr": int(tpl["first_bus_nr"]) + i * int(tpl["bus_nr_step"]),
            "serial": pool.serial,
            "window": format_size(_round_up(pool.size, window_align)),
        }
        argv += _expand(tpl["pool"], pool_values)
        windows += _expand(tpl["window"], pool_values)
    argv += _one_machine_option(windows)
    if topology.network:
        if paths.vde_socket is None:
            raise UserError(f"host {host.name}: the topology has a network but no switch socket was given")
        argv += _expand(tpl["network"], {**values, "vde_socket": paths.vde_socket, "mac": mac_address(host)})
    return argv
