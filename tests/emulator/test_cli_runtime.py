"""CLI verbs of the runtime without VMs: nothing up, --name errors, one-line messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def emu(tmp_path, *args):
    env = {"PATH": "/usr/bin:/bin", "NOTNETS_STATE": str(tmp_path / "runs"), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "emulator.cli", *args], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=60)


def test_down_with_nothing_up_is_idempotent(tmp_path):
    for _ in range(2):
        result = emu(tmp_path, "down")
        assert result.returncode == 0 and "nothing to do" in result.stderr
    assert emu(tmp_path, "down", "--name", "ghost").returncode == 0


def test_status_and_exec_without_a_run_are_one_line_errors(tmp_path):
    for args in (["status"], ["exec", "host0", "--", "true"], ["logs", "host0"], ["console", "host0"]):
        result = emu(tmp_path, *args)
        assert result.returncode == 1, args
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert "no run is up" in result.stderr


def test_damaged_run_state_is_reported_not_crashed(tmp_path):
    run = tmp_path / "runs" / "broken"
    run.mkdir(parents=True)
    (run / "run.json").write_text("{")
    result = emu(tmp_path, "status")
    assert result.returncode == 1 and "damaged run state" in result.stderr and "Traceback" not in result.stderr
