"""Measure how long guests take to become ready, phase by phase (a script, not a test).

    .venv/bin/python tests/guest/measure_boot.py [--hosts 2] [--runs 3] [--lsa 1M] [--bzimage]

Boots N hosts sharing one pool, directly with QEMU (as the e2e tests do), and prints
one JSON line per run: wall time to READY per host and the guest uptime at each
milestone of init.sh and the agent. Under TCG on a shared machine expect noise: compare
medians, and note the load average printed with each run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from guestlib_vms import Cluster  # noqa: E402

MILESTONES = ("init started", "boot modules loaded", "starting the agent", "late modules loaded")


def topology(hosts: int) -> str:
    lines = ["name: measure", "pools:", "  - {name: pool0, size: 256M, backing: shm}", "hosts:"]
    lines += [f"  - {{name: host{i}, pools: [pool0]}}" for i in range(hosts)]
    return "\n".join(lines) + "\n"


def phases(cluster: Cluster, host: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in cluster.console(host).splitlines():
        match = re.search(r"notnets-init: \[([\d.]+)\] (.*)", line)
        if match:
            for name in MILESTONES:
                if match.group(2).startswith(name):
                    out[name] = float(match.group(1))
    log = (cluster.host_dir(host) / "agent.log").read_text(errors="replace")
    for pattern, name in ((r"\[\s*([\d.]+)\] agent: host ", "agent running"),
                          (r"\[\s*([\d.]+)\] agent: \$ cxl create-region", "region created"),
                          (r"\[\s*([\d.]+)\] agent: \$ ndctl create-namespace", "namespace created"),
                          (r"\[\s*([\d.]+)\] agent: ready", "ready")):
        match = re.search(pattern, log)
        if match:
            out[name] = float(match.group(1))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--lsa", help="label area size per VM (default: the template's)")
    parser.add_argument("--bzimage", action="store_true", help="boot the compressed bzImage, not the PVH vmlinux")
    args = parser.parse_args()
    names = [f"host{i}" for i in range(args.hosts)]
    for run in range(args.runs):
        with Cluster(topology(args.hosts), lsa_size=args.lsa, pvh=not args.bzimage) as cluster:
            cluster.prepare()
            load = os.getloadavg()[0]
            cluster.start()
            with ThreadPoolExecutor(len(names)) as pool:
                ready = dict(zip(names, pool.map(lambda h: cluster.wait_ready(h, 300), names)))
            result = {
                "run": run, "hosts": args.hosts, "lsa": args.lsa or cluster.template["lsa_size"],
                "kernel": "bzImage" if args.bzimage else "pvh", "load_before": round(load, 2),
                "all_ready_wall": max(r["wall_seconds"] for r in ready.values()),
                "per_host": {h: {"wall": ready[h]["wall_seconds"], **phases(cluster, h)} for h in names},
            }
            print(json.dumps(result), flush=True)
        time.sleep(2)


if __name__ == "__main__":
    main()
