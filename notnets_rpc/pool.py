"""A mapped pool: format it, validate it, and claim directory and channel slots.

Claims follow the multi-writer rule of DESIGN.md: a process only writes slots in the
partition of its own host id (env NOTNETS_HOST_ID), and processes of one host
serialise their claims with a flock on the pool. Everything a claim reads from
another partition is only read.

``Pool.acquire`` shares one mapping per (path, host id) among all channels and servers
of a process; ``release`` unmaps it when the last user is gone.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid as uuidlib
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, Optional, Tuple

from . import cxl
from .coherent_memory import SoftwareCoherent
from .wire import layout as L
from .liveness import BEATER
from .errors import EndpointInUseError, PoolError, PoolNotReadyError, PoolExistsError, PoolFullError
from .mapping import Mapping, PathLike, create_backing, is_char_device
from . import farmem
from .memory import Buffer, Memory
from .wire.ring import RingReader, RingWriter

POOL_ENV = "NOTNETS_POOL"
HOST_ID_ENV = "NOTNETS_HOST_ID"
STALE_ENV = "NOTNETS_STALE_MS"
COHERENCE_ENV = "NOTNETS_COHERENCE"  # "software", or JSON {pool path: "software" | "coherent"}
POOL_HOSTS_ENV = "NOTNETS_POOL_HOSTS"  # host partitions of a pool this process formats


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


def pool_hosts_from_env() -> int:
    """How many host partitions a pool formatted here gets: $NOTNETS_POOL_HOSTS (the
    emulator sets it from the topology's host count), else the layout's default. Only
    the formatter reads it; every other process takes the count from the superblock."""
    raw = os.environ.get(POOL_HOSTS_ENV, "").strip()
    if not raw:
        return L.DEFAULT_MAX_HOSTS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= L.MAX_HOSTS:
        raise PoolError(f"{POOL_HOSTS_ENV}={raw!r}: expected a host count in 1..{L.MAX_HOSTS}")
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


BOOT_ID = "/proc/sys/kernel/random/boot_id"
BOOT_ID_ENV = "NOTNETS_BOOT_ID"  # stands in for the kernel's boot id (a test or benchmark playing another kernel)


def kernel_identity(fd: int) -> int:
    """This process's kernel word for the pool mapped from ``fd`` (layout.kernel_word),
    or 0 when it cannot be told (no boot id, as on a kernel without procfs).
    $NOTNETS_BOOT_ID replaces the boot id: processes given different ones never futex
    each other, as on two kernels (a peer's word is untrusted anyway)."""
    try:
        boot = os.environ.get(BOOT_ID_ENV, "").encode()
        if not boot:
            with open(BOOT_ID, "rb") as f:
                boot = f.read()
        st = os.fstat(fd)
    except OSError:
        return 0
    return L.kernel_word(boot, st.st_dev, st.st_ino) if boot.strip() else 0


def wanted_coherence(path: str, ops_kind: str) -> str:
    """How a pool that this process formats should be: 'software' on a host's view of a
    non-coherent model, or where $NOTNETS_COHERENCE asks for it (set by the emulator
    from the topology's ``pools[].coherence``); else 'coherent'."""
    if ops_kind == "model":
        return "software"
    raw = os.environ.get(COHERENCE_ENV, "").strip()
    if not raw.startswith("{"):
        wanted = raw or "coherent"
    else:
        try:
            table = json.loads(raw)
        except ValueError as err:
            raise PoolError(f"{COHERENCE_ENV}: not JSON ({err})") from None
        real = os.path.realpath(path)
        wanted = next((v for k, v in table.items() if os.path.realpath(k) == real), "coherent") \
            if isinstance(table, dict) else None
    if wanted not in L.COHERENCE:
        raise PoolError(f"{COHERENCE_ENV}: expected {' or '.join(L.COHERENCE)}, got {raw!r}")
    return wanted


def _cache_ops(path: str, buf: Buffer) -> object:
    """cxl.ops_for the mapping; a bad $NOTNETS_CXL_MODE is a pool problem for the caller."""
    try:
        return cxl.ops_for(path, buf)
    except ValueError as err:
        raise PoolError(str(err)) from None


class _FarSoftwareCoherent(SoftwareCoherent, farmem.FarMemory):
    """Both at once: the write-back rule, and each access charged its far-memory cost."""


def pool_memory(buf: Buffer, path: str, writable: bool = True, ops: object = None) -> Memory:
    """The accessor for the pool mapped from ``path``: plain, or charging the far-memory
    model that $NOTNETS_FARMEM sets for it (notnets_rpc/farmem.py; off unless set); with
    ``ops`` (cxl.ops_for the mapping) for a pool formatted for software coherence, one
    that keeps the write-back rule (coherent_memory.py).

    No futex on a device (a /dev/daxX.Y of a CXL pool): FUTEX_WAIT on a device-dax page
    oopses Linux 6.1 (get_futex_key -> put_page -> free_zone_device_page, seen in our
    QEMU guests); the kernel kills the waiting thread, a server's poller vanishes and
    its clients time out. Waiters on such a pool poll and sleep instead."""
    model = farmem.model_for(path)
    account = () if model is None else (farmem.account_for(os.path.realpath(path), model),)
    if ops is not None:
        mem: Memory = (SoftwareCoherent if model is None else _FarSoftwareCoherent)(buf, writable, ops, *account)
    elif model is None:
        mem = Memory(buf, writable)
    else:
        mem = farmem.FarMemory(buf, writable, *account)
    if is_char_device(path):
        mem.can_wait = False
    return mem


def create_pool(path: PathLike, size: Optional[int] = None, overwrite: bool = False, *,
                max_hosts: int = L.DEFAULT_MAX_HOSTS, dir_slots: int = L.DEFAULT_DIR_SLOTS,
                channels: int = L.DEFAULT_CHANNELS, ring_bytes: Optional[int] = None,
                coherence: str = "coherent", frame_checksums: bool = False) -> L.Layout:
    """Format a file or DAX device as an empty pool and return its layout.

    ``frame_checksums``: every frame carries a CRC-32 (a format option every process
    on the pool then follows): a payload corrupted in the pool ends its call with
    DATA_LOSS instead of being delivered.

    Refuses (``PoolExistsError``) to format over a pool unless ``overwrite``; a file
    that holds something else is formatted. ``size`` may be omitted for an existing
    file or a device (their whole size is used). ``coherence="software"`` formats it
    for hosts that hardware does not keep coherent: every user then writes back and
    invalidates (docs/pool-layout.md, "Software coherence").
    """
    if size is not None and size <= 0:
        raise ValueError(f"pool size must be positive, got {size}")
    if coherence not in L.COHERENCE:
        raise ValueError(f"coherence must be {' or '.join(L.COHERENCE)}, got {coherence!r}")
    usable = create_backing(path, size)
    mapping = Mapping(path, writable=True)
    ops = None
    try:
        ops = _cache_ops(path, mapping.mm)
        if ops.kind == "model" and coherence != "software":
            raise PoolError(f"{path} is a host's view of a non-coherent pool: format it with coherence='software'")
        mem = SoftwareCoherent(mapping.mm, True, ops)
        try:
            with mapping.host_lock():
                if L.is_formatted(mem) and not overwrite:
                    raise PoolExistsError(f"{path} already holds a NotNets pool (use overwrite=True / --overwrite)")
                flags = ((L.FLAG_SOFTWARE_COHERENCE if coherence == "software" else 0)
                         | (L.FLAG_FRAME_CRC if frame_checksums else 0))
                return _format(mem, min(usable, mapping.size), max_hosts, dir_slots, channels, ring_bytes, flags)
        finally:
            mem.release()
    finally:
        if ops is not None:
            ops.close()
        mapping.close()


def _format(mem: Memory, size: int, max_hosts: int, dir_slots: int, channels: int,
            ring_bytes: Optional[int], flags: int = 0) -> L.Layout:
    """Unpublish, zero the control regions, publish the superblock, the magic last. On a
    SoftwareCoherent ``mem`` each step is written back before the next."""
    plan = L.plan_layout(size, max_hosts=max_hosts, dir_slots=dir_slots, channels=channels, ring_bytes=ring_bytes)
    plan = L.Layout(**{**plan.__dict__, "uuid": uuidlib.uuid4().bytes, "created_ms": now_ms(), "flags": flags})
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
    kernel: int = 0  # its server's kernel word (DIR_KERNEL): untrusted, only for Pool.shares_futex


class BeatWatch:
    """Heartbeats judged by change over this process's own monotonic clock, never by
    comparing another host's clock with ours (hosts' clocks may differ by seconds).

    ``observe`` is called with each look at a directory entry; an entry is ALIVE once
    its heartbeat word was seen to change within the stale interval, STALE once it stood
    still for longer than that since we first saw it, and UNKNOWN before either."""

    UNKNOWN, ALIVE, STALE = "unknown", "alive", "stale"

    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._seen: Dict[Tuple[int, int], Tuple[int, float, bool]] = {}  # (index, gen) -> beat, since, changed

    def observe(self, index: int, generation: int, beat: int) -> str:
        now = self._clock()
        key = (index, generation)
        last = self._seen.get(key)
        if last is None:
            if len(self._seen) > 4096:
                self._seen.clear()
            self._seen[key] = (beat, now, False)
            return self.UNKNOWN
        old, since, changed = last
        if beat != old:
            self._seen[key] = (beat, now, True)
            return self.ALIVE
        if (now - since) * 1000 > stale_ms():
            return self.STALE
        return self.ALIVE if changed else self.UNKNOWN


class Pool:
    """One process's view of a formatted pool, shared by its channels and servers."""

    _registry: Dict[Tuple[str, int], "Pool"] = {}
    _registry_lock = threading.Lock()

    def __init__(self, path: str, mapping: Mapping, host_id: int, ops: object = None) -> None:
        self.path = path
        self.mapping = mapping
        self.ops = ops if ops is not None else _cache_ops(path, mapping.mm)
        boot = SoftwareCoherent(mapping.mm, mapping.writable, self.ops)  # the flag is not known yet
        try:
            layout = L.parse_superblock(boot)
        finally:
            boot.release()
        if layout.coherence == "coherent" and self.ops.kind == "model":
            raise PoolError(f"{path}: the pool was formatted for coherent hardware, but this host's view of it "
                            "is not coherent (coherence: none); format it with coherence='software'")
        software = self.ops if layout.coherence == "software" else None
        self.mem = pool_memory(mapping.mm, path, writable=mapping.writable, ops=software)
        self.layout = layout
        if host_id >= self.layout.max_hosts:
            raise PoolError(f"host id {host_id} ({HOST_ID_ENV}) is outside this pool's {self.layout.max_hosts} host "
                            f"partitions (its formatter set the count: {POOL_HOSTS_ENV}, `pool create --hosts`)")
        self.host_id = host_id
        # published in our directory entries and channels: same-kernel peers wake us (shares_futex)
        self.kernel = kernel_identity(mapping.fd) if self.mem.can_wait else 0
        self.users = 0
        self.beats = BeatWatch()
        self.lost: Optional[str] = None  # set once the file shrank under us: nobody may touch the mapping
        self._on_lost: Dict[int, Callable[[str], None]] = {}
        self._size_key: Optional[int] = None
        self._refused: Dict[int, Tuple[int, int]] = {}  # dir index -> (generation, heartbeat) that did not accept us

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
                ops = None
                try:
                    ops = _cache_ops(path, mapping.mm)
                    mem = SoftwareCoherent(mapping.mm, True, ops)  # reads the superblock fresh
                    try:
                        ready = L.is_formatted(mem)
                        if not ready and L.looks_empty(mem):
                            if format_if_empty:
                                with mapping.host_lock():
                                    if L.looks_empty(mem):
                                        _format(mem, mapping.size, pool_hosts_from_env(), L.DEFAULT_DIR_SLOTS,
                                                L.DEFAULT_CHANNELS, None,
                                                L.FLAG_SOFTWARE_COHERENCE
                                                if wanted_coherence(path, ops.kind) == "software" else 0)
                                ready = True
                            elif time.monotonic() >= deadline:
                                raise PoolNotReadyError(f"{path}: not formatted yet (all zero); start a server "
                                                    "or run `notnets-emu pool create`")
                        elif not ready:
                            ready = True  # let parse_superblock say what is wrong
                    finally:
                        mem.release()
                    if ready:
                        pool_obj = cls(path, mapping, hid, ops)
                        pool_obj.users = 1
                        cls._registry[key] = pool_obj
                        if not mapping.is_device:  # a device cannot shrink; a file can be truncated
                            pool_obj._size_key = BEATER.register(pool_obj.check_size)
                        return pool_obj
                except BaseException:
                    if ops is not None:
                        ops.close()
                    mapping.close()
                    raise
                ops.close()
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
        if self._size_key is not None:
            BEATER.unregister(self._size_key)
            self._size_key = None
        self.mem.release()
        self.ops.close()
        self.mapping.close()

    # -- a file that shrinks under us ----------------------------------------------------
    def on_lost(self, callback: Callable[[str], None]) -> int:
        """Call ``callback(reason)`` (from the beat thread) if the pool file shrinks."""
        key = id(callback)
        self._on_lost[key] = callback
        if self.lost is not None:
            callback(self.lost)
        return key

    def forget_lost(self, key: int) -> None:
        self._on_lost.pop(key, None)

    def check_size(self) -> None:
        """(beat thread) A pool file truncated while mapped: any access past its new end
        kills the process with SIGBUS. Noticed here within a beat, the users are told
        to stop touching the mapping (their calls end UNAVAILABLE) and the mapping is
        dropped from the registry, so a new pool at that path is mapped afresh.
        What remains: a thread that touches the cut-off range before this look dies."""
        if self.lost is not None:
            return
        try:
            size = os.fstat(self.mapping.fd).st_size
        except OSError:
            return
        if size >= self.layout.pool_bytes:
            return
        self.lost = (f"pool file {self.path} shrank to {size} bytes while mapped ({self.layout.pool_bytes} in use); "
                     "its calls end here")
        with self._registry_lock:
            key = (os.path.realpath(self.path), self.host_id)
            if self._registry.get(key) is self:
                del self._registry[key]
        for callback in list(self._on_lost.values()):
            try:
                callback(self.lost)
            except Exception:
                pass

    def shares_futex(self, host: int, kernel: int) -> bool:
        """Whether a peer of ``host`` that published the kernel word ``kernel`` and we wake
        each other from a futex sleep: same host id (one host is one kernel), or the
        same kernel word (processes of one kernel that map one file under different host
        ids: sim hosts). ``kernel`` is untrusted; a peer that lies gets no wakes or
        wakes it does not need, and every sleep has a limit."""
        return self.mem.can_wait and (host == self.host_id or (kernel == self.kernel and kernel != 0))

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
                        self.mem.load(off + L.DIR_PID), self.mem.load(off + L.DIR_HEARTBEAT),
                        self.mem.load(off + L.DIR_KERNEL))

    def liveness(self, ep: Endpoint) -> str:
        """BeatWatch's verdict on ``ep`` (STALE at once for a dead pid on this host or a
        state other than LIVE/DRAINING).

        The heartbeat counts on the same host too: a host that was killed and restarted
        (a rebooted VM, a restarted sim host) numbers its processes from 1 again, so the
        old server's pid may well exist and belong to someone else.
        """
        if ep.state not in (L.DIR_LIVE, L.DIR_DRAINING):
            return BeatWatch.STALE
        if ep.host == self.host_id and not pid_alive(ep.pid):
            return BeatWatch.STALE
        return self.beats.observe(ep.index, ep.generation, ep.heartbeat_ms)

    def endpoint_alive(self, ep: Endpoint) -> bool:
        """Not known to be dead: a heartbeat not yet watched long enough counts as alive."""
        return self.liveness(ep) != BeatWatch.STALE

    def candidates(self, name: str) -> list:
        """The LIVE endpoints named ``name`` a client may try, best first: those whose
        heartbeat was seen moving, then those not watched long enough to tell; never
        one seen standing still, nor one that did not accept us (until it beats again).
        A client trusts an entry only once its server accepted the channel."""
        ranked = []
        for h, s, _off in self.entries():
            ep = self.read_endpoint(h, s)
            if ep is None or ep.name != name or ep.state != L.DIR_LIVE:
                continue
            verdict = self.liveness(ep)
            if verdict == BeatWatch.STALE or self._refused.get(ep.index) == (ep.generation, ep.heartbeat_ms):
                continue
            ranked.append((verdict != BeatWatch.ALIVE, ep.host != self.host_id, ep.index, ep))
        return [item[-1] for item in sorted(ranked, key=lambda item: item[:3])]

    def refused(self, ep: Endpoint) -> None:
        """``ep`` did not accept a channel: skip it until its heartbeat moves."""
        self._refused[ep.index] = (ep.generation, ep.heartbeat_ms)

    def resolve(self, name: str) -> Optional[Endpoint]:
        """The best candidate for ``name`` (see ``candidates``), or None."""
        found = self.candidates(name)
        return found[0] if found else None

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
                                 (L.DIR_CROWD, 0), (L.DIR_PASS, 0), (L.DIR_KERNEL, self.kernel),
                                 (L.DIR_WAKE, wake_index if wake_index is not None else lay.dir_index(self.host_id, slot))):
                mem.store(off + field, value)
            mem.store(off + L.DIR_STATE, L.pack_state(gen, L.DIR_LIVE))
            self._ring_bell(L.HOST_DIR_BELL)
            return Endpoint(name, self.host_id, slot, lay.dir_index(self.host_id, slot), gen, L.DIR_LIVE, pid, t,
                            self.kernel)

    def server_wake_entry(self, ep: Endpoint) -> Optional[int]:
        """Offset of the directory entry whose sleep/kick words ``ep``'s server uses."""
        index = self.mem.load(self.layout.dir_entry(ep.host, ep.slot) + L.DIR_WAKE)
        if not 0 <= index < self.layout.dir_entries:
            return None
        return self.layout.dir_entry_at(index)

    def set_endpoint_state(self, ep: Endpoint, state: int) -> None:
        if self.lost is not None:
            return
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
                    acc_gen, verdict = L.unpack_state(mem.load(off + L.CH_ACCEPT))
                    if acc_gen != gen or verdict in (L.ACC_NONE, L.ACC_ACCEPTED):
                        continue  # in use (or a claim still waiting for its answer)
                    # its server dropped it (a client frozen, or a squatter with a live pid)
                gen = (gen + 1) & L.GEN_MASK or 1
                t = now_ms()
                mem.store(off + L.CH_REQ_HEAD, 0)
                mem.store(off + L.CH_RESP_TAIL, 0)
                mem.store(off + L.CH_RESP_LANE_TAIL, 0)
                for field, value in ((L.CH_TARGET, L.pack_target(target.index, target.generation)),
                                     (L.CH_CLIENT_PID, pid), (L.CH_CLIENT_HEARTBEAT, t),
                                     (L.CH_CALLS_STARTED, 0), (L.CH_OPENED, t), (L.CH_CLIENT_SLEEP, 0),
                                     (L.CH_CLIENT_KERNEL, self.kernel)):
                    mem.store(off + field, value)
                mem.store(off + L.CH_CLAIM, L.pack_state(gen, L.CH_OPEN))
                self._ring_bell(L.HOST_CHANNEL_BELL)
                return k, gen
        raise PoolFullError(f"no free channel slot for host {self.host_id} (all {lay.channels} open)")

    def close_channel(self, slot: int, generation: int) -> None:
        if self.lost is not None:
            return
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
                         off + L.CH_REQ_HEAD, off + L.CH_REQ_TAIL, crc=lay.frame_crc)
        resp = RingReader(self.mem, lay.response_ring(self.host_id, slot), lay.ring_bytes,
                          off + L.CH_RESP_HEAD, off + L.CH_RESP_TAIL, crc=lay.frame_crc)
        return req, resp

    def server_rings(self, host: int, slot: int) -> Tuple[RingReader, RingWriter]:
        lay = self.layout
        off = lay.channel(host, slot)
        req = RingReader(self.mem, lay.request_ring(host, slot), lay.ring_bytes, off + L.CH_REQ_HEAD, off + L.CH_REQ_TAIL,
                         crc=lay.frame_crc)
        resp = RingWriter(self.mem, lay.response_ring(host, slot), lay.ring_bytes, off + L.CH_RESP_HEAD,
                          off + L.CH_RESP_TAIL, crc=lay.frame_crc)
        return req, resp

    def drop_ring_pages(self, host: int, slot: int) -> int:
        """Let this process's mapping of a channel's two rings go (mapping.drop_pages); the
        next access maps them again. For a channel that closed or sits idle. Only ring
        pages: the rings of a channel are adjacent and page aligned, so no page of the
        header, the tables or another channel is in the span; with pages larger than a
        ring (hugetlbfs, a DAX device) only whole pages inside it go, often none.
        Coherence: this drops page table entries, not cache lines or data; every access
        still goes through ``self.mem`` and its write-back rule. Returns bytes dropped."""
        if self.lost is not None:
            return 0
        lay = self.layout
        start = lay.request_ring(host, slot)
        return self.mapping.drop_pages(start, lay.response_ring(host, slot) + lay.ring_bytes - start)
