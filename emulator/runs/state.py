"""The record of one run: a backend-neutral JSON file in the run's state dir.

Every verb after `up` (status, exec, down, ...) works from this file alone, in another
process, maybe after the machine lost some of the run's processes. So it holds
everything needed to find and tear down what `up` made: pids, sockets, backing files
and the huge pages it reserved. Backends other than QEMU (the simulator) write the
same format; fields a backend has no use for stay empty.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from emulator.errors import UserError
from emulator.paths import STATE_FILE, make_private_dir, state_root  # noqa: F401 (re-exported)

ARTIFACTS_DIR = "artifacts"  # STATE/artifacts/HOST: $NOTNETS_ARTIFACTS, kept by `down`
FORMAT_VERSION = 1
FILE_MODE = 0o600


@dataclass
class HostState:
    """One host as the run knows it; ``pools`` maps pool name -> device path in the guest."""

    name: str
    index: int
    state: str = "created"  # created | booting | ready | failed | stopped
    pid: Optional[int] = None
    accel: Optional[str] = None
    pools: dict[str, str] = field(default_factory=dict)
    dir: str = ""
    console_log: str = ""
    console_socket: str = ""
    qmp_socket: str = ""
    agent_sockets: list[str] = field(default_factory=list)
    boot_seconds: Optional[float] = None
    boot_cpu_seconds: Optional[float] = None  # QEMU's user+system CPU time when the host turned ready
    error: Optional[str] = None
    argv: list[str] = field(default_factory=list)  # how the host was started (to restart it)
    template: Optional[str] = None  # QEMU: the saved guest it was restored from (None: a kernel boot)


@dataclass
class PoolState:
    """One pool's backing file on this machine and who must clean it up."""

    name: str
    size: int
    kind: str  # hugetlbfs | shm | path
    backing: str
    created: bool = True  # made by this run, so removed by `down` (unless --keep-pools)
    note: Optional[str] = None  # e.g. why it is on /dev/shm and not on huge pages
    coherence: str = "coherent"  # coherent | software | none (docs/coherence.md)
    model_dir: Optional[str] = None  # coherence none: the model's files (removed by `down`)


@dataclass
class RunState:
    """Everything a later process needs to drive or tear down a run."""

    name: str
    backend: str
    state_dir: str
    source: Optional[str] = None
    topology: Optional[str] = None  # the topology file's text, so the run is self-contained
    created_at: float = field(default_factory=time.time)
    state: str = "starting"  # starting | up | failed
    accel: Optional[str] = None
    accel_note: Optional[str] = None
    network: bool = False
    vde_pid: Optional[int] = None
    vde_socket: Optional[str] = None
    namespaces: list[str] = field(default_factory=list)  # sim: the run's named network namespaces (`down` deletes them)
    hugepages_raised: int = 0  # added to /proc/sys/vm/nr_hugepages by this run
    hosts: list[HostState] = field(default_factory=list)
    pools: list[PoolState] = field(default_factory=list)
    version: int = FORMAT_VERSION

    @property
    def path(self) -> Path:
        return Path(self.state_dir) / STATE_FILE

    def host(self, name: str) -> HostState:
        for host in self.hosts:
            if host.name == name:
                return host
        known = ", ".join(h.name for h in self.hosts)
        raise UserError(f"run {self.name!r} has no host {name!r} (hosts: {known})")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunState":
        data = dict(data)
        hosts = [HostState(**h) for h in data.pop("hosts", [])]
        pools = [PoolState(**p) for p in data.pop("pools", [])]
        known = set(cls.__dataclass_fields__)
        return cls(hosts=hosts, pools=pools, **{k: v for k, v in data.items() if k in known})

    def save(self) -> None:
        """Write atomically (temp file + rename) so a reader never sees half a file."""
        directory = Path(self.state_dir)
        fd, tmp = tempfile.mkstemp(prefix=".run.", suffix=".json", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.to_json(), f, indent=2, sort_keys=True)
                f.write("\n")
            os.chmod(tmp, FILE_MODE)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def run_dir(name: str, root: Optional[Path] = None) -> Path:
    """The absolute state dir of run ``name`` (absolute: the guest mounts it at this path)."""
    return ((root or state_root()) / name).absolute()


def load_run(directory: Path) -> RunState:
    """Read a run's state file; a damaged one is a clear error naming the file."""
    path = directory / STATE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return RunState.from_json(data)
    except FileNotFoundError:
        raise UserError(f"no run in {directory} (no {STATE_FILE})") from None
    except (OSError, ValueError, TypeError) as err:
        raise UserError(f"{path}: damaged run state ({err}); remove {directory} by hand") from None


def list_runs(root: Optional[Path] = None) -> list[str]:
    """Names of the runs that have a state file under ``root`` (sorted)."""
    base = root or state_root()
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if (p / STATE_FILE).is_file())


def visible_runs(root: Optional[Path] = None) -> dict[str, Path]:
    """name -> state dir of the runs a verb without --name chooses from: those under
    ``root`` if given or $NOTNETS_STATE is set, else those under the current directory's
    .notnets/runs, and only when there are none there, every run registered on this
    machine (emulator/runs/registry.py): as compose picks the project of the current
    directory first, so a run elsewhere on the machine never makes a local one ambiguous."""
    from emulator.runs.registry import registered

    base = (root or state_root()).absolute()
    found = {name: base / name for name in list_runs(base)}
    if not found and root is None and "NOTNETS_STATE" not in os.environ:
        found = dict(registered())
    return dict(sorted(found.items()))


def all_runs(root: Optional[Path] = None) -> dict[str, Path]:
    """Every run on this machine (`ls`): the visible ones and every registered one."""
    from emulator.runs.registry import registered

    found = visible_runs(root)
    if root is None:
        for name, directory in registered().items():
            found.setdefault(name, directory)
    return dict(sorted(found.items()))


def resolve_run(name: Optional[str], root: Optional[Path] = None) -> RunState:
    """The run called ``name`` (from any directory), or the only one there is; otherwise
    a clear error."""
    base = (root or state_root()).absolute()
    runs = visible_runs(root)
    if name is not None:
        directory = runs.get(name) or (None if root else all_runs(root).get(name))
        if directory is None:
            known = f" (runs: {', '.join(all_runs(root))})" if all_runs(root) else ""
            raise UserError(f"no run named {name!r} is up{known}; `notnets-emu ls` lists them")
        return load_run(directory)
    if not runs:
        raise UserError(f"no run is up (none in {base} nor registered on this machine; "
                        "`notnets-emu up FILE` starts one)")
    if len(runs) > 1:
        raise UserError(f"several runs are up: {', '.join(runs)}; pick one with --name/-p")
    return load_run(next(iter(runs.values())))


def forget_run(run: RunState, keep_logs: bool = True) -> None:
    """Remove the run's state so it is no longer "up"; keep its logs for a post-mortem.

    Sockets, label files and the state file go; ``*.log`` files stay so that a failed
    boot can still be read after everything was torn down, and so do the hosts'
    artifacts (``artifacts/HOST/``, what commands left in $NOTNETS_ARTIFACTS).
    """
    from emulator.runs.registry import unregister

    unregister(run.name, run.state_dir)
    directory = Path(run.state_dir)
    if not directory.is_dir():
        return
    if not keep_logs:
        shutil.rmtree(directory, ignore_errors=True)
        return
    for path in sorted(directory.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and not path.is_symlink():
            try:
                path.rmdir()  # only empty dirs
            except OSError:
                pass
        elif not path.name.endswith(".log") and ARTIFACTS_DIR not in path.relative_to(directory).parts[:1]:
            path.unlink(missing_ok=True)
