"""A pool formatted for software coherence and run by the non-coherent model, for two
hosts: host 0 and host 1 each map their own view (notnets_rpc/noncoherent_views.py)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Iterator, NamedTuple

import notnets_rpc
from notnets_rpc import noncoherent_views as V

SIZE = 32 << 20


class ModelPool(NamedTuple):
    device: str
    directory: str

    def view(self, host: int) -> str:
        return V.view_path(self.directory, host)

    def reports(self) -> list:
        return V.read_reports(self.directory)


def model_pool(size: int = SIZE, hosts: tuple = (0, 1)) -> Iterator[ModelPool]:
    device = Path("/dev/shm") / f"notnets-test-nc-{uuid.uuid4().hex[:12]}"
    directory = Path(V.model_dir_for(str(device)))
    try:
        notnets_rpc.create_pool(str(device), size, coherence="software")
        V.create_model(directory, str(device), list(hosts))
        yield ModelPool(str(device), str(directory))
    finally:
        device.unlink(missing_ok=True)
        for f in directory.glob("*"):
            f.unlink()
        if directory.exists():
            directory.rmdir()
