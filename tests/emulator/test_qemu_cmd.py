"""The QEMU command builder follows DESIGN.md's checked recipe."""

from __future__ import annotations

import textwrap

import pytest

from emulator.backends.qemu.command import HostPaths, build_qemu_argv, load_template
from emulator.errors import UserError
from emulator.topology.model import parse_topology

THREE = textwrap.dedent("""\
    name: three
    pools:
      - {name: poolA, size: 256M}
      - {name: poolB, size: 512M, backing: shm}
    hosts:
      - {name: h0, pools: [poolA, poolB]}
      - {name: h1, pools: [poolA]}
      - {name: h2, cpus: 2, memory: 2G, pools: [poolB]}
    network: true
""")


def argv_for(text: str, host: str, accel: str = "tcg") -> list[str]:
    topo = parse_topology(text, "t.yaml", memory_probe=lambda: None)
    h = topo.host(host)
    backing = {p.name: f"/dev/shm/notnets-{topo.name}-{p.name}" for p in topo.pools}
    paths = HostPaths.in_state_dir("/state", h.name, "/k/vmlinuz", "/k/initrd", backing, h.pools, network=topo.network)
    return build_qemu_argv(topo, h, paths, accel=accel)


def values_of(argv: list[str], option: str) -> list[str]:
    return [argv[i + 1] for i, word in enumerate(argv[:-1]) if word == option]


def test_one_bridge_two_root_ports_and_a_type3_per_pool():
    argv = argv_for(THREE, "h0")
    devices = values_of(argv, "-device")
    bridges = [d for d in devices if d.startswith("pxb-cxl")]
    assert len(bridges) == 2
    assert "bus_nr=12" in bridges[0] and "bus_nr=28" in bridges[1]
    for i in range(2):
        ports = [d for d in devices if d.startswith("cxl-rp") and f"bus=cxl.{i}," in d]
        assert len(ports) == 2, "one root port makes QEMU 7.2 drop every write"
    type3 = [d for d in devices if d.startswith("cxl-type3")]
    assert len(type3) == 2 and all("sn=" in d and "lsa=" in d for d in type3)
    windows = [m for m in values_of(argv, "-M") if m.startswith("cxl-fmw")]
    # one -M for all windows: QEMU 7.2 refuses cxl-fmw.N split over several -M options
    assert windows == ["cxl-fmw.0.targets.0=cxl.0,cxl-fmw.0.size=4G,cxl-fmw.1.targets.0=cxl.1,cxl-fmw.1.size=4G"]


def test_pools_share_the_backing_file_but_not_the_label_file():
    objects0 = values_of(argv_for(THREE, "h0"), "-object")
    objects1 = values_of(argv_for(THREE, "h1"), "-object")
    mem0 = [o for o in objects0 if o.startswith("memory-backend-file,id=cxl-mem0")][0]
    mem1 = [o for o in objects1 if o.startswith("memory-backend-file,id=cxl-mem0")][0]
    assert "share=on" in mem0 and "mem-path=/dev/shm/notnets-three-poolA" in mem0 and mem0 == mem1
    lsa0 = [o for o in objects0 if "id=cxl-lsa0" in o][0]
    lsa1 = [o for o in objects1 if "id=cxl-lsa0" in o][0]
    assert "/state/hosts/h0/poolA.lsa" in lsa0 and "/state/hosts/h1/poolA.lsa" in lsa1


def test_a_host_gets_only_its_pools():
    argv = " ".join(argv_for(THREE, "h2"))
    assert "notnets-three-poolB" in argv and "notnets-three-poolA" not in argv
    assert "-smp 2" in argv and "-m 2G,maxmem=6G,slots=4" in argv


def test_serials_identify_pools_across_hosts():
    sn_h0 = [d for d in values_of(argv_for(THREE, "h0"), "-device") if d.startswith("cxl-type3")][1]
    sn_h2 = [d for d in values_of(argv_for(THREE, "h2"), "-device") if d.startswith("cxl-type3")][0]
    assert sn_h0.split("sn=")[1] == sn_h2.split("sn=")[1]


def test_machine_basics():
    argv = argv_for(THREE, "h1")
    assert argv[0] == "qemu-system-x86_64"
    assert "q35,cxl=on" in values_of(argv, "-M")
    assert "-nodefaults" in argv, "no default user-mode NIC with routes outside"
    assert values_of(argv, "-accel") == ["tcg"] and values_of(argv, "-cpu") == ["max"]
    virtfs = values_of(argv, "-virtfs")
    assert any("path=/," in v and "readonly=on" in v and "mount_tag=hostroot" in v for v in virtfs)
    assert any("mount_tag=notnets-state" in v and "path=/state," in v for v in virtfs)
    assert "notnets.host=h1 notnets.id=1" in values_of(argv, "-append")[0]
    assert any("qmp.sock" in c for c in values_of(argv, "-chardev"))


def test_network_nic_per_host():
    argv = argv_for(THREE, "h2")
    assert values_of(argv, "-netdev") == ["vde,id=net0,sock=/state/vde"]
    assert "virtio-net-pci,bus=pcie.0,netdev=net0,mac=52:54:00:4e:00:02" in values_of(argv, "-device")
    no_net = argv_for(THREE.replace("network: true", "network: false"), "h2")
    assert "-netdev" not in no_net


def test_kvm_accel_and_unknown_accel():
    argv = argv_for(THREE, "h0", accel="kvm")
    assert values_of(argv, "-accel") == ["kvm"] and values_of(argv, "-cpu") == ["host"]
    with pytest.raises(UserError, match="unknown accelerator"):
        argv_for(THREE, "h0", accel="hvf")


def test_template_is_data():
    tpl = load_template()
    assert {"base", "pool", "window", "agent_port", "network"} <= set(tpl)
