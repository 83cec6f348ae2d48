#!/usr/bin/env bash
# Train the demo weights on domain-randomised synthetic heads (aspects_synth.generator) and
# write models/demo/aspects-unet-effb3-synth.safetensors.  One stage, initialised from the
# earlier b1000-phantom demo weights (git history: commit 905515c,
# models/demo/aspects-unet-effb3-phantoms.safetensors; extracted into OUT_DIR):
# 256² 2.5D inputs, batch 8, AdamW 1e-3 with warm-up + cosine over --epochs, top-3
# checkpoints by validation mean Dice (2 b1000 phantoms through the client's preparation
# + 48 fixed domain-randomised samples).  Data is generated on the fly (nothing cached).
# CPU: one torch thread by default (THREADS=2 on an otherwise idle machine): with two
# threads on 2 cores, any other process stalls both (OpenMP barriers), 10x slower steps.
# Run it again after an interruption: it resumes from checkpoints/last.ckpt.
# Usage: bash scripts/train_demo.sh [OUT_DIR] [EPOCHS]     (default runs/synth, 14)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/runs/synth}"
epochs="${2:-14}"
bash "$root/scripts/setup_envs.sh" >&2
mkdir -p "$out"
init="$out/init-phantoms.safetensors"
if [[ ! -f "$init" ]]; then
  git -C "$root" show 905515c:models/demo/aspects-unet-effb3-phantoms.safetensors > "$init.tmp" \
    || { echo "train_demo: the initial weights need the git history (commit 905515c); fetch it with git fetch --unshallow" >&2; rm -f "$init.tmp"; exit 1; }
  mv "$init.tmp" "$init"
fi
"$root/.venv/bin/aspects-train" fit --source synth -o "$out" \
  --init-from "$init" \
  --batch-size 8 --accumulate 1 --samples-per-epoch 800 --synth-per-head 4 --synth-val 48 \
  --val-phantoms 2 --epochs "$epochs" --optimizer adamw --lr 1e-3 --weight-decay 1e-4 \
  --top-k 3 --seed 0 --threads "${THREADS:-1}" --no-progress \
  --weights "$root/models/demo/aspects-unet-effb3-synth.safetensors"
"$root/.venv/bin/python" - "$out" "$root/models/demo/recipe.json" <<'PY'
import json, sys
from pathlib import Path
out, dest = Path(sys.argv[1]), Path(sys.argv[2])
recipe = json.loads((out / "recipe.json").read_text())
for key in ("out_dir", "init_from"):  # machine-specific paths → relative
    if recipe.get(key):
        recipe[key] = Path(recipe[key]).name
dest.write_text(json.dumps({"synth": recipe}, indent=2) + "\n")
PY
