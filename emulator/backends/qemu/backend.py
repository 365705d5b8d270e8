"""Hosts as QEMU VMs: boot them, wait for their agents, stop them, run commands in them.

Each VM runs in its own session (it outlives `up`), logs its console itself (chardev
logfile) and answers on three kinds of unix socket in ``STATE/hosts/HOST/``: QMP
(status, powerdown, quit, stop/cont), the serial console, and the guest agent's ports.
"""

from __future__ import annotations

import os
import signal as signals
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO, Mapping, Optional

from emulator.backends import agent_client
from emulator.backends.base import Backend, BootError
from emulator.backends.qemu import boot_template
from emulator.backends.qemu import process as qemu_process
from emulator.backends.qemu import qmp_control
from emulator.backends.qemu.accel import choose_accel
from emulator.backends.qemu.boot_watch import BootWatch
from emulator.backends.qemu.command import HostPaths, build_qemu_argv, load_template
from emulator.backends.qemu.vde import start_switch, stop_switch
from emulator.errors import UserError
from emulator.image.guest_config import write_guest_config
from emulator.image.initramfs import build_initramfs
from emulator.image.kernel_image import boot_image  # uncompressed PVH vmlinux: ~3 s less per TCG boot
from emulator.paths import Kernel, find_kernel
from emulator.progress import Progress
from emulator.runs.state import HostState, RunState, make_private_dir
from emulator.sizes import parse_size
from emulator.topology.model import Host, Topology

DEFAULT_BOOT_TIMEOUT = {"tcg": 180.0, "kvm": 60.0}
POWERDOWN_GRACE = 1.5  # seconds a guest gets to power off before QEMU is told to quit
QUIT_GRACE = 2.0
AGENT_CONNECT_TIMEOUT = 15.0


def boot_timeout(accel: str) -> float:
    """Seconds a host may take to become ready; $NOTNETS_BOOT_TIMEOUT overrides."""
    env = os.environ.get("NOTNETS_BOOT_TIMEOUT")
    if env:
        try:
            return float(env)
        except ValueError:
            raise UserError(f"NOTNETS_BOOT_TIMEOUT={env!r}: expected a number of seconds") from None
    return DEFAULT_BOOT_TIMEOUT.get(accel, 180.0)


def _last_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:200] if lines else ""


CONSOLE_REASONS = ("FATAL", "Kernel panic", "not syncing")


def _console_reason(path: Path) -> str:
    """The last console line that looks like the reason the guest stopped."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        if any(word in line for word in CONSOLE_REASONS):
            return line.strip()[:200]
    return ""


def _agent_says(hs: HostState) -> str:
    """The last line of the guest agent's log (it writes it through the state share)."""
    last = _last_line(Path(hs.dir) / "agent.log")
    return f"; the agent log ends with: {last}" if last else ""


