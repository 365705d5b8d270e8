"""Unmodified grpc / grpc.aio programs (examples/unmodified) between separate processes:
with interposition their calls go over the pool, shown by the pool's counters and by
targets that TCP cannot reach; without it, over TCP, with the same output."""

from __future__ import annotations

import signal

import pytest

from .conftest import calls_settled, endpoint_calls, host_env, run_client

CALLS_PER_CLIENT = 7  # client.py / client_aio.py: 2 greeter calls, 5 routes calls


def _expected_output(serve, server: str, pool_path: str) -> str:
    """The clients' output over plain TCP, interposition off on both sides."""
    served = serve(server, host_env("ha", pool=pool_path, interpose=False))
    result = run_client("client.py", f"localhost:{served.port}", host_env("ha", interpose=False))
    assert result.returncode == 0, result.stderr
    assert "walk: 5 points, 2 named, distance 17" in result.stdout
    assert endpoint_calls(pool_path) == {}, "nothing was published without interposition"
    return result.stdout


@pytest.mark.parametrize("server", ["server.py", "server_aio.py"])
@pytest.mark.parametrize("client", ["client.py", "client_aio.py"])
def test_across_hosts_over_the_pool(serve, pool_path, server, client):
    expected = _expected_output(serve, server, pool_path)
    served = serve(server, host_env("ha", 0, pool_path))
    names = endpoint_calls(pool_path)
    assert f"ha:{served.port}" in names, names  # port 0 was resolved to the real port
    # "ha" is no DNS name: from host hb, only the pool can reach it
    result = run_client(client, f"ha:{served.port}", host_env("hb", 1, pool_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected
    assert result.stderr == ""
    assert calls_settled(pool_path, f"ha:{served.port}", CALLS_PER_CLIENT) == CALLS_PER_CLIENT


def test_same_host_localhost_goes_over_the_pool_too(serve, pool_path):
    served = serve("server.py", host_env("ha", 0, pool_path))
    result = run_client("client_aio.py", f"localhost:{served.port}", host_env("ha", 0, pool_path))
    assert result.returncode == 0, result.stderr
    assert calls_settled(pool_path, f"ha:{served.port}", CALLS_PER_CLIENT) == CALLS_PER_CLIENT


def test_python_m_interpose_runs_a_program_unmodified(serve, pool_path):
    env = host_env("ha", 0, pool_path, interpose=False)
    served = serve("server_aio.py", env, via_module=True)
    result = run_client("client.py", f"ha:{served.port}", host_env("hb", 1, pool_path, interpose=False),
                        via_module=True)
    assert result.returncode == 0, result.stderr
    assert calls_settled(pool_path, f"ha:{served.port}", CALLS_PER_CLIENT) == CALLS_PER_CLIENT


def test_a_loopback_server_is_not_reachable_from_another_host(serve, pool_path):
    served = serve("server.py", host_env("ha", 0, pool_path), address="127.0.0.1:0")
    assert set(endpoint_calls(pool_path)) == {f"localhost@ha:{served.port}"}
    result = run_client("client.py", f"ha:{served.port}", host_env("hb", 1, pool_path), timeout=60)
    assert result.returncode != 0 and "UNAVAILABLE" in result.stderr
    local = run_client("client.py", f"127.0.0.1:{served.port}", host_env("ha", 0, pool_path))
    assert local.returncode == 0, local.stderr
    assert calls_settled(pool_path, f"localhost@ha:{served.port}", CALLS_PER_CLIENT) == CALLS_PER_CLIENT


def test_an_unusable_pool_costs_one_warning_line_then_tcp(serve, tmp_path):
    missing = str(tmp_path / "no-pool")
    served = serve("server_aio.py", host_env("ha", 0, missing))
    result = run_client("client.py", f"localhost:{served.port}", host_env("ha", 0, missing))
    assert result.returncode == 0, result.stderr
    assert "walk: 5 points" in result.stdout
    for stderr in (result.stderr, _stopped_stderr(served)):
        lines = stderr.splitlines()
        assert len(lines) == 1, stderr
        assert lines[0].startswith(f"notnets: pool unusable ({missing}") and lines[0].endswith("; using TCP")


def _stopped_stderr(served) -> str:
    served.proc.send_signal(signal.SIGTERM)
    _out, err = served.proc.communicate(timeout=20)
    assert served.proc.returncode == 0, err
    return err


def test_a_target_not_in_the_pool_uses_tcp_unchanged(serve, pool_path):
    tcp_only = serve("server.py", host_env("ha", 0, pool_path, interpose=False))
    result = run_client("client_aio.py", f"localhost:{tcp_only.port}", host_env("ha", 0, pool_path))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert endpoint_calls(pool_path) == {}
