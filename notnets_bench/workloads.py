"""The two workloads of `notnets-emu bench`, each run once per transport on an up run.

echo: the echo server (notnets_bench/echo) on host0, the benchmark client
(notnets_bench/client.py) on host1, every (shape, size) point in one client process.
chain: the shop (examples/chain) with its frontend on host1, catalog on host2 and
inventory on host0, and the load generator on host0, so that every hop crosses hosts.
mesh: every host of the topology runs an echo server and a client
(notnets_bench/mesh_client.py) that calls every other host in turn, all at once: the
aggregate calls/s of the mesh and each pair's latency (examples/mesh.yaml: 8 hosts).

Transports differ only in the targets: ``notnets:NAME`` in the shared pool, or
``ADDRESS:PORT`` where ADDRESS is the serving host's address on the hosts' network, as
`status` shows it (169.254.100.<id+1> between QEMU guests and between sim hosts on the
run's bridge; 127.0.0.1 where sim hosts share the machine's network). Servers bind port
0 and print the port they got, so concurrent runs never collide.
"""

from __future__ import annotations

import json
import shlex
import statistics
import threading
from dataclasses import dataclass
from typing import Callable, Optional

from emulator.errors import UserError
from emulator.progress import Progress
from emulator.runs.state import RunState
from emulator.runs.status_view import host_addresses
from emulator.topology.model import Topology
from notnets_bench.hosts import HostRunner
from notnets_bench.options import BenchOptions
from notnets_bench.results import human_size

SERVER_READY = r"serving on (?:tcp (\S+)|(notnets:\S+))"
SERVER_START_TIMEOUT = 180.0  # a server in a loaded TCG guest takes a while to import grpc
CLIENT_SLACK = 240.0  # seconds on top of the points' own budget before a client is killed
ECHO_SERVER, ECHO_CLIENT = "host0", "host1"
CHAIN_PLACEMENT = {"inventory": "host0", "catalog": "host2", "frontend": "host1"}
CHAIN_CLIENT = "host0"


def grpc_address(run: RunState, host: str) -> str:
    """Where a gRPC server in ``host`` listens: its address on the hosts' network."""
    return (host_addresses(run, run.host(host)) or ["127.0.0.1"])[0]


def listen_target(run: RunState, transport: str, host: str, name: str) -> str:
    return f"notnets:{name}" if transport == "notnets" else f"{grpc_address(run, host)}:0"


@dataclass
class Workload:
    """What both workloads need: the run, the options, and where rows and progress go."""

    topology: Topology
    runner: HostRunner
    options: BenchOptions
    progress: Progress
    on_row: Callable[[dict], None]

    def start_server(self, host: str, command: str, label: str) -> tuple[object, str]:
        """Start a server in ``host``; return it and the target clients should dial."""
        self.progress.say(f"starting {label}...", host=host)
        proc = self.runner.start(host, command, SERVER_READY, SERVER_START_TIMEOUT, label)
        return proc, proc.ready.group(1) or proc.ready.group(2)

    def client(self, host: str, command: str, timeout: float, label: str, make_row: Callable[[dict], dict],
               describe: Callable[[dict], str]) -> None:
        """Run a client whose stdout is JSON lines; each line becomes a row as it arrives."""
        errors: list[str] = []

        def on_stdout(line: str) -> None:
            try:
                data = json.loads(line)
            except ValueError:
                data = None
            if not isinstance(data, dict):
                if line.strip():
                    self.progress.say(f"{label}: {line}", host=host)
                return
            row = make_row(data)
            self.on_row(row)
            self.progress.say(f"{label} {describe(row)}: p50 {row['p50_us']:.1f} us, p99 {row['p99_us']:.1f} us, "
                              f"{row['rps']:.0f} rps, {row['calls']} calls")

        def on_stderr(line: str) -> None:
            if line.strip():
                errors.append(line.strip())
                self.progress.say(f"{label}: {line.strip()}", host=host)

        code = self.runner.exec_lines(host, command, timeout, on_stdout, on_stderr)
        if code != 0:
            last = next((e for e in reversed(errors) if "starting" not in e), "no message")
            why = f"timed out after {timeout:g} s" if code == 124 else f"exit code {code}"
            raise UserError(f"{label} client on {host} failed ({why}): {last}")