class QemuBackend(Backend):
    name = "qemu"

    # -- up ---------------------------------------------------------------------------
    def preflight(self, topology: Topology) -> None:
        find_kernel()

    def start_hosts(self, topology: Topology, run: RunState, accel: str, progress: Progress) -> None:
        kernel = find_kernel()
        initrd = build_initramfs(kernel)
        accel_name, note = choose_accel(accel, kernel)
        run.accel, run.accel_note = accel_name, note
        progress.say(note)
        state_dir = Path(run.state_dir)
        if topology.network:
            run.vde_pid, run.vde_socket = start_switch(state_dir)
            run.save()
        template = load_template()
        backing = {p.name: p.backing for p in run.pools}
        argvs: dict[str, list[str]] = {}
        make_private_dir(state_dir / "hosts")
        image = str(boot_image(kernel))
        for host in topology.hosts:
            host_dir = make_private_dir(state_dir / "hosts" / host.name)
            paths = HostPaths.in_state_dir(
                state_dir, host.name, image, str(initrd), backing, host.pools,
                agent_ports=int(template["agent_ports"]), network=topology.network,
            )
            for lsa in paths.lsa.values():
                boot_template.sparse_file(Path(lsa), parse_size(template["lsa_size"]))
            write_guest_config(host_dir, topology, host, state_dir)
            argvs[host.name] = build_qemu_argv(topology, host, paths, accel=accel_name, template=template)
            run.hosts.append(HostState(
                name=host.name, index=host.index, state="created", accel=accel_name, dir=str(host_dir),
                console_log=paths.console_log, console_socket=paths.console_socket,
                qmp_socket=paths.qmp_socket, agent_sockets=list(paths.agent_sockets),
                argv=argvs[host.name],
            ))
        run.save()
        saved = self._templates(topology, image, str(initrd), accel_name, template, progress)
        started = time.monotonic()
        procs: dict[str, Any] = {}
        identities: list[Any] = []
        try:
            with ThreadPoolExecutor(max_workers=len(run.hosts)) as pool:
                booted = list(pool.map(lambda hs: self._boot_one(hs, saved.get(hs.name), progress), run.hosts))
            for hs, (proc, identity) in zip(run.hosts, booted):
                procs[hs.name] = proc
                if identity is not None:
                    identities.append(identity)
            run.save()
            wanted = {h.name: set(h.pools) for h in topology.hosts}
            self._wait_ready(run, run.hosts, wanted, procs, started, boot_timeout(accel_name), progress)
        finally:
            for identity in identities:
                identity.close()

    @staticmethod
    def _templates(topology: Topology, image: str, initrd: str, accel: str, template: Mapping[str, Any],
                   progress: Progress) -> dict[str, Path]:
        """Host name -> the saved guest to restore it from (made now if missing); hosts
        without one boot their kernel. A template that cannot be made costs one warning."""
        if not boot_template.enabled():
            return {}
        try:
            keys = {host.name: boot_template.template_key(
                boot_template.shape_argv(topology, host, image, initrd, accel, template)) for host in topology.hosts}
        except boot_template.TemplateError as err:
            progress.say(f"warning: no boot template ({err}); hosts boot their kernel")
            return {}
        first: dict[str, Host] = {}  # one host of each shape
        for host in topology.hosts:
            first.setdefault(keys[host.name], host)

        def make(host: Host) -> Optional[Path]:
            try:
                return boot_template.make_template(topology, host, image, initrd, accel, template,
                                                   boot_timeout(accel), progress.say)
            except boot_template.TemplateError as err:
                progress.say(f"warning: no boot template for {host.name}'s machine ({err}); its hosts boot their kernel")
                return None

        with ThreadPoolExecutor(max_workers=len(first)) as pool:  # the shapes' kernels boot together
            made = dict(zip(first, pool.map(make, first.values())))
        return {name: made[key] for name, key in keys.items() if made[key] is not None}

    @staticmethod
    def _boot_one(hs: HostState, saved: Optional[Path], progress: Progress) -> tuple[Any, Any]:
        """Start one host's QEMU: restored from ``saved`` and told who it is, or (no
        template, or the restore failed: one warning line) booting its kernel.
        Returns (process, the identity connection to close once the host is ready)."""
        log = Path(hs.dir) / "qemu.log"
        if saved is not None:
            proc = qemu_process.start_detached(boot_template.restore_argv(hs.argv), log)
            hs.pid, hs.state, hs.template = proc.pid, "booting", str(saved)
            try:
                boot_template.restore(proc, hs.qmp_socket, saved)
                identity = boot_template.send_identity(str(Path(hs.dir) / "identity.sock"), hs.name, hs.index)
                progress.say(f"booting from the boot template ({hs.accel}, pid {proc.pid})...", host=hs.name)
                return proc, identity
            except boot_template.TemplateError as err:
                progress.say(f"warning: the restore from the boot template failed ({err}); booting the kernel",
                             host=hs.name)
                proc.kill()
                proc.wait()
                saved.unlink(missing_ok=True)  # made again by the next `up`
        proc = qemu_process.start_detached(hs.argv, log)
        hs.pid, hs.state, hs.template = proc.pid, "booting", None
        progress.say(f"booting ({hs.accel}, pid {proc.pid})...", host=hs.name)
        return proc, None

    def _wait_ready(self, run: RunState, hosts: list[HostState], wanted: dict[str, set[str]], procs: dict,
                    started: float, timeout: float, progress: Progress,
                    log_offsets: Optional[dict[str, int]] = None) -> None:
        agent = agent_client
        deadline = started + timeout
        results: dict[str, Any] = {}
        lock = threading.Lock()

        def wait_one(hs: HostState) -> None:
            try:
                info = self._wait_agent(agent, hs, procs[hs.name], deadline)
                outcome: Any = ("ok", info)
            except BaseException as err:  # noqa: BLE001 - reported by the main thread
                outcome = ("error", err)
            with lock:
                results[hs.name] = outcome

        threads = [threading.Thread(target=wait_one, args=(hs,), daemon=True, name=f"boot-{hs.name}")
                   for hs in hosts]
        for t in threads:
            t.start()
        pending = {hs.name for hs in hosts}
        watches = {hs.name: BootWatch(hs.console_log, (log_offsets or {}).get(hs.name, 0)) for hs in hosts}
        while pending:
            for hs in hosts:
                if hs.name not in pending:
                    continue
                fatal = None
                for event in watches[hs.name].poll():
                    progress.say(f"{event} ({time.monotonic() - started:.1f} s)", host=hs.name)
                    if "FATAL" in event:
                        fatal = event
                with lock:
                    outcome = results.get(hs.name)
                proc = procs[hs.name]
                if outcome is None and fatal is not None:
                    outcome = ("error", RuntimeError(fatal))  # the guest gave up; no need to wait
                if outcome is None and proc.poll() is not None:
                    outcome = ("error", RuntimeError(self._exit_reason(hs, proc.returncode)))
                if outcome is None and time.monotonic() > deadline:
                    outcome = ("error", TimeoutError(_agent_says(hs).lstrip("; ")))
                if outcome is None:
                    continue
                kind, value = outcome
                if kind == "error":
                    if isinstance(value, TimeoutError):  # the agent's own words name a remaining time
                        said = _agent_says(hs) if "agent log" not in str(value) else ""
                        value = TimeoutError(f"not ready after {timeout:g} s (NOTNETS_BOOT_TIMEOUT=SECONDS waits "
                                             f"longer): {value}{said}".rstrip(": "))
                    if proc.poll() is not None and not isinstance(value, TimeoutError):
                        value = RuntimeError(self._exit_reason(hs, proc.returncode))
                    hs.state, hs.error = "failed", _reason(value)
                    run.save()
                    raise BootError(hs.name, hs.error, hs.console_log)
                self._mark_ready(run, hs, wanted[hs.name], value, started, progress)
                pending.discard(hs.name)
            time.sleep(0.05)

    def _mark_ready(self, run: RunState, hs: HostState, wanted: set[str], info: Any, started: float,
                    progress: Progress) -> None:
        pools = dict((info or {}).get("pools") or {}) if isinstance(info, dict) else {}
        if set(pools) != wanted:
            hs.state = "failed"
            hs.error = (f"the guest reports pools {sorted(pools) or 'none'} but the topology attaches "
                        f"{sorted(wanted) or 'none'}")
            run.save()
            raise BootError(hs.name, hs.error, hs.console_log)
        hs.pools = {name: str(dev) for name, dev in pools.items()}
        hs.state = "ready"
        hs.boot_seconds = round(time.monotonic() - started, 2)
        cpu = qemu_process.cpu_seconds(hs.pid) if hs.pid else None  # the boot's cost, less disturbed by load
        hs.boot_cpu_seconds = None if cpu is None else round(cpu, 2)
        run.save()
        devices = ", ".join(f"{n}={d}" if len(pools) > 1 else str(d) for n, d in hs.pools.items())
        cost = f", {cpu:.1f} CPU-s" if cpu is not None else ""
        progress.say(f"ready in {hs.boot_seconds:.1f} s{cost}" + (f" ({devices})" if devices else ""), host=hs.name)

    @staticmethod
    def _exit_reason(hs: HostState, code: Optional[int]) -> str:
        """Why a VM ended during boot: QEMU's own complaint, else the guest's last words."""
        detail = _last_line(Path(hs.dir) / "qemu.log") or _console_reason(Path(hs.console_log))
        return f"QEMU exited (code {code})" + (f": {detail}" if detail else "")

    @staticmethod
    def _wait_agent(agent: Any, hs: HostState, proc: Any, deadline: float) -> Any:
        """Wait for QEMU's agent sockets, then for the guest agent to say it is ready."""
        while not all(Path(s).exists() for s in hs.agent_sockets[:1]):
            if proc.poll() is not None:
                raise RuntimeError("QEMU exited")
            if time.monotonic() > deadline:
                raise TimeoutError("QEMU did not create its agent socket")
            time.sleep(0.05)
        client = agent.AgentClient.connect(hs.agent_sockets, timeout=max(deadline - time.monotonic(), 0.1))
        try:
            return client.wait_ready(timeout=max(deadline - time.monotonic(), 0.1))
        finally:
            client.close()

    # -- down -------------------------------------------------------------------------
    def stop_hosts(self, run: RunState, progress: Progress) -> None:
        hosts = [hs for hs in run.hosts if hs.pid]
        if hosts:
            with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
                for hs, how in zip(hosts, pool.map(self._stop_one, hosts)):
                    if how:
                        progress.say(how, host=hs.name)
        stop_switch(run.vde_pid, run.vde_socket)

    @staticmethod
    def _stop_one(hs: HostState) -> str:
        """powerdown, then quit, then SIGKILL; returns how the VM ended ("" if already gone)."""
        pid, marker = hs.pid, hs.qmp_socket
        assert pid is not None
        if not qemu_process.is_alive(pid, marker):
            return ""
        try:
            qmp_control.powerdown(marker, timeout=1.0)
            if qemu_process.wait_dead(pid, marker, POWERDOWN_GRACE):
                return "powered off"
        except qmp_control.QMPUnavailable:
            pass
        try:
            qmp_control.quit_vm(marker, timeout=1.0)
            if qemu_process.wait_dead(pid, marker, QUIT_GRACE):
                return "stopped (quit)"
        except qmp_control.QMPUnavailable:
            pass
        qemu_process.kill(pid, marker)
        if qemu_process.wait_dead(pid, marker, 3.0):
            return "killed"
        return f"pid {pid} would not die"

    # -- inspection ---------------------------------------------------------------------
    def host_state(self, run: RunState, host: HostState) -> str:
        if not qemu_process.is_alive(host.pid, host.qmp_socket):
            return "dead" if host.pid else host.state
        if host.state != "ready":
            return host.state
        try:
            status = qmp_control.query_status(host.qmp_socket, timeout=2.0)
        except qmp_control.QMPUnavailable:
            return "ready"
        return "ready" if status == "running" else status

    def agent(self, run: RunState, host: HostState) -> Any:
        """Refuse at once a host whose QEMU is gone, that is frozen (`fault freeze`: QEMU
        would accept the connection and nothing would ever answer) or not ready."""
        if not qemu_process.is_alive(host.pid, host.qmp_socket):
            raise UserError(f"host {host.name} of run {run.name} is not running (its QEMU is gone); "
                            f"`notnets-emu fault {host.name} restart` boots it again, "
                            f"`notnets-emu down --name {run.name}` cleans up")
        if host.state != "ready":
            raise UserError(f"host {host.name} is {host.state}, not ready")
        state = self.host_state(run, host)
        if state == "paused":
            raise UserError(f"host {host.name} is frozen (`notnets-emu fault {host.name} thaw` resumes it)")
        if state not in ("ready", "dead"):
            raise UserError(f"host {host.name} is {state} (QEMU), not running")
        return agent_client.AgentClient.connect(host.agent_sockets, timeout=AGENT_CONNECT_TIMEOUT)

    def restart_host(self, run: RunState, host: HostState, progress: Progress) -> None:
        """Boot a killed host again with the argv it had (same pools, label files, config).

        Its pool content is untouched: the backing file outlives the VM, which is the
        point of testing a peer's crash and return.
        """
        if not host.argv:
            raise UserError(f"host {host.name}: the run does not record its QEMU command line; `down` and `up` again")
        if qemu_process.is_alive(host.pid, host.qmp_socket):
            self._stop_one(host)
        for sock in [host.qmp_socket, host.console_socket, *host.agent_sockets, str(Path(host.dir) / "identity.sock")]:
            Path(sock).unlink(missing_ok=True)
        started = time.monotonic()
        try:  # the console log is appended to: this boot's lines start at its current end
            offset = Path(host.console_log).stat().st_size
        except OSError:
            offset = 0
        saved = Path(host.template) if host.template and boot_template.enabled() else None
        if saved is not None and not saved.is_file():
            saved = None  # a newer template replaced it: boot the kernel
        host.pools, host.error = {}, None
        proc, identity = self._boot_one(host, saved, progress)
        wanted = {lsa.stem for lsa in Path(host.dir).glob("*.lsa")}  # one label file per attached pool
        run.save()
        try:
            self._wait_ready(run, [host], {host.name: wanted}, {host.name: proc}, started,
                             boot_timeout(host.accel or "tcg"), progress, log_offsets={host.name: offset})
        except BootError as err:
            raise UserError(f"host {host.name} did not come back: {err.reason}; log: {err.log}") from None
        finally:
            if identity is not None:
                identity.close()

    def fault(self, run: RunState, host: HostState, action: str) -> None:
        if not qemu_process.is_alive(host.pid, host.qmp_socket):
            raise UserError(f"host {host.name} is not running")
        try:
            if action == "kill":
                qemu_process.kill(host.pid or 0, host.qmp_socket, signals.SIGKILL)
                qemu_process.wait_dead(host.pid or 0, host.qmp_socket, 3.0)
            elif action == "freeze":
                qmp_control.stop(host.qmp_socket)
            elif action == "thaw":
                qmp_control.cont(host.qmp_socket)
            else:
                raise UserError(f"unknown fault {action!r} (expected kill, freeze or thaw)")
        except qmp_control.QMPUnavailable as err:
            raise UserError(f"host {host.name}: QMP did not answer: {err}") from None


def _reason(err: BaseException) -> str:
    text = str(err).strip()
    if isinstance(err, TimeoutError):
        return text or "timed out"
    return text or type(err).__name__
