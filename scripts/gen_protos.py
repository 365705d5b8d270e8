#!/usr/bin/env python3
"""Generate Python gRPC code for every examples/**/*.proto and notnets_bench/**/*.proto, next to the .proto.

Idempotent: a .proto is compiled only when its outputs are missing or older than it.
The generated *_pb2.py / *_pb2_grpc.py files are not committed (each example
directory's .gitignore lists them); `make setup` runs this script. Output imports are
flat (``import greeter_pb2``), so the example scripts put their own directory on
sys.path.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def outputs(proto: Path) -> list[Path]:
    stem = proto.stem
    return [proto.with_name(f"{stem}_pb2.py"), proto.with_name(f"{stem}_pb2_grpc.py")]


def stale(proto: Path) -> bool:
    mtime = proto.stat().st_mtime
    return any(not out.exists() or out.stat().st_mtime < mtime for out in outputs(proto))


def generate(proto: Path) -> None:
    from grpc_tools import protoc  # imported lazily: only needed when something is stale

    include = Path(protoc.__file__).resolve().parent / "_proto"
    args = ["grpc_tools.protoc", f"-I{proto.parent}", f"-I{include}", f"--python_out={proto.parent}",
            f"--grpc_python_out={proto.parent}", str(proto)]
    if protoc.main(args) != 0:
        raise SystemExit(f"gen_protos: protoc failed on {proto}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="regenerate even if up to date")
    parser.add_argument("--root", type=Path, action="append",
                        help="where to look for .proto files (repeatable)  [default: examples/ and notnets_bench/]")
    args = parser.parse_args(argv)
    roots = args.root or [ROOT / "examples", ROOT / "notnets_bench"]
    protos = sorted(p for root in roots for p in root.rglob("*.proto"))
    done = 0
    for proto in protos:
        if args.force or stale(proto):
            generate(proto)
            done += 1
    print(f"gen_protos: {done} of {len(protos)} proto file(s) regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
