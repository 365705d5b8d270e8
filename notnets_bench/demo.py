"""`make demo`: two hosts, the greeter across them over the pool and over the network,
one line comparing the two latencies, and everything torn down again.

    python -m notnets_bench.demo [examples/two-hosts.yaml] [--backend sim|qemu] [--calls N]

The greeter server on host0 serves both transports at once (``notnets:greeter`` in the
shared pool and TCP on host0's address on the hosts' network); the greeter client on
host1 calls each in turn and prints its median, which is what the last line compares.
"""

from __future__ import annotations

import argparse
import re
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Optional

from emulator.errors import UserError
from emulator.paths import REPO_ROOT
from emulator.progress import Progress
from notnets_bench.hosts import HostRunner
from notnets_bench.workloads import grpc_address

DEFAULT_TOPOLOGY = REPO_ROOT / "examples" / "two-hosts.yaml"
SERVER, CLIENT = "host0", "host1"
MEDIAN_RE = re.compile(r"median (\d+) us")
SERVER_READY = r"greeter serving on .*?tcp (\S+)"


def _us(value: float) -> str:
    return f"{value / 1000:.1f} ms" if value >= 1000 else f"{value:.0f} us"


def comparison_line(notnets_us: float, grpc_us: float, calls: int, backend: str) -> str:
    """The demo's last line."""
    network = "the hosts' virtual network" if backend == "qemu" else "the hosts' veth bridge"
    ratio = grpc_us / notnets_us if notnets_us > 0 else float("inf")
    return (f"greeter {CLIENT} -> {SERVER} ({backend}, median of {calls} calls): NotNets {_us(notnets_us)}, "
            f"gRPC over {network} {_us(grpc_us)}: {ratio:.0f}x lower over the shared pool")


def greeter_median(runner: HostRunner, target: str, calls: int, progress: Progress) -> float:
    lines: list[str] = []
    command = f"python -m examples.greeter.client --target {shlex.quote(target)} --calls {calls}"
    code = runner.exec_lines(CLIENT, command, 180.0, lines.append,
                             lambda line: progress.say(line, host=CLIENT) if line.strip() else None)
    for line in lines:
        progress.say(line, host=CLIENT)
    match = next((m for m in map(MEDIAN_RE.search, lines) if m), None)
    if code != 0 or match is None:
        raise UserError(f"greeter client on {CLIENT} ({target}) failed with exit code {code}")
    return float(match.group(1))


def run_demo(topology_path: Path, backend: Optional[str], calls: int) -> str:
    from emulator.backends.by_name import get_backend
    from emulator.runs.lifecycle import bring_up, tear_down
    from emulator.topology.model import load_topology

    progress = Progress()
    topology = load_topology(topology_path)
    if backend:
        topology = topology.with_backend(backend)
    if not topology.network:
        raise UserError(f"{topology_path}: the demo compares against gRPC over the hosts' network: "
                        "it needs `network: true`")
    started = time.monotonic()
    progress.say(f"demo: booting {len(topology.hosts)} {topology.backend} hosts of {topology_path}...")
    run = bring_up(topology, accel="auto", progress=progress)
    try:
        runner = HostRunner(run, get_backend(run.backend))
        progress.say("demo: starting the greeter server (NotNets and TCP)...", host=SERVER)
        listen = f"{grpc_address(run, SERVER)}:0"
        server = runner.start(SERVER, f"python -m examples.greeter.server --port {listen}", SERVER_READY,
                              180.0, "greeter")
        try:
            progress.say(f"demo: greeter over the shared pool ({calls} calls)...", host=CLIENT)
            notnets_us = greeter_median(runner, "notnets:greeter", calls, progress)
            progress.say(f"demo: greeter over gRPC/TCP to {server.ready.group(1)} ({calls} calls)...", host=CLIENT)
            grpc_us = greeter_median(runner, server.ready.group(1), calls, progress)
        finally:
            runner.stop_all()
    finally:
        progress.say(f"run {run.name}: bringing it down")
        tear_down(run, keep_pools=False, progress=Progress(quiet=True))
    progress.say(f"demo: done in {time.monotonic() - started:.0f} s")
    return comparison_line(notnets_us, grpc_us, calls, topology.backend)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("topology", nargs="?", type=Path, default=DEFAULT_TOPOLOGY)
    parser.add_argument("--backend", choices=["qemu", "sim"], help="override the topology's backend")
    parser.add_argument("--calls", type=int, default=200, help="greeter calls per transport")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # a killed demo still tears down
    try:
        print(run_demo(args.topology, args.backend, max(2, args.calls)), flush=True)
    except UserError as err:
        print(f"demo: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("demo: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
