"""Talking to a VM's QMP socket with the ``qemu.qmp`` library (status, powerdown, quit).

Each call opens its own short session: the CLI verbs are separate processes, and QEMU
serves one QMP client at a time, so nobody holds the socket open. Every call is bounded
by a timeout; a VM that does not answer is reported, never waited on forever.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Optional

from qemu.qmp import ExecInterruptedError, QMPClient

# qemu.qmp logs every disconnect at WARNING; the CLI reports failures itself.
logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)


class QMPUnavailable(Exception):
    """The VM's QMP socket did not answer (QEMU gone, busy or hung)."""


async def _execute(socket_path: str, command: str, args: Optional[dict[str, Any]], timeout: float) -> Any:
    client = QMPClient("notnets-emu")
    try:
        await asyncio.wait_for(client.connect(socket_path), timeout)
        return await asyncio.wait_for(client.execute(command, args), timeout)
    finally:
        try:
            await asyncio.wait_for(client.disconnect(), 1.0)
        except Exception:  # noqa: BLE001 - after `quit` the peer is already gone
            pass


def execute(socket_path: str, command: str, args: Optional[dict[str, Any]] = None, timeout: float = 3.0) -> Any:
    """Run one QMP command and return its result; QMPUnavailable if it cannot be done."""
    try:
        return asyncio.run(_execute(socket_path, command, args, timeout))
    except (OSError, asyncio.TimeoutError, EOFError) as err:
        raise QMPUnavailable(f"{socket_path}: {err or type(err).__name__}") from None
    except ExecInterruptedError:
        if command == "quit":  # QEMU exits, closing the socket before it replies: the wanted outcome
            return {}
        raise QMPUnavailable(f"{socket_path}: {command}: QEMU disconnected before replying") from None
    except Exception as err:  # noqa: BLE001 - qemu.qmp raises its own error tree
        raise QMPUnavailable(f"{socket_path}: {command}: {err}") from None


def query_status(socket_path: str, timeout: float = 2.0) -> str:
    """QEMU's run state: "running", "paused", "shutdown", ..."""
    result = execute(socket_path, "query-status", timeout=timeout)
    return str(result.get("status", "unknown")) if isinstance(result, dict) else "unknown"


def powerdown(socket_path: str, timeout: float = 2.0) -> None:
    """Press the ACPI power button (the guest may ignore it)."""
    execute(socket_path, "system_powerdown", timeout=timeout)


def quit_vm(socket_path: str, timeout: float = 2.0) -> None:
    """Ask QEMU to exit now."""
    execute(socket_path, "quit", timeout=timeout)


def stop(socket_path: str, timeout: float = 2.0) -> None:
    """Freeze every vCPU (the guest stops, its memory stays)."""
    execute(socket_path, "stop", timeout=timeout)


def cont(socket_path: str, timeout: float = 2.0) -> None:
    """Let a frozen guest run again."""
    execute(socket_path, "cont", timeout=timeout)
