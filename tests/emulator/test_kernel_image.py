"""The PVH kernel image, without a VM."""

import lzma
import struct
import zlib
from pathlib import Path

import pytest

from emulator.image import kernel_image
from emulator.paths import Kernel


def elf_with_notes(notes: list[tuple[bytes, int]]) -> bytes:
    body = b""
    for name, ntype in notes:
        padded = name + b"\0" * (-len(name) % 4)
        body += struct.pack("<III", len(name), 4, ntype) + padded + b"\0" * 4
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", header, 0x20, 64)
    struct.pack_into("<HH", header, 0x36, 56, 1)
    phdr = bytearray(56)
    struct.pack_into("<I", phdr, 0, kernel_image.PT_NOTE)
    struct.pack_into("<Q", phdr, 8, 64 + 56)
    struct.pack_into("<Q", phdr, 32, len(body))
    return bytes(header) + bytes(phdr) + body


def bzimage(payload: bytes) -> bytes:
    image = bytearray(0x1000)
    image[0x1F1] = 3  # setup sectors: protected-mode code at (3 + 1) * 512
    image[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", image, 0x206, 0x20F)
    struct.pack_into("<II", image, 0x248, 0x10, len(payload))
    return bytes(image[:4 * 512 + 0x10]) + payload + b"\0" * 64


PVH = elf_with_notes([(b"Xen\0", 6), (b"Xen\0", kernel_image.XEN_ELFNOTE_PHYS32_ENTRY)])


def test_pvh_note_detection():
    assert kernel_image.has_pvh_entry(PVH)
    assert not kernel_image.has_pvh_entry(elf_with_notes([(b"Xen\0", 6), (b"GNU\0", 18)]))
    assert not kernel_image.has_pvh_entry(b"MZ" + bytes(100))


@pytest.mark.parametrize("compress", [
    lambda d: lzma.compress(d, format=lzma.FORMAT_XZ),
    lambda d: (lambda c: c.compress(d) + c.flush())(zlib.compressobj(wbits=31)) + struct.pack("<I", len(d)),
])
def test_boot_image_unpacks_and_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compress):
    monkeypatch.setenv("NOTNETS_CACHE", str(tmp_path / "cache"))
    (tmp_path / "vmlinuz").write_bytes(bzimage(compress(PVH)))
    kernel = Kernel(tmp_path / "vmlinuz", tmp_path, "6.1-test")
    image = kernel_image.boot_image(kernel)
    assert image.parent == tmp_path / "cache" / "kernel-elf"
    assert image.read_bytes() == PVH
    assert kernel_image.boot_image(kernel) == image


def test_without_pvh_or_with_zstd_the_bzimage_is_booted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NOTNETS_CACHE", str(tmp_path / "cache"))
    plain = elf_with_notes([(b"Xen\0", 6)])
    for name, data in (("a", bzimage(lzma.compress(plain, format=lzma.FORMAT_XZ))),
                       ("b", bzimage(b"\x28\xb5\x2f\xfd" + bytes(32))), ("c", b"not a kernel")):
        (tmp_path / name).write_bytes(data)
        kernel = Kernel(tmp_path / name, tmp_path, "6.1-test")
        assert kernel_image.boot_image(kernel) == tmp_path / name
