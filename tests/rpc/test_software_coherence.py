"""Pools formatted for software coherence, and what the non-coherent model does to
notnets_rpc when one write-back or invalidate of the rule is taken out."""

from __future__ import annotations

import json
import struct
import time
from concurrent import futures

import grpc
import pytest

import notnets_rpc
from notnets_rpc import pool as P
from notnets_rpc.coherent_memory import SoftwareCoherent
from notnets_rpc.errors import LayoutVersionError, PoolError
from notnets_rpc.memory import Memory
from notnets_rpc.pool import Pool
from notnets_rpc.wire import layout as L

from .noncoherent_fixtures import model_pool
from .service import test_handlers

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def model(monkeypatch):
    monkeypatch.setenv(notnets_rpc.HOST_ID_ENV, "1")
    for pool in model_pool():
        yield pool


def _server(path: str, host: int, name: str = "t") -> notnets_rpc.Server:
    server = notnets_rpc.server(futures.ThreadPoolExecutor(max_workers=4), pool=path, host_id=host)
    server.add_generic_rpc_handlers((test_handlers(),))
    server.add_endpoint(name)
    server.start()
    return server


# -- the flag ------------------------------------------------------------------------------------
def test_the_flag_picks_the_accessor(blank_path):
    assert notnets_rpc.create_pool(blank_path, 8 << 20, coherence="software").coherence == "software"
    pool = Pool.acquire(blank_path, 0)
    try:
        assert pool.layout.flags == L.FLAG_SOFTWARE_COHERENCE and isinstance(pool.mem, SoftwareCoherent)
        assert pool.ops.kind == "coherent"  # a /dev/shm file: the rule runs and costs range checks
    finally:
        pool.release()
    notnets_rpc.create_pool(blank_path, overwrite=True)
    pool = Pool.acquire(blank_path, 0)
    try:
        assert pool.layout.coherence == "coherent" and type(pool.mem) is Memory
    finally:
        pool.release()


def test_unknown_flags_and_bad_values_are_refused(blank_path, monkeypatch):
    with pytest.raises(ValueError, match="coherence must be coherent or software"):
        notnets_rpc.create_pool(blank_path, 8 << 20, coherence="none")
    lay = notnets_rpc.create_pool(blank_path, 8 << 20)
    with open(blank_path, "r+b") as f:  # a flag from the future, with a checksum that fits
        raw = bytearray(L.encode_superblock(L.Layout(**{**lay.__dict__, "flags": 0b110})))
        f.write(raw)
    with pytest.raises(LayoutVersionError, match="flags 0x6 ask for features"):
        Pool.acquire(blank_path, 0)
    for raw, message in (("fast", "expected coherent or software"), ("{", "not JSON")):
        monkeypatch.setenv(P.COHERENCE_ENV, raw)
        with pytest.raises(PoolError, match=message):
            P.wanted_coherence(blank_path, "coherent")


def test_the_environment_says_how_a_server_formats_an_empty_pool(blank_path, monkeypatch):
    monkeypatch.setenv(P.COHERENCE_ENV, json.dumps({blank_path: "software", "/dev/shm/other": "coherent"}))
    assert P.wanted_coherence(blank_path, "coherent") == "software"
    assert P.wanted_coherence("/dev/shm/other", "coherent") == "coherent"
    assert P.wanted_coherence("/dev/shm/third", "model") == "software"  # a view is never coherent
    with open(blank_path, "wb") as f:
        f.truncate(8 << 20)
    server = _server(blank_path, 0)
    try:
        with notnets_rpc.insecure_channel("notnets:t", pool=blank_path) as ch:
            assert ch.unary_unary("/test.T/Echo")(b"x", timeout=10) == b"x"
        pool = Pool.acquire(blank_path, 0)
        assert pool.layout.coherence == "software"
        pool.release()
    finally:
        server.stop(None).wait(5)


def test_a_view_of_a_non_coherent_pool_needs_the_flag(model):
    with pytest.raises(PoolError, match="format it with coherence='software'"):
        notnets_rpc.create_pool(model.view(0), overwrite=True)
    notnets_rpc.create_pool(model.device, overwrite=True)  # behind the model's back: coherent format
    Pool._registry.clear()
    from notnets_rpc import noncoherent_views as V

    V.HostView(model.directory, 0).reset()  # host 0 starts again and sees it
    with pytest.raises(PoolError, match="formatted for coherent hardware"):
        Pool.acquire(model.view(0), 0)


# -- the rule, one piece taken out ------------------------------------------------------------
def _word_in_channels(lay: L.Layout, off: int, word: int) -> bool:
    rel = off - lay.channels_offset
    return 0 <= rel < lay.max_hosts * lay.channels * L.CHANNEL_CTL_BYTES and rel % L.CHANNEL_CTL_BYTES == word


def _echo_fails_with_deadline(model) -> None:
    with notnets_rpc.insecure_channel("notnets:t", pool=model.view(1)) as ch:
        with pytest.raises(grpc.RpcError) as err:
            ch.unary_unary("/test.T/Echo")(b"x", timeout=2)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


