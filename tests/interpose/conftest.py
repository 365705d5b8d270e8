"""Fixtures for the interposition tests: a pool, and the unmodified example programs
run as separate processes, on "hosts" told apart by NOTNETS_HOST / NOTNETS_HOST_ID."""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest
from harness.pools import fresh_pool

from notnets_rpc.inspect import inspect_pool

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "unmodified"


@pytest.fixture
def pool_path():
    with fresh_pool("interpose-test") as path:
        yield path


def host_env(host: Optional[str], host_id: int = 0, pool: Optional[str] = None, interpose: bool = True,
             **extra: str) -> Dict[str, str]:
    """The environment of a process on emulated host ``host`` (none of ours inherited)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTNETS_")}
    if host is not None:
        env["NOTNETS_HOST"] = host
    env["NOTNETS_HOST_ID"] = str(host_id)
    if pool is not None:
        env["NOTNETS_POOL"] = pool
    if interpose:
        env["NOTNETS_INTERPOSE"] = "1"
    env.update(extra)
    return env


def command(program: str, args: List[str], via_module: bool = False) -> List[str]:
    script = str(EXAMPLES / program)
    if via_module:
        return [sys.executable, "-m", "notnets_rpc.interpose", script, *args]
    return [sys.executable, script, *args]


class Served:
    def __init__(self, proc: subprocess.Popen, port: int) -> None:
        self.proc = proc
        self.port = port


@pytest.fixture
def serve():
    """serve(program, env, address="[::]:0", via_module=False) -> Served (stopped afterwards)."""
    started: List[subprocess.Popen] = []

    def _serve(program: str, env: Dict[str, str], address: str = "[::]:0", via_module: bool = False) -> Served:
        proc = subprocess.Popen(command(program, ["--port", address], via_module), env=env, cwd=str(ROOT),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(proc)
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        end = time.monotonic() + 60
        while time.monotonic() < end:
            if not sel.select(timeout=max(0.0, end - time.monotonic())):
                break
            line = proc.stdout.readline()
            if not line:
                break
            m = re.search(r"serving on port (\d+)", line)
            if m:
                return Served(proc, int(m.group(1)))
        proc.kill()
        raise AssertionError(f"{program} did not start: {proc.stderr.read()}")

    try:
        yield _serve
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


def run_client(program: str, target: str, env: Dict[str, str], via_module: bool = False,
               timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(command(program, ["--target", target], via_module), env=env, cwd=str(ROOT),
                          capture_output=True, text=True, timeout=timeout)


def endpoint_calls(pool: str) -> Dict[str, int]:
    """Calls served per published name, from the pool's own counters."""
    return {s["name"]: s["calls"] for s in inspect_pool(pool)["services"] if s["state"] == "live"}


def calls_settled(pool: str, name: str, expected: int, timeout: float = 5.0) -> int:
    """The endpoint's call counter once it reaches ``expected`` (servers publish their
    counters with their heartbeat, every 100 ms), or its value after ``timeout``."""
    end = time.monotonic() + timeout
    while True:
        calls = endpoint_calls(pool).get(name, 0)
        if calls >= expected or time.monotonic() > end:
            return calls
        time.sleep(0.05)
