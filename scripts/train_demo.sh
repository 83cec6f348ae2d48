#!/usr/bin/env bash
# Train the demo checkpoint on synthetic phantoms (CPU only: about 2 h on 2 cores) and write
# models/demo/aspects-unet-effb3-phantoms.safetensors.  Two stages:
#   1. 256-px crops (batch 4, accumulate 2), 4 epochs of a 30-epoch cosine schedule: cheap
#      first features.  Stopped there because 256-px crops (115 mm at the served 0.45 mm/px)
#      showed too little of the brain to tell M1–M6 apart (validation Dice stayed ~0);
#   2. from stage 1's weights, 384-px crops (batch 2, accumulate 4): most of a slice's brain
#      in view, a fresh AdamW + warm-up/cosine schedule, top-3 checkpoints by validation Dice.
# Run it again after an interruption: each stage resumes from its checkpoints/last.ckpt.
# Usage: bash scripts/train_demo.sh [OUT_DIR]          (default runs/demo)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/runs/demo}"
bash "$root/scripts/setup_envs.sh" >&2
train=("$root/.venv/bin/aspects-train" fit --train-phantoms 48 --val-phantoms 2
       --optimizer adamw --lr 1e-3 --weight-decay 1e-4 --top-k 3 --seed 0 --no-progress)
if [[ ! -f "$out/stage1/done" ]]; then
  "${train[@]}" --out "$out/stage1" --crop 256 --batch-size 4 --accumulate 2 \
    --samples-per-epoch 600 --epochs 30 --stop-after-epochs 4
  touch "$out/stage1/done"
fi
"${train[@]}" --out "$out/stage2" --init-from "$out/stage1/checkpoints/last.ckpt" \
  --crop 384 --batch-size 2 --accumulate 4 --samples-per-epoch 400 --epochs 16 --stop-after-epochs 14 \
  --max-minutes 120 \
  --weights "$root/models/demo/aspects-unet-effb3-phantoms.safetensors"
# the two stages' recipes beside the weights (the weights' own metadata holds stage 2's)
"$root/.venv/bin/python" - "$out" "$root/models/demo/recipe.json" <<'PY'
import json, sys
from pathlib import Path
out, dest = Path(sys.argv[1]), Path(sys.argv[2])
stages = {s: json.loads((out / s / "recipe.json").read_text()) for s in ("stage1", "stage2")}
for recipe in stages.values():  # machine-specific paths → relative to the run directory
    for key in ("out_dir", "init_from"):
        if recipe.get(key):
            recipe[key] = str(Path(recipe[key]).relative_to(out))
dest.write_text(json.dumps(stages, indent=2) + "\n")
PY
