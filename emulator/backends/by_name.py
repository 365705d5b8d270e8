"""The backend a topology names; each imported only when chosen (the sim backend must
not pay for QEMU's modules, nor QEMU's for the sim's)."""

from __future__ import annotations

from emulator.backends.base import Backend
from emulator.errors import UserError


def get_backend(name: str) -> Backend:
    """The backend called ``name``: ``qemu`` (VMs) or ``sim`` (process trees)."""
    if name == "qemu":
        from emulator.backends.qemu.backend import QemuBackend

        return QemuBackend()
    if name == "sim":
        from emulator.backends.sim.backend import SimBackend

        return SimBackend()
    raise UserError(f"unknown backend {name!r} (expected qemu or sim)")
