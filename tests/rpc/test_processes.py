"""Several processes on one pool: failures of either side, restarts, many clients.

Every child is killed in a finally; host ids stand in for hosts (NOTNETS_HOST_ID).
"""

from __future__ import annotations

import time
from concurrent import futures

import grpc
import pytest

import notnets_rpc
from notnets_rpc.inspect import inspect_pool

from . import service

pytestmark = pytest.mark.timeout(120)


def _local_server(pool: str, name: str):
    server = notnets_rpc.server(futures.ThreadPoolExecutor(max_workers=8), pool=pool)
    server.add_generic_rpc_handlers((service.test_handlers(),))
    server.add_endpoint(name)
    server.start()
    return server


@pytest.mark.parametrize("host", [0, 1], ids=["same-host", "other-host"])
def test_server_killed_mid_call_then_restarted(peers, pool_path, monkeypatch, host):
    monkeypatch.setenv("NOTNETS_STALE_MS", "1000")
    server = peers.start("serve", pool_path, "victim", host=host)
    peers.expect(server, "serving")
    with notnets_rpc.insecure_channel("notnets:victim", pool=pool_path) as ch:
        assert ch.unary_unary("/test.T/Echo")(b"before", timeout=10) == b"before"
        future = ch.unary_unary("/test.T/Sleep").future(b"60:victim")
        blocking_error = []

        def blocking():
            try:
                ch.unary_unary("/test.T/Sleep")(b"60:victim2")
            except grpc.RpcError as exc:
                blocking_error.append(exc.code())

        import threading

        t = threading.Thread(target=blocking)
        t.start()
        peers.expect(server, "sleep-60:victim:started", "sleep-60:victim2:started")
        server.kill()
        server.wait(10)
        killed = time.monotonic()
        assert future.exception(timeout=10).code() is grpc.StatusCode.UNAVAILABLE
        t.join(10)
        assert blocking_error == [grpc.StatusCode.UNAVAILABLE]
        assert time.monotonic() - killed < 5.0
        with pytest.raises(grpc.RpcError) as err:
            ch.unary_unary("/test.T/Echo")(b"nobody", timeout=5)
        assert err.value.code() is grpc.StatusCode.UNAVAILABLE
        again = peers.start("serve", pool_path, "victim", host=host)
        peers.expect(again, "serving")
        assert ch.unary_unary("/test.T/Echo")(b"after", timeout=10, wait_for_ready=True) == b"after"


@pytest.mark.parametrize("host", [0, 2], ids=["same-host", "other-host"])
def test_killed_client_channel_is_reclaimed(peers, pool_path, monkeypatch, host):
    monkeypatch.setenv("NOTNETS_STALE_MS", "1000")
    service.EVENTS.clear()
    server = _local_server(pool_path, "reclaim")
    try:
        client = peers.start("slow", pool_path, "reclaim", "60", host=host)
        peers.expect(client, "started")
        assert server.channel_count() == 1
        client.kill()
        client.wait(10)
        end = time.monotonic() + 5
        while time.monotonic() < end and server.channel_count():
            time.sleep(0.05)
        assert server.channel_count() == 0
        wanted = {"sleep-60:peer:inactive", "sleep-60:peer:callback"}
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not wanted <= set(service.EVENTS):
            time.sleep(0.05)
        assert "sleep-60:peer:inactive" in service.EVENTS and "sleep-60:peer:callback" in service.EVENTS
        channels = inspect_pool(pool_path)["channels"]
        assert [c["server_verdict"] for c in channels] == ["reclaimed"]
        ok = peers.start("calls", pool_path, "reclaim", "20", host=host)
        assert ok.wait(60) == 0, ok.stderr.read()
    finally:
        server.stop(None).wait(5)


def test_many_client_processes_and_hosts(peers, pool_path):
    server = _local_server(pool_path, "busy")
    try:
        clients = [peers.start("calls", pool_path, "busy", "150", host=h) for h in (0, 0, 1, 3, 3)]
        for proc in clients:
            assert proc.wait(90) == 0, proc.stderr.read()
        snap = inspect_pool(pool_path)
        assert {c["host"] for c in snap["channels"]} == {0, 1, 3}
    finally:
        server.stop(None).wait(5)


