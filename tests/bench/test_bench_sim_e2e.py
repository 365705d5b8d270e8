"""`notnets-emu bench --backend sim --quick` end to end, with a tiny call count: the
numbers are not checked (no timed assertions), only that every point of both
transports and both workloads lands in results.json, the plots exist, and nothing
outlives the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.cli import Emu, pool_files, run_namespaces, running_under

REPO = Path(__file__).resolve().parents[2]



def _sim_missing() -> str | None:
    try:
        from emulator.backends.sim.backend import SimBackend  # noqa: F401
    except ImportError:
        return "the sim backend is not built"
    return None


def quick_sim_bench(tmp_path: Path, name: str, *args: str, timeout: float) -> tuple[Any, Path]:
    """`bench --backend sim --quick ARGS` under its own run name; (result, out dir), once
    it has succeeded and left no process and no pool file behind."""
    out = tmp_path / "out"
    emu = Emu(tmp_path / "state", REPO)
    try:
        result = emu("bench", "--backend", "sim", "--quick", *args, "--out", str(out),
                     env={"NOTNETS_BENCH_RUN": name}, timeout=timeout)
        assert result.returncode == 0, result.stderr[-3000:]
    finally:
        emu.cleanup()
    assert running_under(str(emu.state)) == [], "processes outlived the bench"
    assert pool_files(name) == [], "pool files left behind"
    assert run_namespaces(name) == [], "network namespaces left behind"
    return result, out


@pytest.mark.e2e
@pytest.mark.timeout(420)
@pytest.mark.skipif(_sim_missing() is not None, reason=str(_sim_missing()))
def test_quick_bench_on_sim(tmp_path: Path):
    result, out = quick_sim_bench(tmp_path, f"bench{os.getpid()}", "--calls", "30", "--seconds", "0.2",
                                  "--sizes", "64,64K", timeout=360)

    data = json.loads((out / "results.json").read_text())
    rows = data["rows"]
    echo = {(r["transport"], r["shape"], r["size"]) for r in rows if r["workload"] == "echo"}
    assert echo == {(t, s, n) for t in ("grpc-tcp", "notnets") for s in ("unary", "stream") for n in (64, 65536)}
    chain = [r for r in rows if r["workload"] == "chain"]
    assert {(r["transport"], r["depth"]) for r in chain} == {(t, d) for t in ("grpc-tcp", "notnets") for d in (1, 2, 3)}
    deepest = next(r for r in chain if r["depth"] == 3)
    assert deepest["served_by"] == ["frontend@host1", "catalog@host2", "inventory@host0"]
    assert all(r["backend"] == "sim" and 0 < r["calls"] <= 30 and r["p50_us"] > 0 for r in rows)
    assert data["meta"]["backend"] == "sim" and data["meta"]["load_before"]
    for kind in ("latency", "throughput", "chain"):
        assert (out / f"sim-{kind}.png").read_bytes()[:4] == b"\x89PNG"
    assert "sim unary 64 B" in result.stdout and "x = gRPC / NotNets" in result.stdout
    assert "echo notnets unary 64 B: p50" in result.stderr  # progress while it runs


@pytest.mark.e2e
@pytest.mark.timeout(300)
@pytest.mark.skipif(_sim_missing() is not None, reason=str(_sim_missing()))
def test_mesh_on_sim(tmp_path: Path):
    """Every host of bench.yaml calls every other at once, over both transports."""
    result, out = quick_sim_bench(tmp_path, f"mesh{os.getpid()}", "--workloads", "mesh", "--seconds", "0.3",
                                  timeout=240)
    rows = json.loads((out / "results.json").read_text())["rows"]
    hosts = ("host0", "host1", "host2")
    for transport in ("grpc-tcp", "notnets"):
        pairs = {(r["client"], r["server"]): r for r in rows if r["transport"] == transport and r["shape"] == "pair"}
        assert set(pairs) == {(c, s) for c in hosts for s in hosts if c != s}
        assert all(r["calls"] > 0 and r["p50_us"] > 0 and r["size"] == 64 for r in pairs.values())
        mesh = [r for r in rows if r["transport"] == transport and r["shape"] == "mesh"]
        assert len(mesh) == 1 and mesh[0]["hosts"] == 3 and mesh[0]["pairs"] == 6
        assert mesh[0]["calls"] == sum(r["calls"] for r in pairs.values()) and mesh[0]["rps"] > 0
    assert (out / "sim-mesh.png").read_bytes()[:4] == b"\x89PNG"
    assert "sim mesh 3 hosts 64 B" in result.stdout


def test_bench_bad_option_is_one_line(tmp_path: Path):
    done = subprocess.run([sys.executable, "-m", "emulator.cli", "bench", "--sizes", "64,lots"],
                          capture_output=True, text=True, cwd=REPO, timeout=60,
                          env={**os.environ, "NOTNETS_STATE": str(tmp_path)})
    assert done.returncode == 1
    assert done.stderr.strip() == "notnets-emu: error: --sizes: expected a size like 256M, 256Mi or 256MiB, got 'lots'"
