"""SIGTERM ends a test session the way Ctrl-C does.

A CI runner's time limit, ``timeout`` and ``kill`` send SIGTERM, whose default action
ends pytest at once: no fixture's ``finally`` runs, so hosts a fixture booted stay up
(orphan QEMU, huge pages still held). Raising KeyboardInterrupt instead lets pytest
unwind the running test and tear its fixtures down, as it does for Ctrl-C. A second
SIGTERM during that unwinding ends the process at once.
"""

import signal


def _on_sigterm(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise KeyboardInterrupt("SIGTERM")


def pytest_configure(config):
    signal.signal(signal.SIGTERM, _on_sigterm)
