"""The non-coherent pool model (noncoherent.py) on files, one view per host.

A model directory holds, for a pool file (the "device") and the hosts that share it:

    model.json        what the model is: device path, size, hosts, seed, eviction rate
    host-N.view       what host N's caches hold; host N's processes map this as the pool
    host-N.base       what host N last exchanged with the device, line by line
    writers           u16 per line: host id + 1 of the last host that wrote it back
    device.lock       flock: one write-back or refetch at a time on the device
    reports.jsonl     one JSON line per conflict the model saw (noncoherent.Conflict)

Every operation holds a flock on device.lock, so a host's processes act as one cache
and a write-back or refetch is atomic for every host. ``open_view`` recognises a view path, so that
``cxl.map_pool(view)`` and notnets_rpc's pools apply the model by themselves; the sim
backend creates the directory (``create_model``) and runs one evictor per host
(noncoherent_evictor.py), at seedable random times.
"""

from __future__ import annotations

import fcntl
import json
import mmap
import os
import re
import threading
from pathlib import Path
from typing import Any, List, Optional, Sequence

from .errors import PoolError
from .noncoherent import LINE, Conflict, HostCache

MODEL_FILE = "model.json"
WRITERS_FILE = "writers"
LOCK_FILE = "device.lock"
REPORTS_FILE = "reports.jsonl"
MAX_REPORTS = 10_000  # a program that conflicts in a loop stops adding lines here
_VIEW_RE = re.compile(r"^host-(\d+)\.view$")
MODEL_DIR_SUFFIX = ".coherence"
SHM = "/dev/shm"


def model_dir_for(device: str) -> str:
    """Where the model of the pool file ``device`` lives: next to it on /dev/shm, else in
    /dev/shm under its name (hugetlbfs holds no regular files)."""
    name = os.path.basename(device) + MODEL_DIR_SUFFIX
    parent = os.path.dirname(os.path.abspath(device))
    return os.path.join(parent if parent == SHM else SHM, name)


def find_model(path: os.PathLike | str) -> Optional[tuple[str, Optional[int]]]:
    """(model directory, host id or None) when ``path`` is a host's view or a device that
    has a model; None for a pool the model does not run."""
    view = model_dir_of(path)
    if view is not None:
        return view
    directory = model_dir_for(os.fspath(path))
    try:
        if read_model(directory)["device"] == os.path.realpath(path):
            return directory, None
    except ModelError:
        pass
    return None


class ModelError(PoolError):
    """A model directory that is missing or inconsistent; the message names the file
    (a PoolError: programs that map a view see it where they see other pool problems)."""


def view_path(directory: os.PathLike | str, host: int) -> str:
    return os.path.join(os.fspath(directory), f"host-{host}.view")


def base_path(directory: os.PathLike | str, host: int) -> str:
    return os.path.join(os.fspath(directory), f"host-{host}.base")


def _copy(src: str, dst: str, size: int, step: int = 1 << 20) -> None:
    """Copy ``size`` bytes, leaving holes where the source is zero: a fresh pool costs
    its views and bases no memory until it is used."""
    tmp = dst + ".tmp"
    zero = bytes(step)
    with open(src, "rb") as fin, open(tmp, "wb") as fout:
        fout.truncate(size)
        for at in range(0, size, step):
            chunk = fin.read(min(step, size - at))
            if not chunk:
                break
            if chunk != zero[: len(chunk)]:
                fout.seek(at)
                fout.write(chunk)
    os.replace(tmp, dst)


def create_model(directory: os.PathLike | str, device: str, hosts: Sequence[int], seed: int = 0,
                 evictions_per_s: float = 0.0) -> dict:
    """Lay out a model directory for ``device`` (a regular pool file) and ``hosts``.

    Every view and base starts as a copy of the device: each host starts in sync.
    model.json is written last; its presence marks a complete model."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    try:
        size = os.stat(device).st_size
    except OSError as exc:
        raise ModelError(f"{device}: cannot read the pool file: {exc.strerror}") from None
    size -= size % LINE
    (d / MODEL_FILE).unlink(missing_ok=True)
    for host in hosts:
        _copy(device, view_path(d, host), size)
        _copy(device, base_path(d, host), size)
    with open(d / WRITERS_FILE, "wb") as f:
        f.truncate(size // LINE * 2)
    (d / LOCK_FILE).touch()
    (d / REPORTS_FILE).write_text("")
    model = {"device": os.path.realpath(device), "size": size, "hosts": sorted(set(hosts)), "seed": seed,
             "evictions_per_s": evictions_per_s, "line": LINE}
    tmp = d / (MODEL_FILE + ".tmp")
    tmp.write_text(json.dumps(model, indent=1) + "\n")
    os.replace(tmp, d / MODEL_FILE)
    return model


def read_model(directory: os.PathLike | str) -> dict:
    path = Path(directory) / MODEL_FILE
    try:
        model = json.loads(path.read_text())
        model["size"], model["hosts"], model["device"] = int(model["size"]), list(model["hosts"]), model["device"]
        return model
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{path}: not a readable model description ({exc})") from None


def model_dir_of(path: os.PathLike | str) -> Optional[tuple[str, int]]:
    """(model directory, host id) if ``path`` is a host's view in a model directory."""
    p = os.fspath(path)
    m = _VIEW_RE.match(os.path.basename(p))
    if m is None:
        return None
    directory = os.path.dirname(os.path.abspath(p))
    if not os.path.exists(os.path.join(directory, MODEL_FILE)):
        return None
    return directory, int(m.group(1))


