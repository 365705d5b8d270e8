"""What each CLI verb does, one function per verb; cli.py only parses arguments."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import click

from emulator.errors import UserError
from emulator.progress import Progress
from emulator.runs.state import STATE_FILE, RunState, list_runs, resolve_run, run_dir
from emulator.topology.model import Topology

if TYPE_CHECKING:
    from emulator.backends.base import Backend
    from emulator.runs.state import HostState

def _backend_of(run: RunState) -> "Backend":
    from emulator.backends.by_name import get_backend

    return get_backend(run.backend)


def up(topology: Topology, accel: str) -> None:
    """Boot every host; return once all are ready (the VMs keep running after we exit)."""
    from emulator.runs.lifecycle import bring_up

    started = time.monotonic()
    previous = signal.signal(signal.SIGTERM, _interrupt)  # a killed `up` still tears down
    try:
        run = bring_up(topology, accel=accel, progress=Progress())
    finally:
        signal.signal(signal.SIGTERM, previous)
    Progress().say(f"run {run.name}: {len(run.hosts)} host(s) ready in {time.monotonic() - started:.1f} s "
                   f"(state dir {run.state_dir}); `notnets-emu down` stops it")


def down(name: Optional[str], keep_pools: bool) -> None:
    """Stop every host of the run and release its pools; nothing up is not an error."""
    from emulator.runs.lifecycle import tear_down

    progress = Progress()
    try:
        run = resolve_run(name)
    except UserError as err:
        if name is None and not list_runs():
            progress.say("no run is up; nothing to do")
            return
        if name is not None and not (run_dir(name) / STATE_FILE).exists():
            progress.say(f"run {name} is not up; nothing to do")
            return
        raise err
    started = time.monotonic()
    removed = tear_down(run, keep_pools=keep_pools, progress=progress)
    for path in removed:
        progress.say(f"removed {path}")
    if keep_pools:
        for pool in run.pools:
            progress.say(f"kept {pool.backing}")
    progress.say(f"run {run.name}: down in {time.monotonic() - started:.1f} s")


def status(name: Optional[str], as_json: bool) -> None:
    from emulator.runs.status_view import status_data, status_text

    run = resolve_run(name)
    data = status_data(run, _backend_of(run))
    click.echo(json.dumps(data, indent=2) if as_json else status_text(data))


def exec_(name: Optional[str], host: str, command: str, detach: bool, timeout: Optional[float]) -> int:
    """Run ``command`` in HOST like ssh would; the exit code passes through."""
    from emulator.runs.guest_env import forwarded_env, guest_cwd

    run = resolve_run(name)
    backend = _backend_of(run)
    target = run.host(host)
    cwd = guest_cwd(os.getcwd())
    env = forwarded_env(os.environ, run.name, run.state_dir)
    if detach:
        log_dir = Path(target.dir) / "exec"
        log_dir.mkdir(mode=0o700, exist_ok=True)
        log = log_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        pid = backend.spawn(run, target, command, cwd=cwd, env=env, log_path=str(log))
        click.echo(f"{host}: started pid {pid}; output in {log}", err=True)
        click.echo(str(pid))
        return 0
    return backend.exec(run, target, command, cwd=cwd, env=env, timeout=timeout,
                        stdout=sys.stdout.buffer, stderr=sys.stderr.buffer)


def console(name: Optional[str], host: str) -> None:
    from emulator.runs.console import attach

    run = resolve_run(name)
    target = run.host(host)
    if _backend_of(run).host_state(run, target) == "dead":
        raise UserError(f"host {host} is not running; its console log: {target.console_log}")
    if not target.console_socket:  # a sim host is a process tree: no serial port
        raise UserError(f"host {host} ({run.backend}) has no console; use `exec {host} -- CMD`, "
                        f"and `logs {host}` for its log")
    attach(target.console_socket, host)


def logs(name: Optional[str], host: str, follow: bool) -> None:
    from emulator.runs.log_follow import print_log

    try:
        run = resolve_run(name)
    except UserError:
        kept = _kept_console_log(name, host)
        if kept is None:
            raise
        print_log(kept, follow=False, alive=lambda: False)
        return
    backend = _backend_of(run)
    target = run.host(host)
    print_log(backend.console_log(run, target), follow,
              alive=lambda: backend.host_state(run, target) != "dead")


def _kept_console_log(name: Optional[str], host: str) -> Optional[Path]:
    """After `down` (or a failed `up`) the console logs stay: find HOST's, if unambiguous."""
    from emulator.paths import state_root

    root = state_root().absolute()
    candidates = [root / name] if name else ([p for p in root.iterdir() if p.is_dir()] if root.is_dir() else [])
    logs = [d / "hosts" / host / "console.log" for d in candidates if (d / "hosts" / host / "console.log").is_file()]
    return logs[0] if len(logs) == 1 else None


