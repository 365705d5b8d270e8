"""Load an example's generated protobuf modules, generating them if `make setup` has not.

The examples run as `python -m examples.X.server` from the checkout, on the host or in a
guest that sees the host's files; the generated `*_pb2*.py` files are not committed, so
a fresh checkout that skipped `make setup` still works.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent


def load_generated(directory: Path, stem: str) -> tuple[ModuleType, ModuleType]:
    """``<stem>_pb2`` and ``<stem>_pb2_grpc`` from ``directory`` (imported top-level, as
    grpcio-tools' generated code imports its sibling)."""
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))
    try:
        return importlib.import_module(f"{stem}_pb2"), importlib.import_module(f"{stem}_pb2_grpc")
    except ImportError:
        # Its report goes to stderr: a caller's stdout may be a protocol (bench_aio reads
        # "serving PORT" from its server's first line).
        subprocess.run([sys.executable, str(REPO / "scripts" / "gen_protos.py")], check=True, stdout=sys.stderr)
        importlib.invalidate_caches()
        return importlib.import_module(f"{stem}_pb2"), importlib.import_module(f"{stem}_pb2_grpc")
