"""Fresh pools in /dev/shm for tests, always removed afterwards."""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path
from typing import Iterator

import notnets_rpc


@contextlib.contextmanager
def fresh_pool(prefix: str, size: int = 32 << 20) -> Iterator[str]:
    path = Path("/dev/shm") / f"notnets-{prefix}-{uuid.uuid4().hex[:12]}"
    notnets_rpc.create_pool(str(path), size)
    try:
        yield str(path)
    finally:
        path.unlink(missing_ok=True)