def run(topology: Topology, accel: str, junit: Optional[Path]) -> int:
    """up, the steps, down (always, even on Ctrl-C or SIGTERM); non-zero if a step failed."""
    from emulator.runs.junit import build_report, write_report
    from emulator.runs.kernel_faults import describe, run_kernel_faults
    from emulator.runs.lifecycle import bring_up, tear_down
    from emulator.runs.steps import StepRunner, summary

    progress = Progress()
    previous = signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    results = []
    try:
        try:
            state = bring_up(topology, accel=accel, progress=progress)
        except UserError as err:
            if junit:
                write_report(junit, build_report(topology.name, [], up_error=str(err),
                                                 up_seconds=time.monotonic() - started))
            raise
        up_seconds = time.monotonic() - started
        backend = _backend_of(state)
        runner = StepRunner(state, backend, progress.say)
        faults: list[str] = []
        try:
            results = runner.run_all(topology.run)
        except KeyboardInterrupt:
            if junit:  # CI still gets a report of what ran before the cancel
                write_report(junit, build_report(topology.name, runner.results, up_seconds=up_seconds))
            raise
        finally:
            faults = describe(state, backend, run_kernel_faults(state, backend))
            progress.say(f"run {state.name}: bringing it down")
            tear_down(state, keep_pools=False, progress=progress)
        code, text = summary(results)
        for line in faults:  # a guest kernel oops fails the run even if every step passed
            progress.say(f"FAILED: {line}")
        if faults:
            code, text = 1, f"{text}, {len(faults)} host(s) with a guest kernel fault"
        progress.say(f"run {topology.name}: {text}")
        if junit:
            write_report(junit, build_report(topology.name, results, up_seconds=up_seconds))
            progress.say(f"JUnit report: {junit}")
        return code
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM (a CI cancel) takes the same path as Ctrl-C: down runs in a finally."""
    raise KeyboardInterrupt


def bench(args: list[str]) -> int:
    """Echo and a microservice chain over gRPC and NotNets; see notnets_bench/run.py."""
    from notnets_bench.options import parse_bench_args
    from notnets_bench.run import run_bench

    options = parse_bench_args(args)
    if options is None:  # --help was printed
        return 0
    previous = signal.signal(signal.SIGTERM, _interrupt)  # a killed bench still tears down
    try:
        return run_bench(options)
    finally:
        signal.signal(signal.SIGTERM, previous)


def pool_create(path: Path, size: str, overwrite: bool, coherence: str = "coherent") -> None:
    from notnets_rpc import PoolError, create_pool
    from notnets_rpc.mapping import is_char_device

    from emulator.sizes import format_size, parse_size

    try:
        nbytes = None if is_char_device(path) else parse_size(size)  # a DAX device: all of it
        layout = create_pool(path, nbytes, overwrite=overwrite, coherence=coherence)
    except (PoolError, ValueError) as exc:
        raise UserError(f"pool create: {exc}") from None
    print(f"formatted {path}: {format_size(layout.pool_bytes)}, {layout.max_hosts} hosts x "
          f"{layout.channels} channels, {format_size(layout.ring_bytes)} rings, {layout.coherence} coherence")


def pool_inspect(path: Path, as_json: bool) -> None:
    from notnets_rpc import PoolError
    from notnets_rpc.inspect import format_inspection, inspect_pool, to_json

    try:
        snapshot = inspect_pool(path)
    except PoolError as exc:
        raise UserError(f"pool inspect: {exc}") from None
    print(to_json(snapshot) if as_json else format_inspection(snapshot))


def pool_poison(path: Path, offset: int, length: int, value: int) -> None:
    """Overwrite ``length`` bytes of a pool at ``offset`` with ``value`` (fault injection)."""
    from emulator.pools.poison import poison

    written = poison(path, offset, length, value)
    Progress().say(f"{path}: wrote {written} byte(s) of {value:#04x} at offset {offset:#x}")


def fault(name: Optional[str], host: str, action: str) -> None:
    """kill, freeze or thaw HOST (or restart it); the run's other hosts are left alone."""
    run = resolve_run(name)
    backend = _backend_of(run)
    target = run.host(host)
    progress = Progress()
    if action == "restart":
        backend.restart_host(run, target, progress)
        return
    backend.fault(run, target, action)
    if action == "thaw" and backend.name == "qemu":
        _set_guest_clock(backend, run, target, progress)
    done = {"kill": "killed", "freeze": "frozen", "thaw": "thawed"}.get(action, action)
    progress.say(f"{done} ({backend.name}); state now {backend.host_state(run, target)}", host=host)


def _set_guest_clock(backend: "Backend", run: RunState, target: "HostState", progress: Progress) -> None:
    """A stopped VM's clock stands still (QEMU's virtual clock), so after `cont` the guest
    is behind every other host by the time it was frozen; peers that compare heartbeat
    timestamps would take it for dead for good. Set it to this machine's time, as NTP or
    qemu-ga's guest-set-time would on a real resume (a sim host shares the machine's clock)."""
    import io

    err = io.BytesIO()
    code = backend.exec(run, target, f"date -u -s @{time.time():.3f} >/dev/null", cwd="/", env={},
                        timeout=60, stdout=io.BytesIO(), stderr=err)
    if code != 0:
        progress.say(f"could not set its clock after the thaw: {err.getvalue().decode(errors='replace').strip()}",
                     host=target.name)
