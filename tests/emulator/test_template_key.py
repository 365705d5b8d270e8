"""The boot template's cache key and identity line, without QEMU (the e2e test restores hosts)."""

from __future__ import annotations

import dataclasses
import os
import socket
import time

import pytest

from emulator.backends.qemu import boot_template
from emulator.backends.qemu.command import load_template
from emulator.errors import UserError
from emulator.topology.model import parse_topology

TOPOLOGY = """\
name: t
backend: qemu
pools:
  - {name: pool0, size: 256M}
  - {name: pool1, size: 512M}
hosts:
  - {name: a, memory: 512M, pools: [pool0]}
  - {name: b, memory: 512M, pools: [pool0]}
  - {name: c, memory: 1G, pools: [pool0]}
  - {name: d, memory: 512M, pools: [pool1]}
  - {name: e, memory: 512M, cpus: 2, pools: [pool0]}
"""


@pytest.fixture
def images(tmp_path):
    kernel, initrd = tmp_path / "vmlinux", tmp_path / "initrd.cpio"
    kernel.write_bytes(b"k" * 64)
    initrd.write_bytes(b"i" * 64)
    return str(kernel), str(initrd)


def _key(topo, host, images, accel="tcg", template=None):
    return boot_template.template_key(boot_template.shape_argv(
        topo, topo.host(host), images[0], images[1], accel, template or load_template()))


def test_hosts_that_differ_only_in_name_and_id_share_a_template(images):
    topo = parse_topology(TOPOLOGY, memory_probe=lambda: None)
    assert _key(topo, "a", images) == _key(topo, "b", images)
    shape = boot_template.shape_argv(topo, topo.host("b"), images[0], images[1], "tcg", load_template())
    assert not any("b" == word or "notnets.host=b" in word for word in shape)
    assert "notnets.identity=port" in shape[shape.index("-append") + 1]


@pytest.mark.parametrize("other", ["c", "d", "e"])  # RAM, pool size, vCPUs
def test_a_different_machine_gets_its_own_template(images, other):
    topo = parse_topology(TOPOLOGY, memory_probe=lambda: None)
    assert _key(topo, "a", images) != _key(topo, other, images)


def test_the_key_changes_with_kernel_initramfs_accel_and_machine_template(images):
    topo = parse_topology(TOPOLOGY, memory_probe=lambda: None)
    before = _key(topo, "a", images)
    assert _key(topo, "a", images, accel="kvm") != before
    changed = dict(load_template(), lsa_size="2M")
    assert _key(topo, "a", images, template=changed) != before
    for path in images:  # a rebuilt file (new size or mtime) is another image
        stat = os.stat(path)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
        after = _key(topo, "a", images)
        assert after != before
        before = after
    assert _key(topo, "a", images) == before, "the same inputs give the same key"


def test_network_topologies_key_on_the_network_device(images):
    topo = parse_topology(TOPOLOGY, memory_probe=lambda: None)
    networked = dataclasses.replace(topo, network=True)
    assert _key(networked, "a", images) != _key(topo, "a", images)
    assert _key(networked, "a", images) == _key(networked, "b", images), "the MAC is the template's, not the host's"


def test_the_key_is_a_safe_file_name(images):
    topo = parse_topology(TOPOLOGY, memory_probe=lambda: None)
    key = _key(topo, "a", images)
    assert key.isalnum() and len(key) == 24
    assert boot_template.state_path(key).name == f"{key}.state"


def test_send_identity_writes_name_id_and_the_clock(tmp_path):
    path = str(tmp_path / "identity.sock")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen(1)
        client = boot_template.send_identity(path, "host7", 7)
        try:
            conn, _ = server.accept()
            with conn:
                name, host_id, clock = conn.recv(100).decode().split()
        finally:
            client.close()
    assert (name, host_id) == ("host7", "7") and abs(int(clock) - time.time()) < 5


def test_send_identity_gives_up_with_a_reason(tmp_path):
    with pytest.raises(boot_template.TemplateError, match="cannot write the identity"):
        boot_template.send_identity(str(tmp_path / "none.sock"), "h", 0, timeout=0.2)


@pytest.mark.parametrize("value, expected", [("1", True), ("0", False), ("off", False), (None, True)])
def test_enabled_reads_the_environment(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("NOTNETS_BOOT_TEMPLATE", raising=False)
    else:
        monkeypatch.setenv("NOTNETS_BOOT_TEMPLATE", value)
    assert boot_template.enabled() is expected


def test_enabled_refuses_other_values(monkeypatch):
    monkeypatch.setenv("NOTNETS_BOOT_TEMPLATE", "maybe")
    with pytest.raises(UserError, match="NOTNETS_BOOT_TEMPLATE"):
        boot_template.enabled()


def test_prune_keeps_the_most_recently_used(tmp_path, monkeypatch):
    monkeypatch.setenv("NOTNETS_CACHE", str(tmp_path))
    boot_template.template_dir().mkdir()
    for i in range(5):
        path = boot_template.state_path(f"k{i}")
        path.write_bytes(b"x")
        os.utime(path, (1000 + i, 1000 + i))
    os.utime(boot_template.state_path("k0"))  # used just now
    removed = boot_template.prune(2)
    assert sorted(p.name for p in removed) == ["k1.state", "k2.state", "k3.state"]
    assert sorted(p.name for p in boot_template.template_dir().glob("*.state")) == ["k0.state", "k4.state"]
