"""Map a pool into this process: a regular file (hugetlbfs, /dev/shm) or a DAX device.

A DAX character device reports size 0 to fstat; its size is in sysfs, and it only maps
whole multiples of its alignment (2 MiB here). Regular files are sized with fstat.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import stat
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Union

from .errors import PoolError, PoolNotReadyError, PoolTooSmallError

DAX_ALIGN = 2 << 20
SYSFS = Path("/sys")
PathLike = Union[str, os.PathLike]


def is_char_device(path: PathLike) -> bool:
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except OSError:
        return False


def device_size(path: PathLike, sysfs: Path = SYSFS) -> int:
    """Size of a DAX character device from sysfs (``/sys/dev/char/MAJ:MIN/size``)."""
    st = os.stat(path)
    candidates = [
        sysfs / "dev" / "char" / f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}" / "size",
        sysfs / "bus" / "dax" / "devices" / Path(path).name / "size",
    ]
    for candidate in candidates:
        try:
            return int(candidate.read_text().strip())
        except (OSError, ValueError):
            continue
    raise PoolError(f"{path}: a character device whose size is not in sysfs (is it a DAX device?)")


def mapping_page_size(path: PathLike, fd: int) -> int:
    """The page size the kernel maps ``path`` with: what ``drop_pages`` must align to.

    hugetlbfs reports its huge page size as the block size (2 MiB here), /dev/shm and
    disk files 4 KiB; a DAX device maps in units of its alignment (sysfs ``align``, 2 MiB
    as this project creates them). An odd block size counts as the base page."""
    if is_char_device(path):
        try:
            align = int((SYSFS / "bus" / "dax" / "devices" / Path(path).name / "align").read_text().strip())
        except (OSError, ValueError):
            align = DAX_ALIGN
        return max(align, mmap.PAGESIZE)
    try:
        block = os.fstatvfs(fd).f_bsize
    except OSError:
        return mmap.PAGESIZE
    return block if block > mmap.PAGESIZE and not block & (block - 1) else mmap.PAGESIZE


class Mapping:
    """An open, mapped pool file or device, plus the host-local lock that serialises
    claims of directory and channel slots between processes of this host."""

    def __init__(self, path: PathLike, writable: bool = True) -> None:
        self.path = str(path)
        self.writable = writable
        self.is_device = is_char_device(path)
        flags = os.O_RDWR if writable else os.O_RDONLY
        try:
            self.fd = os.open(self.path, flags | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise PoolNotReadyError(f"{path}: no such file (create it with `notnets-emu pool create`)") from None
        except OSError as exc:
            raise PoolError(f"{path}: cannot open: {exc.strerror}") from None
        try:
            if self.is_device:
                size = device_size(self.path) // DAX_ALIGN * DAX_ALIGN
            else:
                st = os.fstat(self.fd)
                if not stat.S_ISREG(st.st_mode):
                    raise PoolError(f"{path}: neither a regular file nor a DAX character device")
                size = st.st_size - st.st_size % 8
            if size <= 0:
                raise PoolTooSmallError(f"{path}: empty (size 0); create the pool first")
            prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
            try:
                self.mm = mmap.mmap(self.fd, size, flags=mmap.MAP_SHARED, prot=prot)
            except OSError as exc:
                raise PoolError(f"{path}: cannot map {size} bytes: {exc.strerror}") from None
            self.size = size
            self.page_size = mapping_page_size(self.path, self.fd)
        except BaseException:
            os.close(self.fd)
            raise
        self._thread_lock = threading.Lock()

    @contextmanager
    def host_lock(self) -> Iterator[None]:
        """Exclusive among the threads and processes of this host (flock on the pool)."""
        with self._thread_lock:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self.fd, fcntl.LOCK_UN)

    def drop_pages(self, off: int, n: int) -> int:
        """Unmap from this process the whole pages inside ``[off, off+n)``; bytes dropped.

        MADV_DONTNEED on a shared file mapping: the pages stay in the pool file (nothing
        is lost, no other process is touched) and this process's next access maps them
        again. Why: a server's RSS counts every pool page it ever touched (RssShmem), so
        the rings of closed channels kept it ~2 ring sizes a channel above its start.
        Rounded inward to ``page_size``: a partly covered page may hold bytes another
        channel uses, and on hugetlbfs the kernel refuses (EINVAL) a start that is not
        huge-page aligned and rounds the end down. (hugetlbfs and device-dax pages count
        in no RSS figure; 4 KiB files are what this is for.) A refusal drops nothing."""
        page = self.page_size
        start = -(-off // page) * page
        end = min(off + n, self.size) // page * page
        if start < 0 or end <= start:
            return 0
        try:
            self.mm.madvise(mmap.MADV_DONTNEED, start, end - start)
        except (OSError, ValueError, AttributeError):  # an older kernel, a closed map, no madvise
            return 0
        return end - start

    def close(self) -> None:
        try:
            self.mm.close()
        except BufferError:  # someone still holds a view: the mapping stays until exit
            pass
        try:
            os.close(self.fd)
        except OSError:
            pass


def create_backing(path: PathLike, size: Optional[int]) -> int:
    """Create or grow a regular file to ``size``; returns the size the pool may use.

    hugetlbfs only takes multiples of the huge page size, so sizes round up to 2 MiB.
    A DAX device keeps its own size (``size`` must not exceed it).
    """
    if is_char_device(path):
        dev = device_size(path) // DAX_ALIGN * DAX_ALIGN
        if size is not None and size > dev:
            raise PoolTooSmallError(f"{path}: device holds {dev} bytes, asked for {size}")
        return size or dev
    p = Path(path)
    exists = p.exists()
    if exists and not p.is_file():
        raise PoolError(f"{path}: neither a regular file nor a DAX character device")
    current = p.stat().st_size if exists else 0
    if size is None:
        if not current:
            raise PoolError(f"{path}: give a size for a new pool file")
        return current
    want = (size + DAX_ALIGN - 1) // DAX_ALIGN * DAX_ALIGN
    if current < want:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise PoolError(f"{path}: cannot create: {exc.strerror}") from None
        try:
            os.ftruncate(fd, want)
        except OSError as exc:
            raise PoolError(f"{path}: cannot grow to {want} bytes: {exc.strerror}") from None
        finally:
            os.close(fd)
    return size
