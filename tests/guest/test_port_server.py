"""Finding the agent's virtio-serial ports by name, and the wakeup counter."""

import threading
from pathlib import Path

from guest.port_server import Wakeup, find_ports


def test_ports_found_by_name_in_port_order(tmp_path: Path):
    sysfs, dev = tmp_path / "sys", tmp_path / "dev"
    dev.mkdir()
    for vport, name in (("vport2p3", "notnets.agent.2"), ("vport2p1", "notnets.agent.0"),
                        ("vport2p2", "notnets.agent.1"), ("vport2p9", "org.qemu.guest_agent.0"),
                        ("vport2p7", "notnets.agent.x")):
        (sysfs / vport).mkdir(parents=True)
        (sysfs / vport / "name").write_text(name + "\n")
        (dev / vport).touch()
    (sysfs / "vport2p5").mkdir()
    (sysfs / "vport2p5" / "name").write_text("notnets.agent.3\n")  # no device node yet
    assert find_ports(3, timeout=0, sysfs=str(sysfs), dev=str(dev)) == [
        str(dev / "vport2p1"), str(dev / "vport2p2"), str(dev / "vport2p3")]


def test_no_sysfs_no_ports(tmp_path: Path):
    assert find_ports(1, timeout=0, sysfs=str(tmp_path / "none"), dev=str(tmp_path)) == []


def test_wakeup_wakes_a_waiter():
    wakeup = Wakeup()
    since = wakeup.generation
    woke = threading.Event()

    def waiter():
        wakeup.wait_change(since, 30)
        woke.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    wakeup.bump()
    thread.join(30)
    assert woke.is_set() and wakeup.generation == since + 1
