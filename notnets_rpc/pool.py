"""A mapped pool: format it, validate it, and claim directory and channel slots.

Claims follow the multi-writer rule of DESIGN.md: a process only writes slots in the
partition of its own host id (env NOTNETS_HOST_ID), and processes of one host
serialise their claims with a flock on the pool. Everything a claim reads from
another partition is only read.

``Pool.acquire`` shares one mapping per (path, host id) among all channels and servers
of a process; ``release`` unmaps it when the last user is gone.
"""

from __future__ import annotations

import os
import threading
import time
import uuid as uuidlib
from dataclasses import dataclass
from typing import Dict, Iterator, Optional, Tuple

from .wire import layout as L
from .errors import EndpointInUseError, NotAPoolError, PoolError, PoolExistsError, PoolFullError
from .mapping import Mapping, PathLike, create_backing, is_char_device
from . import farmem
from .memory import Buffer, Memory
from .wire.ring import RingReader, RingWriter

POOL_ENV = "NOTNETS_POOL"
HOST_ID_ENV = "NOTNETS_HOST_ID"
STALE_ENV = "NOTNETS_STALE_MS"


def now_ms() -> int:
    return int(time.time() * 1000)


def stale_ms() -> int:
    """How long a heartbeat may stand still before its owner counts as dead."""
    try:
        return max(200, int(os.environ.get(STALE_ENV, "3000")))
    except ValueError:
        return 3000


def host_id_from_env() -> int:
    raw = os.environ.get(HOST_ID_ENV, "0")
    try:
        value = int(raw)
    except ValueError:
        raise PoolError(f"{HOST_ID_ENV}={raw!r} is not an integer") from None
    if value < 0:
        raise PoolError(f"{HOST_ID_ENV}={raw!r} must be >= 0")
    return value


def default_pool_path(pool: Optional[PathLike]) -> str:
    if pool is not None:
        return os.fspath(pool)
    env = os.environ.get(POOL_ENV)
    if not env:
        raise PoolError(f"no pool given: pass pool=PATH or set {POOL_ENV}")
    return env


def pid_alive(pid: int) -> bool:
    """Only meaningful for pids of this host (same host id)."""
    if pid <= 0 or pid > 2**31:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    try:  # a zombie has exited: it only waits for its parent to reap it
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def pool_memory(buf: Buffer, path: str, writable: bool = True) -> Memory:
    """The accessor for the pool mapped from ``path``: plain, or charging the far-memory
    model that $NOTNETS_FARMEM sets for it (notnets_rpc/farmem.py; off unless set).

    No futex on a device (a /dev/daxX.Y of a CXL pool): FUTEX_WAIT on a device-dax page
    oopses Linux 6.1 (get_futex_key -> put_page -> free_zone_device_page, seen in our
    QEMU guests); the kernel kills the waiting thread, a server's poller vanishes and
    its clients time out. Waiters on such a pool poll and sleep instead."""
    model = farmem.model_for(path)
    if model is None:
        mem = Memory(buf, writable)
    else:
        mem = farmem.FarMemory(buf, writable, farmem.account_for(os.path.realpath(path), model))
    if is_char_device(path):
        mem.can_wait = False
    return mem


def create_pool(path: PathLike, size: Optional[int] = None, overwrite: bool = False, *,
                max_hosts: int = L.DEFAULT_MAX_HOSTS, dir_slots: int = L.DEFAULT_DIR_SLOTS,
                channels: int = L.DEFAULT_CHANNELS, ring_bytes: Optional[int] = None) -> L.Layout:
    """Format a file or DAX device as an empty pool and return its layout.

    Refuses (``PoolExistsError``) to format over a pool unless ``overwrite``; a file
    that holds something else is formatted. ``size`` may be omitted for an existing
    file or a device (their whole size is used).
    """
    if size is not None and size <= 0:
        raise ValueError(f"pool size must be positive, got {size}")
    usable = create_backing(path, size)
    mapping = Mapping(path, writable=True)
    mem = Memory(mapping.mm)
    try:
        with mapping.host_lock():
            if L.is_formatted(mem) and not overwrite:
                raise PoolExistsError(f"{path} already holds a NotNets pool (use overwrite=True / --overwrite)")
            return _format(mem, min(usable, mapping.size), max_hosts, dir_slots, channels, ring_bytes)
    finally:
        mem.release()
        mapping.close()


