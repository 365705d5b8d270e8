"""The CLI contract on the sim backend: the QEMU end-to-end scenarios that apply to a process
tree (tests/harness/cli_scenarios.py, run here against a sim cluster), and
what is particular to sim hosts: fast up, namespaces, files as pools, everything ends at down."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from harness.cli import EMU, Emu, pool_files, running_under, wait_until
from harness.cli_scenarios import (  # noqa: F401 - collected here, against the sim `cluster` below
    test_exec_ctrl_c_stops_the_guest_command,
    test_exec_detach_returns_at_once_and_keeps_running,
    test_exec_exit_code_and_streams_pass_through,
    test_exec_timeout_gives_124,
    test_exec_unknown_host_is_one_line,
    test_name_is_required_with_two_runs,
    test_state_dir_is_private,
)

pytestmark = [pytest.mark.timeout(120)]

TOPOLOGY = """\
name: {name}
backend: sim
pools:
  - {{name: pool0, size: 16M}}
  - {{name: pool1, size: 8M, backing: shm, latency_ns: 300}}
hosts:
  - {{name: host0, pools: [pool0]}}
  - {{name: host1, pools: [pool0, pool1]}}
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    base = tmp_path_factory.mktemp("sim")
    name = f"csim{os.getpid()}"  # sorts before "other" (test_name_is_required_with_two_runs)
    topo = base / "topo.yaml"
    topo.write_text(TOPOLOGY.format(name=name))
    emu = Emu(base / "state", base)
    try:
        started = time.monotonic()
        result = emu("up", str(topo), timeout=60)
        elapsed = time.monotonic() - started
        assert result.returncode == 0, result.stderr
        print(f"\nup of two sim hosts (CLI process included): {elapsed:.2f} s\n{result.stderr}")
        yield emu, name, result
    finally:
        emu.cleanup()
        assert running_under(str(emu.state)) == [], "processes outlived the test"
        assert pool_files(name) == [], "pool files left behind"


def _isolated() -> bool:
    return os.geteuid() == 0 and os.environ.get("NOTNETS_SIM_ISOLATION") != "none"


def test_status_shows_files_as_pools_and_the_isolation(cluster):
    emu, name, result = cluster
    data = emu.status()
    assert data["backend"] == "sim" and data["accel"] in ("netns", "none")
    assert "sim: " in data["accel_note"] and data["accel_note"] in result.stderr
    hosts = {h["name"]: h for h in data["hosts"]}
    assert {h["state"] for h in hosts.values()} == {"ready"}
    backing = {p["name"]: p["backing"] for p in data["pools"]}
    assert hosts["host0"]["pools"] == {"pool0": backing["pool0"]}
    assert hosts["host1"]["pools"] == {"pool0": backing["pool0"], "pool1": backing["pool1"]}
    assert all(os.path.isfile(path) for path in backing.values())
    for host in ("host0", "host1"):
        assert f"{host}: ready in" in result.stderr


def test_exec_env_names_the_pool_files_and_the_model(cluster):
    emu, _, _ = cluster
    data = emu.status()
    backing = {p["name"]: p["backing"] for p in data["pools"]}
    result = emu("exec", "host1", "--", 'echo "$PWD|$NOTNETS_HOST_ID|$NOTNETS_POOL|$NOTNETS_POOL_POOL1|$NOTNETS_X"; '
                 'echo "$NOTNETS_FARMEM"', env={"NOTNETS_X": "fwd"}, timeout=30)
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()
    assert first.split("|") == [str(emu.cwd), "1", backing["pool0"], backing["pool1"], "fwd"]
    assert json.loads(second) == {backing["pool1"]: {"latency_ns": 300.0}}, "only pool1 sets a model"


def test_pool_is_shared_between_hosts(cluster):
    emu, _, _ = cluster
    write = emu("exec", "host0", "--", "python", "-c", "'import mmap,os; f=open(os.environ[\"NOTNETS_POOL\"],\"r+b\");"
                " m=mmap.mmap(f.fileno(),4096); m[100:105]=b\"hello\"'", timeout=30)
    assert write.returncode == 0, write.stderr
    read = emu("exec", "host1", "--", "python", "-c", "'import mmap,os; f=open(os.environ[\"NOTNETS_POOL\"],\"rb\");"
               " m=mmap.mmap(f.fileno(),4096,prot=mmap.PROT_READ); print(m[100:105].decode())'", timeout=30)
    assert read.stdout.strip() == "hello", read.stderr


