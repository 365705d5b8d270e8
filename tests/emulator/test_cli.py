"""CLI contract: help for every verb, exit codes, one-line errors without tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from emulator.cli import cli

REPO = Path(__file__).resolve().parents[2]
VERBS = ["up", "down", "status", "exec", "console", "logs", "run", "bench", "doctor", "pool", "fault"]


def notnets_emu(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emulator.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=60)


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help(verb):
    result = notnets_emu(verb, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout
    assert cli.commands[verb].help


def test_dry_run_prints_a_command_per_host_and_starts_nothing(tmp_path):
    result = notnets_emu("up", "--dry-run", str(REPO / "examples" / "two-hosts.yaml"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("qemu-system-x86_64") == 2
    assert "# host0" in result.stdout and "# host1" in result.stdout
    assert "cxl-type3" in result.stdout
    assert not (tmp_path / ".notnets").exists(), "dry run writes no state"


def test_bad_topology_is_one_line_exit_2_no_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nhosts:\n  - name: h0\n    pools: [nope]\n")
    result = notnets_emu("up", "--dry-run", str(bad))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert f"{bad}:4: hosts[0].pools[0]: unknown pool 'nope'" in lines[0]


def test_missing_topology_file(tmp_path):
    result = notnets_emu("up", str(tmp_path / "missing.yaml"))
    assert result.returncode != 0 and "no such file" in result.stderr and "Traceback" not in result.stderr


def test_unknown_verb_is_a_usage_error():
    result = notnets_emu("frobnicate")
    assert result.returncode == 2 and "No such command" in result.stderr


def test_doctor_prints_a_table():
    result = notnets_emu("doctor", "--no-probe")
    assert result.returncode in (0, 1)
    for name in ("qemu", "guest kernel", "huge pages", "accelerator", "memory"):
        assert name in result.stdout
