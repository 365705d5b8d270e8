"""A backend without VMs, for unit tests of the lifecycle and the `run` steps."""

from __future__ import annotations

from typing import Optional

from emulator.backends.base import Backend, BootError
from emulator.runs.state import HostState


class FakeBackend(Backend):
    """Hosts are dicts; commands are looked up in ``script`` (cmd -> (exit code, stdout))."""

    name = "fake"

    def __init__(self, fail_host: Optional[str] = None, script=None) -> None:
        self.fail_host = fail_host
        self.script = script or {}
        self.running: set[str] = set()
        self.calls: list[tuple] = []
        self.spawned: list[tuple[str, str]] = []
        self.where: dict[tuple[str, str], tuple] = {}  # (host, cmd) -> (cwd, env) it ran with

    def start_hosts(self, topology, run, accel, progress):
        for host in topology.hosts:
            run.hosts.append(HostState(name=host.name, index=host.index, state="booting", pid=1000 + host.index,
                                       accel="tcg", console_log=f"{run.state_dir}/hosts/{host.name}/console.log"))
            self.running.add(host.name)
            run.save()
        for hs in run.hosts:
            if hs.name == self.fail_host:
                raise BootError(hs.name, "kernel panic", hs.console_log)
            hs.state = "ready"
            hs.pools = {p: f"/dev/dax{i}.0" for i, p in enumerate(topology.host(hs.name).pools)}
        run.save()

    def stop_hosts(self, run, progress):
        self.calls.append(("stop", tuple(h.name for h in run.hosts)))
        self.running.clear()

    def host_state(self, run, host):
        return host.state if host.name in self.running else "dead"

    def exec(self, run, host, command, *, cwd, env, timeout, stdout, stderr, stdin=None):
        self.calls.append(("exec", host.name, command, timeout))
        self.where[(host.name, command)] = (cwd, dict(env))
        code, out = self.script.get(command, (0, b""))
        stdout.write(out)
        return code

    def spawn(self, run, host, command, *, cwd, env, log_path):
        self.spawned.append((command, log_path))
        code, out = self.script.get(command, (0, b""))
        with open(log_path, "wb") as f:
            f.write(out)
        return 4242

    def signal(self, run, host, pid, sig):
        self.calls.append(("signal", host.name, pid, sig))

    def fault(self, run, host, action):
        self.calls.append(("fault", host.name, action))

    def restart_host(self, run, host, progress):
        self.calls.append(("restart", host.name))


class ExitingBackend(FakeBackend):
    """A backend whose spawned processes have already exited with ``code``."""

    def __init__(self, code: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.code = code

    def poll(self, run, host, pid):
        return self.code
