#!/usr/bin/env bash
# Re-resolve the thin client's dependencies with all its rooms ([dicom,score]) in a fresh
# virtual environment (no torch) and pin them in requirements/client.lock (the bare
# `pip install ./client` takes a subset of these).  Run the tests before committing it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$PY" -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install -q --disable-pip-version-check --upgrade "$ROOT/client[dicom,score]"
header="$(sed -n '/^#/p' "$ROOT/requirements/client.lock")"
{
  printf '%s\n' "$header"
  "$tmp/venv/bin/pip" freeze --exclude aspects-client | sort -f
} > "$ROOT/requirements/client.lock.new"
mv "$ROOT/requirements/client.lock.new" "$ROOT/requirements/client.lock"
echo "requirements/client.lock updated; now run: bash scripts/test.sh"
