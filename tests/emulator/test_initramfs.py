"""The initramfs builder: content-hash cache, layout, busybox checks."""

import io
import lzma
import struct
from pathlib import Path

import pytest

from emulator.errors import UserError
from emulator.image import initramfs, modules
from emulator.paths import Kernel

from harness.cpio_reader import parse


def fake_elf(interp: bool = False) -> bytes:
    """A 64-bit ELF header with zero or one program header (PT_INTERP when ``interp``)."""
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", header, 0x20, 64)  # e_phoff
    struct.pack_into("<HH", header, 0x36, 56, 1 if interp else 0)  # e_phentsize, e_phnum
    phdr = bytearray(56)
    struct.pack_into("<I", phdr, 0, 3 if interp else 1)
    return bytes(header) + (bytes(phdr) if interp else b"")


@pytest.fixture
def fake_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Kernel:
    root = tmp_path / "kernel"
    mods = root / "lib" / "modules" / "6.1.0-test"
    (mods / "kernel" / "fs").mkdir(parents=True)
    (mods / "kernel" / "fs" / "9p.ko").write_bytes(b"9p-module")
    (mods / "kernel" / "fs" / "netfs.ko.xz").write_bytes(lzma.compress(b"netfs-module", format=lzma.FORMAT_XZ))
    (mods / "kernel" / "fs" / "cxl.ko").write_bytes(b"cxl-module")
    (mods / "modules.dep").write_text(
        "kernel/fs/9p.ko: kernel/fs/netfs.ko.xz\nkernel/fs/netfs.ko.xz:\nkernel/fs/cxl.ko:\n")
    wanted = tmp_path / "modules.txt"
    wanted.write_text("[boot]\n9p\n[late]\ncxl\n")
    monkeypatch.setattr(modules, "WANTED_LIST", wanted)
    busybox = tmp_path / "busybox"
    busybox.write_bytes(fake_elf())
    monkeypatch.setenv("NOTNETS_BUSYBOX", str(busybox))
    monkeypatch.setenv("NOTNETS_CACHE", str(tmp_path / "cache"))
    (root / "vmlinuz").write_bytes(b"kernel")
    return Kernel(root / "vmlinuz", root, "6.1.0-test")


def members(path: Path) -> dict:
    return {name: (mode, body) for name, mode, _maj, _min, body in parse(path.read_bytes())}


def test_build_once_then_cached(fake_kernel: Kernel, tmp_path: Path):
    where = initramfs.initramfs_path(fake_kernel)
    assert not where.exists()
    built = initramfs.build_initramfs(fake_kernel)
    assert built == where and built.parent == tmp_path / "cache" / "initramfs"
    mtime = built.stat().st_mtime_ns
    assert initramfs.build_initramfs(fake_kernel) == built
    assert built.stat().st_mtime_ns == mtime  # not rebuilt


def test_layout_init_busybox_modules(fake_kernel: Kernel):
    got = members(initramfs.build_initramfs(fake_kernel))
    assert got["init"][1] == initramfs.INIT_SCRIPT.read_bytes()
    assert got["init"][0] & 0o111
    assert got["bin/sh"][1] == b"busybox"
    assert "dev/console" in got
    assert got["etc/notnets/modules.boot"][1] == b"kernel/fs/netfs.ko\nkernel/fs/9p.ko\n"
    assert got["etc/notnets/modules.late"][1] == b"kernel/fs/cxl.ko\n"
    assert got["lib/modules/kernel/fs/netfs.ko"][1] == b"netfs-module"  # decompressed for insmod


def test_any_input_change_gives_a_new_file(fake_kernel: Kernel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    first = initramfs.build_initramfs(fake_kernel)
    (fake_kernel.modules_dir / "kernel" / "fs" / "cxl.ko").write_bytes(b"cxl-module-v2")
    second = initramfs.build_initramfs(fake_kernel)
    assert second != first
    init = tmp_path / "init.sh"
    init.write_text("#!/bin/sh\necho changed\n")
    monkeypatch.setattr(initramfs, "INIT_SCRIPT", init)
    assert initramfs.initramfs_path(fake_kernel) not in (first, second)


def test_dynamic_busybox_is_refused(fake_kernel: Kernel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    dynamic = tmp_path / "busybox-dyn"
    dynamic.write_bytes(fake_elf(interp=True))
    monkeypatch.setenv("NOTNETS_BUSYBOX", str(dynamic))
    with pytest.raises(UserError, match="busybox-static"):
        initramfs.build_initramfs(fake_kernel)
    monkeypatch.setenv("NOTNETS_BUSYBOX", str(tmp_path / "none"))
    with pytest.raises(UserError, match="no busybox"):
        initramfs.build_initramfs(fake_kernel)


def test_static_elf_check():
    assert initramfs.is_static_elf(fake_elf())
    assert not initramfs.is_static_elf(fake_elf(interp=True))
    assert not initramfs.is_static_elf(b"#!/bin/sh\n" + bytes(64))


def test_agent_is_byte_compiled(fake_kernel: Kernel):
    initramfs.build_initramfs(fake_kernel)
    cache = initramfs.GUEST_DIR / "__pycache__"
    assert any(p.name.startswith("agent.") for p in cache.glob("*.pyc"))


def signed(body: bytes, sig: bytes) -> bytes:
    """A module as the kernel's sign-file leaves it: body, PKCS#7 signature, info, magic."""
    info = struct.pack(">BBBBB3xI", 0, 0, 2, 0, 0, len(sig))  # id_type 2: PKCS#7
    return body + sig + info + initramfs.SIG_MAGIC


def test_module_signatures_are_stripped():
    body = b"\x7fELF" + bytes(range(200))
    assert initramfs.without_signature(signed(body, b"S" * 470)) == body
    assert initramfs.without_signature(body) == body  # unsigned: as it is
    bogus = body + struct.pack(">BBBBB3xI", 0, 0, 2, 0, 0, 1 << 30) + initramfs.SIG_MAGIC
    assert initramfs.without_signature(bogus) == bogus  # a length past the start: left alone


def test_stored_modules_carry_no_signature(fake_kernel: Kernel, tmp_path: Path):
    ko = next(fake_kernel.modules_dir.rglob("*.ko*"))
    plain = lzma.decompress(ko.read_bytes()) if ko.name.endswith(".xz") else ko.read_bytes()
    data = signed(plain, b"S" * 300)
    ko.write_bytes(lzma.compress(data) if ko.name.endswith(".xz") else data)
    assert initramfs._module_bytes(ko) == plain