def test_client_waits_for_a_server_to_format_the_pool(peers, blank_path):
    with open(blank_path, "wb") as f:
        f.truncate(16 << 20)  # an empty device, as a fresh CXL pool looks
    client = peers.start("wait", blank_path, "late", "30", host=1)
    time.sleep(0.5)
    assert client.poll() is None
    server = _local_server(blank_path, "late")  # formats the all-zero pool
    try:
        out, err = client.communicate(timeout=40)
        assert client.returncode == 0, err
        assert out.strip() == "waited"
    finally:
        server.stop(None).wait(5)


def test_pool_truncated_under_its_users(peers, pool_path):
    """The pool file shrinks (rings cut off) under an idle server and an idle client:
    neither dies of SIGBUS; the client's next call ends UNAVAILABLE naming the cause,
    the server terminates saying why. (A thread that touches the cut-off range
    before the beat notices, within 100 ms, still dies: see docs/rpc.md.)"""
    import os

    from notnets_rpc.pool import Pool

    pool = Pool.acquire(pool_path)
    cut, size = pool.layout.rings_offset, pool.layout.pool_bytes
    pool.release()
    server = peers.start("serve", pool_path, "shrink")
    peers.expect(server, "serving")
    client = peers.start("idle", pool_path, "shrink")
    peers.expect(client, "ready")
    os.truncate(pool_path, cut)
    time.sleep(0.5)  # the beat that notices runs every 100 ms
    peers.send(client, "go")
    line = client.stdout.readline()
    # the old mapping was dropped (touching it would have been SIGBUS); the call maps it afresh
    assert line.strip() == f"UNAVAILABLE NotNets: pool formatted for {size} bytes but only {cut} are mapped"
    client.stdin.close()
    assert client.wait(10) == 0
    _out, err = server.communicate(timeout=10)  # terminated (wait_for_termination returned), not SIGBUS
    assert server.returncode == 0 and "stops serving" in err and "shrank" in err, err


def test_inspect_tells_a_dead_servers_entry_from_a_live_one(peers, pool_path):
    """A server killed without unpublishing leaves an entry that still says "live"
    (as after `down --keep-pools`); inspect watches its heartbeat and says it stood
    still, while a running server's moves. A closed channel shows no backlog."""
    from notnets_rpc.inspect import format_inspection, inspect_pool

    dead = peers.start("serve", pool_path, "gone", host=1)
    peers.expect(dead, "serving")
    with notnets_rpc.insecure_channel("notnets:gone", pool=pool_path) as ch:
        assert ch.unary_unary("/test.T/Echo")(b"x", timeout=10) == b"x"
    dead.kill()
    dead.wait(10)
    alive = peers.start("serve", pool_path, "here", host=0)
    peers.expect(alive, "serving")
    snap = inspect_pool(pool_path)
    by_name = {s["name"]: s for s in snap["services"]}
    assert by_name["gone"]["state"] == "live" and by_name["gone"]["heartbeat_moving"] is False
    assert by_name["here"]["state"] == "live" and by_name["here"]["heartbeat_moving"] is True
    assert all(c["request_backlog"] is None for c in snap["channels"] if c["state"] != "open")
    text = format_inspection(snap)
    assert "heartbeat stood still" in text and "corrupt" not in text


def test_hosts_above_eight_on_a_pool_their_server_formatted_for_sixteen(peers, blank_path):
    # what a 16-host run does: the emulator sets NOTNETS_POOL_HOSTS, the first server formats
    with open(blank_path, "wb") as f:
        f.truncate(32 << 20)  # an empty device, as a fresh CXL pool looks
    server = peers.start("serve", blank_path, "wide", host=12, NOTNETS_POOL_HOSTS="16")
    peers.expect(server, "serving")
    clients = [peers.start("calls", blank_path, "wide", "60", host=h) for h in (9, 15, 0)]
    for proc in clients:
        assert proc.wait(90) == 0, proc.stderr.read()
    snap = inspect_pool(blank_path)
    assert snap["header"]["max_hosts"] == 16
    assert [(s["name"], s["host"]) for s in snap["services"]] == [("wide", 12)]
    assert {c["host"] for c in snap["channels"]} == {0, 9, 15}
    late = peers.start("calls", blank_path, "wide", "1", host=16)  # no partition for a 17th host
    assert late.wait(60) != 0
    assert "host id 16 (NOTNETS_HOST_ID) is outside this pool's 16 host partitions" in late.stderr.read()
