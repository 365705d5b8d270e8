"""`status` output: the JSON shape scripts rely on, and a readable table."""

from emulator.runs.state import HostState, PoolState, RunState
from emulator.runs.status_view import status_data, status_text
from harness.fakes import FakeBackend


def _run():
    run = RunState(name="r", backend="qemu", state_dir="/s", accel="tcg")
    run.hosts = [HostState(name="host0", index=0, state="ready", pid=42, accel="tcg", pools={"pool0": "/dev/dax0.0"},
                           boot_seconds=12.5, boot_cpu_seconds=11.25)]
    run.pools = [PoolState(name="pool0", size=256 << 20, kind="shm", backing="/dev/shm/notnets-r-pool0",
                           note="/dev/hugepages is not a hugetlbfs mount"),
                 PoolState(name="pool1", size=64 << 20, kind="shm", backing="/dev/shm/notnets-r-pool1",
                           coherence="none", model_dir="/dev/shm/notnets-r-pool1.coherence")]
    return run


def test_json_shape():
    backend = FakeBackend()
    backend.running.add("host0")
    data = status_data(_run(), backend)
    assert data["hosts"] == [{"name": "host0", "id": 0, "state": "ready", "pid": 42, "accel": "tcg",
                              "pools": {"pool0": "/dev/dax0.0"}, "addresses": [], "console_log": "",
                              "boot_seconds": 12.5, "boot_cpu_seconds": 11.25,
                              "boot_template": None}]
    assert data["pools"] == [{"name": "pool0", "size": 256 << 20, "kind": "shm",
                              "backing": "/dev/shm/notnets-r-pool0", "note": "/dev/hugepages is not a hugetlbfs mount",
                              "coherence": "coherent", "model_dir": None},
                             {"name": "pool1", "size": 64 << 20, "kind": "shm", "backing": "/dev/shm/notnets-r-pool1",
                              "note": None, "coherence": "none", "model_dir": "/dev/shm/notnets-r-pool1.coherence"}]


def test_dead_host_and_table():
    data = status_data(_run(), FakeBackend())
    assert data["hosts"][0]["state"] == "dead"
    text = status_text(data)
    assert "host0  dead   42   tcg    -          pool0=/dev/dax0.0" in text
    assert "256M" in text and "not a hugetlbfs mount" in text
    assert "COHERENCE" in text and "none (model, views in /dev/shm/notnets-r-pool1.coherence)" in text


def test_addresses_say_how_other_hosts_reach_a_host():
    run = _run()
    run.network = True
    run.hosts.append(HostState(name="host1", index=1, state="ready", pid=43, accel="tcg"))
    data = status_data(run, FakeBackend())
    assert [h["addresses"] for h in data["hosts"]] == [["169.254.100.1"], ["169.254.100.2"]]
    assert "169.254.100.2" in status_text(data)
    sim = RunState(name="s", backend="sim", state_dir="/s", accel="netns")
    sim.hosts = [HostState(name="a", index=0, accel="netns"), HostState(name="b", index=1, accel="pidns"),
                 HostState(name="c", index=2, accel="bridge")]
    assert [h["addresses"] for h in status_data(sim, FakeBackend())["hosts"]] == [[], ["127.0.0.1"], ["169.254.100.3"]]
