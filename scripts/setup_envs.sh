#!/usr/bin/env bash
# Create (or update) the two virtual environments this project runs from:
#   .venv         client + exporter + trainer + dev tools   (pip install -e '.[export,train,dev]')
#   .venv-server  the local Triton (nvidia-pytriton's tritonserver) + onnxruntime
# Idempotent: a second run only checks that both are complete.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
cd "$ROOT"

stamp_ok() {  # $1 = venv dir, $2 = file whose content the stamp records
  [[ -f "$1/.aspects-stamp" ]] && [[ "$(cat "$1/.aspects-stamp")" == "$(sha256sum "$2" | cut -c1-64)" ]]
}

if ! stamp_ok .venv pyproject.toml; then
  echo "[setup] client/export environment: .venv (torch is large; first run takes a few minutes)"
  [[ -x .venv/bin/python ]] || "$PY" -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -e '.[export,train,dev]' 2>&1 \
    | grep -v -E "^WARNING: Location 'file://" || true
  .venv/bin/python -c "import aspects_client, aspects_train, torch, segmentation_models_pytorch, onnxruntime, lightning, optuna" \
    && sha256sum pyproject.toml | cut -c1-64 > .venv/.aspects-stamp
fi

if ! stamp_ok .venv-server requirements/server.txt; then
  echo "[setup] server environment: .venv-server (nvidia-pytriton's tritonserver, onnxruntime)"
  [[ -x .venv-server/bin/python ]] || "$PY" -m venv .venv-server
  .venv-server/bin/pip install -q --disable-pip-version-check -r requirements/server.txt 2>&1 \
    | grep -v -E "^WARNING: Location 'file://" || true
  .venv-server/bin/python -c "import pytriton, onnxruntime, numpy" \
    && sha256sum requirements/server.txt | cut -c1-64 > .venv-server/.aspects-stamp
fi
echo "[setup] environments ready: .venv, .venv-server"
