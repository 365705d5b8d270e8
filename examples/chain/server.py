"""One tier of the shop, served over a NotNets pool or over TCP.

    python -m examples.chain.server --role inventory --listen notnets:inventory
    python -m examples.chain.server --role catalog --listen notnets:catalog --downstream notnets:inventory
    python -m examples.chain.server --role frontend --listen 169.254.100.2:0 --downstream 169.254.100.3:41234

Prints one line "shop ROLE serving on WHERE" when ready (WHERE is "notnets:NAME" or
"tcp HOST:PORT" with the port actually bound), then serves until killed.
"""

from __future__ import annotations

import argparse
import os
import sys
from concurrent import futures
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from services import ROLES, servicer  # noqa: E402  (puts the checkout on sys.path)

from notnets_bench.serving import serve_until_stopped  # noqa: E402

import notnets_rpc  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="A shop service over NotNets or TCP")
    parser.add_argument("--role", choices=ROLES, required=True)
    parser.add_argument("--listen", required=True, help="notnets:NAME or host:port (port 0: any free one)")
    parser.add_argument("--downstream", help="the next tier: notnets:NAME or host:port")
    parser.add_argument("--pool", default=os.environ.get("NOTNETS_POOL"), help="pool file or DAX device")
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args(argv)
    uses_pool = any(t and t.startswith(notnets_rpc.SCHEME) for t in (args.listen, args.downstream))
    if uses_pool and not args.pool:
        parser.error("a notnets: target needs --pool or NOTNETS_POOL")
    try:
        downstream = notnets_rpc.insecure_channel(args.downstream, pool=args.pool) if args.downstream else None
        impl, add = servicer(args.role, downstream)
        server = notnets_rpc.server(futures.ThreadPoolExecutor(max_workers=args.workers), pool=args.pool)
        add(impl, server)
        if args.listen.startswith(notnets_rpc.SCHEME):
            server.add_endpoint(args.listen[len(notnets_rpc.SCHEME):])
            where = args.listen
        else:
            port = server.add_insecure_port(args.listen)
            where = f"tcp {args.listen.rsplit(':', 1)[0]}:{port}"
        server.start()
    except (notnets_rpc.PoolError, RuntimeError, ValueError) as exc:
        print(f"shop {args.role}: {exc}", file=sys.stderr)
        return 1
    try:
        serve_until_stopped(server, f"shop {args.role} serving on {where}")
    finally:
        if downstream is not None:
            downstream.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
