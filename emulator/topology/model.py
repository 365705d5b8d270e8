"""The topology file: which hosts, which shared pools, what to run.

Validated completely before anything starts, so that a typo never leaves half a run
behind. Every error names the file, the line and the field.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from emulator.errors import TopologyError
from emulator.sizes import GiB, MiB, format_size, parse_size
from emulator.topology.yaml_lines import Key, LocatedDocument, load, load_file

BACKENDS = ("qemu", "sim")
BACKINGS = ("hugetlbfs", "shm")
QEMU_POOL_ALIGN = 256 * MiB
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")

TOP_KEYS = ("name", "backend", "pools", "hosts", "network", "interpose", "run")
POOL_KEYS = ("name", "size", "backing", "latency_ns", "bandwidth_gbps", "coherence", "evictions_per_s", "seed")
COHERENCE = ("coherent", "software", "none")  # docs/coherence.md
DEFAULT_EVICTIONS_PER_S = 200.0
HOST_KEYS = ("name", "cpus", "memory", "pools")
STEP_KEYS = ("on", "cmd", "background", "wait_for", "timeout", "env", "workdir", "continue_on_error")
PARALLEL_KEYS = ("parallel",)

DEFAULT_CPUS = 1
DEFAULT_MEMORY = 1 * GiB
DEFAULT_STEP_TIMEOUT = 300.0


@dataclass(frozen=True)
class Pool:
    """One shared far-memory device: a file on the host, a CXL Type-3 device in guests."""

    name: str
    size: int
    backing: str  # "hugetlbfs" | "shm" | "path"
    path: Optional[str] = None  # for backing == "path"
    latency_ns: Optional[float] = None  # far-memory model (sim backend)
    bandwidth_gbps: Optional[float] = None
    index: int = 0
    # coherent: hardware keeps hosts coherent (as QEMU and /dev/shm do); software: the same,
    # but notnets_rpc formats the pool for software coherence and follows the write-back
    # rule; none: the sim backend runs the non-coherent model (each host its own view)
    coherence: str = "coherent"
    evictions_per_s: float = DEFAULT_EVICTIONS_PER_S  # coherence none: per host, at random
    seed: int = 0  # coherence none: seeds the evictions

    @property
    def uuid(self) -> str:
        """The namespace uuid every host uses, derived from the name so all agree."""
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"notnets-pool:{self.name}"))

    @property
    def serial(self) -> int:
        """The cxl-type3 serial number (``sn=``) by which a guest finds this pool."""
        digest = hashlib.sha256(f"notnets-pool:{self.name}".encode()).digest()
        return int.from_bytes(digest[:6], "big") or 1


@dataclass(frozen=True)
class Host:
    """One machine of the topology: a QEMU VM or, with the sim backend, a process tree."""

    name: str
    index: int  # the host id every host agrees on (NOTNETS_HOST_ID)
    cpus: int = DEFAULT_CPUS
    memory: int = DEFAULT_MEMORY
    pools: tuple[str, ...] = ()


@dataclass(frozen=True)
class Step:
    """One command of ``notnets-emu run`` on one host.

    A step item ``on: [a, b]`` or ``on: all`` becomes one Step per host, and a
    ``parallel:`` item one per inner step per host; Steps with the same ``group`` run
    at the same time. ``label`` is the item's number ("3", or "3.2" inside a
    ``parallel:`` item), for messages and reports.
    """

    on: str
    cmd: str
    background: bool = False
    wait_for: Optional[str] = None
    timeout: float = DEFAULT_STEP_TIMEOUT
    line: Optional[int] = None
    env: tuple[tuple[str, str], ...] = ()
    workdir: Optional[str] = None
    continue_on_error: bool = False
    group: int = 0
    label: str = "1"


@dataclass(frozen=True)
class Topology:
    """A validated topology; build it with :func:`load_topology` or :func:`parse_topology`."""

    name: str
    backend: str
    pools: tuple[Pool, ...]
    hosts: tuple[Host, ...]
    network: bool = False
    run: tuple[Step, ...] = ()
    source: Optional[str] = None
    # unmodified grpc programs in the hosts use the pool (NOTNETS_INTERPOSE=1, docs/interpose.md)
    interpose: bool = True

    @property
    def pool_hosts(self) -> int:
        """Host partitions every pool of this run is formatted with (NOTNETS_POOL_HOSTS)."""
        return pool_partitions(len(self.hosts))

    def pool(self, name: str) -> Pool:
        for pool in self.pools:
            if pool.name == name:
                return pool
        raise KeyError(name)

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)

    def host_pools(self, host: Host) -> list[Pool]:
        """The pools attached to ``host``, in the order the host lists them."""
        return [self.pool(name) for name in host.pools]

    def with_backend(self, backend: str) -> "Topology":
        """The same topology on another backend, re-checked (load_topology(backend=)
        checks with the file's line numbers; this is for callers that hold a Topology)."""
        if backend not in BACKENDS:
            raise TopologyError(f"unknown backend {backend!r} (expected one of: {', '.join(BACKENDS)})")
        if backend == "qemu":
            for pool in self.pools:
                _check_qemu_pool_size(pool.size, f"{self.source or 'topology'}: pools.{pool.name}.size")
        return dataclasses.replace(self, backend=backend)


MemoryProbe = Callable[[], Optional[int]]


def pool_partitions(host_count: int) -> int:
    """How many host partitions a run's pools get: one per host of the topology (a host's
    id is its index), and never fewer than the layout's default, so that runs of up to
    eight hosts keep the rings they always had (more partitions mean smaller rings)."""
    from notnets_rpc.wire.layout import DEFAULT_MAX_HOSTS

    return max(DEFAULT_MAX_HOSTS, host_count)


def available_memory() -> Optional[int]:
    """MemAvailable from /proc/meminfo, or None where it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def load_topology(path: Path | str, memory_probe: MemoryProbe = available_memory, backend: Optional[str] = None,
                  name: Optional[str] = None) -> Topology:
    """Read, parse and validate a topology file; ``backend`` and ``name`` override the
    file's (``--backend``, ``-p``) before the checks that depend on them."""
    return _validate(load_file(Path(path)), memory_probe, backend, name)


def _coherence(c: "_Checker", p: dict[str, Any], path: Key, backend: str) -> tuple[str, float, int]:
    """(coherence, evictions_per_s, seed) of a pool; the last two only with coherence none."""
    coherence = p.get("coherence", "coherent")
    if coherence not in COHERENCE:
        c.fail(path + ("coherence",), f"expected one of {', '.join(COHERENCE)}, got {coherence!r}")
    if coherence == "none" and backend != "sim":
        c.fail(path + ("coherence",), "none is a model that only the sim backend runs (QEMU's CXL device is "
                                      "coherent); use software to run the write-back rule on QEMU")
    for key in ("evictions_per_s", "seed"):
        if key in p and coherence != "none":
            c.fail(path + (key,), f"{key} only applies to a pool with coherence: none")
    evictions = p.get("evictions_per_s", DEFAULT_EVICTIONS_PER_S)
    if isinstance(evictions, bool) or not isinstance(evictions, (int, float)) or evictions < 0:
        c.fail(path + ("evictions_per_s",), f"expected a number >= 0, got {evictions!r}")
    seed = c.integer(p.get("seed", 0), path + ("seed",), 0, 2**63 - 1)
    return coherence, float(evictions), seed


def parse_topology(text: str, source: str = "<string>", memory_probe: MemoryProbe = available_memory,
                   backend: Optional[str] = None, name: Optional[str] = None) -> Topology:
    """Validate topology YAML given as text (tests, stdin)."""
    return _validate(load(text, source), memory_probe, backend, name)


class _Checker:
    """Walks the document, raising the first problem with its location."""

    def __init__(self, doc: LocatedDocument) -> None:
        self.doc = doc

    def fail(self, path: Key, message: str) -> None:
        raise TopologyError(f"{self.doc.where(path)}: {message}")

    def mapping(self, value: Any, path: Key, allowed: tuple[str, ...], what: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(path, f"expected a mapping ({what}), got {_kind(value)}")
        for key in value:
            if key not in allowed:
                hint = difflib.get_close_matches(key, allowed, n=1)
                suggestion = f"; did you mean {hint[0]!r}?" if hint else f" (allowed: {', '.join(allowed)})"
                self.fail(path + (key,), f"unknown key {key!r}{suggestion}")
        return value

    def name(self, value: Any, path: Key) -> str:
        if not isinstance(value, str) or not NAME_RE.match(value):
            self.fail(path, f"invalid name {value!r}: use a letter, then letters, digits, '-' or '_' (32 at most)")
        return value

    def size(self, value: Any, path: Key) -> int:
        try:
            return parse_size(value)
        except ValueError as err:
            self.fail(path, str(err))
            raise AssertionError  # unreachable

    def integer(self, value: Any, path: Key, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.fail(path, f"expected a whole number from {low} to {high}, got {value!r}")
        return value

    def number(self, value: Any, path: Key) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            self.fail(path, f"expected a positive number, got {value!r}")
        return float(value)

    def boolean(self, value: Any, path: Key) -> bool:
        if not isinstance(value, bool):
            self.fail(path, f"expected true or false, got {value!r}")
        return value

    def string(self, value: Any, path: Key) -> str:
        if not isinstance(value, str) or not value.strip():
            self.fail(path, f"expected a non-empty string, got {value!r}")
        return value

    def sequence(self, value: Any, path: Key, what: str) -> list[Any]:
        if not isinstance(value, list):
            self.fail(path, f"expected a list of {what}, got {_kind(value)}")
        return value

    def unique(self, names: list[tuple[str, Key]], what: str) -> None:
        seen: dict[str, Key] = {}
        for name, path in names:
            if name in seen:
                first = self.doc.line_of(seen[name])
                self.fail(path, f"duplicate {what} name {name!r} (first defined on line {first})")
            seen[name] = path


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", type(None): "nothing"}.get(type(value), type(value).__name__)


def _check_qemu_pool_size(size: int, where: str) -> None:
    if size % QEMU_POOL_ALIGN:
        raise TopologyError(
            f"{where}: {format_size(size)} is not a multiple of 256M, which QEMU's CXL Type-3 device needs"
        )


def _validate(doc: LocatedDocument, memory_probe: MemoryProbe, backend_override: Optional[str] = None,
              name_override: Optional[str] = None) -> Topology:
    c = _Checker(doc)
    if doc.data is None:
        c.fail((), "the file is empty; it needs at least 'name', 'pools' and 'hosts'")
    top = c.mapping(doc.data, (), TOP_KEYS, "the topology")
    for required in ("name", "hosts"):
        if required not in top:
            c.fail((), f"missing required key {required!r}")
    name = c.name(top["name"], ("name",))
    if name_override is not None:
        if not NAME_RE.match(name_override):
            raise TopologyError(f"--name {name_override!r}: use a letter, then letters, digits, '-' or '_' "
                                "(32 at most)")
        name = name_override
    backend = top.get("backend", "qemu")
    if backend not in BACKENDS:
        c.fail(("backend",), f"unknown backend {backend!r} (expected one of: {', '.join(BACKENDS)})")
    if backend_override is not None:
        if backend_override not in BACKENDS:
            raise TopologyError(f"--backend {backend_override!r}: expected one of: {', '.join(BACKENDS)}")
        backend = backend_override
    network = c.boolean(top.get("network", False), ("network",))
    interpose = c.boolean(top.get("interpose", True), ("interpose",))

    raw_hosts = c.sequence(top["hosts"], ("hosts",), "hosts")
    if not raw_hosts:
        c.fail(("hosts",), "at least one host is needed")
    from notnets_rpc.wire.layout import MAX_HOSTS

    if len(raw_hosts) > MAX_HOSTS:
        c.fail(("hosts",), f"{len(raw_hosts)} hosts; a pool has host partitions for {MAX_HOSTS} at most")
    partitions = pool_partitions(len(raw_hosts))

    pools: list[Pool] = []
    raw_pools = c.sequence(top.get("pools", []), ("pools",), "pools")
    for i, raw in enumerate(raw_pools):
        path: Key = ("pools", i)
        p = c.mapping(raw, path, POOL_KEYS, "a pool")
        for required in ("name", "size"):
            if required not in p:
                c.fail(path, f"missing required key {required!r}")
        size = c.size(p["size"], path + ("size",))
        if backend == "qemu" and size % QEMU_POOL_ALIGN:
            c.fail(path + ("size",), f"{format_size(size)} is not a multiple of 256M, which QEMU's CXL Type-3 device "
                                     "needs (the sim backend takes any size)")
        too_small = _pool_too_small(size, partitions)
        if too_small:
            c.fail(path + ("size",), too_small)
        backing_raw = p.get("backing", "hugetlbfs")
        backing, backing_path = _backing(c, backing_raw, path + ("backing",))
        coherence, evictions, seed = _coherence(c, p, path, backend)
        pools.append(
            Pool(
                name=c.name(p["name"], path + ("name",)),
                size=size,
                backing=backing,
                path=backing_path,
                latency_ns=c.number(p["latency_ns"], path + ("latency_ns",)) if "latency_ns" in p else None,
                bandwidth_gbps=c.number(p["bandwidth_gbps"], path + ("bandwidth_gbps",)) if "bandwidth_gbps" in p else None,
                index=i,
                coherence=coherence,
                evictions_per_s=evictions,
                seed=seed,
            )
        )
    c.unique([(pool.name, ("pools", i, "name")) for i, pool in enumerate(pools)], "pool")
    pool_names = [pool.name for pool in pools]

    hosts: list[Host] = []
    for i, raw in enumerate(raw_hosts):
        path = ("hosts", i)
        h = c.mapping(raw, path, HOST_KEYS, "a host")
        if "name" not in h:
            c.fail(path, "missing required key 'name'")
        attached = c.sequence(h.get("pools", []), path + ("pools",), "pool names")
        for j, pool_name in enumerate(attached):
            if pool_name not in pool_names:
                hint = difflib.get_close_matches(str(pool_name), pool_names, n=1)
                known = f"; did you mean {hint[0]!r}?" if hint else f" (known pools: {', '.join(pool_names) or 'none'})"
                c.fail(path + ("pools", j), f"unknown pool {pool_name!r}{known}")
            if attached.index(pool_name) != j:
                c.fail(path + ("pools", j), f"pool {pool_name!r} is attached twice")
        memory = c.size(h.get("memory", DEFAULT_MEMORY), path + ("memory",))
        if memory < 256 * MiB:
            c.fail(path + ("memory",), f"{format_size(memory)} is too little for a guest; give at least 256M")
        hosts.append(
            Host(
                name=c.name(h["name"], path + ("name",)),
                index=i,
                cpus=c.integer(h.get("cpus", DEFAULT_CPUS), path + ("cpus",), 1, 64),
                memory=memory,
                pools=tuple(attached),
            )
        )
    c.unique([(host.name, ("hosts", i, "name")) for i, host in enumerate(hosts)], "host")

    used = {name for host in hosts for name in host.pools}
    for i, pool in enumerate(pools):
        if pool.name not in used:
            c.fail(("pools", i, "name"), f"pool {pool.name!r} is attached to no host")

    steps: list[Step] = []
    host_names = [host.name for host in hosts]
    for i, raw in enumerate(c.sequence(top.get("run", []), ("run",), "steps")):
        path = ("run", i)
        if isinstance(raw, dict) and "parallel" in raw:
            c.mapping(raw, path, PARALLEL_KEYS, "a parallel group")
            inner = c.sequence(raw["parallel"], path + ("parallel",), "steps")
            if not inner:
                c.fail(path + ("parallel",), "a parallel group needs at least one step")
            for j, item in enumerate(inner):
                steps += _steps(c, doc, item, path + ("parallel", j), host_names, i, f"{i + 1}.{j + 1}")
        else:
            steps += _steps(c, doc, raw, path, host_names, i, str(i + 1))

    topology = Topology(name, backend, tuple(pools), tuple(hosts), network, tuple(steps), doc.source, interpose)
    _check_memory(c, topology, memory_probe)
    return topology


def _step_hosts(c: _Checker, value: Any, path: Key, host_names: list[str]) -> list[str]:
    """``on:``: a host, a list of hosts, or ``all``."""
    if value == "all":
        return list(host_names)
    names = value if isinstance(value, list) else [value]
    if not names:
        c.fail(path, "expected a host, a list of hosts or 'all', got an empty list")
    for j, name in enumerate(names):
        where = path + (j,) if isinstance(value, list) else path
        if name not in host_names:
            hint = difflib.get_close_matches(str(name), host_names, n=1)
            known = f"; did you mean {hint[0]!r}?" if hint else f" (hosts: {', '.join(host_names)}, or 'all')"
            c.fail(where, f"unknown host {name!r}{known}")
        if names.index(name) != j:
            c.fail(where, f"host {name!r} is listed twice")
    return names


def _steps(c: _Checker, doc: LocatedDocument, raw: Any, path: Key, host_names: list[str], group: int,
           label: str) -> list[Step]:
    """One step item: a Step per host it runs on, all in ``group``."""
    s = c.mapping(raw, path, STEP_KEYS, "a run step (or {parallel: [steps]})")
    for required in ("on", "cmd"):
        if required not in s:
            c.fail(path, f"missing required key {required!r}")
    on = _step_hosts(c, s["on"], path + ("on",), host_names)
    wait_for = s.get("wait_for")
    background = c.boolean(s.get("background", False), path + ("background",))
    if wait_for is not None:
        c.string(wait_for, path + ("wait_for",))
        if not background:
            c.fail(path + ("wait_for",), "wait_for only applies to background steps")
    env = s.get("env", {})
    if not isinstance(env, dict):
        c.fail(path + ("env",), f"expected a mapping of variables, got {_kind(env)}")
    for key, value in env.items():
        if not isinstance(key, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
            c.fail(path + ("env", key), f"{key!r} is not a variable name")
        if key.startswith(("NOTNETS_HOST", "NOTNETS_POOL")):
            c.fail(path + ("env", key), f"{key} is set by the host itself (NOTNETS_HOST*, NOTNETS_POOL*)")
        if isinstance(value, (dict, list)) or value is None:
            c.fail(path + ("env", key), f"expected a string, number or boolean, got {_kind(value)}")
    workdir = c.string(s["workdir"], path + ("workdir",)) if "workdir" in s else None
    common = dict(
        cmd=c.string(s["cmd"], path + ("cmd",)),
        background=background,
        wait_for=wait_for,
        timeout=c.number(s.get("timeout", DEFAULT_STEP_TIMEOUT), path + ("timeout",)),
        line=doc.line_of(path),
        env=tuple((k, _env_text(v)) for k, v in env.items()),
        workdir=workdir,
        continue_on_error=c.boolean(s.get("continue_on_error", False), path + ("continue_on_error",)),
        group=group,
        label=label,
    )
    return [Step(on=host, **common) for host in on]


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _pool_too_small(size: int, partitions: int) -> Optional[str]:
    """Why a pool of ``size`` bytes cannot hold a NotNets pool for ``partitions`` hosts, or None."""
    from notnets_rpc.errors import PoolTooSmallError
    from notnets_rpc.wire.layout import plan_layout

    try:
        plan_layout(size, max_hosts=partitions)
    except PoolTooSmallError as err:
        return f"{format_size(size)} is too small for a NotNets pool ({err})"
    return None


def _backing(c: _Checker, value: Any, path: Key) -> tuple[str, Optional[str]]:
    if isinstance(value, str) and value.startswith("path:"):
        target = value[len("path:"):].strip()
        if not target.startswith("/"):
            c.fail(path, f"'path:' needs an absolute file path, got {target!r}")
        return "path", target
    if value not in BACKINGS:
        c.fail(path, f"unknown backing {value!r} (expected hugetlbfs, shm or path:/some/file)")
    return value, None


def memory_needed(topology: Topology) -> int:
    """What a run takes from the machine: guest RAM (qemu only) plus each pool once."""
    pools = sum(pool.size for pool in topology.pools if pool.backing != "path")
    guests = sum(host.memory for host in topology.hosts) if topology.backend == "qemu" else 0
    return pools + guests


def _check_memory(c: _Checker, topology: Topology, memory_probe: MemoryProbe) -> None:
    available = memory_probe()
    if available is None:
        return
    needed = memory_needed(topology)
    for pool in topology.pools:  # one pool alone too big: point at it, not at the hosts
        if pool.backing != "path" and pool.size > available:
            c.fail(("pools", pool.index, "size"),
                   f"pool {pool.name!r} needs {format_size(pool.size)} but this machine has {available // MiB}M "
                   "of memory available")
    if needed > available:
        c.fail(
            ("hosts",),
            f"the topology needs {format_size(-(-needed // MiB) * MiB)} of memory "
            f"(guests and pools) but this machine has {available // MiB}M available",
        )
