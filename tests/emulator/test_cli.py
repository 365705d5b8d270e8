"""CLI contract: help for every verb, exit codes, one-line errors without tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from emulator import doctor
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


def test_doctor_prints_a_table_and_its_exit_code_follows_it():
    result = notnets_emu("doctor", "--no-probe")
    for name in ("qemu", "guest kernel", "huge pages", "accelerator", "memory"):
        assert name in result.stdout
    failed = [line for line in result.stdout.splitlines() if line.startswith(doctor.FAIL)]
    assert result.returncode == (1 if failed else 0), result.stdout


@pytest.mark.parametrize("failing", [None, "check_qemu", "check_memory"])
def test_doctor_exits_1_exactly_when_a_check_fails(monkeypatch, failing):
    checks = ("check_qemu", "check_modules", "check_tools", "check_python_packages", "check_hugepages")
    for name in checks:
        monkeypatch.setattr(doctor, name, lambda *_, name=name: doctor.Check(name, doctor.OK, "fine"))
    monkeypatch.setattr(doctor, "check_kernel", lambda: (doctor.Check("kernel", doctor.OK, "fine"), None))
    monkeypatch.setattr(doctor, "check_accel", lambda *_: doctor.Check("accel", doctor.WARN, "TCG", "enable KVM"))
    monkeypatch.setattr(doctor, "check_memory", lambda *_: doctor.Check("memory", doctor.OK, "fine"))
    if failing:
        monkeypatch.setattr(doctor, failing, lambda *_: doctor.Check(failing, doctor.FAIL, "broken", "mend it"))
    lines: list[str] = []
    code = doctor.run_doctor(probe_kvm=False, echo=lines.append)
    assert code == (1 if failing else 0)
    assert lines[-1] == ("1 problem(s) to fix" if failing else "ready: every required prerequisite is present")
    assert any("fix: enable KVM" in line for line in lines), "a warning shows its fix too"
