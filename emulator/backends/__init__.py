"""Backends run the hosts of a topology: QEMU VMs, or (later) simulated process trees."""

from __future__ import annotations

from ..errors import UserError
from .base import Backend


def get_backend(name: str) -> Backend:
    """The backend called ``name``; a clear error for one that is not built."""
    if name == "qemu":
        from .qemu import QemuBackend

        return QemuBackend()
    if name == "sim":
        try:
            from .sim import SimBackend  # type: ignore[import-not-found]
        except ImportError:
            raise UserError("the sim backend is not built yet; use --backend qemu", exit_code=2) from None
        return SimBackend()
    raise UserError(f"unknown backend {name!r} (expected qemu or sim)")
