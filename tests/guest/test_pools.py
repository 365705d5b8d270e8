"""Pool setup against a fake cxl/ndctl and a fake sysfs: serial matching, decoders, offsets."""

import json
import subprocess
from pathlib import Path

import pytest

from guest.pools import PoolMaker, PoolSetupError

MiB = 1 << 20


class FakeCxl:
    """Plays cxl and ndctl, and the sysfs they read, for a guest whose memdevs probe in an
    order unlike QEMU's."""

    def __init__(self, root: Path, memdevs: dict[int, str], reach: dict[str, str], appear_after: int = 0,
                 hints: bool = True):
        self.sysfs, self.dev = root / "sys", root / "dev"
        self.dev.mkdir(parents=True)
        (self.sysfs / "bus" / "nd" / "devices").mkdir(parents=True)
        self.cxl = self.sysfs / "bus" / "cxl" / "devices"
        (self.cxl / "root0").mkdir(parents=True)
        self.memdevs = memdevs  # serial -> memN
        self.reach = reach  # root decoder -> memdev it can reach
        self.appear_after = appear_after  # polls (sleeps) before the memdevs show in sysfs
        self.calls: list[list[str]] = []
        self.regions = 0
        self.fail_namespace = False
        bus = {m: 0x0C + 0x10 * i for i, m in enumerate(sorted(memdevs.values()))}
        for decoder, memdev in reach.items():
            (self.cxl / "root0" / decoder).mkdir()
            target = str(bus[memdev]) if hints and memdev in bus else ""
            (self.cxl / "root0" / decoder / "target_list").write_text(target + "\n")
        self.bus = bus
        if not appear_after:
            self.appear()

    def appear(self):
        for serial, memdev in self.memdevs.items():
            real = self.sysfs / "devices" / f"pci0000:{self.bus[memdev]:02x}" / "0000:0d:00.0" / memdev
            real.mkdir(parents=True)
            (real / "serial").write_text(f"{serial:#x}\n")
            (self.cxl / memdev).symlink_to(real)

    def tick(self):
        if self.appear_after:
            self.appear_after -= 1
            if not self.appear_after:
                self.appear()

    def __call__(self, argv):
        argv = list(argv)
        self.calls.append(argv)
        if argv[:2] == ["cxl", "create-region"]:
            decoder, memdev = argv[argv.index("-d") + 1], argv[-1]
            if self.reach.get(decoder) != memdev:
                return subprocess.CompletedProcess(argv, 1, "", "cxl region: create_region: no active memdevs found\n")
            n = self.regions
            self.regions += 1
            resource = 0x310000000 + n * 0x100000000
            region = self.sysfs / "bus" / "nd" / "devices" / f"region{n}"
            region.mkdir()
            (region / "driver").mkdir()  # bound to nd_region
            (region / "resource").write_text(f"{resource:#x}\n")
            return self.ok({"region": f"region{n}", "resource": f"{resource:#x}", "size": "256.00 MiB"})
        if argv[:2] == ["ndctl", "create-namespace"]:
            if self.fail_namespace:
                return subprocess.CompletedProcess(argv, 1, "", "failed to create namespace: No space left on device\n")
            nd = argv[argv.index("-r") + 1]
            n = int(nd[len("region"):])
            base = int((self.sysfs / "bus" / "nd" / "devices" / nd / "resource").read_text(), 0)
            dax = self.sysfs / "bus" / "dax" / "devices" / f"dax{n}.0"
            dax.mkdir(parents=True)
            (dax / "size").write_text(str(250 * MiB))
            (dax / "resource").write_text(f"{base + 6 * MiB:#x}")
            (self.dev / f"dax{n}.0").touch()
            return self.ok({"dev": f"namespace{n}.0", "daxregion": {"devices": [{"chardev": f"dax{n}.0"}]}})
        raise AssertionError(f"unexpected command {argv}")

    @staticmethod
    def ok(obj):
        return subprocess.CompletedProcess([], 0, json.dumps(obj), "")


