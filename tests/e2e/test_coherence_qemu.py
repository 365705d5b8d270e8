"""Two QEMU hosts on a pool with ``coherence: software``: the write-back rule's
instructions (CLWB/CLFLUSHOPT, fences) run on the guests' DAX devices under TCG, and every
call shape works between the hosts (tests/sim/coherence_peer.py against rpc.peer)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from harness.cli import Emu, pool_files, qemu_available, running_under, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

TESTS = Path(__file__).resolve().parents[1]
PEER = str(TESTS / "sim" / "coherence_peer.py")


QEMU_TOPOLOGY = """\
name: {name}
backend: qemu
pools:
  - {{name: pool0, size: 256M, backing: shm, coherence: software}}
hosts:
  - {{name: host0, pools: [pool0]}}
  - {{name: host1, pools: [pool0]}}
"""


def test_every_call_shape_between_qemu_hosts_on_a_software_coherence_pool(tmp_path):
    reason = qemu_available()
    if reason:
        pytest.skip(reason)
    name = f"ncq{os.getpid()}"
    topo = tmp_path / "topo.yaml"
    topo.write_text(QEMU_TOPOLOGY.format(name=name))
    emu = Emu(tmp_path / "state", tmp_path)
    try:
        result = emu("up", str(topo), timeout=400)
        assert result.returncode == 0, result.stderr
        kind = _exec(emu, "host1", "python -c \"from notnets_rpc import cxl; import os; "
                                   "print(cxl.map_pool(os.environ['NOTNETS_POOL']).kind, os.environ['NOTNETS_COHERENCE'])\"")
        assert kind.startswith("native {\"/dev/dax"), kind
        result = emu("exec", "--detach", "host0", "--", f"PYTHONPATH={TESTS} python -m rpc.peer serve \"$NOTNETS_POOL\" t",
                     timeout=120)
        assert result.returncode == 0, result.stderr
        log = Path(re.search(r"output in (\S+)", result.stderr).group(1))
        assert wait_until(lambda: "serving" in log.read_text(errors="replace"), 180), log.read_text(errors="replace")
        out = _exec(emu, "host1", f"PYTHONPATH={TESTS} python {PEER} t", timeout=600)
        assert [line.split()[0] for line in out.splitlines()] == ["ok"] * 8, out
        backing = emu.status()["pools"][0]["backing"]
        inspect = json.loads(emu("pool", "inspect", "--json", backing, timeout=60).stdout)
        assert inspect["coherence"] == {"formatted": "software", "model": None}
    finally:
        emu.cleanup()
        assert running_under(str(emu.state)) == [], "processes outlived the test"
        assert pool_files(name) == [], "pool files left behind"


def _exec(emu: Emu, host: str, command: str, timeout: float = 300) -> str:
    result = emu("exec", host, "--", command, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout
