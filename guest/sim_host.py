"""The init of a simulated host: the guest agent, serving unix sockets, pools as plain files.

The sim backend starts it as ``python -S -m guest.sim_host STATE/hosts/HOST/sim.json``,
inside ``unshare --net --mount --pid --fork --mount-proc`` where the machine allows (then
it is pid 1 of its PID namespace, so its death ends every process the host started, and
its network namespace has only a loopback, which it brings up), or, with ``network:
true``, in the network namespace the backend made for it on the run's bridge
(emulator/backends/sim/network.py), where it bind-mounts an /etc/hosts naming every host
over the machine's, in its own mount namespace only. It reuses the guest
agent unchanged (guest/agent.py: exec, spawn, signal, poll, status over the same JSON-line
protocol), so emulator/backends/agent_client.py drives a sim host exactly like a VM. There is no
CXL setup: each pool is the run's backing file, mapped directly by whoever opens it (or,
for a pool with coherence none, this host's view of it, with an evictor process that
start_evictors runs first: docs/coherence.md).

Stdlib and guest.* only, and ``-S``: it must start in a few tens of milliseconds.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading

from guest import agent as guest_agent
from guest.pools import PoolDevice
from guest.port_server import Session
from guest.protocol import LineBuffer

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

READ_SIZE = 64 * 1024
EVICTOR_READY_TIMEOUT = 60.0  # seconds; emptying a host's caches of a 256 MiB pool takes well under one
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
MS_BIND = 0x1000
HOSTS_FILE = "/etc/hosts"


def loopback_up() -> None:
    """``ip link set lo up`` without needing iproute2: the namespace starts with lo down."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def bind_mount(source: str, target: str) -> None:
    """``mount --bind SOURCE TARGET`` through libc (no util-linux needed in the host)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(source.encode(), target.encode(), None, MS_BIND, None) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno), target)


def name_the_hosts(config: dict[str, Any], target: str = HOSTS_FILE) -> bool:
    """Every host's name resolves, as in a VM: the host's /etc/hosts (guest/agent.py's
    hosts_file, written in its own dir) is bind-mounted over ``target``, which only this
    host's mount namespace sees. False when the run has no network to name."""
    if not (config.get("network") or {}).get("hosts"):
        return False
    path = os.path.join(config["host_dir"], "hosts")
    with open(path, "w") as f:
        f.write(guest_agent.hosts_file(config))
    bind_mount(path, target)
    return True


def pool_devices(config: dict[str, Any]) -> list[PoolDevice]:
    """The host's pools as the agent reports them: the backing file is the 'device'."""
    files = config["pool_files"]
    devices = []
    for pool in config.get("pools", []):
        path = files[pool["name"]]
        if not os.path.isfile(path):
            raise FileNotFoundError(f"pool {pool['name']}: backing file {path} is missing")
        devices.append(PoolDevice(pool["name"], path, os.path.getsize(path), 0, "file"))
    return devices


def _sender(conn: socket.socket):
    def write(frame: bytes) -> bool:
        try:
            conn.sendall(frame)
            return True
        except OSError:
            return False
    return write


def serve_connection(agent: guest_agent.Agent, conn: socket.socket) -> None:
    """One client, like one virtio-serial session: its end cancels its attached commands."""
    session = Session(_sender(conn))
    frames = LineBuffer()
    try:
        while True:
            try:
                data = conn.recv(READ_SIZE)
            except OSError:
                return
            if not data:
                return
            for message in frames.feed(data):
                agent.handle(message, session)
    finally:
        session.close()
        conn.close()


def listen(path: str) -> socket.socket:
    if os.path.exists(path):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    os.chmod(path, 0o600)
    sock.listen(16)
    return sock


def accept_forever(agent: guest_agent.Agent, sock: socket.socket) -> None:
    while True:
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        threading.Thread(target=serve_connection, args=(agent, conn), daemon=True).start()


