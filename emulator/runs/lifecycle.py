"""Bringing a run up and down, whatever the backend: state dir, pools, stale runs, failure.

The rule is "a failure leaves nothing behind": if any host fails to boot, every host
of the run is stopped, the backing files are removed and reserved huge pages given
back; only the logs stay, so the user can read why. A run left half-done by a crash
(state file present, every process dead) is cleaned up by the next `up` or `down`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

from emulator.backends.base import Backend, BootError
from emulator.backends.by_name import get_backend
from emulator.errors import UserError
from emulator.pools.files import PoolAllocator, release_pools
from emulator.progress import Progress
from emulator.runs.registry import register
from emulator.runs.state import (ARTIFACTS_DIR, STATE_FILE, RunState, forget_run, load_run, make_private_dir,
                                 run_dir)
from emulator.topology.model import Topology


def _topology_text(topology: Topology) -> Optional[str]:
    if not topology.source:
        return None
    try:
        return Path(topology.source).read_text(encoding="utf-8")
    except OSError:
        return None


def clear_previous(state_dir: Path, progress: Progress) -> None:
    """Make room for a new run in ``state_dir``: refuse if its hosts still run, clean a
    stale one, and wipe leftovers (logs of an earlier run, a half-written dir)."""
    if (state_dir / STATE_FILE).is_file():
        old = load_run(state_dir)
        backend = get_backend(old.backend)
        alive = backend.alive(old)
        if alive:
            raise UserError(
                f"run {old.name!r} is already up (hosts running: {', '.join(alive)}); "
                f"`notnets-emu down --name {old.name}` first"
            )
        progress.say(f"run {old.name}: cleaning up an earlier run whose hosts are all dead")
        tear_down(old, keep_pools=False, progress=Progress(quiet=True))
    if state_dir.exists():
        shutil.rmtree(state_dir)


def bring_up(topology: Topology, accel: str, progress: Progress) -> RunState:
    """Prepare pools, start every host and return once all are ready.

    On any failure everything is torn down before the error propagates; a BootError
    becomes a UserError naming the host and its console log.
    """
    backend = get_backend(topology.backend)
    backend.preflight(topology)  # a missing kernel is said before any pool is made
    state_dir = run_dir(topology.name)
    try:
        make_private_dir(state_dir.parent)
        clear_previous(state_dir, progress)
        make_private_dir(state_dir)
    except OSError as err:
        raise UserError(f"cannot create the run's state dir {state_dir}: {err.strerror or err} "
                        "(set NOTNETS_STATE to a writable directory)") from None
    run = RunState(
        name=topology.name, backend=topology.backend, state_dir=str(state_dir),
        source=str(Path(topology.source).absolute()) if topology.source else None,
        topology=_topology_text(topology), network=topology.network,
    )
    run.save()
    register(run.name, run.state_dir)
    for host in topology.hosts:  # $NOTNETS_ARTIFACTS of each host; `down` keeps them
        make_private_dir(state_dir / ARTIFACTS_DIR / host.name)
    allocator = PoolAllocator(topology.name, progress.say)
    try:
        try:
            allocator.prepare(topology)
        finally:
            run.pools, run.hugepages_raised = list(allocator.made), allocator.hugepages_raised
            run.save()
        backend.start_hosts(topology, run, accel, progress)
        run.state = "up"
        run.save()
        return run
    except BootError as err:
        progress.say(f"failed: {err.reason}", host=err.host)
        progress.say(f"console log: {err.log}", host=err.host)
        _abort(backend, run, progress)
        raise UserError(
            f"host {err.host} did not become ready: {err.reason}; console log: {err.log} "
            f"(every host of run {run.name} was stopped)"
        ) from None
    except BaseException:
        _abort(backend, run, progress)
        raise


def _abort(backend: Backend, run: RunState, progress: Progress) -> None:
    progress.say(f"run {run.name}: tearing down")
    run.state = "failed"
    try:
        run.save()
    except OSError:
        pass
    _tear_down(backend, run, keep_pools=False, progress=progress)


def tear_down(run: RunState, keep_pools: bool, progress: Progress) -> list[str]:
    """Stop the run's hosts, release its pools, forget it; return the files removed."""
    return _tear_down(get_backend(run.backend), run, keep_pools, progress)


def _tear_down(backend: Backend, run: RunState, keep_pools: bool, progress: Progress) -> list[str]:
    try:
        backend.stop_hosts(run, progress)
    finally:
        removed = release_pools(run.pools, run.hugepages_raised, keep=keep_pools)
        forget_run(run)
    return removed
