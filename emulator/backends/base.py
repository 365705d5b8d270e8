"""What a backend does: start and stop the hosts of a run, run commands in them, hurt them.

The run's lifecycle around the hosts (state dir, pools' backing files, stale runs,
tear-down on failure) is shared by every backend and lives in ``emulator/runs/lifecycle.py``;
a backend only handles its hosts. Everything it must remember goes into the
:class:`~emulator.runs.state.RunState` it is handed (and saved), because the next verb
is another process.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, BinaryIO, Mapping, Optional

from emulator.progress import Progress
from emulator.runs.state import HostState, RunState
from emulator.topology.model import Topology


class BootError(Exception):
    """A host did not become ready; ``host`` names it and ``log`` is where to look."""

    def __init__(self, host: str, reason: str, log: Optional[str]) -> None:
        super().__init__(reason)
        self.host = host
        self.reason = reason
        self.log = log


class Backend(ABC):
    """One way of running hosts (QEMU VMs, simulated process trees)."""

    name: str = "?"

    def preflight(self, topology: Topology) -> None:
        """Raise a UserError for what would make `up` fail, before anything is created."""

    @abstractmethod
    def start_hosts(self, topology: Topology, run: RunState, accel: str, progress: Progress) -> None:
        """Start every host and return once all are READY (``run.hosts`` filled, saved).

        Raise BootError for the first host that fails; the caller then calls
        :meth:`stop_hosts`, so whatever was started must already be in ``run``.
        """

    @abstractmethod
    def stop_hosts(self, run: RunState, progress: Progress) -> None:
        """End every host of the run; idempotent, and fine when some are already dead."""

    @abstractmethod
    def host_state(self, run: RunState, host: HostState) -> str:
        """The host's live state: ready, booting, paused, dead, ..."""

    def agent(self, run: RunState, host: HostState) -> Any:
        """A connected AgentClient to HOST, after refusing at once a host that cannot
        answer (dead, frozen, not ready) with a UserError saying what to do."""
        raise NotImplementedError(f"the {self.name} backend has no guest agent")

    def exec(self, run: RunState, host: HostState, command: str, *, cwd: Optional[str],
             env: Mapping[str, str], timeout: Optional[float], stdout: BinaryIO, stderr: BinaryIO,
             stdin: Optional[BinaryIO] = None) -> int:
        """Run ``command`` with the host's shell, stream its output, return its exit code
        (124 on timeout); with ``stdin`` the command reads it, else /dev/null."""
        with self.agent(run, host) as client:
            return client.exec(command, cwd=cwd, env=env, timeout=timeout, stdout=stdout, stderr=stderr,
                               stdin=stdin)

    def spawn(self, run: RunState, host: HostState, command: str, *, cwd: Optional[str],
              env: Mapping[str, str], log_path: str) -> int:
        """Start ``command`` detached with stdout+stderr in ``log_path``; return its pid."""
        with self.agent(run, host) as client:
            return client.spawn(command, cwd=cwd, env=env, log_path=log_path)

    def signal(self, run: RunState, host: HostState, pid: int, sig: int) -> None:
        """Send ``sig`` to a process the host runs."""
        with self.agent(run, host) as client:
            client.signal(pid, sig)

    def poll(self, run: RunState, host: HostState, pid: int) -> Optional[int]:
        """None while a spawned process runs, then its exit code."""
        with self.agent(run, host) as client:
            return client.poll(pid)

    def processes(self, run: RunState, host: HostState) -> list[dict[str, Any]]:
        """The commands started in HOST (`ps`): pid, cmd, detached, log, started, running, code."""
        with self.agent(run, host) as client:
            return client.processes()

    @abstractmethod
    def fault(self, run: RunState, host: HostState, action: str) -> None:
        """kill (the host dies at once), freeze (stops, memory kept) or thaw."""

    @abstractmethod
    def restart_host(self, run: RunState, host: HostState, progress: Progress) -> None:
        """Start HOST again (after a kill), with the same config, and wait until it is ready."""

    def console_log(self, run: RunState, host: HostState) -> Path:
        """The file that holds what the host wrote on its console."""
        return Path(host.console_log)

    def alive(self, run: RunState) -> list[str]:
        """Names of the hosts whose processes still run (to tell a live run from a stale one)."""
        return [h.name for h in run.hosts if self.host_state(run, h) not in ("dead", "stopped")]
