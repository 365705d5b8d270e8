"""A far-memory model: what an access to a CXL pool costs, added to a simulated pool.

On the simulator a pool is a file in the machine's own DRAM, so every access is far
cheaper than on a CXL device. When a pool has a model, the memory layer charges each
access its modelled cost and makes the caller wait for it:

    control word (one aligned 8-byte load or store):  t = L
    payload copy of n bytes (read or write):          t = L + n / B

with L = ``latency_ns`` (ns) and B = ``bandwidth_gbps`` (GB/s = 10^9 B/s, i.e. bytes per
ns). The machine's own memory time is not subtracted: it is a few tens of ns, well
inside the ~1 us at which a Python process can place a wait at all.

Python cannot sleep for 250 ns, and one call of ``time.perf_counter_ns`` already costs
tens of ns. So charges are *accounted*: each access adds its cost to a debt, and once the
debt reaches ``QUANTUM_NS`` the caller busy-waits it off against the clock, carrying any
overshoot as credit. Over many accesses the time spent waiting matches the modelled
time; a single access is not delayed by exactly its own cost. ``Account`` keeps the
totals (accesses, bytes, modelled ns, waited ns) so that a benchmark can report the
modelled share of a call, or project it for other parameters without re-running.

Configuration (off unless set), from the environment of the process that maps a pool:
    NOTNETS_FARMEM='{"/dev/shm/notnets-run-pool0": {"latency_ns": 250, "bandwidth_gbps": 20}}'
    NOTNETS_FARMEM='latency_ns=250,bandwidth_gbps=20'   # every pool this process maps
    NOTNETS_FARMEM=cxl                                  # every pool, published defaults
The sim backend sets the JSON form from the topology's ``latency_ns``/``bandwidth_gbps``.
See docs/farmem.md for the sources of the defaults.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Mapping, Optional

from .memory import Buffer, Memory

ENV = "NOTNETS_FARMEM"
# Published CXL Type-3 measurements (docs/farmem.md): load latency about 2-5x local DRAM,
# i.e. roughly 170-400 ns; tens of GB/s per device (a PCIe 5.0 x8 link carries 32 GB/s).
DEFAULT_LATENCY_NS = 250.0
DEFAULT_BANDWIDTH_GBPS = 20.0
QUANTUM_NS = 2_000  # below this a wait is not placed: Python cannot time it


class FarMemConfigError(ValueError):
    """NOTNETS_FARMEM does not parse; the message quotes it."""


@dataclass(frozen=True)
class FarMemModel:
    """Cost of one access to a far-memory device."""

    latency_ns: float = DEFAULT_LATENCY_NS
    bandwidth_gbps: float = DEFAULT_BANDWIDTH_GBPS

    def __post_init__(self) -> None:
        if not (self.latency_ns >= 0 and self.bandwidth_gbps > 0):
            raise FarMemConfigError(f"latency_ns must be >= 0 and bandwidth_gbps > 0, got {self}")

    def word_ns(self) -> float:
        """One 8-byte control-word load or store."""
        return self.latency_ns

    def copy_ns(self, nbytes: int) -> float:
        """A payload copy of ``nbytes`` (one access that then streams at the bandwidth)."""
        return self.latency_ns + nbytes / self.bandwidth_gbps

    def project_ns(self, words: int, copies: int, nbytes: int) -> float:
        """What a workload that made these accesses costs on this device (for `bench`)."""
        return words * self.latency_ns + copies * self.latency_ns + nbytes / self.bandwidth_gbps


@dataclass
class Account:
    """Charges made against one mapped pool, and the time actually spent waiting."""

    model: FarMemModel
    words: int = 0
    copies: int = 0
    nbytes: int = 0
    modelled_ns: float = 0.0
    waited_ns: int = 0
    _debt: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    clock: object = field(default=time.perf_counter_ns, repr=False)

    def word(self) -> None:
        with self._lock:
            self.words += 1
        self._charge(self.model.latency_ns)

    def copy(self, nbytes: int) -> None:
        with self._lock:
            self.copies += 1
            self.nbytes += nbytes
        self._charge(self.model.copy_ns(nbytes))

    def _charge(self, ns: float) -> None:
        with self._lock:
            self.modelled_ns += ns
            self._debt += ns
            if self._debt < QUANTUM_NS:
                return
            owed, self._debt = self._debt, 0.0
        waited = self._spin(owed)
        with self._lock:
            self.waited_ns += waited
            self._debt += owed - waited  # overshoot (negative) is credit for the next charge

    def _spin(self, ns: float) -> int:
        """Busy-wait ``ns``, releasing the GIL on each turn.

        A device stall holds up the thread that made the access, not its neighbours: a
        plain Python spin would keep the GIL for the whole switch interval (5 ms) and
        stall every other thread of the process (the server's poller, the heartbeat).
        """
        clock = self.clock
        start = clock()  # type: ignore[operator]
        end = start + ns
        now = start
        while now < end:
            os.sched_yield()
            now = clock()  # type: ignore[operator]
        return now - start

    def snapshot(self) -> dict:
        with self._lock:
            return {"latency_ns": self.model.latency_ns, "bandwidth_gbps": self.model.bandwidth_gbps,
                    "words": self.words, "copies": self.copies, "bytes": self.nbytes,
                    "modelled_ns": round(self.modelled_ns), "waited_ns": self.waited_ns}


def parse_spec(text: str) -> FarMemModel:
    """'cxl' or 'latency_ns=250,bandwidth_gbps=20' (either key may be left out)."""
    text = text.strip()
    if text in ("cxl", "default", "on"):
        return FarMemModel()
    values: dict[str, float] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in ("latency_ns", "bandwidth_gbps"):
            raise FarMemConfigError(f"{ENV}: expected latency_ns=N,bandwidth_gbps=N, got {text!r}")
        try:
            values[key] = float(value)
        except ValueError:
            raise FarMemConfigError(f"{ENV}: {key} is not a number in {text!r}") from None
    return FarMemModel(**values)


def _from_mapping(value: object) -> FarMemModel:
    if isinstance(value, str):
        return parse_spec(value)
    if isinstance(value, dict) and set(value) <= {"latency_ns", "bandwidth_gbps"}:
        try:
            return FarMemModel(**{k: float(v) for k, v in value.items()})
        except (TypeError, ValueError) as err:
            raise FarMemConfigError(f"{ENV}: bad model {value!r}: {err}") from None
    raise FarMemConfigError(f"{ENV}: a pool's model must be a spec string or "
                            f"{{latency_ns, bandwidth_gbps}}, got {value!r}")


def model_for(path: Optional[str], environ: Mapping[str, str] = os.environ) -> Optional[FarMemModel]:
    """The model for the pool at ``path`` from $NOTNETS_FARMEM, or None (plain memory)."""
    raw = environ.get(ENV, "").strip()
    if not raw or raw in ("0", "off", "none"):
        return None
    if not raw.startswith("{"):
        return parse_spec(raw)
    try:
        table = json.loads(raw)
    except ValueError as err:
        raise FarMemConfigError(f"{ENV}: not JSON ({err})") from None
    if not isinstance(table, dict):
        raise FarMemConfigError(f"{ENV}: expected a JSON object of path -> model")
    if path is None:
        return None
    for key in (path, os.path.realpath(path)):
        if key in table:
            return _from_mapping(table[key])
    real = os.path.realpath(path)
    for key, value in table.items():
        if os.path.realpath(key) == real:
            return _from_mapping(value)
    return None


# -- the accessor that applies a model ------------------------------------------------------

_accounts: dict[str, Account] = {}
_accounts_lock = threading.Lock()


def accounts() -> dict[str, dict]:
    """Charges so far per pool path in this process (for `bench` and tests)."""
    with _accounts_lock:
        return {path: account.snapshot() for path, account in _accounts.items()}


def account_for(path: str, model: FarMemModel) -> Account:
    """One account per pool and process, however many Pool objects map it."""
    with _accounts_lock:
        account = _accounts.get(path)
        if account is None or account.model != model:
            account = _accounts[path] = Account(model)
        return account


class FarMemory(Memory):
    """``Memory`` that charges each access its modelled cost before doing it."""

    __slots__ = ("account",)

    def __init__(self, buf: Buffer, writable: bool, account: Account) -> None:
        super().__init__(buf, writable)
        self.account = account

    def load(self, off: int) -> int:
        self.account.word()
        return super().load(off)

    def store(self, off: int, value: int) -> None:
        self.account.word()
        super().store(off, value)

    def read(self, off: int, n: int) -> bytes:
        self.account.copy(n)
        return super().read(off, n)

    def read_into(self, off: int, dest: memoryview) -> None:
        self.account.copy(len(dest))
        super().read_into(off, dest)

    def write(self, off: int, data) -> None:  # type: ignore[no-untyped-def]
        self.account.copy(data.nbytes if isinstance(data, memoryview) else len(data))
        super().write(off, data)

    def fill(self, off: int, n: int, value: int = 0) -> None:
        self.account.copy(n)
        super().fill(off, n, value)

    def unpack(self, st, off: int) -> tuple:  # type: ignore[no-untyped-def]
        self.account.copy(st.size)
        return super().unpack(st, off)

    def pack(self, st, off: int, *values) -> None:  # type: ignore[no-untyped-def]
        self.account.copy(st.size)
        super().pack(st, off, *values)
