"""`status`: a run's hosts and pools, as a table for people or JSON for scripts."""

from __future__ import annotations

from typing import Any

from emulator.backends.base import Backend
from emulator.image.guest_config import guest_ip
from emulator.runs.state import HostState, RunState
from emulator.sizes import format_size


def status_data(run: RunState, backend: Backend) -> dict[str, Any]:
    """The stable, documented JSON shape of `status --json` (see docs/cli.md)."""
    return {
        "name": run.name,
        "backend": run.backend,
        "state_dir": run.state_dir,
        "source": run.source,
        "accel": run.accel,
        "accel_note": run.accel_note,
        "network": run.network,
        "hosts": [
            {
                "name": h.name,
                "id": h.index,
                "state": backend.host_state(run, h),
                "pid": h.pid,
                "accel": h.accel,
                "pools": dict(h.pools),
                "addresses": host_addresses(run, h),
                "console_log": h.console_log,
                "boot_seconds": h.boot_seconds,
                "boot_cpu_seconds": h.boot_cpu_seconds,
                "boot_template": h.template,  # QEMU: the saved guest it was restored from (None: a kernel boot)
            }
            for h in run.hosts
        ],
        "pools": [
            {"name": p.name, "size": p.size, "kind": p.kind, "backing": p.backing, "note": p.note,
             "coherence": p.coherence, "model_dir": p.model_dir}
            for p in run.pools
        ],
    }


def host_addresses(run: RunState, host: HostState) -> list[str]:
    """Where other hosts reach ``host`` over TCP: QEMU hosts on the run's network, and sim
    hosts on the run's bridge (isolation bridge), have 169.254.100.<id+1> (their names
    resolve in every host); sim hosts that share the machine's network (pidns, or no
    namespaces) are this machine's loopback; sim hosts with only a loopback of their own
    (netns), like QEMU hosts without ``network: true``: none."""
    if run.backend == "qemu":
        return [guest_ip(host.index)] if run.network else []
    if host.accel == "bridge":
        return [guest_ip(host.index)]
    return [] if host.accel == "netns" else ["127.0.0.1"]


def table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def status_text(data: dict[str, Any]) -> str:
    lines = [f"run {data['name']} ({data['backend']}"
             + (f", {data['accel']}" if data.get("accel") else "") + f")  state dir {data['state_dir']}"]
    hosts = [["HOST", "STATE", "PID", "ACCEL", "ADDRESSES", "POOLS"]]
    for h in data["hosts"]:
        pools = ", ".join(f"{name}={dev}" for name, dev in h["pools"].items()) or "-"
        hosts.append([h["name"], h["state"], str(h["pid"] or "-"), h["accel"] or "-",
                      ", ".join(h.get("addresses") or []) or "-", pools])
    lines += table(hosts)
    if data["pools"]:
        lines.append("")
        pools = [["POOL", "SIZE", "KIND", "BACKING", "COHERENCE", "NOTE"]]
        for p in data["pools"]:
            coherence = p.get("coherence") or "coherent"
            if coherence == "none":
                coherence = "none (model, views in %s)" % p.get("model_dir")
            pools.append([p["name"], format_size(p["size"]), p["kind"], p["backing"], coherence, p.get("note") or ""])
        lines += table(pools)
    return "\n".join(lines)
