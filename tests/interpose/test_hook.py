"""The import hook: installed by make setup, inert without NOTNETS_INTERPOSE, and it
patches grpc only when the program imports grpc."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import grpc
import grpc.aio

import notnets_rpc
from notnets_rpc import grpc_native, interpose

from .conftest import host_env

PROBE = ("import sys; before = 'grpc' in sys.modules or 'notnets_rpc' in sys.modules; import grpc, grpc.aio; "
         "print(before, [hasattr(f, '__notnets_original__') for f in "
         "(grpc.server, grpc.insecure_channel, grpc.aio.server, grpc.aio.insecure_channel)])")


def _probe(**env) -> str:
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_the_hook_is_installed():
    assert (Path(sysconfig.get_paths()["purelib"]) / interpose.HOOK_FILE).exists(), "run make setup"


def test_without_the_variable_grpc_is_grpc():
    assert _probe(**host_env("ha", interpose=False)) == "False [False, False, False, False]"
    assert _probe(**host_env("ha", interpose=False, NOTNETS_INTERPOSE="0")) == "False [False, False, False, False]"


def test_with_it_importing_grpc_patches_it_and_nothing_is_imported_before():
    assert _probe(**host_env("ha", pool="/dev/shm/x")) == "False [True, True, True, True]"


def test_a_program_importing_notnets_rpc_first_is_patched_without_a_warning():
    """notnets_rpc imports grpc, so the hook patches grpc while notnets_rpc is half-imported."""
    probe = PROBE.replace("import grpc, grpc.aio;", "import notnets_rpc, grpc, grpc.aio;")
    out = subprocess.run([sys.executable, "-c", probe], env=host_env("ha", pool="/dev/shm/x"),
                         capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stderr, out.stdout.strip()) == (0, "", "False [True, True, True, True]"), out.stderr


def test_notnets_rpc_itself_gets_grpcio(monkeypatch, tmp_path):
    """The bench's TCP baseline goes through notnets_rpc: it must stay TCP when interposed."""
    monkeypatch.setenv("NOTNETS_POOL", str(tmp_path / "pool"))
    interpose.patch(grpc)
    try:
        channel = notnets_rpc.insecure_channel("localhost:1")
        assert not isinstance(channel, interpose.InterposedChannel)
        channel.close()
        mine = grpc.insecure_channel("localhost:1")
        assert isinstance(mine, interpose.InterposedChannel)
        mine.close()
    finally:
        interpose.unpatch(grpc)


def test_patch_is_undone_and_natives_stay_native():
    interpose.patch(grpc)
    try:
        assert grpc.server is not grpc_native.server
        assert grpc_native.original(grpc.aio.insecure_channel) is grpc_native.aio_insecure_channel
        interpose.patch(grpc)  # idempotent
        assert grpc_native.original(grpc.server) is grpc_native.server
    finally:
        interpose.unpatch(grpc)
    assert grpc.server is grpc_native.server and grpc.aio.server is grpc_native.aio_server


def test_python_m_interpose_bad_input_is_one_line():
    for args, message in (([], "usage: python -m notnets_rpc.interpose"),
                          (["/no/such/program.py"], "interpose: /no/such/program.py: no such file"),
                          (["-m"], "interpose: -m needs a module name"),
                          (["-m", "no_such_module_here"], "interpose: no module named 'no_such_module_here'")):
        out = subprocess.run([sys.executable, "-m", "notnets_rpc.interpose", *args], capture_output=True, text=True,
                             timeout=60, env=host_env("ha", interpose=False))
        assert out.returncode == 2, (args, out.stderr)
        assert out.stderr.startswith(message) and "Traceback" not in out.stderr, (args, out.stderr)
