"""CLI scenarios that hold on both backends. Each takes a module-scoped ``cluster``
fixture, ``(emu, run name, up's result)``, which the importing test module defines:
tests/e2e/test_cli_lifecycle.py (QEMU) and tests/sim/test_sim_lifecycle.py (sim) import
these functions, so pytest collects them in each against its own cluster."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from harness.cli import EMU, pool_files, running_under, wait_until


def test_state_dir_is_private(cluster):
    emu, name, _ = cluster
    assert (emu.state / name).stat().st_mode & 0o777 == 0o700
    assert (emu.state / name / "run.json").stat().st_mode & 0o777 == 0o600


def test_exec_exit_code_and_streams_pass_through(cluster):
    emu, _, _ = cluster
    result = emu("exec", "host0", "--", "echo", "out;", "echo", "err", ">&2;", "exit", "3", timeout=120)
    assert result.returncode == 3, result.stderr
    assert result.stdout == "out\n"
    assert "err" in result.stderr


def test_exec_timeout_gives_124(cluster):
    emu, _, _ = cluster
    result = emu("exec", "--timeout", "2", "host0", "--", "sleep", "30", timeout=60)
    assert result.returncode == 124


def test_exec_detach_returns_at_once_and_keeps_running(cluster):
    emu, name, _ = cluster
    marker = emu.state / name / "detached.txt"
    started = time.monotonic()
    result = emu("exec", "--detach", "host0", "--", f"sleep 1; echo done > {marker}", timeout=60)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 15
    assert int(result.stdout.strip()) > 0
    assert wait_until(marker.exists, 60), "the detached command did not run"


def test_exec_ctrl_c_stops_the_guest_command(cluster):
    emu, _, _ = cluster
    proc = subprocess.Popen(EMU + ["exec", "host0", "--", "sleep 77"], cwd=emu.cwd, env=emu.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        def sleeping() -> bool:
            return emu("exec", "host0", "--", "pgrep -f '^sleep 77'", timeout=60).returncode == 0

        assert wait_until(sleeping, 60, step=0.5), "the command never started in the guest"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 130
        assert wait_until(lambda: not sleeping(), 30, step=0.5), "the guest command outlived Ctrl-C"
    finally:
        proc.kill()
        proc.wait()


def test_exec_unknown_host_is_one_line(cluster):
    emu, _, _ = cluster
    result = emu("exec", "nohost", "--", "true", timeout=30)
    assert result.returncode != 0 and "no host 'nohost'" in result.stderr and "Traceback" not in result.stderr


def test_name_is_required_with_two_runs(cluster):
    emu, name, _ = cluster
    other = emu.state / "other"
    other.mkdir()
    (other / "run.json").write_text('{"name": "other", "backend": "qemu", "state_dir": "%s"}' % other)
    try:
        result = emu("status", timeout=30)
        assert result.returncode != 0 and f"several runs are up: {name}, other" in result.stderr
    finally:
        (other / "run.json").unlink()


def test_zz_down_after_a_host_was_killed(cluster):
    """Import it last: it brings the shared cluster down."""
    emu, name, _ = cluster
    data = emu.status()
    victim = data["hosts"][1]["pid"]
    os.kill(victim, signal.SIGKILL)
    assert wait_until(lambda: emu.status()["hosts"][1]["state"] == "dead", 10)
    started = time.monotonic()
    result = emu("down", timeout=60)
    elapsed = time.monotonic() - started
    print(f"\ndown: {elapsed:.1f} s\n{result.stderr}")
    assert result.returncode == 0, result.stderr
    assert running_under(str(emu.state)) == []
    assert pool_files(name) == []
    again = emu("down", timeout=30)
    assert again.returncode == 0 and "nothing to do" in again.stderr
    assert emu("status", timeout=30).returncode != 0
