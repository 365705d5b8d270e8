"""Hosts as process trees on this machine: fast to start, no VM, same contract as QEMU.

Each host is ``guest/sim_host.py`` (the guest agent, serving unix sockets in
STATE/hosts/HOST/) started inside ``unshare --mount --uts --pid --fork --mount-proc``
when we may (root): its own mount namespace (with its own /proc), UTS namespace and PID
namespace, whose end takes every process of the host with it, and its own network
namespace: with only a loopback (``unshare --net``: proof that no network is used), or,
for topologies with ``network: true``, on the run's private bridge with the address the
host has on QEMU (network.py). Without the right to unshare, hosts are plain processes
and `status` says so. Pools are the run's backing files, mapped directly (NOTNETS_POOL is
the file's path). Commands reach a host through the same AgentClient as a VM.
"""

from __future__ import annotations

import os
import shutil
import signal as signals
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO, Mapping, Optional

from emulator.backends.base import Backend, BootError
from emulator.backends.sim import network as sim_network
from emulator.backends.sim import procs as sim_procs
from emulator.backends.sim.config import sim_config, write_sim_config
from emulator.errors import UserError
from emulator.paths import REPO_ROOT
from emulator.progress import Progress
from emulator.runs.state import HostState, RunState, make_private_dir
from emulator.topology.model import Topology

READY_TIMEOUT = 20.0  # seconds; a sim host is normally ready in well under one
STOP_GRACE = 2.0  # after SIGTERM, before SIGKILL
AGENT_CONNECT_TIMEOUT = 15.0
ISOLATION_ENV = "NOTNETS_SIM_ISOLATION"  # "none" forces plain processes (tests, debugging)
# slave: the machine's unmounts reach the host's copy of its mounts, so a copy of a run's
# /run/netns/NAME never keeps that namespace alive after `down` deletes it
UNSHARE_FLAGS = ["--mount", "--uts", "--pid", "--fork", "--mount-proc", "--kill-child", "--propagation", "slave"]
NOTES = {
    "netns": "sim: each host in its own network (loopback only), mount, UTS and PID namespace",
    "bridge": "sim: each host in its own network, mount, UTS and PID namespace; the hosts' network is a "
              "private bridge, host i at 169.254.100.<i+1> (network: true)",
    "pidns": "sim: each host in its own mount, UTS and PID namespace, on the machine's network (network: true)",
}


def choose_isolation(network: bool) -> tuple[str, str]:
    """(isolation, note): namespaces when unshare works here, else plain processes."""
    if os.environ.get(ISOLATION_ENV, "").lower() == "none":
        return "none", f"sim: hosts are plain processes ({ISOLATION_ENV}=none), sharing the machine's network"
    unshare = shutil.which("unshare")
    if unshare is None:
        return "none", "sim: hosts are plain processes (no unshare(1) here), sharing the machine's network"
    argv = [unshare, "--net"] + UNSHARE_FLAGS + ["true"]
    try:
        probe = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as err:
        why = str(err)
    else:
        if probe.returncode == 0:
            if not network:
                return "netns", NOTES["netns"]
            missing = sim_network.missing_tool()
            if missing:
                return "pidns", f"{NOTES['pidns']}; no private network: {missing}"
            return "bridge", NOTES["bridge"]
        why = (probe.stderr.strip().splitlines() or ["unshare failed"])[-1]
    return "none", f"sim: hosts are plain processes (cannot unshare: {why}), sharing the machine's network"


def host_argv(isolation: str, config_path: Path, netns: Optional[str] = None) -> list[str]:
    """How to start the host: in the named network namespace ``netns`` for isolation bridge."""
    python = os.path.join(REPO_ROOT, ".venv", "bin", "python")
    if not os.path.exists(python):
        python = sys.executable
    inner = [python, "-S", "-m", "guest.sim_host", str(config_path)]
    if isolation == "none":
        return inner
    if isolation == "bridge":  # nsenter execs unshare: the pid stays the one recorded
        if not netns:
            raise ValueError("isolation bridge needs the host's network namespace")
        return ["nsenter", f"--net={sim_network.netns_path(netns)}", "--", "unshare"] + UNSHARE_FLAGS + ["--"] + inner
    net = ["--net"] if isolation == "netns" else []
    return ["unshare"] + net + UNSHARE_FLAGS + ["--"] + inner


