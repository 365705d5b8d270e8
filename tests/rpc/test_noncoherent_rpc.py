"""The RPC semantics suite (test_semantics.py) across two hosts of a non-coherent pool.

The pool is formatted for software coherence and run by the model: the servers of the
``serve`` fixture (and so of ``channel``) map host 0's view, and every channel maps host
1's, so nothing reaches the other side but what notnets_rpc writes back and
invalidates. Servers that a test makes itself on ``pool_path`` live on host 1 too.
Afterwards the model must have seen no lost update.
"""

from __future__ import annotations

import pytest

import notnets_rpc
from notnets_rpc.coherent_memory import SoftwareCoherent
from notnets_rpc.pool import Pool

from .noncoherent_fixtures import model_pool
from .test_semantics import *  # noqa: F401,F403 - the suite, collected again with the fixtures below

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def model(monkeypatch):
    monkeypatch.setenv(notnets_rpc.HOST_ID_ENV, "1")
    for pool in model_pool():
        yield pool
        assert pool.reports() == [], "the model saw lost updates"


@pytest.fixture
def pool_path(model):
    """Host 1's view: every channel (and any server a test makes itself) is on host 1."""
    return model.view(1)


@pytest.fixture
def server_pool(model):
    """The ``serve`` fixture's servers (and so ``channel``'s) map host 0's view."""
    return model.view(0)


@pytest.fixture
def server_host():
    return 0


def test_both_hosts_run_the_write_back_rule(channel, model):
    assert channel.unary_unary("/test.T/Echo")(b"x", timeout=10) == b"x"
    for host in (0, 1):
        pool = Pool.acquire(model.view(host), host)
        try:
            assert pool.layout.coherence == "software" and isinstance(pool.mem, SoftwareCoherent)
            assert pool.ops.kind == "model"
        finally:
            pool.release()


def test_peer_names_the_client(channel):  # replaces the suite's: the client is on host 1 here
    assert channel.unary_unary("/test.T/Peer")(b"", timeout=10).decode().startswith("notnets:host1/pid")
