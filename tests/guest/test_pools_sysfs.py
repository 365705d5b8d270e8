"""Pool setup by sysfs writes (guest/pools.py) against a fake sysfs that plays the kernel:
what is written where, the tools as the fallback, a namespace kept from an earlier boot."""

import subprocess
from pathlib import Path

import pytest

from guest.pools import PoolMaker

MiB = 1 << 20
POOL = {"name": "a", "serial": 111, "uuid": "11111111-2222-4333-8444-555555555555", "size": 256 * MiB}
BASE = 0x390000000


class FakeKernel:
    """/sys as Linux 6.1 shows one CXL memdev (mem0 behind host bridge 0x0c), its
    endpoint port and a root decoder; binding a region or a DAX device makes what the
    kernel would make, at the next poll."""

    def __init__(self, root: Path, earlier_namespace: bool = False):
        self.sysfs, self.dev = root / "sys", root / "dev"
        self.dev.mkdir(parents=True)
        self.cxl = self.sysfs / "bus" / "cxl" / "devices"
        self.nd = self.sysfs / "bus" / "nd" / "devices"
        self.nd.mkdir(parents=True)
        self.calls: list[list[str]] = []
        real = self.sysfs / "devices" / "pci0000:0c" / "0000:0d:00.0" / "mem0"
        (real / "pmem").mkdir(parents=True)
        (real / "serial").write_text("0x6f\n")
        (real / "pmem" / "size").write_text(f"{256 * MiB:#x}\n")
        (self.cxl / "root0" / "decoder0.0").mkdir(parents=True)
        self.cxl.joinpath("mem0").symlink_to(real)
        self.root = self.cxl / "root0" / "decoder0.0"
        self.cxl.joinpath("decoder0.0").symlink_to(self.root)  # the bus lists every device flat
        self.attrs(self.root, target_list="12", create_pmem_region="region0", delete_region="")
        endpoint = self.cxl / "endpoint2"
        (endpoint / "decoder2.0").mkdir(parents=True)
        endpoint.joinpath("uport").symlink_to(real)
        self.endpoint = endpoint / "decoder2.0"
        self.attrs(self.endpoint, dpa_size="0", mode="ram")
        self.region = self.cxl / "region0"  # appears when its name is written to create_pmem_region
        self.attrs(self.region, interleave_granularity="", interleave_ways="", uuid="", size="", target0="",
                   commit="0", resource=f"{BASE:#x}")
        self.drivers = self.sysfs / "bus" / "cxl" / "drivers" / "cxl_region"
        self.attrs(self.drivers, bind="")
        self.nd_drivers = self.sysfs / "bus" / "nd" / "drivers" / "dax_pmem"
        self.attrs(self.nd_drivers, bind="")
        self.earlier = earlier_namespace

    @staticmethod
    def attrs(path: Path, **values: str) -> None:
        path.mkdir(parents=True, exist_ok=True)
        for name, value in values.items():
            (path / name).write_text(value + "\n" if value else "")

    def read(self, path: Path) -> str:
        return path.read_text()

    def tick(self) -> None:
        """The kernel's asynchronous probing, one step per poll."""
        region = self.nd / "region0"
        if self.read(self.drivers / "bind") == "region0\n" and not region.exists():
            self.attrs(region, resource=f"{BASE:#x}", namespace_seed="namespace0.0", dax_seed="dax0.0",
                       available_size=str(256 * MiB if not self.earlier else 0))
            (region / "driver").mkdir()
            self.attrs(self.nd / "namespace0.0", uuid=POOL["uuid"] if self.earlier else "",
                       size=str(256 * MiB if self.earlier else 0))
            region.joinpath("namespace0.0").symlink_to(self.nd / "namespace0.0")
            self.attrs(self.nd / "dax0.0", uuid="", mode="", align="", namespace="")
            return
        bound = self.read(self.nd_drivers / "bind") == "dax0.0\n"
        if region.exists() and (bound or self.earlier) and not (region / "dax0.0").exists():
            self.attrs(region / "dax0.0", namespace="namespace0.0")
            (region / "dax0.0" / "dax0.0").mkdir()
            self.attrs(self.sysfs / "bus" / "dax" / "devices" / "dax0.0", size=str(250 * MiB),
                       resource=f"{BASE + 6 * MiB:#x}")
            (self.dev / "dax0.0").touch()

    def run(self, argv):
        self.calls.append(list(argv))
        return subprocess.CompletedProcess(argv, 1, "", "the tools are not expected here\n")


