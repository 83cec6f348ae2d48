#!/usr/bin/env bash
# README's first command: set up both environments, then run the embedded demo.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_envs.sh"
cd "$ROOT"
exec .venv/bin/python -m aspects_devkit.cli demo -o "${1:-demo_out}"
