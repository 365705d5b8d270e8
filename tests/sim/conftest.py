"""The sim tests drive the CLI with the same harness as the QEMU end-to-end tests."""

import sys
from pathlib import Path

E2E = str(Path(__file__).resolve().parents[1] / "e2e")
if E2E not in sys.path:
    sys.path.insert(0, E2E)
