"""The waiting tunables (NOTNETS_SPIN & co.) are read when a channel connects or a server
starts, not when notnets_rpc is imported (docs/environment.md)."""

from __future__ import annotations

import pytest

import notnets_rpc
from notnets_rpc.backoff import Backoff, tunables

pytestmark = pytest.mark.timeout(60)


def test_tunables_follow_the_environment(monkeypatch):
    monkeypatch.setenv("NOTNETS_SPIN", "7")
    monkeypatch.setenv("NOTNETS_YIELD_US", "3000")
    monkeypatch.setenv("NOTNETS_MAX_SLEEP_US", "500")
    monkeypatch.setenv("NOTNETS_IDLE_SLEEP_US", "2000")
    assert tunables() == (7, 0.003, 0.0005, 0.002)
    monkeypatch.setenv("NOTNETS_SPIN", "nonsense")
    assert tunables().spin == 400  # a bad value falls back to the default
    backoff = Backoff(tunables(), spin=0, max_sleep=0.01)
    assert (backoff.spin, backoff.yield_time, backoff.max_sleep) == (0, 0.003, 0.01)


def test_a_channel_and_a_server_read_them_when_they_start(serve, pool_path, monkeypatch):
    monkeypatch.setenv("NOTNETS_SPIN", "9")
    monkeypatch.setenv("NOTNETS_IDLE_SLEEP_US", "1500")
    server = serve()
    with notnets_rpc.insecure_channel("notnets:t", pool=pool_path) as channel:
        assert channel.unary_unary("/test.T/Echo")(b"x", timeout=10) == b"x"
        assert channel._conn._tune.spin == 9  # (its backoff does not spin: the server is in this process)
    assert server._tune.spin == 9 and server._tune.idle_sleep == 0.0015
