"""The suite's SIGTERM handling (harness/terminate.py): fixtures are torn down."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent

SESSION = '''
import os, time, pytest

@pytest.fixture
def resource():
    try:
        yield
    finally:
        open(os.environ["CLEANED"], "w").close()

def test_waits(resource):
    open(os.environ["STARTED"], "w").close()
    time.sleep(120)
'''


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float) -> None:
    end = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, f"{path.name} never appeared"
        time.sleep(0.05)


def test_sigterm_runs_fixture_teardown(tmp_path):
    (tmp_path / "test_session.py").write_text(SESSION)
    env = dict(os.environ, PYTHONPATH=str(TESTS), STARTED=str(tmp_path / "started"),
               CLEANED=str(tmp_path / "cleaned"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "harness.terminate",
         "--rootdir", str(tmp_path), str(tmp_path / "test_session.py")],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(tmp_path / "started", proc, 60)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (tmp_path / "cleaned").exists(), out
    assert proc.returncode == 2, out  # pytest's "interrupted"
