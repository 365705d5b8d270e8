"""Shared by every test folder.

The tests are grouped by component: emulator/ (host side, unit), guest/ (what runs inside
a host), rpc/ (notnets_rpc), bench/ (notnets_bench), sim/ (the process simulator end to
end) and e2e/ (real QEMU guests). Helpers more than one folder uses live in harness/
(importable as ``harness``, since this file puts tests/ on sys.path through pytest's
rootdir-relative imports): the CLI driver and leak checks (harness.cli), fake backends
(harness.fakes) and a cpio reader (harness.cpio_reader).
"""
