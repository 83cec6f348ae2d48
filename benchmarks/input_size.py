"""Input-size decision (issue 11): what 256² costs in accuracy and saves in compute vs 512².

* Resolution ceiling: exact phantom labels (512² native) → nearest to N² → nearest back
  (the contract's label resize), Dice against the original: the best any network at N² can do.
* Compute: the contract UNet's CPU forward time (PyTorch, one thread: the other core may be
  busy) at N², and a training step (forward + backward, batch 4) at N², as ratios against
  512² in the same run (sizes interleaved over 3 rounds; medians).

Writes ``benchmarks/results/input_size.json``.  Run: ``.venv/bin/python benchmarks/input_size.py``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from aspects_client.preprocessing import nearest_indices
from aspects_export.accuracy import class_counts, region_dice
from aspects_export.network import build_unet
from aspects_synth import make_phantom

SIZES = (512, 384, 256, 192)


def roundtrip(labels: np.ndarray, n: int) -> np.ndarray:
    """[S, H, W] labels → nearest to n² → nearest back to H×W."""
    h, w = labels.shape[1:]
    small = labels[:, nearest_indices(h, n)][:, :, nearest_indices(w, n)]
    return small[:, nearest_indices(n, h)][:, :, nearest_indices(n, w)]


def timed(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    counts = {n: 0 for n in SIZES}
    for seed in range(3):
        ph = make_phantom(seed=100_000 + seed, in_plane=(512, 512), n_slices=21)
        lab = np.moveaxis(ph.classes, 2, 0)
        for n in SIZES:
            counts[n] = counts[n] + class_counts(roundtrip(lab, n), lab)
    ceiling = {n: region_dice(c) for n, c in counts.items()}
    model = build_unet()
    train_model = build_unet().train()
    for p in train_model.parameters():
        p.requires_grad_(True)
    infer_t: dict[int, list[float]] = {n: [] for n in SIZES}
    train_t: dict[int, list[float]] = {n: [] for n in SIZES}
    inputs = {n: torch.randn(4, 3, n, n) for n in SIZES}

    def step(x: torch.Tensor) -> None:
        train_model.zero_grad()
        train_model(x).float().mean().backward()

    for n in SIZES:  # warm-up
        with torch.inference_mode():
            model(inputs[n])
    for _ in range(3):  # rounds interleave the sizes, so a load change hits them alike
        for n in SIZES:
            with torch.inference_mode():
                infer_t[n].append(timed(lambda n=n: model(inputs[n]), repeats=1))
            train_t[n].append(timed(lambda n=n: step(inputs[n]), repeats=1))
    infer = {n: float(np.median(v)) for n, v in infer_t.items()}
    train = {n: float(np.median(v)) for n, v in train_t.items()}
    out = {
        "threads": torch.get_num_threads(),
        "label_roundtrip_dice": {
            str(n): {"mean": float(np.mean(list(d.values()))), "regions": d}
            for n, d in ceiling.items()
        },
        "unet_forward_batch4_s": {str(n): infer[n] for n in SIZES},
        "train_step_batch4_s": {str(n): train[n] for n in SIZES},
        "forward_ratio_vs_512": {str(n): infer[n] / infer[512] for n in SIZES},
        "train_ratio_vs_512": {str(n): train[n] / train[512] for n in SIZES},
    }
    path = Path(__file__).parent / "results" / "input_size.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    for n in SIZES:
        print(
            f"{n}: ceiling mean Dice {out['label_roundtrip_dice'][str(n)]['mean']:.3f} "
            f"min {min(ceiling[n].values()):.3f}  forward x{infer[n] / infer[512]:.2f}  "
            f"train x{train[n] / train[512]:.2f}"
        )


if __name__ == "__main__":
    main()
