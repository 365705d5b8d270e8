"""The guest agent: makes the pools' DAX devices, reports readiness, runs the host's commands.

Started by init.sh inside the guest's root (the host's Python, ``python -S -I -B
/run/notnets/agent.zip STATE/hosts/HOST/guest.json``: a zip of this package and the
modules it imports, from the initramfs; emulator/image/bundle_build.py); logs to
STATE/hosts/HOST/agent.log. It
answers on every notnets.agent.N virtio-serial port from the start, so that the host
learns of a failed pool setup (``state: failed`` with the reason) instead of waiting.
Stdlib only and few imports: Python starts slowly under TCG.
"""

from __future__ import annotations

import json
import os
import select
import shlex
import signal
import sys
import threading

from . import power, protocol
from .pools import PoolDevice, PoolMaker, PoolSetupError
from .port_server import PortServer, Session, Wakeup, find_ports
from .processes import CommandError, Processes, StdinFeed

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs a noticeable import time under TCG; the agent skips it
    from typing import Any, Optional

DEFAULT_SETUP_TIMEOUT = 120.0
ENV_SCRIPT = "/run/notnets/env.sh"


def uptime() -> float:
    try:
        with open("/proc/uptime") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return -1.0


def log(message: str) -> None:
    sys.stderr.write(f"[{uptime():8.2f}] agent: {message}\n")
    sys.stderr.flush()


def env_name(pool_name: str) -> str:
    """NOTNETS_POOL_<NAME>: upper case, '-' as '_' so that a shell can expand it."""
    return "NOTNETS_POOL_" + pool_name.upper().replace("-", "_")