def maker(kernel: FakeKernel) -> PoolMaker:
    now = [0.0]

    def sleep(seconds):
        now[0] += seconds
        kernel.tick()

    return PoolMaker(run=kernel.run, sysfs=str(kernel.sysfs), dev=str(kernel.dev), sleep=sleep, clock=lambda: now[0])


def test_region_and_namespace_are_written_to_sysfs_without_the_tools(tmp_path: Path):
    kernel = FakeKernel(tmp_path)
    (device,) = maker(kernel).make([POOL], timeout=10)
    assert (device.device, device.size, device.offset) == (str(kernel.dev / "dax0.0"), 250 * MiB, 6 * MiB)
    assert kernel.calls == []
    read = lambda path: path.read_text()  # noqa: E731
    assert [read(kernel.region / a) for a in ("interleave_granularity", "interleave_ways", "size", "target0",
                                               "commit")] == ["256\n", "1\n", f"{256 * MiB}\n", "decoder2.0\n", "1\n"]
    assert len(read(kernel.region / "uuid").strip()) == 36
    assert (read(kernel.endpoint / "mode"), read(kernel.endpoint / "dpa_size")) == ("pmem\n", f"{256 * MiB}\n")
    assert read(kernel.root / "create_pmem_region") == "region0\n" and read(kernel.drivers / "bind") == "region0\n"
    ns, dax = kernel.nd / "namespace0.0", kernel.nd / "dax0.0"
    assert (read(ns / "uuid"), read(ns / "size")) == (POOL["uuid"] + "\n", f"{256 * MiB}\n")
    assert [read(dax / a) for a in ("mode", "align", "namespace")] == ["pmem\n", f"{2 * MiB}\n", "namespace0.0\n"]
    assert read(kernel.nd_drivers / "bind") == "dax0.0\n"


def test_a_failed_sysfs_step_deletes_the_region_and_runs_the_tool(tmp_path: Path):
    kernel = FakeKernel(tmp_path)
    (kernel.region / "target0").unlink()
    (kernel.region / "target0").mkdir()  # writing it fails, as the kernel refuses a bad target
    with pytest.raises(Exception, match="cxl create-region for mem0 failed"):
        maker(kernel).make([POOL], timeout=10)
    assert kernel.root.joinpath("delete_region").read_text() == "region0\n"
    assert kernel.endpoint.joinpath("dpa_size").read_text() == "0\n", "the endpoint's capacity is given back"
    assert kernel.calls[0][:2] == ["cxl", "create-region"]


def test_a_namespace_kept_from_an_earlier_boot_is_waited_for_not_made(tmp_path: Path):
    kernel = FakeKernel(tmp_path, earlier_namespace=True)
    (device,) = maker(kernel).make([POOL], timeout=10)
    assert device.device == str(kernel.dev / "dax0.0")
    assert kernel.nd_drivers.joinpath("bind").read_text() == "", "nothing was bound anew"
    assert kernel.calls == []


def test_when_the_namespace_writes_and_ndctl_both_fail_the_error_names_both(tmp_path: Path):
    kernel = FakeKernel(tmp_path)
    made = maker(kernel)
    write = made._write

    def refuse_mode(path, value):
        if path.endswith("mode") and "dax0.0" in path:
            raise OSError(16, "Device or resource busy")
        write(path, value)

    made._write = refuse_mode
    with pytest.raises(Exception) as caught:
        made.make([POOL], timeout=10)
    message = str(caught.value)
    assert message.startswith("pool a: `ndctl create-namespace")
    assert "after the sysfs writes failed" in message and "Device or resource busy" in message
    assert kernel.calls[-1][:2] == ["ndctl", "create-namespace"]