class Clock:
    def __init__(self, fake: FakeCxl):
        self.now = 0.0
        self.fake = fake

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds
        self.fake.tick()


def maker(fake: FakeCxl) -> PoolMaker:
    clock = Clock(fake)
    return PoolMaker(run=fake, sysfs=str(fake.sysfs), dev=str(fake.dev), sleep=clock.sleep, clock=clock)


POOL_A = {"name": "a", "serial": 111, "uuid": "uuid-a", "size": 256 * MiB}
POOL_B = {"name": "b", "serial": 222, "uuid": "uuid-b", "size": 256 * MiB}


def test_pools_matched_by_serial_not_probe_order(tmp_path: Path):
    # The guest probed pool b's device first (mem0) and its decoder is decoder0.0.
    fake = FakeCxl(tmp_path, {222: "mem0", 111: "mem1"}, {"decoder0.0": "mem0", "decoder0.1": "mem1"}, appear_after=2)
    devices = maker(fake).make([POOL_A, POOL_B], timeout=30)
    assert [(d.name, d.device, d.size, d.offset) for d in devices] == [
        ("a", str(fake.dev / "dax0.0"), 250 * MiB, 6 * MiB),
        ("b", str(fake.dev / "dax1.0"), 250 * MiB, 6 * MiB),
    ]
    creates = [c for c in fake.calls if c[:2] == ["cxl", "create-region"]]
    # The decoder that targets each memdev's host bridge is tried first: no failed attempt.
    assert [(c[c.index("-d") + 1], c[-1]) for c in creates] == [("decoder0.1", "mem1"), ("decoder0.0", "mem0")]
    namespaces = [c for c in fake.calls if c[:2] == ["ndctl", "create-namespace"]]
    assert all(c[c.index("-m") + 1] == "devdax" and c[c.index("-a") + 1] == "2M" for c in namespaces)
    assert [c[c.index("-u") + 1] for c in namespaces] == ["uuid-a", "uuid-b"]


def test_without_a_target_hint_every_decoder_is_tried(tmp_path: Path):
    fake = FakeCxl(tmp_path, {222: "mem0", 111: "mem1"}, {"decoder0.0": "mem0", "decoder0.1": "mem1"}, hints=False)
    maker(fake).make([POOL_A, POOL_B], timeout=30)
    creates = [c for c in fake.calls if c[:2] == ["cxl", "create-region"]]
    assert [(c[c.index("-d") + 1], c[-1]) for c in creates] == [
        ("decoder0.0", "mem1"), ("decoder0.1", "mem1"), ("decoder0.0", "mem0")]


def test_missing_memdev_fails_at_the_deadline_naming_the_serial(tmp_path: Path):
    fake = FakeCxl(tmp_path, {111: "mem0"}, {"decoder0.0": "mem0"})
    with pytest.raises(PoolSetupError, match=r"^pool b: no CXL memdev with serial 222 appeared \(memdevs seen: mem0 \(serial 111\)\)"):
        maker(fake).make([POOL_A, POOL_B], timeout=5)


def test_region_failure_names_the_pool_and_each_decoder(tmp_path: Path):
    fake = FakeCxl(tmp_path, {111: "mem0"}, {"decoder0.0": "mem9"})
    with pytest.raises(PoolSetupError, match=r"pool a: cxl create-region for mem0 failed.*decoder0.0: .*no active memdevs"):
        maker(fake).make([POOL_A], timeout=5)


def test_namespace_failure_is_reported_with_ndctls_reason(tmp_path: Path):
    fake = FakeCxl(tmp_path, {111: "mem0"}, {"decoder0.0": "mem0"})
    fake.fail_namespace = True
    with pytest.raises(PoolSetupError, match="pool a: .*ndctl create-namespace.*No space left"):
        maker(fake).make([POOL_A], timeout=5)


def test_no_pools_no_commands(tmp_path: Path):
    fake = FakeCxl(tmp_path, {}, {})
    assert maker(fake).make([], timeout=5) == []
    assert fake.calls == []
