"""Fixtures for the RPC tests: fresh pools in /dev/shm, servers and channels that are
always stopped, and the generated echo protos."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from concurrent import futures
from pathlib import Path

import pytest

import notnets_rpc

from .peers import Peers
from .service import test_handlers

ROOT = Path(__file__).resolve().parents[2]
SHM = Path("/dev/shm")


@pytest.fixture
def pool_path():
    """A fresh 32 MiB pool file, removed afterwards."""
    path = SHM / f"notnets-test-{uuid.uuid4().hex[:12]}"
    notnets_rpc.create_pool(str(path), 32 << 20)
    try:
        yield str(path)
    finally:
        path.unlink(missing_ok=True)


@pytest.fixture
def blank_path():
    """A path in /dev/shm that does not exist yet (removed afterwards)."""
    path = SHM / f"notnets-test-{uuid.uuid4().hex[:12]}"
    try:
        yield str(path)
    finally:
        path.unlink(missing_ok=True)


@pytest.fixture
def server_pool(pool_path):
    """The pool path the ``serve`` fixture's servers map (a module may override it)."""
    return pool_path


@pytest.fixture
def server_host():
    """The host id of the ``serve`` fixture's servers (None: NOTNETS_HOST_ID; overridable)."""
    return None


@pytest.fixture
def serve(server_pool, server_host):
    """serve(name="t", **server kwargs) -> a started server publishing the test service."""
    started = []

    def _serve(name: str = "t", workers: int = 8, **kwargs):
        if server_host is not None:
            kwargs.setdefault("host_id", server_host)
        server = notnets_rpc.server(futures.ThreadPoolExecutor(max_workers=workers), pool=server_pool, **kwargs)
        server.add_generic_rpc_handlers((test_handlers(),))
        server.add_endpoint(name)
        server.start()
        started.append(server)
        return server

    try:
        yield _serve
    finally:
        for server in started:
            server.stop(None).wait(5)


@pytest.fixture
def channel(serve, pool_path):
    serve()
    ch = notnets_rpc.insecure_channel("notnets:t", pool=pool_path)
    try:
        yield ch
    finally:
        ch.close()


@pytest.fixture(scope="session")
def echo_protos():
    """The generated echo modules (generated if missing)."""
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_protos.py")], check=True, capture_output=True)
    sys.path.insert(0, str(ROOT / "notnets_bench" / "echo"))
    import echo_pb2
    import echo_pb2_grpc

    return echo_pb2, echo_pb2_grpc


def python_env(**extra: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


@pytest.fixture
def peers():
    """Child processes (``Peers``), all killed at the end."""
    p = Peers()
    try:
        yield p
    finally:
        p.kill_all()
