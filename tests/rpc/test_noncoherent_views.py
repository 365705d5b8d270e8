"""The non-coherent model on files: per-host views mapped with cxl.map_pool."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

import notnets_rpc
from notnets_rpc import cxl
from notnets_rpc.wire import layout as L
from notnets_rpc import noncoherent_views as V
from notnets_rpc.noncoherent_evictor import Evictor

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def model(tmp_path):
    """A 4 MiB NotNets pool file in /dev/shm and a model for hosts 0 and 1."""
    device = Path("/dev/shm") / f"notnets-test-nc-{uuid.uuid4().hex[:12]}"
    notnets_rpc.create_pool(str(device), 4 << 20, max_hosts=2, channels=2, dir_slots=2)
    directory = Path(V.model_dir_for(str(device)))
    try:
        V.create_model(directory, str(device), [0, 1], seed=7)
        yield directory, device
    finally:
        device.unlink(missing_ok=True)
        for f in directory.glob("*"):
            f.unlink()
        directory.rmdir()


def test_a_write_is_seen_by_the_other_host_only_after_write_back_and_invalidate(model):
    directory, device = model
    with cxl.map_pool(V.view_path(directory, 0)) as h0, cxl.map_pool(V.view_path(directory, 1)) as h1:
        assert h0.kind == h1.kind == "model"
        at = 1 << 20
        h0[at : at + 5] = b"hello"
        h1.invalidate(at, 5)
        assert bytes(h1[at : at + 5]) == b"\0" * 5     # not written back yet
        h0.flush(at, 5)
        h0.fence()
        assert bytes(h1[at : at + 5]) == b"\0" * 5     # written back, host 1 reads its own copy
        assert device.read_bytes()[at : at + 5] == b"hello"
        h1.invalidate(at, 5)
        assert bytes(h1[at : at + 5]) == b"hello"
    assert V.read_reports(directory) == []


def test_processes_of_one_host_share_its_view(model):
    directory, _ = model
    prog = (f"from notnets_rpc import cxl\nm = cxl.map_pool({V.view_path(directory, 0)!r})\n"
            "m[2 << 20 : (2 << 20) + 3] = b'abc'\nprint(m.kind)\n")
    out = subprocess.run([sys.executable, "-c", prog], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "model", out.stderr
    with cxl.map_pool(V.view_path(directory, 0)) as h0, cxl.map_pool(V.view_path(directory, 1)) as h1:
        assert bytes(h0[2 << 20 : (2 << 20) + 3]) == b"abc"   # same host: no flush needed
        h1.invalidate(2 << 20, 3)
        assert bytes(h1[2 << 20 : (2 << 20) + 3]) == b"\0\0\0"


def test_a_lost_update_is_reported_with_host_offset_and_pool_region(model):
    directory, _ = model
    with cxl.map_pool(V.view_path(directory, 0)) as h0, cxl.map_pool(V.view_path(directory, 1)) as h1:
        lay = L.parse_superblock(notnets_rpc.memory.Memory(h0.buf))
        line = lay.channel(1, 1) + L.CH_REQ_HEAD          # host 1's client writes this word...
        h1.buf.cast("Q")[line // 8] = 5
        h1.flush(line, 8)
        h0.buf.cast("Q")[(line + 8) // 8] = 6             # ...host 0 writes another word of its line
        h0.flush(line + 8, 8)
    (report,) = V.read_reports(directory)
    assert (report["kind"], report["host"], report["other"], report["offset"]) == ("overwrite", 0, 1, line)
    assert report["region"] == "channel 1/1 line 2 (request ring head)"
    assert not report["same_words"] and "false sharing" in report["message"]


def test_the_evictor_writes_back_dirty_lines_on_its_own(model, tmp_path):
    directory, device = model
    size = V.read_model(directory)["size"]
    view = V.HostView(str(directory), 0)
    with cxl.map_pool(V.view_path(directory, 0)) as h0:
        for at in range(0, size, 4096):
            h0[at + 4000 : at + 4008] = b"evictme!"
    evictor = Evictor(view, rate=20_000, seed=1).start()
    try:
        deadline = time.monotonic() + 20
        while device.read_bytes().count(b"evictme!") < 3:
            assert time.monotonic() < deadline, "the evictor wrote nothing back in 20 s"
            time.sleep(0.05)
    finally:
        evictor.stop()
        view.close()
    assert evictor.evicted > 0


def test_the_evictor_is_seeded():
    class Recorder:
        host, size = 0, 64 * 1000

        def __init__(self):
            self.lines = []

        def evict(self, line):
            self.lines.append(line)

    runs = []
    for _ in range(2):
        rec = Recorder()
        Evictor(rec, rate=1, seed=3).step(50)  # type: ignore[arg-type]
        runs.append(rec.lines)
    assert runs[0] == runs[1] and len(set(runs[0])) > 10


def test_a_broken_model_directory_is_a_one_line_error(tmp_path):
    (tmp_path / V.MODEL_FILE).write_text("{not json")
    (tmp_path / "host-0.view").write_bytes(b"\0" * 4096)
    with pytest.raises(V.ModelError, match="model.json: not a readable model description"):
        cxl.map_pool(tmp_path / "host-0.view")
    (tmp_path / V.MODEL_FILE).write_text(json.dumps({"device": "/nonexistent", "size": 4096, "hosts": [1]}))
    with pytest.raises(V.ModelError, match="host 0 is not in the model"):
        cxl.map_pool(tmp_path / "host-0.view")


def test_a_model_is_found_from_a_view_or_from_its_device(model, tmp_path):
    directory, device = model
    assert V.model_dir_for("/dev/hugepages/notnets-r-p") == "/dev/shm/notnets-r-p.coherence"
    assert V.find_model(V.view_path(directory, 1)) == (str(directory), 1)
    assert V.find_model(device) == (str(directory), None)
    other = tmp_path / "pool"
    other.write_bytes(bytes(4096))
    assert V.find_model(other) is None


def test_the_evictor_command_says_in_one_line_what_is_wrong(tmp_path):
    for argv, message in (([], "usage:"), ([str(tmp_path), "0", "10", "1"], "model.json"),
                          ([str(tmp_path), "x", "10", "1"], "invalid literal")):
        out = subprocess.run([sys.executable, "-m", "notnets_rpc.noncoherent_evictor", *argv], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and message in out.stderr and len(out.stderr.splitlines()) == 1, out.stderr


def test_the_evictor_command_empties_the_hosts_caches_then_says_ready(model):
    directory, device = model
    with cxl.map_pool(V.view_path(directory, 0)) as h0:
        h0[3 << 20 : (3 << 20) + 4] = b"lost"
        out = subprocess.run([sys.executable, "-m", "notnets_rpc.noncoherent_evictor", str(directory), "0", "0", "1"],
                             cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and out.stdout == "ready\n", out.stderr
        assert bytes(h0[3 << 20 : (3 << 20) + 4]) == bytes(4)
