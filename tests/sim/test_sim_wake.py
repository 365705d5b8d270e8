"""Two sim hosts (one kernel, each in its own mount and PID namespace) wake each other
from futex sleeps on the shared pool file: a client on host1 sleeps on its ring head
and its server on host0 ends each sleep; the server's poller sleeps in the kernel and
the client's kick wakes it. A client that plays another kernel (NOTNETS_BOOT_ID) never
futexes its server, as a VM would not (docs/pool-layout.md, "Waking")."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from harness.cli import Emu, pool_files, running_under, wait_until

pytestmark = pytest.mark.timeout(300)

TESTS = Path(__file__).resolve().parents[1]
PEER = str(Path(__file__).resolve().parent / "wake_peer.py")
TOPOLOGY = """\
name: {name}
backend: sim
pools:
  - {{name: pool0, size: 64M, backing: hugetlbfs}}
hosts:
  - {{name: host0, pools: [pool0]}}
  - {{name: host1, pools: [pool0]}}
"""
# a client not woken sleeps 30 s at a time; a server not woken 10 x 3 s
SLOW = "NOTNETS_SPIN=0 NOTNETS_MAX_SLEEP_US=30000000"


def _exec(emu: Emu, host: str, command: str, timeout: float = 120) -> str:
    result = emu("exec", host, "--", command, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_sim_hosts_wake_each_other_and_another_kernel_is_never_woken(tmp_path):
    name = f"wake{os.getpid()}"
    topo = tmp_path / "topo.yaml"
    topo.write_text(TOPOLOGY.format(name=name))
    emu = Emu(tmp_path / "state", tmp_path)
    result = emu("up", str(topo), timeout=120)
    assert result.returncode == 0, result.stderr

    def serve(endpoint: str, env: str = "") -> None:
        command = f"{env} PYTHONPATH={TESTS} python -m rpc.peer serve \"$NOTNETS_POOL\" {endpoint}"
        result = emu("exec", "--detach", "host0", "--", command, timeout=60)
        assert result.returncode == 0, result.stderr
        log = Path(re.search(r"output in (\S+)", result.stderr).group(1))
        assert wait_until(lambda: "serving" in log.read_text(errors="replace"), 30), log.read_text(errors="replace")

    try:
        serve("w", "NOTNETS_IDLE_SLEEP_US=3000000")
        out = _exec(emu, "host1", f"{SLOW} PYTHONPATH={TESTS} python {PEER} w")
        lines = out.splitlines()
        assert lines[0] == "futex True", out
        waits, longest = re.fullmatch(r"client waits (\d+) longest (\S+)", lines[1]).groups()
        assert int(waits) >= 3 and float(longest) < 5, f"the server did not end the client's sleeps: {out}"
        kicked, took = re.fullmatch(r"server asleep kicked (\d+) call (\S+)", lines[2]).groups()
        assert int(kicked) >= 1 and float(took) < 5, f"the client did not wake the sleeping server: {out}"

        # a server of its own: one whose clients all wake it sleeps 30 s at a time (10 x its
        # idle sleep) and would notice a client that cannot kick it only then
        serve("w2")
        out = _exec(emu, "host1", f"NOTNETS_BOOT_ID=another-kernel NOTNETS_SPIN=0 PYTHONPATH={TESTS} python {PEER} w2")
        lines = out.splitlines()
        assert lines[0] == "futex False", out
        assert lines[1].startswith("client waits 0 "), f"a client on another kernel slept on a futex: {out}"
        assert lines[2].startswith("server asleep kicked 0 "), f"a client on another kernel kicked: {out}"
    finally:
        emu.cleanup()
        assert running_under(str(emu.state)) == [], "processes outlived the test"
        assert pool_files(name) == [], "pool files left behind"
