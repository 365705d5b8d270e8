"""A stand-in for QEMU's end of the agent's virtio-serial ports, for tests without a VM.

Each port is a unix socket that serves one client at a time, like QEMU's chardev; every
accepted connection becomes one session of the real PortServer code, so closing the
client ends the session exactly as a host disconnect does in the guest.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

from guest.agent import Agent
from guest.pools import PoolDevice
from guest.port_server import PortServer, Wakeup


class FakePorts:
    def __init__(self, directory: Path, agent: Agent, count: int = 2) -> None:
        self.sockets = [str(directory / f"agent{i}.sock") for i in range(count)]
        self.agent = agent
        self._listeners = []
        for path in self.sockets:
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(path)
            listener.listen(1)
            self._listeners.append(listener)
            threading.Thread(target=self._serve, args=(listener, path), daemon=True).start()

    def _serve(self, listener: socket.socket, path: str) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            server = PortServer(path, self.agent.handle, Wakeup(), lambda _msg: None)
            server.fd = conn.fileno()
            try:
                server.serve_session()
            finally:
                conn.close()

    def close(self) -> None:
        for listener in self._listeners:
            listener.close()


def make_agent(tmp_path: Path, state: str = "ready", error: str | None = None) -> Agent:
    config = {
        "host": "host0", "host_id": 0, "pools": [], "project": str(tmp_path), "venv": "/venv",
        "path": os.environ.get("PATH", "/usr/bin:/bin"), "state_dir": str(tmp_path), "host_dir": str(tmp_path),
    }
    agent = Agent(config, env_script=str(tmp_path / "run" / "env.sh"))
    if state != "starting":
        devices = [PoolDevice("pool-0", "/dev/dax0.0", 250 << 20, 6 << 20, "region0"),
                   PoolDevice("poolB", "/dev/dax1.0", 250 << 20, 6 << 20, "region1")] if state == "ready" else []
        agent.settle(devices, error)
    return agent
