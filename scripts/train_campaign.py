"""A training campaign that survives stops: warm-restart cycles from the best weights so far.

Each cycle is one ``aspects-train fit`` (warm-up + cosine over the cycle, EMA of the
weights) initialised from the best weights so far (``<out>/best.safetensors``, else the
committed demo weights), then the real-image benchmark (``benchmarks/accuracy.py``, real
images only).  The cycle's weights become the new best only when the mean of the two
real-image Dice figures improves; ``<out>/history.jsonl`` records every cycle.  Stopped
anywhere, run it again: an unfinished cycle resumes from its ``last.ckpt``; after a fresh
clone (no ``runs/``) it restarts from the committed weights, which are the last best.

    .venv/bin/python scripts/train_campaign.py [--out runs/campaign] [--cycles 20]
        [--epochs 3] [--threads 1] [-- FIT_OPTION...]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "models/demo/aspects-unet-effb3-synth.safetensors"
FIT = [  # the campaign's recipe (profiled by `aspects-train profile`)
    "--source", "synth", "--synth-crop", "176", "--synth-partial", "3",
    "--synth-per-head", "8", "--deep-fraction", "0.4", "--ema-decay", "0.99",
    "--channels-last", "--batch-size", "8", "--accumulate", "1",
    "--samples-per-epoch", "800", "--synth-val", "48", "--val-phantoms", "2",
    "--optimizer", "adamw", "--lr", "4e-4", "--weight-decay", "1e-4", "--top-k", "1",
    "--no-progress",
]


def real_score(weights: Path, out: Path) -> dict:
    """Real-image mean Dice (aniso_vox vs registration, T1 head vs exact) of ``weights``."""
    done = out / "accuracy.json"
    if not done.is_file():
        subprocess.run(
            [sys.executable, str(ROOT / "benchmarks/accuracy.py"), "--phantoms", "0",
             "--b1000", "0", "--checkpoint", str(weights), "-o", str(out)],
            check=True, stdout=subprocess.DEVNULL,
        )
    goals = {g["goal"].split(":")[0]: g["value"] for g in json.loads(done.read_text())["goals"]}
    aniso, t1 = goals["aniso_vox"], goals["oblique T1 head"]
    return {"aniso_vox": aniso, "t1_head": t1, "score": (aniso + t1) / 2,
            "asymmetry": goals["real images"]}


def run_cycle(out: Path, k: int, init: Path, args: argparse.Namespace) -> Path:
    """One fit cycle; returns its exported weights (the best validation checkpoint)."""
    cycle = out / f"cycle_{k:03d}"
    weights = cycle / "weights.safetensors"
    if not weights.is_file():
        cmd = [str(ROOT / ".venv/bin/aspects-train"), "fit", "-o", str(cycle), *FIT,
               "--init-from", str(init), "--epochs", str(args.epochs), "--seed", str(k),
               "--threads", str(args.threads), "--weights", str(weights), *args.fit]
        with open(cycle.with_suffix(".log"), "a") as log:
            subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    return weights


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs/campaign")
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=3, help="epochs of 100 steps per cycle")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("fit", nargs="*", metavar="FIT_OPTION",
                        help="after --: options that override the recipe, e.g. -- --lr 1e-4")
    args = parser.parse_args(argv)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    best, history = out / "best.safetensors", out / "history.jsonl"
    if not best.is_file():
        shutil.copyfile(DEMO, best)
    best_score = real_score(best, out / "baseline")["score"]
    start = len(history.read_text().splitlines()) if history.is_file() else 0
    for k in range(start, args.cycles):
        began = time.monotonic()
        weights = run_cycle(out, k, best, args)
        result = real_score(weights, out / f"cycle_{k:03d}" / "accuracy")
        improved = result["score"] > best_score
        if improved:
            shutil.copyfile(weights, best.with_suffix(".tmp"))
            best.with_suffix(".tmp").replace(best)
            best_score = result["score"]
        row = {"cycle": k, **result, "improved": improved, "best": best_score,
               "minutes": round((time.monotonic() - began) / 60, 1)}
        with open(history, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
