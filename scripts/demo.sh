#!/usr/bin/env bash
# make demo: boot examples/two-hosts.yaml, run the greeter from host1 to host0 over the
# shared CXL pool and over gRPC on the hosts' network, print one line comparing the two
# latencies, tear everything down. Extra arguments go to notnets_bench/demo.py
# (e.g. `--backend sim`, `--calls 500`).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m notnets_bench.demo examples/two-hosts.yaml "$@"