def become_init() -> None:
    """As pid 1 of a PID namespace: fork; the parent only reaps orphans, the child returns.

    Orphans of the host's commands are re-parented to pid 1, and the agent (which waits
    for its own children through subprocess) must not reap them, nor lose its children
    to a reaper. So pid 1 is a plain reaper that forwards SIGTERM/SIGINT to the agent
    and exits when the agent does, which makes the kernel end the whole namespace.
    """
    child = os.fork()
    if child == 0:
        return
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: os.kill(child, signum))
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(0)
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
            os._exit(code if code >= 0 else 128 - code)


def start_evictors(config: dict[str, Any], timeout: float = EVICTOR_READY_TIMEOUT) -> list[subprocess.Popen]:
    """One evictor per pool with coherence none (notnets_rpc/noncoherent_evictor.py): it
    empties this host's caches of the pool (a host that starts again has lost what it had
    not written back), says "ready", then evicts lines at random. Returns once each is
    ready, so no command of the host sees the caches of its previous life."""
    env = {"PATH": config["path"], "LANG": "C.UTF-8", "PYTHONPATH": config["project"],
           "NOTNETS_HOST": config["host"], "NOTNETS_STATE_DIR": config["state_dir"]}  # `down` finds it by these
    procs: list[subprocess.Popen] = []
    try:
        for model in config.get("coherence_models", []):
            argv = [config["python"], "-m", "notnets_rpc.noncoherent_evictor", model["dir"], str(config["host_id"]),
                    str(model["evictions_per_s"]), str(model["seed"])]
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, cwd=config["project"],
                                    env=env, close_fds=True)
            procs.append(proc)
            ready, _, _ = select.select([proc.stdout], [], [], timeout)
            line = proc.stdout.readline().decode(errors="replace").strip() if ready else ""
            if line != "ready":
                raise OSError(f"pool {model['pool']}: the cache evictor of the non-coherent model did not start "
                              f"({'exit code %s' % proc.poll() if proc.poll() is not None else 'no answer'}; "
                              "see the console log)")
            guest_agent.log(f"pool {model['pool']}: caches empty, evicting {model['evictions_per_s']}/s "
                            f"(seed {model['seed']}, pid {proc.pid})")
    except BaseException:
        for proc in procs:
            proc.kill()
        raise
    return procs


def main(argv: list[str]) -> int:
    if os.getpid() == 1:
        become_init()
    if len(argv) != 2:
        sys.stderr.write("usage: python -m guest.sim_host STATE/hosts/HOST/sim.json\n")
        return 2
    with open(argv[1]) as f:
        config = json.load(f)
    log = guest_agent.log
    log(f"sim host {config['host']} (id {config['host_id']}, {config['isolation']}), pools: "
        f"{', '.join(p['name'] for p in config.get('pools', [])) or 'none'}")
    if config["isolation"] in ("netns", "bridge"):
        try:
            loopback_up()
        except OSError as err:
            log(f"cannot bring the loopback up: {err}")
    if config["isolation"] != "none":  # its own UTS and mount namespaces: named like a VM is
        try:
            socket.sethostname(config["host"])
        except OSError as err:
            log(f"cannot set the hostname: {err}")
        try:
            if name_the_hosts(config):
                log(f"{HOSTS_FILE}: {', '.join(sorted(config['network']['hosts']))}")
        except OSError as err:
            log(f"cannot write {HOSTS_FILE}: {err}; host names will not resolve")
    agent = guest_agent.Agent(config, env_script=config["env_script"])
    evictors: list[subprocess.Popen] = []
    try:
        evictors = start_evictors(config)
        devices = pool_devices(config)
    except OSError as err:
        agent.settle([], str(err))
    else:
        agent.settle(devices, None)
        agent.base_env.update(config.get("extra_env", {}))
        agent._write_env_script()  # again, with the far-memory model in it

    def terminate(signum: int, _frame: object) -> None:
        log(f"signal {signum}: ending the host's commands")
        agent.processes.terminate_all(grace=1.0)
        for proc in evictors:
            proc.kill()
        os._exit(0)

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    sockets = [listen(path) for path in config["sockets"]]
    for sock in sockets[1:]:
        threading.Thread(target=accept_forever, args=(agent, sock), daemon=True).start()
    log(f"serving {len(sockets)} sockets in {os.path.dirname(config['sockets'][0])}")
    accept_forever(agent, sockets[0])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
