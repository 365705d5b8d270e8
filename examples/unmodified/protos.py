"""The generated modules of this folder (greeter's from examples/greeter), imported the
way grpcio-tools' output expects: flat, with their directories on sys.path."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))
from notnets_bench.protos import load_generated  # noqa: E402  (generates them if `make setup` has not)

greeter_pb2, greeter_pb2_grpc = load_generated(HERE.parent / "greeter", "greeter")
routes_pb2, routes_pb2_grpc = load_generated(HERE, "routes")
