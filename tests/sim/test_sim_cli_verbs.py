"""The compose-like verbs on sim hosts, as a user in another directory would use them:
up -p, ls/status/exec from anywhere, exec -e/-w/-i, exec -d with ps and logs, cp both
ways, $NOTNETS_ARTIFACTS kept by down, a frozen host refused at once, and `run` with
on: all, parallel steps, env, continue_on_error, --junit merging pytest's report,
--artifacts and --keep-up."""

from __future__ import annotations

import json
import os
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.cli import EMU, Emu, pool_files, running_under, wait_until

pytestmark = [pytest.mark.timeout(180)]

TOPOLOGY = """\
name: fromfile
backend: sim
pools:
  - {name: pool0, size: 16M}
hosts:
  - {name: h0, pools: [pool0]}
  - {name: h1, pools: [pool0]}
"""


def _user(base: Path, cwd: Path) -> Emu:
    """A CLI driver without NOTNETS_STATE: runs live under cwd/.notnets/runs, as for a user."""
    emu = Emu(base / "a" / ".notnets" / "runs", cwd)
    emu.env.pop("NOTNETS_STATE", None)
    return emu


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    base = tmp_path_factory.mktemp("verbs")
    (base / "a").mkdir()
    (base / "b").mkdir()
    (base / "a" / "t.yaml").write_text(TOPOLOGY)
    name = f"verbs{os.getpid()}"
    up_dir, other = _user(base, base / "a"), _user(base, base / "b")
    try:
        result = up_dir("up", "-p", name, "t.yaml", timeout=60)
        assert result.returncode == 0, result.stderr
        yield other, name, base
    finally:
        up_dir.cleanup()
        assert running_under(str(up_dir.state)) == [], "processes outlived the test"
        assert pool_files(name) == []


def test_ls_status_and_exec_from_another_directory(cluster):
    emu, name, base = cluster
    listing = emu("ls", "--json", timeout=30)
    assert listing.returncode == 0, listing.stderr
    rows = {r["name"]: r for r in json.loads(listing.stdout)}
    assert rows[name]["ready"] == 2 and rows[name]["state_dir"] == str(base / "a" / ".notnets" / "runs" / name)
    assert name in emu("ls", timeout=30).stdout
    assert emu.status()["name"] == name
    result = emu("exec", "h0", "--", "echo $NOTNETS_RUN; hostname", timeout=30)
    assert result.returncode == 0, result.stderr
    run_name, hostname = result.stdout.split()
    assert run_name == name
    if os.geteuid() == 0 and os.environ.get("NOTNETS_SIM_ISOLATION") != "none":
        assert hostname == "h0"  # its own UTS namespace, named like a VM


