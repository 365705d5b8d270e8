"""What each CLI verb does, one function per verb; cli.py only parses arguments."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Optional

import click

from emulator.errors import UserError
from emulator.progress import Progress
from emulator.runs.state import ARTIFACTS_DIR, RunState, all_runs, resolve_run, visible_runs
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
        if name is None and not visible_runs():
            progress.say("no run is up; nothing to do")
            return
        if name is not None and name not in all_runs():
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
    artifacts = Path(run.state_dir) / ARTIFACTS_DIR
    if artifacts.is_dir() and any(p.is_file() for p in artifacts.rglob("*")):
        progress.say(f"kept the hosts' artifacts in {artifacts}")
    progress.say(f"run {run.name}: down in {time.monotonic() - started:.1f} s")


def status(name: Optional[str], as_json: bool) -> None:
    from emulator.runs.status_view import status_data, status_text

    run = resolve_run(name)
    data = status_data(run, _backend_of(run))
    click.echo(json.dumps(data, indent=2) if as_json else status_text(data))


def exec_(name: Optional[str], host: str, command: str, detach: bool, timeout: Optional[float],
          extra_env: Optional[dict[str, str]] = None, workdir: Optional[str] = None,
          stdin: Optional[BinaryIO] = None) -> int:
    """Run ``command`` in HOST like `docker compose exec`; the exit code passes through."""
    from emulator.runs.guest_env import forwarded_env, resolve_workdir

    run = resolve_run(name)
    backend = _backend_of(run)
    target = run.host(host)
    cwd = resolve_workdir(workdir, os.getcwd())
    env = {**forwarded_env(os.environ, run.name, run.state_dir), **(extra_env or {})}
    if detach:
        from emulator.runs.detached import spawn_detached

        pid, log = spawn_detached(backend, run, target, command, cwd=cwd, env=env)
        click.echo(f"{host}: started pid {pid}; output in {log} (`notnets-emu logs {host}` shows it)", err=True)
        click.echo(str(pid))
        return 0
    return backend.exec(run, target, command, cwd=cwd, env=env, timeout=timeout,
                        stdout=sys.stdout.buffer, stderr=sys.stderr.buffer, stdin=stdin)


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


def logs(name: Optional[str], hosts: tuple[str, ...], follow: bool, tail: Optional[int], prefix: Optional[bool]) -> None:
    """Print the logs of HOSTS (all when none): console and detached commands, prefixed."""
    from emulator.runs.log_follow import host_sources, print_logs

    try:
        run = resolve_run(name)
    except UserError:
        kept = _kept_run_dir(name)
        if kept is None:
            raise
        Progress().say(f"run {name} is down; these are the logs it kept in {kept}")
        names = list(hosts) or sorted(p.name for p in (kept / "hosts").iterdir() if p.is_dir())
        missing = [h for h in names if not (kept / "hosts" / h).is_dir()]
        if missing:
            raise UserError(f"run {name} kept no logs of host {', '.join(missing)}") from None
        print_logs(lambda: [s for h in names for s in host_sources(kept, h, kept / "hosts" / h / "console.log")],
                   follow=False, alive=lambda: False, tail=tail, prefix=prefix)
        return
    backend = _backend_of(run)
    targets = [run.host(h) for h in hosts] if hosts else list(run.hosts)
    state_dir = Path(run.state_dir)

    def discover() -> list:
        return [s for t in targets for s in host_sources(state_dir, t.name, backend.console_log(run, t))]

    shown = print_logs(discover, follow=follow, tail=tail, prefix=prefix,
                       alive=lambda: any(backend.host_state(run, t) != "dead" for t in targets))
    if not shown:
        raise UserError(f"no log yet for {', '.join(t.name for t in targets)} of run {run.name}")


def _kept_run_dir(name: Optional[str]) -> Optional[Path]:
    """After `down` (or a failed `up`) a run's logs stay in its state dir: that dir, for --name."""
    from emulator.paths import state_root

    if name is None:
        return None
    directory = (state_root() / name).absolute()
    return directory if (directory / "hosts").is_dir() else None


def ls(as_json: bool) -> None:
    """Every run on this machine: name, backend, hosts ready/total, where its state is."""
    from emulator.runs.state import load_run

    rows = []
    for name, directory in all_runs().items():
        try:
            run = load_run(directory)
        except UserError as err:
            rows.append({"name": name, "backend": "?", "state": "damaged", "hosts": 0, "ready": 0,
                         "state_dir": str(directory), "source": None, "error": str(err)})
            continue
        states = [_backend_of(run).host_state(run, h) for h in run.hosts]
        rows.append({"name": name, "backend": run.backend, "state": run.state, "hosts": len(states),
                     "ready": states.count("ready"), "state_dir": run.state_dir, "source": run.source,
                     "created_at": run.created_at})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        Progress().say("no run is up on this machine")
        return
    from emulator.runs.status_view import table

    lines = table([["NAME", "BACKEND", "HOSTS READY", "STATE DIR", "SOURCE"]] + [
        [r["name"], r["backend"], f"{r['ready']}/{r['hosts']}" if r["state"] != "damaged" else "damaged",
         r["state_dir"], r.get("source") or "-"] for r in rows])
    click.echo("\n".join(lines))


