"""The newc writer produces what cpio(1) and the kernel read back."""

import io
import shutil
import stat
import subprocess

import pytest

from emulator.image import cpio
from harness.cpio_reader import parse


def archive(entries):
    buf = io.BytesIO()
    cpio.write_archive(buf, entries)
    return buf.getvalue()


ENTRIES = [
    cpio.directory("bin"),
    cpio.regular("bin/busybox", b"\x7fELF" + b"x" * 13, perm=0o755),
    cpio.symlink("bin/sh", "busybox"),
    cpio.char_device("dev/console", 5, 1),
    cpio.regular("init", b"#!/bin/sh\n", perm=0o755),
]


def test_round_trip_keeps_names_types_and_bodies():
    got = parse(archive(ENTRIES))
    assert [g[0] for g in got] == ["bin", "bin/busybox", "bin/sh", "dev/console", "init"]
    assert stat.S_ISDIR(got[0][1]) and stat.S_ISLNK(got[2][1]) and stat.S_ISCHR(got[3][1])
    assert got[2][4] == b"busybox"
    assert got[3][2:4] == (5, 1)
    assert got[1][4] == b"\x7fELF" + b"x" * 13


def test_the_same_entries_give_the_same_bytes():
    assert archive(ENTRIES) == archive(ENTRIES)
    assert len(archive(ENTRIES)) % 4 == 0


@pytest.mark.skipif(shutil.which("cpio") is None, reason="cpio(1) not installed")
def test_gnu_cpio_lists_it():
    listing = subprocess.run(["cpio", "-t", "--quiet"], input=archive(ENTRIES), capture_output=True, check=True)
    assert listing.stdout.decode().split() == ["bin", "bin/busybox", "bin/sh", "dev/console", "init"]