def test_exec_env_workdir_and_stdin(cluster):
    emu, _, base = cluster
    result = emu("exec", "-e", "FOO=1", "-e", "BAR", "-w", str(base), "h1", "--", "echo $FOO $BAR; pwd",
                 env={"BAR": "from-caller"}, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["1 from-caller", str(base)]
    piped = emu("exec", "-i", "h1", "--", "tr a-z A-Z", input="some data\n", timeout=30)
    assert (piped.returncode, piped.stdout) == (0, "SOME DATA\n")
    dropped = emu("exec", "h1", "--", "cat; echo end", input="some data\n", timeout=30)
    assert (dropped.returncode, dropped.stdout) == (0, "end\n")


def test_detached_command_in_ps_and_logs(cluster):
    emu, name, _ = cluster
    started = emu("exec", "-d", "h1", "--", "echo detached-out; exec sleep 60", timeout=30)
    assert started.returncode == 0, started.stderr
    pid = int(started.stdout)
    ps = emu("ps", "--json", timeout=30)
    assert ps.returncode == 0, ps.stderr
    row = [r for r in json.loads(ps.stdout) if r["pid"] == pid][0]
    assert row["host"] == "h1" and row["running"] and row["detached"] and row["log"].endswith(f"-{pid}.log")
    assert oct(os.stat(row["log"]).st_mode & 0o777) == "0o600"
    assert f"(detached) echo detached-out" in emu("ps", "h1", timeout=30).stdout
    assert wait_until(lambda: f"h1[{pid}] | detached-out" in emu("logs", timeout=30).stdout, 10)
    both = emu("logs", "h0", "h1", timeout=30).stdout
    assert any(line.startswith("h0 ") and "| " in line for line in both.splitlines())
    tail = emu("logs", "--tail", "1", "--no-log-prefix", "h1", timeout=30).stdout
    assert tail.splitlines()[-1] == "detached-out"
    follow = subprocess.Popen(EMU + ["logs", "-f", "h0"], cwd=emu.cwd, env=emu.env, stdout=subprocess.PIPE, text=True)
    try:
        later = emu("exec", "-d", "h0", "--", "echo late-line", timeout=30)
        line = ""
        deadline = time.monotonic() + 20
        while "late-line" not in line and time.monotonic() < deadline:
            line = follow.stdout.readline()
        assert f"h0[{int(later.stdout)}] | late-line" in line
    finally:
        follow.kill()
        follow.wait()
    assert emu("exec", "h1", "--", f"kill {pid}", timeout=30).returncode == 0


def test_cp_both_ways_files_and_directories(cluster):
    emu, _, base = cluster
    src = base / "b" / "in"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f.txt").write_text("payload\n")
    target = base / "guest-side"
    target.mkdir()
    put = emu("cp", "in", f"h0:{target}", timeout=60)
    assert put.returncode == 0, put.stderr
    assert emu("exec", "h0", "--", f"cat {target}/in/sub/f.txt", timeout=30).stdout == "payload\n"
    got = emu("cp", f"h0:{target}/in/sub/f.txt", "back.txt", timeout=60)
    assert got.returncode == 0 and (base / "b" / "back.txt").read_text() == "payload\n"
    missing = emu("cp", "h0:/nonexistent/file", "x", timeout=60)
    assert missing.returncode == 1 and "cp on h0:" in missing.stderr and "Traceback" not in missing.stderr
    both = emu("cp", "h0:/a", "h1:/b", timeout=30)
    assert both.returncode == 2 and "exactly one of SRC and DEST" in both.stderr


def test_a_frozen_host_is_refused_at_once(cluster):
    emu, _, _ = cluster
    assert emu("fault", "h0", "freeze", timeout=30).returncode == 0
    try:
        for args in (["exec", "h0", "--", "true"], ["exec", "--timeout", "3", "h0", "--", "true"],
                     ["exec", "-d", "h0", "--", "true"]):
            started = time.monotonic()
            result = emu(*args, timeout=30)
            assert result.returncode == 1 and "h0 is frozen" in result.stderr, result.stderr
            assert time.monotonic() - started < 10
    finally:
        assert emu("fault", "h0", "thaw", timeout=30).returncode == 0


def test_zz_down_keeps_artifacts_and_logs_then_says_no_run_is_up(cluster):
    emu, name, base = cluster
    assert emu("exec", "h0", "--", "echo kept > $NOTNETS_ARTIFACTS/a.txt", timeout=30).returncode == 0
    down = emu("down", timeout=60)
    assert down.returncode == 0 and "kept the hosts' artifacts" in down.stderr
    assert (base / "a" / ".notnets" / "runs" / name / "artifacts" / "h0" / "a.txt").read_text() == "kept\n"
    nothing = emu("logs", "h0", timeout=30)
    assert nothing.returncode == 1 and "no run is up" in nothing.stderr
    assert "no run is up" in emu("ls", timeout=30).stderr


def test_run_steps_on_all_parallel_junit_merge_artifacts(tmp_path):
    name = f"runv{os.getpid()}"
    (tmp_path / "suite").mkdir()
    (tmp_path / "suite" / "test_mini.py").write_text(
        "import os\n\ndef test_host_is_named():\n    assert os.environ['NOTNETS_HOST'] == 'h1'\n\n"
        "def test_mode():\n    assert os.environ['MODE'] == 'ci'\n")
    topo = tmp_path / "t.yaml"
    topo.write_text(
        f"name: {name}\nbackend: sim\npools:\n  - {{name: pool0, size: 16M}}\n"
        "hosts:\n  - {name: h0, pools: [pool0]}\n  - {name: h1, pools: [pool0]}\n  - {name: h2, pools: [pool0]}\n"
        "run:\n"
        "  - {on: all, cmd: 'echo up on $NOTNETS_HOST', timeout: 30}\n"
        "  - parallel:\n"
        "      - {on: h0, cmd: 'exit 3', continue_on_error: true, timeout: 30}\n"
        "      - {on: h1, cmd: 'python -m pytest -q -p no:cacheprovider --junitxml=$NOTNETS_ARTIFACTS/r.xml "
        "test_mini.py', workdir: suite, env: {MODE: ci}, timeout: 120}\n"
        "  - {on: [h1, h2], cmd: 'exit 5', timeout: 30}\n"
        "  - {on: h2, cmd: 'echo never', timeout: 30}\n")
    junit, artifacts = tmp_path / "junit.xml", tmp_path / "artifacts"
    emu = Emu(tmp_path / "state", tmp_path)
    try:
        result = emu("run", str(topo), "--junit", str(junit), "--artifacts", str(artifacts), timeout=150)
        assert result.returncode == 1, result.stderr
        for host in ("h0", "h1", "h2"):
            assert f"[{host}] up on {host}" in result.stdout
        assert "step 2.1 on h0: failed (exit code 3); continue_on_error" in result.stderr
        assert "step 4 on h2: skipped (step 3 on h1 failed)" in result.stderr
        assert "never" not in result.stdout
        assert (artifacts / "h1" / "r.xml").is_file()
        root = ET.parse(junit).getroot()
        names = [c.get("name") for c in root.iter("testcase")]
        assert "test_host_is_named" in names and "test_mode" in names
        assert root.get("failures") == "3" and root.get("skipped") == "1", ET.tostring(root)[:500]
        assert running_under(str(emu.state)) == [] and pool_files(name) == []
    finally:
        emu.cleanup()


def test_run_keep_up_leaves_a_failed_run_up(tmp_path):
    name = f"keep{os.getpid()}"
    topo = tmp_path / "t.yaml"
    topo.write_text(f"name: fromfile\nbackend: sim\npools:\n  - {{name: pool0, size: 16M}}\n"
                    "hosts:\n  - {name: h0, pools: [pool0]}\nrun:\n  - {on: h0, cmd: 'exit 1', timeout: 30}\n")
    emu = Emu(tmp_path / "state", tmp_path)
    try:
        result = emu("run", "--keep-up", "-p", name, str(topo), timeout=60)
        assert result.returncode == 1 and "kept up (--keep-up)" in result.stderr
        assert emu.status(name)["hosts"][0]["state"] == "ready"
        assert emu("down", "-p", name, timeout=60).returncode == 0
    finally:
        emu.cleanup()
