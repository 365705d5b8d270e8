#!/usr/bin/env bash
# make demo: the main job, end to end. Completed as the emulator and RPC layers land.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/notnets-emu doctor --no-probe || true
.venv/bin/notnets-emu up --dry-run examples/two-hosts.yaml
