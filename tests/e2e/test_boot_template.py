"""Hosts restored from a boot template (emulator/backends/qemu/boot_template.py) on real
QEMU (TCG): each is its own host (name, id, RNG reseeded by vmgenid, clock), the pool
works between them, `fault restart` restores too, and a template that cannot be
restored costs one warning line and a kernel boot, not the run.

The templates live in a private cache (its kernel and images are the real cache's,
linked), so the first `up` here makes one and the cache of the other tests is untouched.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from harness.cli import Emu, pool_files, qemu_available, running_under

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

TOPOLOGY = """\
name: {name}
pools:
  - {{name: pool0, size: 256M}}
hosts:
  - {{name: host0, memory: 512M, pools: [pool0]}}
  - {{name: host1, memory: 512M, pools: [pool0]}}
"""
MAPPED = "import mmap, os; m = mmap.mmap(os.open(os.environ['NOTNETS_POOL'], os.O_RDWR), 2 << 20); "
RESEEDED = "crng reseeded due to virtual machine fork"  # Linux's vmgenid notice


def _private_cache(base: Path) -> Path:
    from emulator.paths import cache_dir

    cache = base / "cache"
    cache.mkdir()
    for entry in cache_dir().iterdir():
        if entry.name != "boot-templates":
            (cache / entry.name).symlink_to(entry.resolve())
    return cache


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = qemu_available()
    if reason:
        pytest.skip(reason)
    base = tmp_path_factory.mktemp("tpl")
    name = f"tpl{os.getpid()}"
    topo = base / "topo.yaml"
    topo.write_text(TOPOLOGY.format(name=name))
    emu = Emu(base / "state", base)
    cache = _private_cache(base)
    emu.env.update({"NOTNETS_CACHE": str(cache), "NOTNETS_BOOT_TEMPLATE": "1"})
    try:
        result = emu("up", str(topo), "--accel", "tcg")
        assert result.returncode == 0, result.stderr
        print(f"\n{result.stderr}")
        yield emu, name, topo, cache, result
    finally:
        emu.cleanup()
        assert running_under(str(emu.state)) == [], "processes outlived the test"
        assert running_under("nn-tpl-") == [], "a template VM outlived the test"
        assert pool_files(name) == [], "pool files left behind"
        assert emu.kernel_faults() == {}, "a guest kernel faulted"


def _sh(emu: Emu, host: str, command: str) -> str:
    result = emu("exec", host, "--", command, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_up_makes_one_template_and_restores_every_host_from_it(cluster):
    emu, _, _, cache, result = cluster
    assert result.stderr.count("making the boot template") == 1, result.stderr
    for host in ("host0", "host1"):
        assert f"{host}: booting from the boot template" in result.stderr, result.stderr
    assert "warning" not in result.stderr
    assert len(list((cache / "boot-templates").glob("*.state"))) == 1
    assert {h["boot_template"] is not None for h in emu.status()["hosts"]} == {True}


def test_each_restored_host_is_itself(cluster):
    emu, _, _, _, _ = cluster
    seen = {}
    for index, host in enumerate(("host0", "host1")):
        out = _sh(emu, host, "hostname; echo $NOTNETS_HOST_ID; date +%s; cat /proc/sys/kernel/random/boot_id; "
                             "head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; dmesg").splitlines()
        name, host_id, clock, boot_id, random = out[:5]
        assert (name, host_id) == (host, str(index))
        assert abs(int(clock) - time.time()) < 60, "the guest's clock is the host's, not the template's"
        assert any(RESEEDED in line for line in out[5:]), "vmgenid reseeded the guest's RNG after the restore"
        seen[host] = (boot_id, random)
    assert seen["host0"][0] != seen["host1"][0] and seen["host0"][1] != seen["host1"][1]


def test_the_pool_works_between_restored_hosts(cluster):
    emu, _, _, _, _ = cluster
    token = os.urandom(8).hex()
    _sh(emu, "host0", f'python -c "{MAPPED}m[8192:8208] = b\'{token}\'"')
    assert _sh(emu, "host1", f'python -c "{MAPPED}print(m[8192:8208].decode(), end=\'\')"') == token


def test_fault_restart_restores_from_the_template(cluster):
    emu, _, _, _, _ = cluster
    assert emu("fault", "host1", "kill").returncode == 0
    result = emu("fault", "host1", "restart")
    assert result.returncode == 0, result.stderr
    assert "host1: booting from the boot template" in result.stderr, result.stderr
    assert _sh(emu, "host1", "hostname").strip() == "host1"


def test_zz_a_template_that_cannot_be_restored_falls_back_to_a_kernel_boot(cluster):
    """Last: it replaces the cluster with a run restored from a damaged template."""
    emu, name, topo, cache, _ = cluster
    assert emu("down").returncode == 0
    (state,) = (cache / "boot-templates").glob("*.state")
    with open(state, "r+b") as f:  # the device state after the RAM: QEMU fails part-way through the load
        f.truncate(state.stat().st_size // 2)
    result = emu("up", str(topo), "--accel", "tcg")
    assert result.returncode == 0, result.stderr
    for host in ("host0", "host1"):
        lines = [line for line in result.stderr.splitlines() if line.startswith(f"{host}: warning")]
        assert len(lines) == 1 and "restore from the boot template failed" in lines[0], result.stderr
        assert f"{host}: booting (tcg" in result.stderr
        assert _sh(emu, host, "hostname").strip() == host
    assert not state.exists(), "the damaged template is removed, so the next `up` makes a new one"
    assert {h["boot_template"] for h in emu.status()["hosts"]} == {None}
