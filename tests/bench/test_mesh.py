"""The mesh workload's pure parts: its rows, its heat map, its client's targets and loop
(no hosts started; tests/bench/test_bench_sim_e2e.py runs it on sim hosts)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from notnets_bench.mesh_client import parse_targets, round_robin
from notnets_bench.plots import mesh_matrix, plot_all
from notnets_bench.results import pairs, ratio_table
from notnets_bench.workloads import mesh_row

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HOSTS = ["host0", "host1", "host2"]


def pair(transport, client, server, p50, calls=100, elapsed=2.0):
    return {"workload": "mesh", "transport": transport, "backend": "sim", "shape": "pair", "size": 64,
            "client": client, "server": server, "p50_us": p50, "p99_us": p50 * 3, "mean_us": p50 * 1.2,
            "calls": calls, "rps": calls / elapsed, "mbps": 0.0, "elapsed_s": elapsed}


def mesh_rows(transport, base):
    rows = [pair(transport, c, s, base * (1 + i), calls=int(100_000 / base)) for i, (c, s) in
            enumerate((c, s) for c in HOSTS for s in HOSTS if c != s)]
    total = mesh_row(rows, len(HOSTS), 64)
    assert total is not None
    return rows + [dict(total, transport=transport, backend="sim")]


def test_mesh_row_sums_the_clients_rates():
    rows = [pair("notnets", "host0", "host1", 10.0, calls=300, elapsed=2.0),
            pair("notnets", "host0", "host2", 30.0, calls=300, elapsed=2.0),
            pair("notnets", "host1", "host0", 20.0, calls=100, elapsed=1.0)]
    total = mesh_row(rows, 3, 64)
    assert total["rps"] == 600 / 2.0 + 100 / 1.0  # per client: its calls over its own window
    assert total["calls"] == 700 and total["pairs"] == 3 and total["hosts"] == 3
    assert total["p50_us"] == 20.0 and total["p99_us"] == 90.0  # median pair p50, worst pair p99
    assert mesh_row([], 3, 64) is None


def test_pairs_stay_out_of_the_ratio_table_and_the_mesh_is_one_line():
    rows = mesh_rows("grpc-tcp", 500.0) + mesh_rows("notnets", 10.0)
    matched = pairs(rows)
    assert len(matched) == 7  # six host pairs and the mesh, each matched across transports
    assert all(b["shape"] == n["shape"] and b.get("client") == n.get("client") and b.get("server") == n.get("server")
               for b, n in matched)
    table = ratio_table(rows)
    mesh_lines = [line for line in table.splitlines() if "mesh" in line]
    assert len(mesh_lines) == 1 and mesh_lines[0].startswith("sim mesh 3 hosts 64 B")
    assert mesh_lines[0].split()[-1] == "50.0x"  # aggregate calls/s, NotNets over gRPC
    assert "pair" not in table


def test_heat_map_grid_and_png(tmp_path: Path):
    rows = mesh_rows("notnets", 10.0)
    hosts, grid = mesh_matrix([r for r in rows if r["shape"] == "pair"])
    assert hosts == HOSTS
    assert all(math.isnan(grid[i][i]) for i in range(3))
    assert grid[0][1] == 10.0 and grid[2][1] == 60.0  # [client][server]
    written = plot_all(rows + mesh_rows("grpc-tcp", 500.0), tmp_path)
    assert [p.name for p in written] == ["sim-mesh.png"]
    assert written[0].read_bytes()[:8] == PNG_MAGIC


def test_parse_targets():
    assert parse_targets("host1=notnets:echo-host1,host2=127.0.0.1:5000") == {
        "host1": "notnets:echo-host1", "host2": "127.0.0.1:5000"}
    for bad in ("host1", "=notnets:x", "host1="):
        with pytest.raises(ValueError, match="HOST=TARGET"):
            parse_targets(bad)


def test_round_robin_calls_each_target_in_turn():
    order: list[int] = []
    calls = [lambda i=i: order.append(i) for i in range(3)]
    samples, elapsed = round_robin(calls, 0.01)
    assert elapsed >= 0.01
    assert len(samples[0]) == len(samples[1]) == len(samples[2]) >= 1  # whole rounds only
    assert order[:6] == [0, 1, 2, 0, 1, 2][:len(order[:6])]
