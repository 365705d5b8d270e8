"""The far-memory model: its equations, its configuration, and that charges are accounted."""

from __future__ import annotations

import pytest

from notnets_rpc import farmem
from notnets_rpc.farmem import Account, FarMemConfigError, FarMemModel, model_for, parse_spec


def test_equations():
    m = FarMemModel(latency_ns=300, bandwidth_gbps=20)
    assert m.word_ns() == 300
    assert m.copy_ns(4000) == 300 + 200  # 4000 B at 20 B/ns
    assert m.project_ns(words=10, copies=2, nbytes=4000) == 10 * 300 + 2 * 300 + 200


def test_off_unless_configured():
    assert model_for("/dev/shm/p", {}) is None
    assert model_for("/dev/shm/p", {farmem.ENV: "off"}) is None


def test_spec_forms(tmp_path):
    assert parse_spec("cxl") == FarMemModel()
    assert parse_spec("latency_ns=170") == FarMemModel(170, farmem.DEFAULT_BANDWIDTH_GBPS)
    assert parse_spec("latency_ns=170, bandwidth_gbps=64") == FarMemModel(170, 64)
    pool = tmp_path / "pool"
    pool.write_bytes(b"")
    env = {farmem.ENV: '{"%s": {"bandwidth_gbps": 8}}' % pool}
    assert model_for(str(pool), env) == FarMemModel(farmem.DEFAULT_LATENCY_NS, 8)
    assert model_for(str(tmp_path / "other"), env) is None, "the JSON form is per pool"
    link = tmp_path / "link"
    link.symlink_to(pool)
    assert model_for(str(link), env) == FarMemModel(farmem.DEFAULT_LATENCY_NS, 8)


@pytest.mark.parametrize("bad", ["latency=3", "latency_ns=abc", "{not json", '{"/p": 3}', "latency_ns=-1"])
def test_bad_config_is_a_clear_error(bad):
    with pytest.raises(FarMemConfigError, match=farmem.ENV + "|latency_ns"):
        model_for("/p", {farmem.ENV: bad})


class FakeClock:
    """perf_counter_ns that advances 100 ns per reading: the spin ends without real time."""

    def __init__(self) -> None:
        self.now = 0
        self.reads = 0

    def __call__(self) -> int:
        self.reads += 1
        self.now += 100
        return self.now


def test_small_charges_accumulate_then_one_wait_pays_them():
    clock = FakeClock()
    account = Account(FarMemModel(latency_ns=250, bandwidth_gbps=20), clock=clock)
    for _ in range(7):  # 1750 ns: below the quantum, no wait yet
        account.word()
    assert clock.reads == 0 and account.waited_ns == 0
    account.word()  # 2000 ns owed: waited off now
    assert account.waited_ns >= 2000
    account.copy(2000)  # 250 + 100 ns, partly paid by the overshoot credit
    snap = account.snapshot()
    assert snap["words"] == 8 and snap["copies"] == 1 and snap["bytes"] == 2000
    assert snap["modelled_ns"] == 8 * 250 + 350


def test_waits_track_the_model_over_many_accesses():
    clock = FakeClock()
    account = Account(FarMemModel(latency_ns=300, bandwidth_gbps=10), clock=clock)
    for _ in range(1000):
        account.word()
        account.copy(64)
    modelled = account.snapshot()["modelled_ns"]
    assert abs(account.waited_ns - modelled) <= farmem.QUANTUM_NS + 200
