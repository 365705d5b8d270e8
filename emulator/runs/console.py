"""`console`: the VM's serial port on the user's terminal, until Ctrl-].

QEMU serves the serial console on a unix socket (and logs it itself), so attaching is a
byte relay between that socket and the terminal in raw mode; the terminal is always
restored, even when the VM goes away underneath.
"""

from __future__ import annotations

import os
import select
import socket
import sys
import termios
import tty

from emulator.errors import UserError

ESCAPE = 0x1D  # Ctrl-]


def attach(socket_path: str, host: str) -> None:
    """Relay stdin <-> the console socket; return when the user types Ctrl-] or the VM ends."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(3.0)
        sock.connect(socket_path)
        sock.settimeout(None)
    except OSError as err:
        sock.close()
        raise UserError(f"host {host}: cannot attach to its console {socket_path}: {err.strerror or err}") from None
    stdin = sys.stdin.fileno()
    interactive = os.isatty(stdin)
    saved = termios.tcgetattr(stdin) if interactive else None
    sys.stderr.write(f"notnets-emu: attached to {host}'s console; Ctrl-] leaves\r\n")
    sys.stderr.flush()
    try:
        if interactive:
            tty.setraw(stdin)
        _relay(sock, stdin, sys.stdout.fileno(), interactive)
    finally:
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        sock.close()
        sys.stderr.write(f"\nnotnets-emu: left {host}'s console\n")


def _relay(sock: socket.socket, stdin: int, stdout: int, interactive: bool) -> None:
    watch = [sock, stdin]
    while True:
        readable, _, _ = select.select(watch, [], [])
        if sock in readable:
            data = sock.recv(65536)
            if not data:
                return  # the VM went away
            os.write(stdout, data)
        if stdin in readable:
            data = os.read(stdin, 4096)
            if not data:
                watch = [sock]  # stdin closed: keep printing until the VM closes
                continue
            if interactive and ESCAPE in data:
                data = data[: data.index(ESCAPE)]
                if data:
                    sock.sendall(data)
                return
            sock.sendall(data)
