"""Runs inside a sim host for the network tests: a TCP server that answers every connection
with the name of the host it runs in, and a client that asks one.

    python net_peer.py serve PORT            # binds every address of the host; "serving PORT"
    python net_peer.py ask HOST PORT [WAIT]  # prints the answer; retries a refused connection
                                             # for WAIT seconds (default 0), then exit 1
"""

from __future__ import annotations

import socket
import sys
import time


def serve(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        # as grpcio does; on Linux it still refuses a port another listener holds
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("0.0.0.0", port))
        server.listen(16)
        print(f"serving {port}", flush=True)
        while True:
            conn, _ = server.accept()
            with conn:
                conn.sendall(socket.gethostname().encode() + b"\n")


def ask(host: str, port: int, wait: float) -> int:
    deadline = time.monotonic() + wait
    while True:
        try:
            with socket.create_connection((host, port), timeout=5) as conn:
                print(conn.makefile().readline().strip(), flush=True)
                return 0
        except OSError as err:
            if time.monotonic() >= deadline:
                print(f"cannot reach {host}:{port}: {err}", file=sys.stderr)
                return 1
            time.sleep(0.05)


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"] and len(argv) == 2:
        serve(int(argv[1]))
        return 0
    if argv[:1] == ["ask"] and len(argv) in (3, 4):
        return ask(argv[1], int(argv[2]), float(argv[3]) if len(argv) == 4 else 0.0)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
