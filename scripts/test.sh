#!/usr/bin/env bash
# README's test command: set up both environments, lint, then run the whole test suite.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_envs.sh"
cd "$ROOT"
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
