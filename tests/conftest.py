"""Shared by every test folder.

The tests are grouped by component: emulator/ (host side, unit), guest/ (what runs inside
a host), rpc/ (notnets_rpc), bench/ (notnets_bench), sim/ (the process simulator end to
end) and e2e/ (real QEMU guests). Helpers more than one folder uses live in harness/
(importable as ``harness``, since this file puts tests/ on sys.path through pytest's
rootdir-relative imports): the CLI driver and leak checks (harness.cli), fake backends
(harness.fakes) and a cpio reader (harness.cpio_reader).
"""

import os

import pytest

from harness import terminate


def pytest_configure(config):
    terminate.pytest_configure(config)


@pytest.fixture(autouse=True, scope="session")
def _private_run_registry(tmp_path_factory):
    """Every run a test starts registers in the tests' own registry (emulator/runs/registry.py),
    never in the machine's, so `ls` and run lookups see only the tests' runs."""
    saved = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = str(tmp_path_factory.mktemp("xdg-runtime"))
    yield
    if saved is None:
        os.environ.pop("XDG_RUNTIME_DIR", None)
    else:
        os.environ["XDG_RUNTIME_DIR"] = saved