def test_only_loopback_in_each_host(cluster):
    if not _isolated():
        pytest.skip("needs root for network namespaces")
    emu, _, _ = cluster
    result = emu("exec", "host0", "--", "cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '; "
                 "python -c 'import socket; s=socket.socket(); s.bind((\"127.0.0.1\", 0)); print(\"lo-ok\")'",
                 timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["lo", "lo-ok"], "a sim host sees no interface but its loopback"


def test_each_host_has_its_own_pid_namespace(cluster):
    if not _isolated():
        pytest.skip("needs root for PID namespaces")
    emu, _, _ = cluster
    result = emu("exec", "host0", "--", "ps -e -o pid= -o args= | head -1", timeout=30)
    assert result.returncode == 0 and "guest.sim_host" in result.stdout and result.stdout.split()[0] == "1"


def test_console_is_refused_clearly(cluster):
    emu, _, _ = cluster
    result = emu("console", "host0", timeout=30)
    assert result.returncode == 1 and "has no console" in result.stderr and "Traceback" not in result.stderr


def test_logs_prints_the_agent_log(cluster):
    emu, _, _ = cluster
    result = emu("logs", "host0", timeout=30)
    assert result.returncode == 0 and "agent: ready" in result.stdout


def test_run_steps_on_sim(tmp_path):
    name = f"simrun{os.getpid()}"
    topo = tmp_path / "t.yaml"
    topo.write_text(
        f"name: {name}\nbackend: qemu\npools:\n  - {{name: pool0, size: 256M, backing: shm}}\n"
        "hosts:\n  - {name: host0, pools: [pool0]}\n  - {name: host1, pools: [pool0]}\n"
        "run:\n"
        "  - {on: host0, cmd: 'echo serving; sleep 60', background: true, wait_for: serving, timeout: 30}\n"
        "  - {on: host1, cmd: 'echo hello from $NOTNETS_HOST', timeout: 30}\n"
        "  - {on: host1, cmd: 'exit 7', timeout: 30}\n"
        "  - {on: host1, cmd: 'echo never', timeout: 30}\n")
    junit = tmp_path / "junit.xml"
    emu = Emu(tmp_path / "state", tmp_path)
    try:
        result = emu("run", str(topo), "--backend", "sim", "--junit", str(junit), timeout=60)
        assert result.returncode == 1, result.stderr
        assert "[host0] serving" in result.stdout and "[host1] hello from host1" in result.stdout
        assert "never" not in result.stdout and "exit code 7" in result.stderr
        assert junit.is_file()
        assert running_under(str(emu.state)) == [], "the background step outlived down"
        assert pool_files(name) == []
    finally:
        emu.cleanup()


@pytest.mark.parametrize("isolation", ["namespaces", "none"])
def test_down_ends_detached_commands_and_their_daemons(tmp_path, isolation):
    """With namespaces the PID namespace takes everything; as plain processes (no right to
    unshare) the host's processes are found by tree and environment."""
    name = f"simdown{os.getpid()}"
    topo = tmp_path / "t.yaml"
    topo.write_text(TOPOLOGY.format(name=name))
    emu = Emu(tmp_path / "state", tmp_path)
    try:
        env = {"NOTNETS_SIM_ISOLATION": "none"} if isolation == "none" else {}
        up = emu("up", str(topo), env=env, timeout=60)
        assert up.returncode == 0, up.stderr
        if isolation == "none":
            assert "hosts are plain processes" in up.stderr and emu.status()["accel"] == "none"
        marker = f"sleep 3{os.getpid() % 1000:03d}"
        result = emu("exec", "-d", "host1", "--", f"setsid {marker} & {marker}", timeout=30)
        assert result.returncode == 0, result.stderr
        assert emu("fault", "host0", "freeze", timeout=30).returncode == 0, "a frozen host must stop too"

        def sleeping() -> bool:
            return subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode == 0

        assert wait_until(sleeping, 10)
        down = emu("down", timeout=60)
        assert down.returncode == 0, down.stderr
        assert not sleeping(), "a detached command outlived down"
        assert running_under(str(emu.state)) == []
        assert pool_files(name) == []
    finally:
        subprocess.run(["pkill", "-KILL", "-f", f"sleep 3{os.getpid() % 1000:03d}"], capture_output=True)
        emu.cleanup()


def test_ctrl_c_during_exec_returns_130(cluster):
    emu, _, _ = cluster
    proc = subprocess.Popen(EMU + ["exec", "host1", "--", "sleep 55"], cwd=emu.cwd, env=emu.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert wait_until(lambda: emu("exec", "host1", "--", "pgrep -f '^sleep 55'", timeout=30).returncode == 0, 20)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 130
    finally:
        proc.kill()
        proc.wait()


# Last: it brings the shared cluster down (tests run in the order they appear here).
from harness.cli_scenarios import test_zz_down_after_a_host_was_killed  # noqa: E402,F401