def _format(mem: Memory, size: int, max_hosts: int, dir_slots: int, channels: int,
            ring_bytes: Optional[int]) -> L.Layout:
    plan = L.plan_layout(size, max_hosts=max_hosts, dir_slots=dir_slots, channels=channels, ring_bytes=ring_bytes)
    plan = L.Layout(**{**plan.__dict__, "uuid": uuidlib.uuid4().bytes, "created_ms": now_ms()})
    mem.store(0, 0)  # unpublish first: nobody may use a half-formatted pool
    mem.fill(L.SUPERBLOCK_BYTES, plan.rings_offset - L.SUPERBLOCK_BYTES, 0)
    L.write_superblock(mem, plan)
    return plan


@dataclass(frozen=True)
class Endpoint:
    """A published service directory entry, as a client sees it."""

    name: str
    host: int
    slot: int
    index: int
    generation: int
    state: int
    pid: int
    heartbeat_ms: int


class Pool:
    """One process's view of a formatted pool, shared by its channels and servers."""

    _registry: Dict[Tuple[str, int], "Pool"] = {}
    _registry_lock = threading.Lock()

    def __init__(self, path: str, mapping: Mapping, host_id: int) -> None:
        self.path = path
        self.mapping = mapping
        self.mem = pool_memory(mapping.mm, path, writable=mapping.writable)
        self.layout = L.parse_superblock(self.mem)
        if host_id >= self.layout.max_hosts:
            raise PoolError(f"host id {host_id} ({HOST_ID_ENV}) is outside this pool's {self.layout.max_hosts} host partitions")
        self.host_id = host_id
        self.users = 0

    # -- sharing -----------------------------------------------------------------------
    @classmethod
    def acquire(cls, pool: Optional[PathLike] = None, host_id: Optional[int] = None, *,
                format_if_empty: bool = False, wait: float = 0.0) -> "Pool":
        """The shared Pool for ``pool`` (default $NOTNETS_POOL).

        ``format_if_empty``: a server on a fresh device formats it (all-zero superblock).
        ``wait``: seconds to wait for someone else (another host) to format it.
        """
        path = default_pool_path(pool)
        hid = host_id_from_env() if host_id is None else host_id
        key = (os.path.realpath(path), hid)
        deadline = time.monotonic() + wait
        while True:
            with cls._registry_lock:
                existing = cls._registry.get(key)
                if existing is not None:
                    existing.users += 1
                    return existing
                mapping = Mapping(path, writable=True)
                try:
                    mem = Memory(mapping.mm)
                    try:
                        ready = L.is_formatted(mem)
                        if not ready and L.looks_empty(mem):
                            if format_if_empty:
                                with mapping.host_lock():
                                    if L.looks_empty(mem):
                                        _format(mem, mapping.size, L.DEFAULT_MAX_HOSTS, L.DEFAULT_DIR_SLOTS,
                                                L.DEFAULT_CHANNELS, None)
                                ready = True
                            elif time.monotonic() >= deadline:
                                raise NotAPoolError(f"{path}: not formatted yet (all zero); start a server "
                                                    "or run `notnets-emu pool create`")
                        elif not ready:
                            ready = True  # let parse_superblock say what is wrong
                    finally:
                        mem.release()
                    if ready:
                        pool_obj = cls(path, mapping, hid)
                        pool_obj.users = 1
                        cls._registry[key] = pool_obj
                        return pool_obj
                except BaseException:
                    mapping.close()
                    raise
                mapping.close()
            time.sleep(0.05)

    def release(self) -> None:
        with self._registry_lock:
            self.users -= 1
            if self.users > 0:
                return
            key = (os.path.realpath(self.path), self.host_id)
            if self._registry.get(key) is self:
                del self._registry[key]
        self.mem.release()
        self.mapping.close()

    # -- host table --------------------------------------------------------------------
    def bell(self, which: int, host: Optional[int] = None) -> int:
        return self.mem.load(self.layout.host_entry(self.host_id if host is None else host) + which)

    def _ring_bell(self, which: int) -> None:
        off = self.layout.host_entry(self.host_id) + which
        self.mem.store(off, self.mem.load(off) + 1)

    # -- directory -----------------------------------------------------------------------
    def entries(self) -> Iterator[Tuple[int, int, int]]:
        """(host, slot, entry offset) of every directory entry."""
        lay = self.layout
        for h in range(lay.max_hosts):
            for s in range(lay.dir_slots):
                yield h, s, lay.dir_entry(h, s)

    def read_endpoint(self, host: int, slot: int) -> Optional[Endpoint]:
        off = self.layout.dir_entry(host, slot)
        gen, state = L.unpack_state(self.mem.load(off + L.DIR_STATE))
        if state == L.DIR_FREE:
            return None
        name = L.read_name(self.mem, off)
        if name is None:
            return None
        return Endpoint(name, host, slot, self.layout.dir_index(host, slot), gen & L.DIR_GEN_MASK, state,
                        self.mem.load(off + L.DIR_PID), self.mem.load(off + L.DIR_HEARTBEAT))

    def endpoint_alive(self, ep: Endpoint) -> bool:
        """Live = LIVE/DRAINING and a recent heartbeat (same host: and its pid exists).

        The heartbeat counts on the same host too: a host that was killed and restarted
        (a rebooted VM, a restarted sim host) numbers its processes from 1 again, so the
        old server's pid may well exist and belong to someone else.
        """
        if ep.state not in (L.DIR_LIVE, L.DIR_DRAINING):
            return False
        if ep.host == self.host_id and not pid_alive(ep.pid):
            return False
        return now_ms() - ep.heartbeat_ms < stale_ms()

    def resolve(self, name: str) -> Optional[Endpoint]:
        """The live endpoint with this name (newest heartbeat wins), or None."""
        best = None
        for h, s, _off in self.entries():
            ep = self.read_endpoint(h, s)
            if ep is None or ep.name != name or ep.state != L.DIR_LIVE or not self.endpoint_alive(ep):
                continue
            if best is None or ep.heartbeat_ms > best.heartbeat_ms:
                best = ep
        return best

    def publish(self, name: str, pid: int, wake_index: Optional[int] = None) -> Endpoint:
        """Claim a directory slot in this host's partition for ``name``.

        ``wake_index``: the directory entry whose sleep word this server's poller uses
        (a server with several endpoints sleeps on its first one's).

        A slot whose owner died (same host: pid gone) is taken over with a new
        generation, so a restarted server keeps its name and old channels are refused.
        """
        L.encode_name(name)
        lay = self.layout
        with self.mapping.host_lock():
            mine: Optional[int] = None
            spare: Optional[int] = None
            for h, s, _off in self.entries():
                ep = self.read_endpoint(h, s)
                if ep is not None and ep.name == name and self.endpoint_alive(ep):
                    where = "this host" if h == self.host_id else f"host {h}"
                    raise EndpointInUseError(f"endpoint {name!r} is already served by pid {ep.pid} on {where}")
                if h != self.host_id:
                    continue
                if ep is not None and ep.name == name and mine is None:
                    mine = s
                elif spare is None and (ep is None or not self.endpoint_alive(ep)):
                    spare = s
            slot = mine if mine is not None else spare
            if slot is None:
                raise PoolFullError(f"no free directory slot for host {self.host_id} ({lay.dir_slots} in use)")
            off = lay.dir_entry(self.host_id, slot)
            gen, _state = L.unpack_state(self.mem.load(off + L.DIR_STATE))
            gen = (gen + 1) & L.DIR_GEN_MASK or 1
            mem = self.mem
            mem.store(off + L.DIR_STATE, L.pack_state(gen, L.DIR_FREE))
            L.write_name(mem, off, name)
            t = now_ms()
            for field, value in ((L.DIR_PID, pid), (L.DIR_HEARTBEAT, t), (L.DIR_STARTED, t), (L.DIR_CALLS, 0),
                                 (L.DIR_ERRORS, 0), (L.DIR_BYTES_IN, 0), (L.DIR_BYTES_OUT, 0), (L.DIR_SLEEP, 0),
                                 (L.DIR_WAKE, wake_index if wake_index is not None else lay.dir_index(self.host_id, slot))):
                mem.store(off + field, value)
            mem.store(off + L.DIR_STATE, L.pack_state(gen, L.DIR_LIVE))
            self._ring_bell(L.HOST_DIR_BELL)
            return Endpoint(name, self.host_id, slot, lay.dir_index(self.host_id, slot), gen, L.DIR_LIVE, pid, t)

    def server_wake_entry(self, ep: Endpoint) -> Optional[int]:
        """Offset of the directory entry whose sleep/kick words ``ep``'s server uses."""
        index = self.mem.load(self.layout.dir_entry(ep.host, ep.slot) + L.DIR_WAKE)
        if not 0 <= index < self.layout.dir_entries:
            return None
        return self.layout.dir_entry_at(index)

    def set_endpoint_state(self, ep: Endpoint, state: int) -> None:
        off = self.layout.dir_entry(ep.host, ep.slot)
        with self.mapping.host_lock():
            gen, _ = L.unpack_state(self.mem.load(off + L.DIR_STATE))
            if gen & L.DIR_GEN_MASK == ep.generation:
                self.mem.store(off + L.DIR_STATE, L.pack_state(gen, state))
                self._ring_bell(L.HOST_DIR_BELL)

    def endpoint_current(self, index: int, generation: int) -> Tuple[bool, int, int]:
        """(still the same live server?, its pid, its heartbeat) for a client's liveness check."""
        if not 0 <= index < self.layout.dir_entries:
            return False, 0, 0
        off = self.layout.dir_entry_at(index)
        gen, state = L.unpack_state(self.mem.load(off + L.DIR_STATE))
        same = (gen & L.DIR_GEN_MASK) == generation and state in (L.DIR_LIVE, L.DIR_DRAINING)
        return same, self.mem.load(off + L.DIR_PID), self.mem.load(off + L.DIR_HEARTBEAT)

    # -- channels -------------------------------------------------------------------------
    def claim_channel(self, target: Endpoint, pid: int) -> Tuple[int, int]:
        """Take a channel slot in this host's partition; returns (slot, generation)."""
        lay = self.layout
        mem = self.mem
        with self.mapping.host_lock():
            for k in range(lay.channels):
                off = lay.channel(self.host_id, k)
                gen, state = L.unpack_state(mem.load(off + L.CH_CLAIM))
                if state == L.CH_OPEN and pid_alive(mem.load(off + L.CH_CLIENT_PID)):
                    continue
                gen = (gen + 1) & L.GEN_MASK or 1
                t = now_ms()
                mem.store(off + L.CH_REQ_HEAD, 0)
                mem.store(off + L.CH_RESP_TAIL, 0)
                for field, value in ((L.CH_TARGET, L.pack_target(target.index, target.generation)),
                                     (L.CH_CLIENT_PID, pid), (L.CH_CLIENT_HEARTBEAT, t),
                                     (L.CH_CALLS_STARTED, 0), (L.CH_OPENED, t), (L.CH_CLIENT_SLEEP, 0)):
                    mem.store(off + field, value)
                mem.store(off + L.CH_CLAIM, L.pack_state(gen, L.CH_OPEN))
                self._ring_bell(L.HOST_CHANNEL_BELL)
                return k, gen
        raise PoolFullError(f"no free channel slot for host {self.host_id} (all {lay.channels} open)")

    def close_channel(self, slot: int, generation: int) -> None:
        off = self.layout.channel(self.host_id, slot)
        with self.mapping.host_lock():
            gen, _state = L.unpack_state(self.mem.load(off + L.CH_CLAIM))
            if gen == generation:
                self.mem.store(off + L.CH_CLAIM, L.pack_state(gen, L.CH_CLOSED))
                self._ring_bell(L.HOST_CHANNEL_BELL)

    def client_rings(self, slot: int) -> Tuple[RingWriter, RingReader]:
        lay = self.layout
        off = lay.channel(self.host_id, slot)
        req = RingWriter(self.mem, lay.request_ring(self.host_id, slot), lay.ring_bytes,
                         off + L.CH_REQ_HEAD, off + L.CH_REQ_TAIL)
        resp = RingReader(self.mem, lay.response_ring(self.host_id, slot), lay.ring_bytes,
                          off + L.CH_RESP_HEAD, off + L.CH_RESP_TAIL)
        return req, resp

    def server_rings(self, host: int, slot: int) -> Tuple[RingReader, RingWriter]:
        lay = self.layout
        off = lay.channel(host, slot)
        req = RingReader(self.mem, lay.request_ring(host, slot), lay.ring_bytes, off + L.CH_REQ_HEAD, off + L.CH_REQ_TAIL)
        resp = RingWriter(self.mem, lay.response_ring(host, slot), lay.ring_bytes, off + L.CH_RESP_HEAD,
                          off + L.CH_RESP_TAIL)
        return req, resp