def run_echo(w: Workload, transport: str) -> None:
    """One round of echo over ``transport``; with several rounds each gets its share of
    the point's budget and the client prints its samples for pooling (bench_stats)."""
    budget = w.options.budget
    rounds = w.options.rounds
    calls, seconds = -(-budget.calls // rounds), budget.seconds / rounds
    min_calls = -(-budget.min_calls // rounds)
    server, target = w.start_server(
        ECHO_SERVER, f"python -m notnets_bench.echo.server --target {listen_target(w.runner.run, transport, ECHO_SERVER, 'echo')}",
        f"echo-{transport}")
    try:
        points = len(w.options.shapes) * len(budget.sizes)
        command = ("python -m notnets_bench.client "
                   f"--target {shlex.quote(target)} --shapes {','.join(w.options.shapes)} "
                   f"--sizes {','.join(str(s) for s in budget.sizes)} --calls {calls} "
                   f"--seconds {seconds:g} --min-calls {min_calls}" + (" --samples" if rounds > 1 else ""))
        w.progress.say(f"echo over {transport}: {points} points, {ECHO_CLIENT} -> {ECHO_SERVER} ({target})")
        w.client(ECHO_CLIENT, command, CLIENT_SLACK + points * (3 * seconds + 30), f"echo {transport}",
                 lambda data: {"workload": "echo", "transport": transport, "backend": w.topology.backend, **data},
                 lambda row: f"{row['shape']} {human_size(row['size'])}")
    finally:
        w.runner.stop(server)  # type: ignore[arg-type]


def run_chain(w: Workload, transport: str) -> None:
    budget = w.options.budget
    started = []
    try:
        downstream = None
        for role in ("inventory", "catalog", "frontend"):  # leaves first: each tier dials the next
            host = CHAIN_PLACEMENT[role]
            command = (f"python -m examples.chain.server --role {role} "
                       f"--listen {listen_target(w.runner.run, transport, host, role)}")
            if downstream:
                command += f" --downstream {shlex.quote(downstream)}"
            server, downstream = w.start_server(host, command, f"shop-{role}-{transport}")
            started.append(server)
        depths = budget.chain_depths
        command = (f"python -m examples.chain.client --target {shlex.quote(downstream or '')} "
                   f"--depths {','.join(map(str, depths))} --calls {budget.chain_calls} "
                   f"--seconds {budget.chain_seconds:g} --min-calls {budget.min_calls}")
        w.progress.say(f"shop chain over {transport}: client on {CHAIN_CLIENT} -> frontend on "
                       f"{CHAIN_PLACEMENT['frontend']} -> catalog on {CHAIN_PLACEMENT['catalog']} -> "
                       f"inventory on {CHAIN_PLACEMENT['inventory']}")
        w.client(CHAIN_CLIENT, command, CLIENT_SLACK + len(depths) * (3 * budget.chain_seconds + 30),
                 f"chain {transport}",
                 lambda data: {"workload": "chain", "transport": transport, "backend": w.topology.backend,
                               "shape": "chain", **data},
                 lambda row: f"depth {row['depth']} ({' -> '.join(row.get('served_by', []))})")
    finally:
        for server in reversed(started):
            w.runner.stop(server)  # type: ignore[arg-type]


def mesh_hosts(topology: Topology) -> list[str]:
    """Every host of the topology takes part in the mesh."""
    return [h.name for h in topology.hosts]


def run_mesh(w: Workload, transport: str) -> None:
    """All hosts call all others at once; one row per (client, server) pair and one for the mesh."""
    hosts = mesh_hosts(w.topology)
    size = min(w.options.budget.sizes)
    seconds = w.options.budget.mesh_seconds
    try:
        pair_rows, errors = _mesh_round(w, transport, hosts, size, seconds)
    finally:
        w.runner.stop_all()  # the mesh's servers (the other workloads stop their own)
    for row in sorted(pair_rows, key=lambda r: (r["client"], r["server"])):
        w.on_row(row)
    if errors:
        raise UserError("mesh: " + "; ".join(f"{h}: {e}" for h, e in sorted(errors.items())))
    total = mesh_row(pair_rows, len(hosts), size)
    if total is not None:
        total.update(transport=transport, backend=w.topology.backend)
        w.on_row(total)
        w.progress.say(f"mesh {transport}: {total['hosts']} hosts, {total['pairs']} pairs, {total['rps']:.0f} "
                       f"calls/s in all, pair p50 {total['p50_us']:.1f} us (median), {total['calls']} calls")


def _mesh_round(w: Workload, transport: str, hosts: list[str], size: int,
                seconds: float) -> tuple[list[dict], dict[str, str]]:
    """Start a server in every host, then every client at once; (pair rows, errors by host)."""
    spawned = [w.runner.spawn(host, "python -m notnets_bench.echo.server --target "
                              + listen_target(w.runner.run, transport, host, f"echo-{host}"), f"mesh-echo-{transport}")
               for host in hosts]
    w.progress.say(f"mesh over {transport}: starting {len(hosts)} echo servers...")
    targets = {}
    for host, proc in zip(hosts, spawned):
        ready = w.runner.wait_ready(proc, SERVER_READY, SERVER_START_TIMEOUT)
        targets[host] = ready.ready.group(1) or ready.ready.group(2)
    go_file = w.runner.log_dir / f"mesh-go-{transport}"
    go_file.unlink(missing_ok=True)
    lock = threading.Lock()
    ready_hosts: set[str] = set()
    pair_rows: list[dict] = []
    errors: dict[str, str] = {}

    def go() -> None:
        if not go_file.exists():
            go_file.write_text("go\n")
            w.progress.say(f"mesh over {transport}: {len(ready_hosts)} of {len(hosts)} clients ready, measuring "
                           f"{seconds:g} s")

    def one_client(host: str) -> None:
        def on_stdout(line: str) -> None:
            try:
                data = json.loads(line)
            except ValueError:
                data = None
            if isinstance(data, dict):
                with lock:
                    pair_rows.append({"workload": "mesh", "transport": transport, "backend": w.topology.backend,
                                      "shape": "pair", **data})

        def on_stderr(line: str) -> None:
            with lock:
                if line.strip() == "mesh-client: ready":
                    ready_hosts.add(host)
                    if len(ready_hosts) == len(hosts):
                        go()
                    return
                if line.startswith("mesh-client:"):
                    errors[host] = line.strip()
                if line.strip():
                    w.progress.say(f"mesh {transport}: {line.strip()}", host=host)

        others = ",".join(f"{h}={t}" for h, t in targets.items() if h != host)
        command = (f"python -m notnets_bench.mesh_client --me {host} --targets {shlex.quote(others)} "
                   f"--size {size} --seconds {seconds:g} --go-file {shlex.quote(str(go_file))}")
        try:
            code = w.runner.exec_lines(host, command, CLIENT_SLACK + 3 * seconds, on_stdout, on_stderr)
        except UserError as err:
            code, errors[host] = -1, str(err)
        with lock:
            if code != 0:
                errors.setdefault(host, f"exit code {code}")
            go()  # a client that ended early must not hold the others back

    threads = [threading.Thread(target=one_client, args=(host,), name=f"mesh-{host}") for host in hosts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return pair_rows, errors


def mesh_row(pair_rows: list[dict], hosts: int, size: int) -> Optional[dict]:
    """The whole mesh as one row: calls/s summed over clients (their windows overlap),
    p50 the median of the pairs' p50s, p99 the worst pair's p99."""
    if not pair_rows:
        return None
    per_client: dict[str, tuple[int, float]] = {}
    for r in pair_rows:
        calls, _ = per_client.get(r["client"], (0, r["elapsed_s"]))
        per_client[r["client"]] = (calls + r["calls"], r["elapsed_s"])
    rps = sum(calls / elapsed for calls, elapsed in per_client.values() if elapsed > 0)
    return {"workload": "mesh", "shape": "mesh", "size": size, "hosts": hosts, "pairs": len(pair_rows),
            "calls": sum(r["calls"] for r in pair_rows), "rps": round(rps, 1), "mbps": round(rps * size / 1e6, 3),
            "p50_us": round(statistics.median(r["p50_us"] for r in pair_rows), 2),
            "p99_us": max(r["p99_us"] for r in pair_rows),
            "mean_us": round(statistics.fmean(r["mean_us"] for r in pair_rows), 2)}


WORKLOADS = {"echo": run_echo, "chain": run_chain, "mesh": run_mesh}
