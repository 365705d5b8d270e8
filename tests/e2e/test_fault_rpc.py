"""Fault injection on both backends, seen through RPC between two hosts: a survivor gets
UNAVAILABLE instead of hanging, a frozen server thawed in time completes its call, and a
killed host that is restarted serves again. The sim run takes seconds; the QEMU run
boots two VMs (e2e).

Every command goes through the CLI (`exec`, `fault`), so this is also the contract test
of `fault`; NOTNETS_STALE_MS (forwarded by `exec`) sets how long a stalled heartbeat is
tolerated.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from harness.cli import Emu, pool_files, qemu_available, running_under, wait_until

pytestmark = [pytest.mark.timeout(900)]

PEER = str(Path(__file__).resolve().parent / "fault_peer.py")
STALE_MS = "1500"
TOPOLOGY = """\
name: {name}
backend: {backend}
pools:
  - {{name: pool0, size: 256M, backing: shm}}
hosts:
  - {{name: host0, pools: [pool0]}}
  - {{name: host1, pools: [pool0]}}
"""


class Cluster:
    """A two-host run driven through the CLI; host0 serves, host1 calls."""

    def __init__(self, emu: Emu, backend: str) -> None:
        self.emu = emu
        self.backend = backend
        self.slow = 1 if backend == "sim" else 8  # Python in a TCG guest starts ~10x slower
        self.env = {"NOTNETS_STALE_MS": STALE_MS}

    def run(self, host: str, *words: str, timeout: float = 120) -> str:
        result = self.emu("exec", host, "--", *words, env=self.env, timeout=timeout)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def detach(self, host: str, *words: str, stale_ms: str = STALE_MS) -> Path:
        result = self.emu("exec", "--detach", host, "--", *words, env={"NOTNETS_STALE_MS": stale_ms}, timeout=120)
        assert result.returncode == 0, result.stderr
        return Path(re.search(r"output in (\S+)", result.stderr).group(1))

    def fault(self, host: str, action: str) -> None:
        result = self.emu("fault", host, action, timeout=300)
        assert result.returncode == 0, result.stderr

    def serve(self) -> None:
        self.server_log = self.detach("host0", "python", PEER, "serve", "echo")
        assert wait_until(lambda: "serving" in _text(self.server_log), 20 * self.slow), _text(self.server_log)

    def slow_call(self, seconds: str, stale_ms: str = STALE_MS) -> Path:
        """Start a Sleep call from host1; return its log once the server is in the handler."""
        handled = _text(self.server_log).count("in Sleep")
        log = self.detach("host1", "python", PEER, "slow", "echo", seconds, stale_ms=stale_ms)
        assert wait_until(lambda: _text(self.server_log).count("in Sleep") > handled, 20 * self.slow), _text(log)
        return log

    def call(self, timeout: float = 20) -> str:
        return self.run("host1", "python", PEER, "call", "echo", str(timeout)).strip().splitlines()[-1]


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _last(path: Path, prefix: tuple[str, ...]) -> str:
    lines = [line for line in _text(path).splitlines() if line.startswith(prefix)]
    return lines[-1] if lines else ""


@pytest.fixture(scope="module", params=["sim", pytest.param("qemu", marks=pytest.mark.e2e)])
def cluster(request, tmp_path_factory):
    backend = request.param
    if backend == "qemu":
        reason = qemu_available()
        if reason:
            pytest.skip(reason)
    base = tmp_path_factory.mktemp(f"fault-{backend}")
    name = f"fault{backend}{os.getpid()}"
    topo = base / "topo.yaml"
    topo.write_text(TOPOLOGY.format(name=name, backend=backend))
    emu = Emu(base / "state", base)
    try:
        result = emu("up", str(topo), timeout=400)
        assert result.returncode == 0, result.stderr
        cluster = Cluster(emu, backend)
        cluster.serve()
        assert cluster.call().startswith("ok"), "the pair works before any fault"
        yield cluster
    finally:
        emu.cleanup()
        assert running_under(str(emu.state)) == [], "processes outlived the test"
        assert pool_files(name) == [], "pool files left behind"
        if backend == "qemu":
            assert emu.kernel_faults() == {}, "a guest kernel faulted"


def test_frozen_server_thawed_in_time_completes_the_call(cluster):
    # "in time" = within the client's NOTNETS_STALE_MS; generous, as the CLI calls around
    # the freeze take their own time on a loaded machine
    log = cluster.slow_call("2", stale_ms="20000")
    cluster.fault("host0", "freeze")
    assert cluster.emu.status()["hosts"][0]["state"] == "paused"
    time.sleep(1.0)  # the fault's length (not a wait for an event): the handler's 2 s run out meanwhile
    cluster.fault("host0", "thaw")
    assert wait_until(lambda: _last(log, ("slept", "error")), 30 * cluster.slow), _text(log)
    assert _last(log, ("slept", "error")).startswith("slept"), _text(log)


def test_server_frozen_too_long_is_unavailable_not_a_hang(cluster):
    cluster.fault("host0", "freeze")
    try:
        started = time.monotonic()
        outcome = cluster.call(timeout=60)
        print(f"\n{cluster.backend}: a call to a frozen server ended in {time.monotonic() - started:.1f} s: {outcome}")
        assert outcome.startswith("error UNAVAILABLE"), outcome
    finally:
        cluster.fault("host0", "thaw")
    assert wait_until(lambda: cluster.call().startswith("ok"), 30 * cluster.slow), "a thawed server serves again"


def test_survivor_sees_unavailable_when_the_server_host_dies(cluster):
    log = cluster.slow_call("60")
    cluster.fault("host0", "kill")
    assert cluster.emu.status()["hosts"][0]["state"] == "dead"
    assert wait_until(lambda: _last(log, ("slept", "error")), 20 * cluster.slow), "the in-flight call hangs"
    assert _last(log, ("slept", "error")).startswith("error UNAVAILABLE"), _text(log)
    assert cluster.call().startswith("error UNAVAILABLE"), "a new call fails fast too"
    assert cluster.emu.status()["hosts"][1]["state"] == "ready", "the survivor is untouched"


def test_restarted_host_rejoins(cluster):
    if cluster.emu.status()["hosts"][0]["state"] != "dead":
        cluster.fault("host0", "kill")
    cluster.fault("host0", "restart")
    assert cluster.emu.status()["hosts"][0]["state"] == "ready"
    cluster.serve()
    assert wait_until(lambda: cluster.call().startswith("ok"), 30 * cluster.slow), "host1 cannot reach the new server"


def test_poison_the_pool_header_is_an_error_not_a_crash(cluster):
    # From inside a host, so that offset 0 is the pool's first byte on both backends (on
    # QEMU the backing file also holds the namespace labels: the devdax data starts MiBs in)
    # and the DAX-device path of `pool poison` is exercised on QEMU.
    out = cluster.run("host1", 'notnets-emu pool poison "$NOTNETS_POOL" --offset 0 --length 64 2>&1')
    assert "wrote 64 byte(s)" in out, out
    outcome = cluster.call()
    assert outcome.startswith("error "), f"a call over a poisoned pool must fail cleanly, got {outcome}"