def hosts_file(config: dict[str, Any]) -> str:
    """/etc/hosts for a guest on the run's network: every host's name resolves, with no DNS."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    for name, address in sorted(((config.get("network") or {}).get("hosts") or {}).items()):
        lines.append(f"{address}\t{name}")
    return "\n".join(lines) + "\n"


def write_hosts_file(config: dict[str, Any], path: str = "/etc/hosts") -> None:
    """In a VM only (its root is a tmpfs overlay: the host's file is not touched)."""
    if not (config.get("network") or {}).get("hosts"):
        return
    try:
        with open(path, "w") as f:
            f.write(hosts_file(config))
    except OSError as exc:
        log(f"cannot write {path}: {exc}; host names will not resolve")


def command_env(config: dict[str, Any], devices: list[PoolDevice]) -> dict[str, str]:
    """The environment every command starts from (the request's env is laid over it):
    the machine template's ``guest_env`` first, then what this host must say about itself."""
    env = dict(config.get("env") or {})
    env.update({
        "PATH": config["path"],
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "VIRTUAL_ENV": config["venv"],
        "NOTNETS_HOST": config["host"],
        "NOTNETS_HOST_ID": str(config["host_id"]),
        "NOTNETS_STATE_DIR": config["state_dir"],
        "NOTNETS_ARTIFACTS": f"{config['state_dir']}/artifacts/{config['host']}",
    })
    if config.get("interpose") and devices:
        env["NOTNETS_INTERPOSE"] = "1"  # unmodified grpc programs use the pool (notnets_rpc/interpose.py)
    if devices:
        env["NOTNETS_POOL"] = devices[0].device
        env["NOTNETS_POOL_SIZE"] = str(devices[0].size)
        if config.get("pool_hosts"):  # a pool formatted in this host gets a partition for every host of the run
            env["NOTNETS_POOL_HOSTS"] = str(config["pool_hosts"])
    for device in devices:
        env[env_name(device.name)] = device.device
        env[env_name(device.name) + "_SIZE"] = str(device.size)
    # pools the topology runs without hardware coherence: notnets_rpc formats them for
    # software coherence (NOTNETS_COHERENCE, read by notnets_rpc.pool; docs/coherence.md)
    coherence = {pool["name"]: pool.get("coherence", "coherent") for pool in config.get("pools", [])}
    software = {d.device: "software" for d in devices if coherence.get(d.name, "coherent") != "coherent"}
    if software:
        env["NOTNETS_COHERENCE"] = json.dumps(software, sort_keys=True)
    return env


class Agent:
    """The agent's state (starting -> ready | failed) and the request handler."""

    def __init__(self, config: dict[str, Any], env_script: str = ENV_SCRIPT) -> None:
        self.config = config
        self.env_script = env_script
        self.processes = Processes()
        self.state = "starting"
        self.phase = "starting"
        self.error: Optional[str] = None
        self.devices: list[PoolDevice] = []
        self.ready_uptime: Optional[float] = None
        self.settled = threading.Event()  # ready or failed
        self.base_env = command_env(config, [])
        self._feeds: dict[tuple[int, int], StdinFeed] = {}  # (session, exec id) -> its stdin

    # --- pool setup ------------------------------------------------------------------
    def setup(self) -> None:
        pools = self.config.get("pools", [])
        self.phase = f"creating DAX devices for {', '.join(p['name'] for p in pools)}" if pools else "no pools"
        try:
            maker = PoolMaker(log=log)
            devices = maker.make(pools, float(self.config.get("setup_timeout", DEFAULT_SETUP_TIMEOUT)))
        except PoolSetupError as err:
            self.settle([], str(err))
        except Exception as err:  # noqa: BLE001 - a bug must still reach the host as an error
            self.settle([], f"agent bug during pool setup: {err!r}")
        else:
            self.settle(devices, None)

    def settle(self, devices: list[PoolDevice], error: Optional[str]) -> None:
        """Setup is over: ready with ``devices``, or failed with ``error``; commands may run."""
        self.devices = devices
        self.base_env = command_env(self.config, devices)
        try:  # also after a failure: the console shell waits for this file (guest/init.sh)
            self._write_env_script()
        except OSError as err:
            log(f"cannot write {self.env_script}: {err}")
        self.error = error
        self.state = self.phase = "failed" if error else "ready"
        self.ready_uptime = uptime()
        log(self.state + (f": {error}" if error else ""))
        self.settled.set()

    def _write_env_script(self) -> None:
        os.makedirs(os.path.dirname(self.env_script), exist_ok=True)
        lines = [f"export {key}={shlex.quote(value)}" for key, value in sorted(self.base_env.items())]
        with open(self.env_script, "w") as f:
            f.write("# Written by the NotNets agent: what commands run with.\n" + "\n".join(lines) + "\n")

    def status(self) -> dict[str, Any]:
        return {
            "type": "status",
            "proto": protocol.VERSION,
            "state": self.state,
            "phase": self.phase,
            "error": self.error,
            "host": self.config["host"],
            "host_id": self.config["host_id"],
            "pools": {d.name: d.device for d in self.devices},
            "devices": {d.name: {"device": d.device, "size": d.size, "offset": d.offset, "region": d.region}
                        for d in self.devices},
            "uptime": uptime(),
            "ready_uptime": self.ready_uptime,
        }

    # --- requests ----------------------------------------------------------------------
    def handle(self, message: dict[str, Any], session: Session) -> None:
        """Called on the port's reader thread: answer quick requests here, run commands elsewhere."""
        rid = message["id"]
        problem = protocol.request_error(message)
        if problem:
            session.send({"id": rid, "type": "error", "message": problem})
            return
        op = message["op"]
        if op == "status":
            session.send({"id": rid, **self.status()})
        elif op in ("exec", "spawn"):
            feed = None
            if op == "exec" and message.get("stdin"):
                feed = self._feeds[(id(session), rid)] = StdinFeed()  # before any stdin frame comes
            threading.Thread(target=self._command, args=(message, session, feed), daemon=True).start()
        elif op == "stdin":
            self._stdin(message, session)
        elif op == "ps":
            session.send({"id": rid, "type": "processes", "processes": self.processes.listing()})
        elif op == "signal":
            self._reply(session, rid, self._signal, message)
        elif op == "poll":
            self._reply(session, rid, self._poll, message)

    def _stdin(self, message: dict[str, Any], session: Session) -> None:
        """Feed an attached command's stdin; frames for a command that ended are dropped."""
        feed = self._feeds.get((id(session), message["ref"]))
        if feed is None:
            return
        try:
            data = protocol.unb64(message.get("data", ""))
        except ValueError:
            return
        if data:
            feed.put(data)
        if message.get("eof"):
            feed.put(None)

    def _signal(self, message: dict[str, Any]) -> dict[str, Any]:
        self.processes.signal(message["pid"], message["sig"])
        return {"type": "ok"}

    def _poll(self, message: dict[str, Any]) -> dict[str, Any]:
        running, code = self.processes.poll(message["pid"])
        return {"type": "process", "running": running, "code": code}

    @staticmethod
    def _reply(session: Session, rid: int, action, message: dict[str, Any]) -> None:
        try:
            session.send({"id": rid, **action(message)})
        except CommandError as err:
            session.send({"id": rid, "type": "error", "message": str(err)})

    def _command(self, message: dict[str, Any], session: Session, feed: Optional[StdinFeed] = None) -> None:
        rid = message["id"]
        self.settled.wait()  # commands run once the pools are (or failed to be) set up
        env = {**self.base_env, **message.get("env", {})}
        cwd = message.get("cwd") or self.config["project"]
        try:
            if message["op"] == "spawn":
                pid = self.processes.spawn(message["cmd"], cwd, env, message["log"])
                session.send({"id": rid, "type": "spawned", "pid": pid})
                return
            wake = session.cancel_event()
            try:
                code = self.processes.run(message["cmd"], cwd, env, message.get("timeout"),
                                          lambda m: session.send({"id": rid, **m}), wake, feed)
            finally:
                session.forget(wake)
                if feed is not None:
                    feed.close()
                    self._feeds.pop((id(session), rid), None)
            if code is not None:
                session.send({"id": rid, "type": "exit", "code": code})
        except CommandError as err:
            session.send({"id": rid, "type": "error", "message": str(err)})

    def shutdown(self) -> None:
        log("power button: stopping commands and powering off")
        self.processes.terminate_all()
        power.power_off()


def _catch_sigio() -> int:
    """Route SIGIO (a host connected to some port, or data arrived) to a pipe; its read end.

    Done before any port gets O_ASYNC: SIGIO's default action would kill the agent.
    """
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.signal(signal.SIGIO, lambda *_: None)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    return read_end


def _relay_wakeups(read_end: int, wakeup: Wakeup) -> None:
    """Bump ``wakeup`` on every SIGIO (and every few seconds, in case one was missed)."""
    while True:
        readable, _, _ = select.select([read_end], [], [], 5.0)
        if readable:
            os.read(read_end, 4096)
        wakeup.bump()


def _watch_power_button(agent: Agent) -> None:
    button = power.wait_for_button(timeout=120.0)
    if button is None:
        log("no ACPI power button found; system_powerdown will be ignored")
        return
    power.watch(button, agent.shutdown)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: python -m guest.agent STATE/hosts/HOST/guest.json\n")
        return 2
    with open(argv[1]) as f:
        config = json.load(f)
    log(f"host {config['host']} (id {config['host_id']}), pools: "
        f"{', '.join(p['name'] for p in config.get('pools', [])) or 'none'}")
    sigio = _catch_sigio()
    write_hosts_file(config)
    agent = Agent(config)
    threading.Thread(target=agent.setup, name="setup", daemon=True).start()
    wakeup = Wakeup()
    ports = find_ports(int(config.get("agent_ports", 1)), timeout=10.0)
    if not ports:
        log("no notnets.agent.N virtio-serial port found; nothing to serve")
        return 1
    for port in ports:
        server = PortServer(port, agent.handle, wakeup, log)
        threading.Thread(target=server.serve_forever, name=f"port {port}", daemon=True).start()
    log(f"serving {len(ports)} ports: {', '.join(ports)}")
    threading.Thread(target=_watch_power_button, args=(agent,), name="power", daemon=True).start()
    _relay_wakeups(sigio, wakeup)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
