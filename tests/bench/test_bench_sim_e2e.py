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

import pytest

from harness.cli import Emu, pool_files, running_under

REPO = Path(__file__).resolve().parents[2]



def _sim_missing() -> str | None:
    try:
        from emulator.backends.sim.backend import SimBackend  # noqa: F401
    except ImportError:
        return "the sim backend is not built"
    return None


@pytest.mark.e2e
@pytest.mark.timeout(420)
@pytest.mark.skipif(_sim_missing() is not None, reason=str(_sim_missing()))
def test_quick_bench_on_sim(tmp_path: Path):
    name = f"bench{os.getpid()}"
    out = tmp_path / "out"
    emu = Emu(tmp_path / "state", REPO)
    try:
        result = emu("bench", "--backend", "sim", "--quick", "--calls", "30", "--seconds", "0.2",
                     "--sizes", "64,64K", "--out", str(out), env={"NOTNETS_BENCH_RUN": name}, timeout=360)
        assert result.returncode == 0, result.stderr[-3000:]
    finally:
        emu.cleanup()
    assert running_under(str(emu.state)) == [], "processes outlived the bench"
    assert pool_files(name) == [], "pool files left behind"

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


def test_bench_bad_option_is_one_line(tmp_path: Path):
    done = subprocess.run([sys.executable, "-m", "emulator.cli", "bench", "--sizes", "64,lots"],
                          capture_output=True, text=True, cwd=REPO, timeout=60,
                          env={**os.environ, "NOTNETS_STATE": str(tmp_path)})
    assert done.returncode == 1
    assert done.stderr.strip() == "notnets-emu: error: --sizes: expected a size like 256M or 1G, got 'lots'"
