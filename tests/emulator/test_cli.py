"""CLI contract: help for every verb, exit codes, one-line errors without tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from emulator import doctor
from emulator.cli import cli

REPO = Path(__file__).resolve().parents[2]
VERBS = ["up", "down", "status", "exec", "console", "logs", "run", "bench", "doctor", "pool", "fault", "ls", "ps",
         "cp"]


def notnets_emu(*args: str, cwd: Path = REPO, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "emulator.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


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


def test_dry_run_without_a_kernel_fails_like_up_would(tmp_path):
    result = notnets_emu("up", "--dry-run", str(REPO / "examples" / "two-hosts.yaml"), cwd=tmp_path,
                         env={"NOTNETS_KERNEL": str(tmp_path / "nonexistent")})
    assert result.returncode == 1 and "NOTNETS_KERNEL=" in result.stderr and "no such file" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_up_with_a_missing_kernel_fails_before_any_pool_is_made(tmp_path):
    topo = tmp_path / "t.yaml"
    topo.write_text("name: nokernel\npools: [{name: p, size: 256M, backing: shm}]\nhosts: [{name: a, pools: [p]}]\n")
    result = notnets_emu("up", str(topo), cwd=tmp_path, env={"NOTNETS_KERNEL": "/nonexistent",
                                                          "NOTNETS_STATE": str(tmp_path / "state")})
    assert result.returncode == 1 and "NOTNETS_KERNEL=/nonexistent: no such file" in result.stderr
    assert not Path("/dev/shm/notnets-nokernel-p").exists() and not (tmp_path / "state").exists()


def test_doctor_names_the_variable_and_the_checkout_not_a_bare_make_setup(tmp_path):
    result = notnets_emu("doctor", "--no-probe", cwd=tmp_path, env={"NOTNETS_KERNEL": "/nonexistent"})
    kernel = [line for line in result.stdout.splitlines() if "guest kernel" in line or "fix:" in line]
    assert any("fix NOTNETS_KERNEL and NOTNETS_KERNEL_MODULES" in line for line in kernel), result.stdout
    assert doctor.setup_hint() == "make setup" if Path.cwd().resolve() == REPO else True


def test_doctor_setup_hint_outside_the_checkout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert doctor.setup_hint() == f"make -C {REPO} setup"
    monkeypatch.chdir(REPO)
    assert doctor.setup_hint() == "make setup"


def test_doctor_reports_a_topology_typo_as_a_topology_problem(tmp_path):
    typo = tmp_path / "typo.yaml"
    typo.write_text("name: t\nhostz: []\n")
    check = doctor.check_memory(typo)
    assert check.name == "topology" and check.status == doctor.FAIL and "hostz" in check.detail


@pytest.mark.parametrize("args,fragment", [
    (["exec", "--bogus", "h1", "--", "true"], "No such option '--bogus'"),
    (["exec", "-e", "1X=2", "h1", "--", "env"], "'1X' is not a variable name"),
    (["exec", "-d", "-i", "h1", "--", "cat"], "-d and -i exclude each other"),
    (["exec", "--timeout", "0", "h1", "--", "true"], "must be more than 0 seconds"),
    (["logs", "--tail", "x"], "expected a number of lines or 'all'"),
    (["cp", "a", "b"], "no run is up"),
])
def test_bad_cli_input_is_one_line(tmp_path, args, fragment):
    result = notnets_emu(*args, cwd=tmp_path, env={"NOTNETS_STATE": str(tmp_path / "state")})
    assert result.returncode == 2 or (result.returncode == 1 and "no run is up" in fragment), result.stderr
    assert fragment in result.stderr and "Traceback" not in result.stderr


def test_exec_options_are_taken_before_the_host_not_as_the_host(tmp_path):
    """`exec -e A=1 -w /tmp h1 -- env`: the options are parsed, h1 is the host (no run: says so)."""
    result = notnets_emu("exec", "-e", "A=1", "-w", "/tmp", "-T", "h1", "--", "env", cwd=tmp_path,
                         env={"NOTNETS_STATE": str(tmp_path / "state")})
    assert result.returncode == 1 and "no run is up" in result.stderr and "'-e'" not in result.stderr
