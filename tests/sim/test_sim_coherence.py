"""Two sim hosts on a pool with ``coherence: none``: the non-coherent model end to end.

Through the CLI: a raw program's store reaches the other host only after write-back
and invalidate; every call shape, metadata, deadlines and cancellation work between the
hosts while each host's cache evicts lines at random; a killed server host restarts
with empty caches and serves again; the model sees no lost update; `status` and
`pool inspect` say which model runs the pool, and `down` removes the views.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from harness.cli import Emu, pool_files, running_under, wait_until

pytestmark = pytest.mark.timeout(600)

TESTS = Path(__file__).resolve().parents[1]
PEER = str(Path(__file__).resolve().parent / "coherence_peer.py")
TOPOLOGY = """\
name: {name}
backend: sim
pools:
  - {{name: pool0, size: 64M, backing: shm, coherence: none, evictions_per_s: {rate}, seed: 1}}
hosts:
  - {{name: host0, pools: [pool0]}}
  - {{name: host1, pools: [pool0]}}
"""
RAW = str(Path(__file__).resolve().parent / "cxl_raw.py")


def _up(tmp_path: Path, rate: int) -> tuple[Emu, str]:
    name = f"nc{rate}x{os.getpid()}"
    topo = tmp_path / "topo.yaml"
    topo.write_text(TOPOLOGY.format(name=name, rate=rate))
    emu = Emu(tmp_path / "state", tmp_path)
    result = emu("up", str(topo), timeout=120)
    assert result.returncode == 0, result.stderr
    return emu, name


def _down(emu: Emu, name: str, model_dir: str) -> None:
    emu.cleanup()
    assert running_under(str(emu.state)) == [], "processes outlived the test"
    assert pool_files(name) == [], "pool files left behind"
    assert not Path(model_dir).exists(), "the model's views outlived the run"


def _exec(emu: Emu, host: str, command: str, timeout: float = 120) -> str:
    result = emu("exec", host, "--", command, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_a_raw_store_crosses_hosts_only_after_write_back_and_invalidate(tmp_path):
    emu, name = _up(tmp_path, rate=0)  # no evictions: nothing moves but what the program moves
    pool = emu.status()["pools"][0]
    try:
        assert pool["coherence"] == "none" and pool["model_dir"], pool
        raw = f"python {RAW}"
        assert _exec(emu, "host0", raw + " write").strip() == "model b'hello'"
        assert _exec(emu, "host1", raw + " read").strip() == "model b'\\x00\\x00\\x00\\x00\\x00'", \
            "the other host saw a store that was never written back"
        assert _exec(emu, "host0", raw + " flush").strip() == "model b'hello'"
        assert _exec(emu, "host1", raw + " peek").strip() == "model b'\\x00\\x00\\x00\\x00\\x00'", \
            "host 1 reads its own stale copy until it invalidates"
        assert _exec(emu, "host1", raw + " read").strip() == "model b'hello'"
        status = emu("status", timeout=30).stdout
        assert "none (model, views in" in status, status
    finally:
        _down(emu, name, pool["model_dir"])


def test_every_call_shape_across_hosts_with_evictions_and_a_restarted_server(tmp_path):
    emu, name = _up(tmp_path, rate=2000)
    pool = emu.status()["pools"][0]
    serve = f"PYTHONPATH={TESTS} python -m rpc.peer serve \"$NOTNETS_POOL\" t"
    calls = f"PYTHONPATH={TESTS} python {PEER} t"

    def start_server() -> None:
        result = emu("exec", "--detach", "host0", "--", serve, timeout=60)
        assert result.returncode == 0, result.stderr
        log = Path(re.search(r"output in (\S+)", result.stderr).group(1))
        assert wait_until(lambda: "serving" in log.read_text(errors="replace"), 30), log.read_text(errors="replace")

    try:
        start_server()
        out = _exec(emu, "host1", calls, timeout=300)
        assert [line.split()[0] for line in out.splitlines()] == ["ok"] * 8, out
        inspect = json.loads(emu("pool", "inspect", "--json", pool["backing"], timeout=60).stdout)
        assert inspect["coherence"]["formatted"] == "software", "the first server formatted it for the rule"
        model = inspect["coherence"]["model"]
        assert model["hosts"] == [0, 1] and model["evictions_per_s"] == 2000 and model["view_of_host"] is None
        assert model["reports"] == 0, model["last_report"]

        for action in ("kill", "restart"):
            result = emu("fault", "host0", action, timeout=120)
            assert result.returncode == 0, result.stderr
        start_server()
        out = _exec(emu, "host1", calls, timeout=300)
        assert [line.split()[0] for line in out.splitlines()] == ["ok"] * 8, out
        text = emu("pool", "inspect", pool["backing"], timeout=60).stdout
        assert "non-coherent model in" in text and "0 lost-update report(s)" in text, text
    finally:
        _down(emu, name, pool["model_dir"])

