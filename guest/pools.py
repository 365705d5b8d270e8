"""Turn each attached CXL pool into a DAX device, the same way on every host.

CXL Type-3 memdev -> pmem region (`cxl create-region`) -> nvdimm namespace in devdax mode
(`ndctl create-namespace -m devdax -a 2M -u <pool uuid>`) -> /dev/daxN.M, both steps
written to sysfs directly (the tools are the fallback). Every host
uses the same parameters, so the devdax data offset (where offset 0 of the DAX device
lies in the region, hence in the backing file) is the same everywhere; it is measured
from sysfs and reported, so the host can check it.

The guest names memdevs and root decoders in probe order, so a pool is found by the
serial number QEMU gives its device (``sn=``, read from sysfs), and the root decoder
that targets the memdev's host bridge is tried first (the others after it: a wrong one
fails fast with "no active memdevs found").

Runs inside the guest with the host's `cxl` and `ndctl`; stdlib only.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import time
from collections import namedtuple

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs a noticeable import time under TCG; the agent skips it
    from typing import Any, Callable, Optional, Sequence

    Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]
    Log = Callable[[str], None]

ALIGN = "2M"
SYSFS = "/sys"


class PoolSetupError(Exception):
    """Why a pool could not be turned into a DAX device (reported through wait_ready)."""


# device: /dev/daxN.M; size: bytes usable through it; offset: where its byte 0 lies in the
# pool's backing file; region: the CXL region (regionN).
PoolDevice = namedtuple("PoolDevice", "name device size offset region")


def run_command(argv: Sequence[str]) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(list(argv), capture_output=True, text=True, check=False)


def _json(text: str) -> Any:
    """cxl/ndctl print one object, a list, or nothing (no match)."""
    text = text.strip()
    if not text:
        return []
    return json.loads(text)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _int(value: Any) -> int:
    """Numbers come as ints, or as hex strings with human-readable output flags."""
    if isinstance(value, int):
        return value
    return int(str(value), 0)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


class PoolMaker:
    """Creates the DAX devices for a list of pools; ``run`` and ``sysfs`` are injectable for tests."""

    def __init__(self, run: Runner = run_command, sysfs: str = SYSFS, dev: str = "/dev",
                 log: Log = lambda _msg: None, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.run = run
        self.sysfs = sysfs
        self.dev = dev
        self.log = log
        self.sleep = sleep
        self.clock = clock

    def _cmd(self, argv: Sequence[str]) -> "subprocess.CompletedProcess[str]":
        result = self.run(argv)
        self.log(f"$ {' '.join(argv)} -> {result.returncode}")
        return result

    def _cmd_json(self, argv: Sequence[str]) -> Any:
        result = self._cmd(argv)
        if result.returncode != 0:
            raise PoolSetupError(f"`{' '.join(argv)}` failed: {_last_line(result.stderr)}")
        try:
            return _json(result.stdout)
        except ValueError:
            raise PoolSetupError(f"`{' '.join(argv)}` printed no JSON: {result.stdout[:200]!r}") from None

    def _cxl_devices(self, pattern: str) -> list[str]:
        return sorted(glob.glob(os.path.join(self.sysfs, "bus", "cxl", "devices", pattern)), key=_natural)

    def memdevs_by_serial(self, wanted: dict[int, str], deadline: float) -> dict[int, str]:
        """Wait until each wanted serial (-> pool name) has a memdev; the CXL drivers probe asynchronously.

        Read from sysfs (memN/serial) rather than `cxl list`: a process start costs
        a good fraction of a second under TCG, and this is polled.
        """
        while True:
            found = {}
            for entry in self._cxl_devices("mem*"):
                try:
                    found[_int(_read(os.path.join(entry, "serial")))] = os.path.basename(entry)
                except (OSError, ValueError):
                    continue
            if wanted.keys() <= found.keys():
                return found
            if self.clock() >= deadline:
                missing = "; ".join(f"pool {wanted[s]}: no CXL memdev with serial {s} appeared"
                                    for s in sorted(wanted.keys() - found.keys()))
                seen = ", ".join(f"{m} (serial {s})" for s, m in sorted(found.items())) or "none"
                raise PoolSetupError(f"{missing} (memdevs seen: {seen})")
            self.sleep(0.1)

    def root_decoders(self) -> dict[str, set[int]]:
        """Root decoder name -> the host bridge ids (dports) it targets."""
        decoders: dict[str, set[int]] = {}
        for entry in self._cxl_devices("root*/decoder*"):
            try:
                targets = {int(t) for t in _read(os.path.join(entry, "target_list")).split(",") if t.strip()}
            except (OSError, ValueError):
                targets = set()
            decoders[os.path.basename(entry)] = targets
        return decoders

    def host_bridge(self, memdev: str) -> Optional[int]:
        """The PCI root bus a memdev hangs off (.../pci0000:0c/... -> 12); QEMU's pxb-cxl
        uses its bus number as the host bridge id that root decoders list as targets."""
        path = os.path.realpath(os.path.join(self.sysfs, "bus", "cxl", "devices", memdev))
        for part in path.split(os.sep):
            if part.startswith("pci") and ":" in part:
                try:
                    return int(part.split(":")[1], 16)
                except (IndexError, ValueError):
                    return None
        return None

    def decoder_order(self, memdev: str, decoders: dict[str, set[int]]) -> list[str]:
        """Every root decoder, the one that targets the memdev's host bridge first."""
        bridge = self.host_bridge(memdev)
        return sorted(decoders, key=lambda d: (bridge not in decoders[d], _natural(d)))

    def create_region(self, memdev: str, decoders: Sequence[str]) -> tuple[str, int, str]:
        """A one-way pmem region over ``memdev``: (region, HPA base, root decoder used)."""
        errors = []
        for decoder in decoders:
            argv = ["cxl", "create-region", "-m", "-d", decoder, "-w", "1", "-g", "256", "-t", "pmem", memdev]
            result = self._cmd(argv)
            if result.returncode == 0:
                try:
                    info = _as_list(_json(result.stdout))[0]
                    return info["region"], _int(info["resource"]), decoder
                except (ValueError, LookupError, TypeError):
                    raise PoolSetupError(f"`{' '.join(argv)}` printed no region: {result.stdout[:200]!r}") from None
            errors.append(f"{decoder}: {_last_line(result.stderr)}")
        raise PoolSetupError(f"cxl create-region for {memdev} failed on every root decoder ({'; '.join(errors) or 'none found'})")

    # -- the same steps as `cxl create-region` / `ndctl create-namespace`, in sysfs --------
    # Each tool is a process that scans every bus in sysfs: under TCG, 16 hosts at once,
    # the two took ~18 s of a restored host's ~50 s boot. Python writes the same sysfs
    # attributes (Linux 6.1's CXL region and libnvdimm ABIs) in a few milliseconds.
    # If any step fails, the partial region is deleted and the tool runs instead.

    def _write(self, path: str, value: str) -> None:
        with open(path, "w") as f:  # the kernel wants each value newline-terminated
            f.write(value + "\n")

    def endpoint_decoder(self, memdev: str) -> str:
        """The memdev's first endpoint decoder that has no capacity yet (its endpoint port
        is the one whose uport is the memdev)."""
        for port in self._cxl_devices("endpoint*"):
            if os.path.basename(os.path.realpath(os.path.join(port, "uport"))) != memdev:
                continue
            for decoder in sorted(glob.glob(os.path.join(port, "decoder*")), key=_natural):
                if _int(_read(os.path.join(decoder, "dpa_size"))) == 0:
                    return decoder
            raise PoolSetupError(f"{memdev} has no free endpoint decoder")
        raise PoolSetupError(f"no CXL endpoint port for {memdev}")

    def create_region_sysfs(self, memdev: str, decoder: str) -> tuple[str, int, str]:
        """``cxl create-region -m -d DECODER -w 1 -g 256 -t pmem MEMDEV`` as sysfs writes."""
        root = os.path.join(self.sysfs, "bus", "cxl", "devices", decoder)
        name = _read(os.path.join(root, "create_pmem_region"))
        self._write(os.path.join(root, "create_pmem_region"), name)
        region = os.path.join(self.sysfs, "bus", "cxl", "devices", name)
        endpoint = None
        try:
            self._write(os.path.join(region, "interleave_granularity"), "256")
            self._write(os.path.join(region, "interleave_ways"), "1")
            self._write(os.path.join(region, "uuid"), _random_uuid())
            size = _int(_read(os.path.join(self.sysfs, "bus", "cxl", "devices", memdev, "pmem", "size")))
            endpoint = self.endpoint_decoder(memdev)
            self._write(os.path.join(endpoint, "mode"), "pmem")
            self._write(os.path.join(endpoint, "dpa_size"), str(size))
            self._write(os.path.join(region, "size"), str(size))
            self._write(os.path.join(region, "target0"), os.path.basename(endpoint))
            self._write(os.path.join(region, "commit"), "1")
            self._write(os.path.join(self.sysfs, "bus", "cxl", "drivers", "cxl_region", "bind"), name)
            base = _int(_read(os.path.join(region, "resource")))
        except (OSError, ValueError) as err:
            self._undo_region(root, region, name, endpoint)
            raise PoolSetupError(f"{name} on {decoder}: {err}") from None
        self.log(f"{name}: created in sysfs over {memdev} ({decoder}, {os.path.basename(endpoint)})")
        return name, base, decoder

    def _undo_region(self, root: str, region: str, name: str, endpoint: Optional[str]) -> None:
        for path, value in ((os.path.join(region, "commit"), "0"), (os.path.join(region, "target0"), ""),
                            (os.path.join(root, "delete_region"), name),
                            (os.path.join(endpoint, "dpa_size") if endpoint else "", "0")):
            if path:
                try:
                    self._write(path, value)
                except OSError:
                    pass

    def create_namespace_sysfs(self, nd_region: str, uuid: str, deadline: float) -> str:
        """``ndctl create-namespace -r REGION -m devdax -a 2M -u UUID`` as sysfs writes: the
        region's namespace seed gets the uuid and all the space, its dax seed the
        namespace, 2 MiB alignment and its page map in the device (ndctl's --map=dev)."""
        nd = os.path.join(self.sysfs, "bus", "nd", "devices")
        region = os.path.join(nd, nd_region)
        namespace = _read(os.path.join(region, "namespace_seed"))
        dax = _read(os.path.join(region, "dax_seed"))
        if not namespace or not dax:
            raise PoolSetupError(f"{nd_region} has no namespace or dax seed")
        align = 2 << 20
        size = _int(_read(os.path.join(region, "available_size"))) // align * align
        self._write(os.path.join(nd, namespace, "uuid"), uuid)
        self._write(os.path.join(nd, namespace, "size"), str(size))
        self._write(os.path.join(nd, dax, "uuid"), _random_uuid())
        self._write(os.path.join(nd, dax, "mode"), "pmem")
        self._write(os.path.join(nd, dax, "align"), str(align))
        self._write(os.path.join(nd, dax, "namespace"), namespace)
        self._write(os.path.join(self.sysfs, "bus", "nd", "drivers", "dax_pmem", "bind"), dax)
        while True:
            chardev = self.existing_dax(nd_region, uuid)
            if chardev:
                self.log(f"{namespace}: {size} bytes in sysfs, devdax {dax} -> {chardev}")
                return chardev
            if self.clock() >= deadline:
                raise PoolSetupError(f"{dax} bound, but no DAX device appeared")
            self.sleep(0.05)

    def nd_region_at(self, resource: int, deadline: float) -> str:
        """The nvdimm region (ndctl's regionN) whose address range is the CXL region's."""
        base = os.path.join(self.sysfs, "bus", "nd", "devices")
        while True:
            for entry in sorted(glob.glob(os.path.join(base, "region*"))):
                try:
                    if _int(_read(os.path.join(entry, "resource"))) == resource:
                        return os.path.basename(entry)
                except (OSError, ValueError):
                    continue
            if self.clock() >= deadline:
                raise PoolSetupError(f"no nvdimm region appeared for the CXL region at {resource:#x}")
            self.sleep(0.1)

    def earlier_dax(self, nd_region: str, uuid: str, deadline: float) -> Optional[str]:
        """The DAX device of a namespace that this host's labels kept from an earlier boot
        (`fault restart`), once the kernel has probed it; None if the labels hold none.

        The region's driver registers the labels' namespaces when it binds, and the DAX
        device follows asynchronously: a namespace is looked for only after the bind,
        and waited for if it is there (creating another would find no space)."""
        region_dir = os.path.join(self.sysfs, "bus", "nd", "devices", nd_region)
        while not os.path.exists(os.path.join(region_dir, "driver")):
            if self.clock() >= deadline:
                raise PoolSetupError(f"{nd_region} was not probed by the nvdimm driver")
            self.sleep(0.05)
        known = False
        for ns in glob.glob(os.path.join(region_dir, "namespace*")):
            try:
                known = known or (_read(os.path.join(ns, "uuid")) == uuid and _int(_read(os.path.join(ns, "size"))) > 0)
            except (OSError, ValueError):
                continue
        while True:
            chardev = self.existing_dax(nd_region, uuid)
            if chardev or not known:
                return chardev
            if self.clock() >= deadline:
                raise PoolSetupError(f"{nd_region} holds the pool's namespace from an earlier boot, but no DAX device appeared")
            self.sleep(0.05)

    def existing_dax(self, nd_region: str, uuid: str) -> Optional[str]:
        """A devdax namespace with the pool's uuid left in this host's labels by an earlier boot."""
        region_dir = os.path.join(self.sysfs, "bus", "nd", "devices", nd_region)
        for ns in sorted(glob.glob(os.path.join(region_dir, "namespace*"))):
            try:
                if _read(os.path.join(ns, "uuid")) != uuid:
                    continue
            except OSError:
                continue
            for dax in sorted(glob.glob(os.path.join(region_dir, "dax*"))):
                try:
                    if _read(os.path.join(dax, "namespace")) == os.path.basename(ns):
                        for dev in sorted(glob.glob(os.path.join(dax, "dax*.*"))):
                            return os.path.basename(dev)
                except OSError:
                    continue
        return None

    def create_namespace(self, nd_region: str, uuid: str) -> str:
        info = self._cmd_json(["ndctl", "create-namespace", "-r", nd_region, "-m", "devdax", "-a", ALIGN, "-u", uuid])
        try:
            return info["daxregion"]["devices"][0]["chardev"]
        except (LookupError, TypeError):
            raise PoolSetupError(f"ndctl create-namespace on {nd_region} reported no DAX device: {info!r}") from None

    def _ndctl_after(self, nd_region: str, pool: dict[str, Any], sysfs_error: Exception) -> str:
        """ndctl's namespace, when the sysfs writes failed: if it fails too, the error names
        both, since a half-made namespace from the writes is what leaves ndctl no space."""
        try:
            return self.create_namespace(nd_region, pool["uuid"])
        except PoolSetupError as err:
            raise PoolSetupError(f"{err} (after the sysfs writes failed: {sysfs_error})") from None

    def measure(self, name: str, chardev: str, region: str, region_base: int, deadline: float) -> PoolDevice:
        dax_dir = os.path.join(self.sysfs, "bus", "dax", "devices", chardev)
        device = os.path.join(self.dev, chardev)
        while True:
            try:
                size = _int(_read(os.path.join(dax_dir, "size")))
                start = _int(_read(os.path.join(dax_dir, "resource")))
                if os.path.exists(device):
                    return PoolDevice(name, device, size, start - region_base, region)
            except (OSError, ValueError):
                pass
            if self.clock() >= deadline:
                raise PoolSetupError(f"{device} did not appear (no {dax_dir}/size or resource)")
            self.sleep(0.1)

    def make(self, pools: list[dict[str, Any]], timeout: float) -> list[PoolDevice]:
        """One DAX device per pool, in the order given; raises PoolSetupError naming the pool."""
        if not pools:
            return []
        deadline = self.clock() + timeout
        memdevs = self.memdevs_by_serial({int(p["serial"]): p["name"] for p in pools}, deadline)
        decoders = self.root_decoders()
        devices = []
        for pool in pools:
            try:
                memdev = memdevs[int(pool["serial"])]
                order = self.decoder_order(memdev, decoders)
                try:
                    region, base, decoder = self.create_region_sysfs(memdev, order[0])
                except (PoolSetupError, OSError, ValueError, IndexError) as err:
                    self.log(f"pool {pool['name']}: region in sysfs failed ({err}); running cxl create-region")
                    region, base, decoder = self.create_region(memdev, order)
                decoders.pop(decoder, None)
                nd_region = self.nd_region_at(base, deadline)
                chardev = self.earlier_dax(nd_region, pool["uuid"], deadline)
                if not chardev:
                    try:
                        chardev = self.create_namespace_sysfs(nd_region, pool["uuid"], deadline)
                    except (PoolSetupError, OSError, ValueError) as err:
                        self.log(f"pool {pool['name']}: namespace in sysfs failed ({err}); running ndctl")
                        chardev = self.existing_dax(nd_region, pool["uuid"]) or self._ndctl_after(nd_region, pool, err)
                device = self.measure(pool["name"], chardev, region, base, deadline)
            except PoolSetupError as err:
                raise PoolSetupError(f"pool {pool['name']}: {err}") from None
            self.log(f"pool {pool['name']}: {memdev} -> {region} ({decoder}) -> {nd_region} -> {device.device}, "
                     f"{device.size} bytes at offset {device.offset}")
            devices.append(device)
        return devices


def _random_uuid() -> str:
    """A version 4 uuid (the uuid module's import costs more under TCG than this)."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no message)"


def _natural(name: str) -> tuple[int, ...]:
    """decoder0.10 after decoder0.9."""
    digits = "".join(c if c.isdigit() else " " for c in name)
    return tuple(int(part) for part in digits.split())
