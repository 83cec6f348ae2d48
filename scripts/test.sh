#!/usr/bin/env bash
# README's test command: set up both environments, lint, then run the whole test suite.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_envs.sh"
cd "$ROOT"
.venv/bin/ruff check .
.venv/bin/lint-imports  # the import contract in pyproject.toml ([tool.importlinter])
export ASPECTS_REQUIRE_TRITON=1  # here the server env exists: never skip Triton tests
export ASPECTS_STRICT_SKIPS="${ASPECTS_STRICT_SKIPS:-${CI:-0}}"  # in CI only GPU tests may skip
exec .venv/bin/python -m pytest "$@"
