"""Module resolution from modules.dep: dependencies first, each once, per stage."""

from pathlib import Path

import pytest

from emulator.errors import UserError
from emulator.image import modules

DEP = """\
kernel/a/libnvdimm.ko:
kernel/b/cxl_pmem.ko: kernel/a/libnvdimm.ko
kernel/b/nd_pmem.ko: kernel/b/nd_btt.ko kernel/a/libnvdimm.ko
kernel/b/nd_btt.ko: kernel/a/libnvdimm.ko
kernel/c/virtio-rng.ko.xz: kernel/c/virtio.ko kernel/c/virtio_ring.ko
kernel/c/virtio.ko: kernel/c/virtio_ring.ko
kernel/c/virtio_ring.ko:
"""


def table():
    return modules.parse_modules_dep(DEP)


def test_names_normalise_dashes_and_compression():
    assert modules.module_name("kernel/c/virtio-rng.ko.xz") == "virtio_rng"
    assert modules.module_name("x/nd_pmem.ko") == "nd_pmem"


def test_dependencies_come_first_each_once():
    order = modules.load_order(["nd_pmem", "cxl_pmem", "libnvdimm"], table(), set())
    assert order == ["kernel/a/libnvdimm.ko", "kernel/b/nd_btt.ko", "kernel/b/nd_pmem.ko", "kernel/b/cxl_pmem.ko"]


def test_dash_and_underscore_are_the_same_module():
    order = modules.load_order(["virtio-rng"], table(), set())
    assert order == ["kernel/c/virtio_ring.ko", "kernel/c/virtio.ko", "kernel/c/virtio-rng.ko.xz"]


def test_builtin_modules_are_skipped_and_unknown_ones_refused():
    assert modules.load_order(["cxl_port"], table(), {"cxl_port"}) == []
    with pytest.raises(UserError, match="no module 'nope'"):
        modules.load_order(["nope"], table(), set())


def test_a_later_stage_skips_what_an_earlier_one_loaded():
    first = modules.load_order(["libnvdimm"], table(), set())
    assert modules.load_order(["cxl_pmem"], table(), set(), set(first)) == ["kernel/b/cxl_pmem.ko"]


def test_a_dependency_missing_from_the_table_is_an_error():
    broken = modules.parse_modules_dep("kernel/x.ko: kernel/gone.ko\n")
    with pytest.raises(UserError, match="does not list"):
        modules.load_order(["x"], broken, set())


def test_stages_from_the_list_file(tmp_path: Path):
    listing = tmp_path / "m.txt"
    listing.write_text("# c\n[boot]\nvirtio-rng  # x\n\n[late]\ncxl_pmem\n")
    assert modules.read_wanted(listing) == {"boot": ["virtio_rng"], "late": ["cxl_pmem"]}
    listing.write_text("orphan\n")
    with pytest.raises(UserError, match="before any"):
        modules.read_wanted(listing)


def test_resolve_reads_the_kernel_tree(tmp_path: Path):
    (tmp_path / "modules.dep").write_text(DEP)
    (tmp_path / "modules.builtin").write_text("kernel/drivers/cxl/cxl_port.ko\n")
    stages = modules.resolve(tmp_path, {"boot": ["virtio_rng"], "late": ["cxl_pmem", "cxl_port", "virtio"]})
    assert stages["late"] == ["kernel/a/libnvdimm.ko", "kernel/b/cxl_pmem.ko"]
    with pytest.raises(UserError, match="cannot read"):
        modules.resolve(tmp_path / "missing")


def test_the_shipped_list_resolves_against_the_guest_kernel():
    from emulator.paths import find_kernel

    try:
        kernel = find_kernel()
    except UserError:
        pytest.skip("no guest kernel cached")
    stages = modules.resolve(kernel.modules_dir)
    flat = [p.rsplit("/", 1)[-1] for stage in stages.values() for p in stage]
    assert len(flat) == len(set(flat))
    for needed in ("virtio_console.ko", "9p.ko", "overlay.ko", "cxl_pmem.ko", "device_dax.ko", "virtio_net.ko"):
        assert needed in flat
    assert flat.index("libnvdimm.ko") < flat.index("cxl_pmem.ko")
    assert "9p.ko" in [p.rsplit("/", 1)[-1] for p in stages["boot"]]
