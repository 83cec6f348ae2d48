#!/usr/bin/env bash
# Create (or update) the two virtual environments this project runs from:
#   .venv         client (all rooms) + exporter + synthetic data + trainer + dev tools
#                 (pip install -e './client[dicom,score]' -e '.[export,train,dev,...]')
#   .venv-server  the local Triton (nvidia-pytriton's tritonserver) + onnxruntime
#   .venv-client  the thin client alone (pip install -e ./client : no extras, no torch), where
#                 tests/static/test_client_without_torch.py proves the client runs
# Idempotent: a second run only checks that both are complete.  Any failed install or
# import stops the script with a non-zero exit and pip's own output (CI must not go on
# with half an environment and skip what it lacks).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
cd "$ROOT"

stamp_of() {  # the files an environment is built from -> one hash
  cat "$@" | sha256sum | cut -c1-64
}

stamp_ok() {  # $1 = venv dir, then the files whose content the stamp records
  local venv="$1"
  shift
  [[ -f "$venv/.aspects-stamp" ]] && [[ "$(cat "$venv/.aspects-stamp")" == "$(stamp_of "$@")" ]]
}

pip_install() {  # $1 = venv dir, then pip install arguments; exits on failure
  local venv="$1" log
  shift
  log="$(mktemp)"
  if ! "$venv/bin/pip" install -q --disable-pip-version-check "$@" >"$log" 2>&1; then
    grep -v -E "^WARNING: Location 'file://" "$log" >&2 || true
    rm -f "$log"
    echo "[setup] FAILED: pip install $* (in $venv)" >&2
    exit 1
  fi
  grep -v -E "^WARNING: Location 'file://" "$log" || true
  rm -f "$log"
}

check_imports() {  # $1 = venv dir, $2 = modules; exits on failure
  if ! "$1/bin/python" -c "import $2"; then
    echo "[setup] FAILED: $1 cannot import $2" >&2
    exit 1
  fi
}

if ! stamp_ok .venv pyproject.toml client/pyproject.toml requirements/client.lock; then
  echo "[setup] client/export environment: .venv (torch is large; first run takes a few minutes)"
  [[ -x .venv/bin/python ]] || "$PY" -m venv .venv
  pip_install .venv -c requirements/client.lock -e './client[dicom,score]' \
    -e '.[export,synth,train,devkit,bench,dev]'
  check_imports .venv "aspects_client, aspects_export, aspects_synth, aspects_train, aspects_devkit, torch, segmentation_models_pytorch, onnxruntime, lightning, optuna"
  stamp_of pyproject.toml client/pyproject.toml requirements/client.lock > .venv/.aspects-stamp
fi

if ! stamp_ok .venv-server requirements/server.txt; then
  echo "[setup] server environment: .venv-server (nvidia-pytriton's tritonserver, onnxruntime)"
  [[ -x .venv-server/bin/python ]] || "$PY" -m venv .venv-server
  pip_install .venv-server -r requirements/server.txt
  check_imports .venv-server "pytriton, onnxruntime, numpy"
  stamp_of requirements/server.txt > .venv-server/.aspects-stamp
fi
if ! stamp_ok .venv-client client/pyproject.toml requirements/client.lock; then
  echo "[setup] client-only environment: .venv-client (no torch)"
  [[ -x .venv-client/bin/python ]] || "$PY" -m venv .venv-client
  pip_install .venv-client -c requirements/client.lock -e ./client
  check_imports .venv-client "aspects_client.cli, aspects_client.client, aspects_client.aio"
  stamp_of client/pyproject.toml requirements/client.lock > .venv-client/.aspects-stamp
fi
echo "[setup] environments ready: .venv, .venv-server, .venv-client"
