"""Run inside guests by the e2e tests: one TCP line echoed across the guests' L2.

    python net_echo.py serve ADDRESS PORT     (prints "listening", answers one client)
    python net_echo.py ask ADDRESS PORT TEXT  (prints the answer)
"""

import socket
import sys


def main(argv: list[str]) -> None:
    action, address, port = argv[1], argv[2], int(argv[3])
    if action == "serve":
        with socket.create_server((address, port)) as server:
            print("listening", flush=True)
            conn, peer = server.accept()
            with conn:
                line = conn.makefile("rb").readline()
                conn.sendall(b"echo from " + socket.gethostname().encode() + b": " + line)
    else:
        with socket.create_connection((address, port), timeout=30) as conn:
            conn.sendall(argv[4].encode() + b"\n")
            print(conn.makefile("rb").readline().decode().strip())


if __name__ == "__main__":
    main(sys.argv)
