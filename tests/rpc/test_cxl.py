"""notnets_rpc.cxl: map a pool, write back, invalidate, fence; native and fallback paths."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
import warnings
from pathlib import Path

import pytest

from notnets_rpc import cxl

ROOT = Path(__file__).resolve().parents[2]
SIZE = 2 << 20


@pytest.fixture
def pool_file():
    path = Path("/dev/shm") / f"notnets-test-cxl-{uuid.uuid4().hex[:12]}"
    with open(path, "wb") as f:
        f.truncate(SIZE)
    try:
        yield str(path)
    finally:
        path.unlink(missing_ok=True)


needs_native = pytest.mark.skipif(cxl.native() is None, reason="notnets_rpc._native not built (make setup)")


def test_a_plain_file_is_coherent_and_the_calls_only_check_their_range(pool_file):
    with cxl.map_pool(pool_file) as m:
        assert m.kind == "coherent" and len(m) == SIZE
        m[100:105] = b"hello"
        m.flush(100, 5)
        m.invalidate(0, SIZE)
        m.fence()
        assert bytes(m[100:105]) == b"hello"
        with pytest.raises(ValueError, match="outside the pool"):
            m.flush(SIZE - 4, 8)
        with pytest.raises(ValueError, match="outside the pool"):
            m.invalidate(-1, 2)


@needs_native
@pytest.mark.parametrize("insn", ["best", "clflush", "clflushopt", "clwb"])
def test_native_instructions_run_on_every_line_and_keep_the_data(pool_file, insn):
    module = cxl.native()
    features = module.features()
    if insn != "best" and not features[insn]:
        pytest.skip(f"this CPU has no {insn}")
    try:
        chosen = module.use(insn)
        with cxl.map_pool(pool_file, mode="native") as m:
            assert m.kind == "native"
            payload = os.urandom(5000)
            m[13 : 13 + len(payload)] = payload
            m.flush(13, len(payload))        # unaligned start and end: lines rounded out
            m.fence()
            m.invalidate(13, len(payload))
            assert bytes(m[13 : 13 + len(payload)]) == payload
            m.flush(0, SIZE)                  # long range: runs without the GIL
            m.invalidate(SIZE - 1, 1)
            m.flush(SIZE, 0)
            with pytest.raises(ValueError, match="outside the buffer"):
                m.flush(SIZE - 8, 16)
            with pytest.raises(ValueError, match="outside the buffer"):
                m.invalidate(-64, 64)
        with open(pool_file, "rb") as f:
            assert f.read()[13 : 13 + len(payload)] == payload  # what the file holds, through another path
    finally:
        module.use("best")
    if insn == "best":
        assert chosen["writeback"] == ("clwb" if features["clwb"] else "clflushopt" if features["clflushopt"]
                                       else "clflush")
    else:
        assert insn in (chosen["writeback"], chosen["invalidate"])


@needs_native
def test_native_refuses_an_instruction_the_cpu_lacks_or_a_bad_call():
    module = cxl.native()
    with pytest.raises(ValueError, match="not an instruction"):
        module.use("wbinvd")
    with pytest.raises(TypeError, match="takes 3 arguments"):
        module.writeback(bytearray(64), 0)


def test_the_fallback_says_once_that_it_is_one(pool_file, monkeypatch):
    monkeypatch.setenv(cxl.NATIVE_ENV, "0")
    monkeypatch.setattr(cxl, "_warned", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with cxl.map_pool(pool_file, mode="native") as m, cxl.map_pool(pool_file, mode="native") as m2:
            assert m.kind == m2.kind == "fallback"
            m[0:3] = b"abc"
            m.flush(0, 3)
            m.invalidate(0, 3)
            m.fence()
            assert bytes(m2[0:3]) == b"abc"
            with pytest.raises(ValueError, match="outside the pool"):
                m.flush(SIZE, 1)
    said = [w for w in caught if issubclass(w.category, RuntimeWarning) and "native extension" in str(w.message)]
    assert len(said) == 1


def test_without_the_built_module_a_program_gets_the_fallback_and_one_warning(pool_file, tmp_path):
    """The import itself fails (module not built): simulated by a meta path hook."""
    script = tmp_path / "prog.py"
    script.write_text(
        "import sys, warnings\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'notnets_rpc._native': raise ImportError('not built')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from notnets_rpc import cxl\n"
        "assert cxl.native() is None\n"
        f"for _ in range(3):\n"
        f"    m = cxl.map_pool({pool_file!r}, mode='native'); m.flush(0, 64); m.close()\n"
        "print(m.kind)\n")
    out = subprocess.run([sys.executable, "-W", "always", str(script)], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "fallback"
    assert out.stderr.count("native extension is not available") == 1


def test_bad_mode_and_missing_pool_are_one_line_errors(pool_file, tmp_path):
    with pytest.raises(ValueError, match="mode must be one of"):
        cxl.map_pool(pool_file, mode="magic")
    from notnets_rpc.errors import NotAPoolError

    with pytest.raises(NotAPoolError, match="no such file"):
        cxl.map_pool(tmp_path / "nope")


def test_the_environment_gives_the_mode_when_the_caller_does_not(pool_file, monkeypatch):
    monkeypatch.setenv(cxl.MODE_ENV, "native")
    with cxl.map_pool(pool_file) as m:
        assert m.kind in ("native", "fallback")
    with cxl.map_pool(pool_file, mode="coherent") as m:
        assert m.kind == "coherent"
    monkeypatch.setenv(cxl.MODE_ENV, "fast")
    with pytest.raises(ValueError, match="NOTNETS_CXL_MODE must be one of"):
        cxl.map_pool(pool_file)