def _marker(hs: HostState) -> str:
    return str(Path(hs.dir) / "sim.json")


def _isolation(hs: HostState) -> str:
    return hs.accel or "none"


def _netns(run: RunState, hs: HostState) -> Optional[str]:
    """The host's network namespace on the run's bridge (isolation bridge), else None."""
    if _isolation(hs) != "bridge":
        return None
    return sim_network.namespace_names(run.name, run.state_dir, [hs.name])[1][hs.name]


class SimBackend(Backend):
    name = "sim"

    # -- up ---------------------------------------------------------------------------
    def start_hosts(self, topology: Topology, run: RunState, accel: str, progress: Progress) -> None:
        isolation, note = choose_isolation(topology.network)
        if isolation == "bridge":
            isolation, note = self._make_network(topology, run, note, progress)
        run.accel, run.accel_note = isolation, note
        progress.say(note)
        state_dir = Path(run.state_dir)
        make_private_dir(state_dir / "hosts")
        backing = {p.name: p.backing for p in run.pools}
        model_dirs = self._coherence_models(topology, run, progress)
        for host in topology.hosts:
            host_dir = make_private_dir(state_dir / "hosts" / host.name)
            config = sim_config(topology, host, state_dir, backing, isolation, model_dirs)
            write_sim_config(host_dir, config)
            run.hosts.append(HostState(
                name=host.name, index=host.index, state="created", accel=isolation, dir=str(host_dir),
                console_log=str(host_dir / "console.log"), agent_sockets=list(config["sockets"]),
            ))
        run.save()
        started = time.monotonic()
        procs = {hs.name: self._launch(run, hs, progress) for hs in run.hosts}
        for hs in run.hosts:
            self._wait_ready(run, hs, procs[hs.name], started, progress)

    def _make_network(self, topology: Topology, run: RunState, note: str, progress: Progress) -> tuple[str, str]:
        """The run's bridge and each host's namespace on it (network.py): (isolation, note).
        When they cannot be made, what was made is removed and the hosts share the
        machine's network (pidns), which the note says, with why."""
        bridge, namespaces = sim_network.namespace_names(run.name, run.state_dir, [h.name for h in topology.hosts])
        # names of this state dir's run: only a dead earlier run (clear_previous refuses a
        # live one) that lost its run.json can have left them
        stale = sorted(sim_network.listed() & {bridge, *namespaces.values()})
        if stale:
            progress.say(f"removing network namespaces an earlier run {run.name} left: {', '.join(stale)}")
            sim_network.remove(stale)

        def record(name: str) -> None:
            run.namespaces.append(name)
            run.save()

        try:
            sim_network.create(bridge, [(h.index, namespaces[h.name]) for h in topology.hosts], record)
        except sim_network.NetworkError as err:
            left = sim_network.remove(run.namespaces)
            run.namespaces = []
            run.save()
            why = f"no private network ({err})" + (f"; not removed: {'; '.join(left)}" if left else "")
            return "pidns", f"{NOTES['pidns']}; {why}"
        return "bridge", f"{note}; namespaces {bridge}[-HOST]"

    def _coherence_models(self, topology: Topology, run: RunState, progress: Progress) -> dict[str, str]:
        """A non-coherent model (docs/coherence.md) for each pool with coherence none:
        pool name -> its directory, where each attached host gets its own view."""
        wanted = [p for p in topology.pools if p.coherence == "none"]
        if not wanted:
            return {}
        from notnets_rpc import noncoherent_views  # pulls in grpc: only for runs that need it

        states = {p.name: p for p in run.pools}
        dirs: dict[str, str] = {}
        for pool in wanted:
            state = states[pool.name]
            hosts = [h.index for h in topology.hosts if pool.name in h.pools]
            directory = noncoherent_views.model_dir_for(state.backing)
            state.model_dir = directory
            run.save()
            try:
                noncoherent_views.create_model(directory, state.backing, hosts, pool.seed, pool.evictions_per_s)
            except (OSError, noncoherent_views.ModelError) as err:
                raise UserError(f"pool {pool.name}: cannot lay out its non-coherent model in {directory}: {err}") from None
            dirs[pool.name] = directory
            progress.say(f"pool {pool.name}: coherence none: one view per host in {directory}, "
                         f"{pool.evictions_per_s:g} evictions/s per host, seed {pool.seed}")
        return dirs

    def _launch(self, run: RunState, hs: HostState, progress: Progress) -> subprocess.Popen:
        for path in hs.agent_sockets:
            Path(path).unlink(missing_ok=True)
        log = open(hs.console_log, "ab", buffering=0)
        try:
            os.chmod(hs.console_log, 0o600)
            proc = subprocess.Popen(
                host_argv(_isolation(hs), Path(_marker(hs)), _netns(run, hs)), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True, close_fds=True, umask=0o077, cwd=REPO_ROOT,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO_ROOT),
                     "LANG": "C.UTF-8"},
            )
        finally:
            log.close()
        hs.pid, hs.state, hs.error = proc.pid, "booting", None
        run.save()
        progress.say(f"starting ({_isolation(hs)}, pid {proc.pid})...", host=hs.name)
        return proc

    def _wait_ready(self, run: RunState, hs: HostState, proc: subprocess.Popen, started: float,
                    progress: Progress) -> None:
        from emulator.backends.agent_client import AgentClient, AgentError

        deadline = started + READY_TIMEOUT
        try:
            while not Path(hs.agent_sockets[0]).exists():
                if proc.poll() is not None:
                    raise RuntimeError(f"exited with code {proc.returncode}: {_last_line(hs.console_log)}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no agent socket after {READY_TIMEOUT:g} s: {_last_line(hs.console_log)}")
                time.sleep(0.005)
            client = AgentClient.connect(hs.agent_sockets, timeout=max(deadline - time.monotonic(), 0.1))
            try:
                info = client.wait_ready(timeout=max(deadline - time.monotonic(), 0.1))
            finally:
                client.close()
        except (RuntimeError, AgentError, TimeoutError) as err:
            hs.state, hs.error = "failed", str(err) or type(err).__name__
            if isinstance(err, TimeoutError):
                hs.error = f"not ready after {READY_TIMEOUT:g} s: {hs.error}"
            run.save()
            raise BootError(hs.name, hs.error, hs.console_log) from None
        hs.pools = dict(info.get("pools") or {})
        hs.state = "ready"
        hs.boot_seconds = round(time.monotonic() - started, 3)
        run.save()
        pools = ", ".join(f"{n}={d}" for n, d in hs.pools.items())
        progress.say(f"ready in {hs.boot_seconds:.2f} s" + (f" ({pools})" if pools else ""), host=hs.name)

    # -- process bookkeeping ------------------------------------------------------------
    def _alive(self, hs: HostState) -> bool:
        return sim_procs.is_ours(hs.pid, _marker(hs))

    def _init_pid(self, hs: HostState) -> Optional[int]:
        """The host's first process: unshare's child (pid 1 inside), or the agent itself."""
        if not self._alive(hs):
            return None
        if _isolation(hs) == "none":
            return hs.pid
        kids = sim_procs.children(hs.pid or 0)
        return kids[0] if kids else None

    def _pids(self, hs: HostState) -> list[int]:
        """Every process of the host (not unshare itself, which only waits)."""
        if _isolation(hs) == "none":
            return sim_procs.host_pids(hs.pid or 0, None, str(Path(hs.dir).parent.parent), hs.name)
        init = self._init_pid(hs)
        if init is None:
            return []
        return sim_procs.host_pids(init, sim_procs.pid_namespace(init), "", hs.name)

    # -- down -------------------------------------------------------------------------
    def stop_hosts(self, run: RunState, progress: Progress) -> None:
        """End every host, then delete the run's network namespaces (network.py)."""
        try:
            for hs in run.hosts:
                if hs.pid:
                    how = self._stop_one(hs)
                    if how:
                        progress.say(how, host=hs.name)
        finally:
            if run.namespaces:
                for problem in sim_network.remove(run.namespaces):
                    progress.say(f"network namespace not removed: {problem}")
                run.namespaces = []
                run.save()

    def _stop_one(self, hs: HostState) -> str:
        """SIGTERM the host's init (its agent ends its commands), then SIGKILL what is left."""
        plain = _isolation(hs) == "none"
        if not self._alive(hs):
            if plain:  # the agent is gone but detached commands may still run
                leftovers = self._pids(hs)
                sim_procs.send(leftovers, signals.SIGKILL)
                return f"killed {len(leftovers)} leftover process(es)" if leftovers else ""
            return ""
        pids = self._pids(hs)
        init = self._init_pid(hs)
        sim_procs.send(pids, signals.SIGCONT)  # a frozen host must run to end itself
        if init:
            sim_procs.send([init], signals.SIGTERM)
        if sim_procs.wait_gone([hs.pid or 0] + ([] if plain else pids), STOP_GRACE):
            if plain:
                sim_procs.signal_until_stable(lambda: self._pids(hs), signals.SIGKILL)
            return "stopped"
        sim_procs.signal_until_stable(lambda: self._pids(hs), signals.SIGKILL)
        sim_procs.send([hs.pid or 0], signals.SIGKILL)
        if sim_procs.wait_gone([hs.pid or 0] + pids, 3.0):
            return "killed"
        return f"pid {hs.pid} would not die"

    # -- inspection ---------------------------------------------------------------------
    def host_state(self, run: RunState, host: HostState) -> str:
        if not self._alive(host):
            return "dead" if host.pid else host.state
        if host.state != "ready":
            return host.state
        init = self._init_pid(host)
        if init is not None and sim_procs.proc_state(init) in ("T", "t"):
            return "paused"
        return "ready"

    def agent(self, run: RunState, host: HostState) -> Any:
        from emulator.backends.agent_client import AgentClient

        state = self.host_state(run, host)
        if state == "dead":
            raise UserError(f"host {host.name} of run {run.name} is not running; "
                            f"`notnets-emu fault {host.name} restart` starts it again, "
                            f"`notnets-emu down --name {run.name}` cleans up")
        if state == "paused":
            raise UserError(f"host {host.name} is frozen (`notnets-emu fault {host.name} thaw` resumes it)")
        if state != "ready":
            raise UserError(f"host {host.name} is {state}, not ready")
        return AgentClient.connect(host.agent_sockets, timeout=AGENT_CONNECT_TIMEOUT)

    # -- faults ---------------------------------------------------------------------------
    def fault(self, run: RunState, host: HostState, action: str) -> None:
        if action not in sim_procs.SIGNALS:
            raise UserError(f"unknown fault {action!r} (expected kill, freeze or thaw)")
        if not self._alive(host):
            raise UserError(f"host {host.name} is not running")
        sig = sim_procs.SIGNALS[action]
        pids = sim_procs.signal_until_stable(lambda: self._pids(host), sig)
        if action == "kill":
            sim_procs.send([host.pid or 0], signals.SIGKILL)
            if not sim_procs.wait_gone(pids + [host.pid or 0], 5.0):
                raise UserError(f"host {host.name}: some processes survived SIGKILL")

    def restart_host(self, run: RunState, host: HostState, progress: Progress) -> None:
        """Start a dead host again with the same config; a live one is killed first."""
        if self._alive(host):
            self.fault(run, host, "kill")
        started = time.monotonic()
        proc = self._launch(run, host, progress)
        try:
            self._wait_ready(run, host, proc, started, progress)
        except BootError as err:
            raise UserError(f"host {host.name} did not come back: {err.reason}; log: {err.log}") from None


def _last_line(path: str) -> str:
    try:
        lines = [line.strip() for line in Path(path).read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:200] if lines else "(no output)"