@pytest.mark.parametrize("removed", ["write-back of the request ring head", "invalidate of the response ring head"])
def test_without_one_write_back_or_invalidate_calls_fail(model, monkeypatch, removed):
    """Taken out before the first call: a channel slot used before would leave host 1 a
    stale head of the previous generation, which may happen to cover the new frame."""
    server = _server(model.view(0), 0)
    client = Pool.acquire(model.view(1), 1)
    try:
        lay, ops = client.layout, client.ops
        if removed.startswith("write-back"):
            real = ops.flush
            monkeypatch.setattr(ops, "flush", lambda off, n: None if _word_in_channels(lay, off, L.CH_REQ_HEAD)
                                else real(off, n))
        else:
            real = ops.invalidate
            monkeypatch.setattr(ops, "invalidate", lambda off, n: None if _word_in_channels(lay, off, L.CH_RESP_HEAD)
                                else real(off, n))
        _echo_fails_with_deadline(model)
        monkeypatch.undo()
        monkeypatch.setenv(notnets_rpc.HOST_ID_ENV, "1")
        with notnets_rpc.insecure_channel("notnets:t", pool=model.view(1)) as ch:
            assert ch.unary_unary("/test.T/Echo")(b"x", timeout=10) == b"x", "with the whole rule it works"
    finally:
        client.release()
        server.stop(None).wait(5)


def _accept_verdict_on_device(model, lay: L.Layout) -> int:
    with open(model.device, "rb") as f:
        f.seek(lay.channel(1, 0) + L.CH_ACCEPT)
        return struct.unpack("<Q", f.read(8))[0] & 0xFF


@pytest.mark.parametrize("rule_kept", [True, False])
def test_a_server_that_takes_a_channel_line_over_without_invalidating_is_reported(model, monkeypatch, rule_kept):
    """Host 0's server releases channel 1/0; later host 1's server accepts that slot.
    Without the invalidate before a store, host 1 writes back its stale copy of a
    server line (accept, request tail, response head) over host 0's last write: the
    model reports it, naming the line."""
    client = Pool.acquire(model.view(1), 1)
    lay = client.layout
    try:
        server = _server(model.view(0), 0)
        try:
            with notnets_rpc.insecure_channel("notnets:t", pool=model.view(1)) as ch:
                assert ch.unary_unary("/test.T/Echo")(b"x", timeout=10) == b"x"
            end = time.monotonic() + 10
            while _accept_verdict_on_device(model, lay) != L.ACC_RELEASED:
                assert time.monotonic() < end, "host 0's server never released the channel"
                time.sleep(0.02)
        finally:
            server.stop(None).wait(5)
        if not rule_kept:
            def store(self, off, value):  # the rule without its invalidate before a store
                Memory.store(self, off, value)
                self.ops.flush(off, 8)

            monkeypatch.setattr(SoftwareCoherent, "store", store)
        server = _server(model.view(1), 1)
        try:
            with notnets_rpc.insecure_channel("notnets:t", pool=model.view(1)) as ch:
                assert ch.unary_unary("/test.T/Echo")(b"y", timeout=10) == b"y"
        finally:
            server.stop(None).wait(5)
    finally:
        client.release()
    reports = model.reports()
    if rule_kept:
        assert reports == []
    else:
        server_lines = {lay.channel(1, 0) + off: f"channel 1/0 line {off // 64} ({word}"
                        for off, word in ((L.CH_ACCEPT, "accept"), (L.CH_REQ_TAIL, "request ring tail"),
                                          (L.CH_RESP_HEAD, "response ring head"))}
        taken = [r for r in reports if r["offset"] in server_lines]
        assert taken, reports
        for r in taken:
            assert (r["kind"], r["host"], r["other"]) == ("overwrite", 1, 0), r
            assert r["region"].startswith(server_lines[r["offset"]]), r


def test_inspect_says_how_the_pool_is_formatted_and_which_model_runs_it(model, blank_path):
    from notnets_rpc.inspect import format_inspection, inspect_pool

    snap = inspect_pool(model.view(1))
    assert snap["coherence"]["formatted"] == "software"
    assert {k: snap["coherence"]["model"][k] for k in ("dir", "hosts", "view_of_host", "reports")} == \
        {"dir": model.directory, "hosts": [0, 1], "view_of_host": 1, "reports": 0}
    assert inspect_pool(model.device)["coherence"]["model"]["view_of_host"] is None
    text = format_inspection(snap)
    assert "coherence: formatted software; non-coherent model in" in text and "this is host 1's view" in text
    notnets_rpc.create_pool(blank_path, 8 << 20)
    plain = inspect_pool(blank_path)["coherence"]
    assert plain == {"formatted": "coherent", "model": None}
    assert "hardware-coherent (no model runs it)" in format_inspection(inspect_pool(blank_path))


def test_a_bad_cache_mode_or_a_broken_model_is_a_pool_error(blank_path, model, monkeypatch):
    notnets_rpc.create_pool(blank_path, 8 << 20)
    monkeypatch.setenv("NOTNETS_CXL_MODE", "fast")
    with pytest.raises(PoolError, match="NOTNETS_CXL_MODE must be one of"):
        Pool.acquire(blank_path, 0)
    monkeypatch.delenv("NOTNETS_CXL_MODE")
    from pathlib import Path

    (Path(model.directory) / "model.json").write_text("{broken")
    with pytest.raises(PoolError, match="model.json: not a readable model description"):
        Pool.acquire(model.view(1), 1)
