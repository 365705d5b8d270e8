"""The CLI contract on real QEMU (TCG): up, status, exec (exit codes, streams, cwd, env,
--detach), logs, down after a QEMU was SIGKILLed, down idempotent, nothing left over."""

from __future__ import annotations

import os
import time

import pytest

from harness.cli import EMU, REPO, Emu, pool_files, qemu_available, running_under, wait_until
from harness.cli_scenarios import (  # noqa: F401 - collected here, against the QEMU `cluster` below
    test_exec_ctrl_c_stops_the_guest_command,
    test_exec_detach_returns_at_once_and_keeps_running,
    test_exec_exit_code_and_streams_pass_through,
    test_exec_timeout_gives_124,
    test_exec_unknown_host_is_one_line,
    test_name_is_required_with_two_runs,
    test_state_dir_is_private,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

TOPOLOGY = """\
name: {name}
pools:
  - {{name: pool0, size: 256M}}
  - {{name: pool1, size: 256M}}
hosts:
  - {{name: host0, pools: [pool0]}}
  - {{name: host1, pools: [pool0, pool1]}}
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = qemu_available()
    if reason:
        pytest.skip(reason)
    base = tmp_path_factory.mktemp("cli")
    name = f"e2e{os.getpid()}"
    topo = base / "topo.yaml"
    topo.write_text(TOPOLOGY.format(name=name))
    emu = Emu(base / "state", base)
    try:
        started = time.monotonic()
        result = emu("up", str(topo), "--accel", "auto")
        elapsed = time.monotonic() - started
        assert result.returncode == 0, result.stderr
        print(f"\nup of two hosts: {elapsed:.1f} s\n{result.stderr}")
        yield emu, name, result
    finally:
        emu.cleanup()
        assert running_under(str(emu.state)) == [], "processes outlived the test"
        assert pool_files(name) == [], "pool files left behind"
        assert emu.kernel_faults() == {}, "a guest kernel faulted"


def test_up_reports_progress_per_host(cluster):
    _, _, result = cluster
    for host in ("host0", "host1"):
        assert f"{host}: booting" in result.stderr
        assert f"{host}: ready in" in result.stderr
    # auto probes KVM once per machine boot (cached); where it does not work (nested, as on
    # the project's machines) it says why. The verdict `up` used is the cached one here.
    from emulator.backends.qemu.accel import choose_accel
    from emulator.paths import find_kernel

    accel, _ = choose_accel("auto", find_kernel())
    expected = "accel: kvm (KVM works" if accel == "kvm" else "accel: tcg, KVM not usable: "
    assert expected in result.stderr, result.stderr


def test_status_json_lists_hosts_and_pools(cluster):
    emu, name, _ = cluster
    data = emu.status()
    assert data["name"] == name
    hosts = {h["name"]: h for h in data["hosts"]}
    assert {h["state"] for h in hosts.values()} == {"ready"}
    assert hosts["host0"]["accel"] == data["accel"] in ("tcg", "kvm") and hosts["host0"]["pid"] > 0
    assert set(hosts["host0"]["pools"]) == {"pool0"}, "a host gets only the pools it attaches"
    assert set(hosts["host1"]["pools"]) == {"pool0", "pool1"}
    assert all(dev.startswith("/dev/dax") for h in hosts.values() for dev in h["pools"].values())
    for pool in data["pools"]:
        assert pool["kind"] in ("hugetlbfs", "shm") and os.path.exists(pool["backing"])
        assert pool["size"] == 256 << 20
    text = emu("status")
    assert text.returncode == 0 and "host1" in text.stdout and "BACKING" in text.stdout


def test_exec_runs_in_callers_cwd_with_notnets_env_and_venv(cluster):
    emu, _, _ = cluster
    result = emu("exec", "host1", "--", 'echo "$PWD $NOTNETS_HOST $NOTNETS_HOST_ID $NOTNETS_POOL_POOL1 $NOTNETS_X";'
                 "command -v python", env={"NOTNETS_X": "fwd"}, timeout=120)
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()[:2]
    cwd, host, host_id, dev, fwd = first.split()
    assert (cwd, host, host_id, fwd) == (str(emu.cwd), "host1", "1", "fwd")
    assert dev.startswith("/dev/dax")
    assert second == str(REPO / ".venv" / "bin" / "python")


def test_logs_prints_the_console(cluster):
    emu, _, _ = cluster
    result = emu("logs", "host0", timeout=30)
    assert result.returncode == 0 and "notnets-init:" in result.stdout


def test_console_attaches_and_ctrl_bracket_leaves(cluster):
    import pexpect

    emu, _, _ = cluster
    child = pexpect.spawn(EMU[0], EMU[1:] + ["console", "host0"], cwd=str(emu.cwd), env=emu.env, timeout=30)
    try:
        child.expect("Ctrl-] leaves")
        child.sendline("echo con$((40+2))sole")
        child.expect("con42sole")
        child.send("\x1d")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


def test_a_frozen_host_is_refused_at_once(cluster):
    """QEMU accepts an agent connection of a stopped VM and nothing ever answers: exec,
    exec --timeout and exec -d must say so at once, not wait for a thaw."""
    emu, _, _ = cluster
    assert emu("fault", "host0", "freeze", timeout=60).returncode == 0
    try:
        for args in (["exec", "host0", "--", "true"], ["exec", "--timeout", "3", "host0", "--", "true"],
                     ["exec", "-d", "host0", "--", "true"]):
            started = time.monotonic()
            result = emu(*args, timeout=60)
            assert result.returncode == 1 and "host0 is frozen" in result.stderr, result.stderr
            assert time.monotonic() - started < 15, f"{args} took {time.monotonic() - started:.1f} s"
    finally:
        assert emu("fault", "host0", "thaw", timeout=60).returncode == 0


def test_a_host_runs_the_current_version_of_a_file(cluster):
    """Code edited on this machine after `up` is what the next command in a host runs
    (the host root's 9p cache mode, qemu-configs: hostroot_cache)."""
    emu, _, _ = cluster
    module = emu.cwd / "edited_after_up.py"
    module.write_text("VERSION = 'first'\n")
    read = ["exec", "host1", "--", "python -c 'import edited_after_up as m; print(m.VERSION)'"]
    assert emu(*read, timeout=120).stdout == "first\n"
    module.write_text("VERSION = 'again'\n")  # same size, written in place
    assert emu(*read, timeout=120).stdout == "again\n"
    replacement = emu.cwd / "edited_after_up.py.new"
    replacement.write_text("VERSION = 'renamed over, longer'\n")
    os.replace(replacement, module)  # as editors and git do
    assert emu(*read, timeout=120).stdout == "renamed over, longer\n"


def test_the_console_shell_has_the_notnets_environment(cluster):
    import pexpect

    emu, _, _ = cluster
    child = pexpect.spawn(EMU[0], EMU[1:] + ["console", "host1"], cwd=str(emu.cwd), env=emu.env, timeout=30)
    try:
        child.expect("Ctrl-] leaves")
        child.sendline("echo host=$NOTNETS_HOST pool=${NOTNETS_POOL_POOL1:-none} end")
        child.expect(r"host=host1 pool=/dev/dax\S+ end")
        child.send("\x1d")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)


def test_exec_stdin_env_workdir_and_private_logs(cluster):
    emu, _, _ = cluster
    piped = emu("exec", "-i", "-e", "GREETING=hi", "-w", "/tmp", "host0", "--", "echo $GREETING $(pwd); cat",
                input="from stdin\n", timeout=60)
    assert (piped.returncode, piped.stdout) == (0, "hi /tmp\nfrom stdin\n"), piped.stderr
    started = emu("exec", "-d", "host0", "--", "echo detached", timeout=60)
    pid = int(started.stdout)
    assert wait_until(lambda: f"host0[{pid}] | detached" in emu("logs", "host0", timeout=30).stdout, 30)
    state = emu.status()["state_dir"]
    for log in [f"{state}/hosts/host0/agent.log"] + [str(p) for p in (emu.state.glob("*/hosts/host0/exec/*.log"))]:
        assert os.stat(log).st_mode & 0o777 == 0o600, log


def test_zy_a_killed_host_restarts_with_its_pools(cluster):
    """The backend seam's restart (used by `fault HOST restart`): same pools, ready again."""
    from emulator.backends.by_name import get_backend
    from emulator.progress import Progress
    from emulator.runs.state import resolve_run

    emu, name, _ = cluster
    mapped = "import mmap, os; m = mmap.mmap(os.open(os.environ['NOTNETS_POOL'], os.O_RDWR), 2 << 20); "
    marker = emu("exec", "host0", "--", f'python -c "{mapped}m[4096:4110] = b\'restart-marker\'"', timeout=60)
    assert marker.returncode == 0, marker.stderr
    run = resolve_run(name, emu.state)
    host = run.host("host1")
    backend = get_backend("qemu")
    backend.fault(run, host, "kill")
    assert backend.host_state(run, host) == "dead"
    backend.restart_host(run, host, Progress(quiet=True))
    data = emu.status()
    assert data["hosts"][1]["state"] == "ready" and set(data["hosts"][1]["pools"]) == {"pool0", "pool1"}
    seen = emu("exec", "host1", "--", f'python -c "{mapped}print(m[4096:4110].decode(), end=\'\')"', timeout=60)
    assert seen.stdout == "restart-marker", "the pool kept its content across the host's restart"


# Last: it brings the shared cluster down (tests run in the order they appear here).
from harness.cli_scenarios import test_zz_down_after_a_host_was_killed  # noqa: E402,F401