def open_view(path: os.PathLike | str) -> Optional["HostView"]:
    """The model's operations for the host whose view ``path`` is, or None (not a view)."""
    found = model_dir_of(path)
    if found is None:
        return None
    return HostView(*found)


def read_reports(directory: os.PathLike | str) -> List[dict]:
    """The conflicts reported so far (newest last)."""
    try:
        text = (Path(directory) / REPORTS_FILE).read_text()
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a line cut short by a killed host
    return out


class _Mapped:
    def __init__(self, path: str, size: int, writable: bool = True) -> None:
        try:
            self.fd = os.open(path, (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC)
        except OSError as exc:
            raise ModelError(f"{path}: cannot open: {exc.strerror}") from None
        try:
            prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
            self.mm = mmap.mmap(self.fd, size, flags=mmap.MAP_SHARED, prot=prot)
        except (OSError, ValueError) as exc:
            os.close(self.fd)
            raise ModelError(f"{path}: cannot map {size} bytes: {exc}") from None

    def close(self) -> None:
        try:
            self.mm.close()
        except BufferError:
            pass
        os.close(self.fd)


class HostView:
    """Host ``host``'s side of a model directory: flush, invalidate, fence, evict.

    Thread-safe, and serialised with every other process of the model (device.lock)."""

    kind = "model"

    def __init__(self, directory: str, host: int) -> None:
        self.directory = directory
        self.host = host
        self.model = read_model(directory)
        if host not in self.model["hosts"]:
            raise ModelError(f"{directory}: host {host} is not in the model (hosts {self.model['hosts']})")
        size = self.model["size"]
        self.size = size
        self._files: List[_Mapped] = []
        try:
            device = self._map(self.model["device"], size)
            view = self._map(view_path(directory, host), size)
            base = self._map(base_path(directory, host), size)
            writers = self._map(os.path.join(directory, WRITERS_FILE), size // LINE * 2)
            peers = [(h, self._map(view_path(directory, h), size, False).mm,
                      self._map(base_path(directory, h), size, False).mm)
                     for h in self.model["hosts"] if h != host]
            self.cache = HostCache(host, device.mm, view.mm, base.mm, writers.mm, peers)
            self._dev_fd = os.open(os.path.join(directory, LOCK_FILE), os.O_RDWR | os.O_CLOEXEC)
        except BaseException:
            self._close_files()
            raise
        self._thread_lock = threading.Lock()
        self._layout: Any = None

    def _map(self, path: str, size: int, writable: bool = True) -> _Mapped:
        m = _Mapped(path, size, writable)
        self._files.append(m)
        return m

    def _locked(self, op: Any, *args: int) -> Any:
        """Run ``op`` alone on the device, among all hosts' processes (so also among this
        host's: its processes act as one cache) and this process's threads."""
        with self._thread_lock:
            fcntl.flock(self._dev_fd, fcntl.LOCK_EX)
            try:
                return op(*args)
            finally:
                fcntl.flock(self._dev_fd, fcntl.LOCK_UN)

    # -- the cxl.py interface ------------------------------------------------------------------
    def flush(self, off: int, n: int) -> None:
        conflicts = self._locked(self.cache.write_back, off, n)
        if conflicts:
            self._report(conflicts)

    def invalidate(self, off: int, n: int) -> None:
        conflicts = self._locked(self.cache.invalidate, off, n)
        if conflicts:
            self._report(conflicts)

    def fence(self) -> None:
        """Nothing to order: every write-back and refetch is complete when its call returns."""

    def evict(self, line: int) -> None:
        conflicts = self._locked(self.cache.evict, line)
        if conflicts:
            self._report(conflicts)

    def reset(self) -> None:
        """The host (re)starts with empty caches (noncoherent.HostCache.reset)."""
        self._locked(self.cache.reset)

    def dirty_lines(self) -> List[int]:
        return self._locked(self.cache.dirty_lines)

    def close(self) -> None:
        self.cache = None  # type: ignore[assignment]
        self._close_files()

    def _close_files(self) -> None:
        if getattr(self, "_dev_fd", None) is not None:
            os.close(self._dev_fd)
            self._dev_fd = None
        for m in self._files:
            m.close()
        self._files = []

    # -- reports -------------------------------------------------------------------------------
    def _report(self, conflicts: List[Conflict]) -> None:
        """Append the conflicts to reports.jsonl (one O_APPEND write: lines never mix)."""
        path = os.path.join(self.directory, REPORTS_FILE)
        try:
            if os.path.getsize(path) > MAX_REPORTS * 400:
                return
        except OSError:
            pass
        lines = "".join(json.dumps(c.as_dict(self._region(c.offset))) + "\n" for c in conflicts)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, lines.encode())
        finally:
            os.close(fd)

    def _region(self, offset: int) -> Optional[str]:
        from . import pool_regions

        return pool_regions.describe(self.cache.device, offset)