def ps(name: Optional[str], hosts: tuple[str, ...], as_json: bool) -> None:
    """The commands started in each host (exec, exec -d, run steps), running or ended."""
    from emulator.runs.detached import detached_logs

    run = resolve_run(name)
    backend = _backend_of(run)
    rows, notes = [], []
    for target in ([run.host(h) for h in hosts] if hosts else run.hosts):
        try:
            listing = backend.processes(run, target)
        except UserError as err:
            notes.append(f"{target.name}: {err}")
            continue
        logs = dict(detached_logs(Path(target.dir)))
        for proc in listing:
            log = logs.get(proc.get("pid")) or proc.get("log")
            rows.append({"host": target.name, **proc, "log": str(log) if log else None})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        from emulator.runs.status_view import table

        lines = table([["HOST", "PID", "STATUS", "STARTED", "COMMAND"]] + [
            [r["host"], str(r["pid"]), "running" if r["running"] else f"exited {r['code']}",
             time.strftime("%H:%M:%S", time.localtime(r["started"])),
             ("(detached) " if r["detached"] else "") + r["cmd"]] for r in rows])
        click.echo("\n".join(lines))
    for note in notes:
        Progress().say(note)
    if notes and not rows:
        raise UserError(f"no host of run {run.name} answered")


def cp(name: Optional[str], source: str, dest: str) -> None:
    """Copy between this machine and a host: `cp HOST:PATH DEST` or `cp SRC HOST:PATH`."""
    from emulator.runs.copy import copy

    run = resolve_run(name)
    copied = copy(_backend_of(run), run, source, dest, os.getcwd())
    Progress().say(f"copied {source} to {dest} ({copied})")


def run(topology: Topology, accel: str, junit: Optional[Path], artifacts: Optional[Path] = None,
        keep_up: bool = False) -> int:
    """up, the steps, down (always, even on Ctrl-C or SIGTERM; not after a failed step
    with ``keep_up``); non-zero if a step failed."""
    from emulator.runs.junit import build_report, merge_reports, write_report
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
        base_dir = str(Path(topology.source).absolute().parent) if topology.source else None
        runner = StepRunner(state, backend, progress.say, base_dir=base_dir)
        kept = Path(state.state_dir) / ARTIFACTS_DIR
        faults: list[str] = []
        interrupted = True
        try:
            results = runner.run_all(topology.run)
            interrupted = False
        except KeyboardInterrupt:
            if junit:  # CI still gets a report of what ran before the cancel
                write_report(junit, build_report(topology.name, runner.results, up_seconds=up_seconds))
            raise
        finally:
            faults = describe(state, backend, run_kernel_faults(state, backend))
            if artifacts:
                _save_artifacts(kept, artifacts, progress)
            failed = summary(runner.results)[0] != 0 or bool(faults)
            if keep_up and failed and not interrupted:
                progress.say(f"run {state.name}: kept up (--keep-up); `notnets-emu down --name {state.name}` "
                             "when done")
            else:
                progress.say(f"run {state.name}: bringing it down")
                tear_down(state, keep_pools=False, progress=progress)
        code, text = summary(results)
        for line in faults:  # a guest kernel oops fails the run even if every step passed
            progress.say(f"FAILED: {line}")
        if faults:
            code, text = 1, f"{text}, {len(faults)} host(s) with a guest kernel fault"
        progress.say(f"run {topology.name}: {text}")
        if junit:
            report = build_report(topology.name, results, up_seconds=up_seconds)
            merged = merge_reports(report, kept)
            write_report(junit, report)
            progress.say(f"JUnit report: {junit}" + (f" ({len(merged)} JUnit file(s) of the steps merged)"
                                                     if merged else ""))
        return code
    finally:
        signal.signal(signal.SIGTERM, previous)


def _save_artifacts(kept: Path, dest: Path, progress: Progress) -> None:
    """Copy each host's $NOTNETS_ARTIFACTS (STATE/artifacts/HOST) to DEST/HOST."""
    import shutil

    try:
        dest.mkdir(parents=True, exist_ok=True)
        for host_dir in sorted(p for p in kept.iterdir() if p.is_dir()) if kept.is_dir() else []:
            shutil.copytree(host_dir, dest / host_dir.name, dirs_exist_ok=True, symlinks=True)
    except OSError as err:
        progress.say(f"could not copy the artifacts to {dest}: {err}")
        return
    progress.say(f"artifacts: {dest}")


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


def pool_create(path: Path, size: str, overwrite: bool, coherence: str = "coherent",
                hosts: Optional[int] = None) -> None:
    from notnets_rpc import PoolError, create_pool
    from notnets_rpc.mapping import is_char_device
    from notnets_rpc.wire.layout import DEFAULT_MAX_HOSTS, MAX_HOSTS

    from emulator.sizes import format_size, parse_size

    if hosts is not None and not 1 <= hosts <= MAX_HOSTS:
        raise UserError(f"pool create: --hosts {hosts}: expected 1..{MAX_HOSTS}")
    try:
        nbytes = None if is_char_device(path) else parse_size(size)  # a DAX device: all of it
        layout = create_pool(path, nbytes, overwrite=overwrite, coherence=coherence,
                             max_hosts=DEFAULT_MAX_HOSTS if hosts is None else hosts)
    except (PoolError, ValueError) as exc:
        raise UserError(f"pool create: {exc}") from None
    print(f"formatted {path}: {format_size(layout.pool_bytes)}, {layout.max_hosts} hosts x "
          f"{layout.channels} channels, {format_size(layout.ring_bytes)} rings, "
          f"{layout.lanes_per_host} extent lanes per host, {layout.coherence} coherence")


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
