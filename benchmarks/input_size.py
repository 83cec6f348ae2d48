"""Input-size decision (issue 11): what 256² costs in accuracy and saves in compute vs 512²:
the resolution ceiling (exact labels → N² → back, Dice) and the UNet's forward and training
step at N² vs 512² (PyTorch CPU, one thread, sizes interleaved; benchmarks/README.md).

    .venv/bin/python benchmarks/input_size.py    # -> results/input_size.json
"""

from __future__ import annotations

import statistics
import sys

import harness
import numpy as np
from harness import seconds

SIZES = (512, 384, 256, 192)
OPTIONS = [("--phantoms", 3, "phantoms for the ceiling"),
           ("--rounds", 3, "interleaved timing rounds")]


def roundtrip(labels: np.ndarray, n: int) -> np.ndarray:
    """[S, H, W] labels → nearest to n² → nearest back to H×W."""
    from aspects_client.server_reference import nearest_indices

    h, w = labels.shape[1:]
    small = labels[:, nearest_indices(h, n)][:, :, nearest_indices(w, n)]
    return small[:, nearest_indices(n, h)][:, :, nearest_indices(n, w)]


def main(argv: list[str] | None = None) -> int:
    args = harness.cli(__doc__, harness.RESULTS / "input_size.json", OPTIONS,
                       report=False).parse_args(argv)
    import torch

    from aspects_export.dice import class_counts, region_dice
    from aspects_export.network import build_unet
    from aspects_synth import make_phantom

    torch.manual_seed(0)
    torch.set_num_threads(1)
    counts = dict.fromkeys(SIZES, 0)
    for seed in range(args.phantoms):
        ph = make_phantom(seed=100_000 + seed, in_plane=(512, 512), n_slices=21)
        lab = np.moveaxis(ph.classes, 2, 0)
        for n in SIZES:
            counts[n] = counts[n] + class_counts(roundtrip(lab, n), lab)
    ceiling = {n: region_dice(c) for n, c in counts.items()}
    model, train_model = build_unet(), build_unet().train()
    for param in train_model.parameters():
        param.requires_grad_(True)
    inputs = {n: torch.randn(4, 3, n, n) for n in SIZES}

    def step(x: torch.Tensor) -> None:
        train_model.zero_grad()
        train_model(x).float().mean().backward()

    with torch.inference_mode():
        for n in SIZES:  # warm-up
            model(inputs[n])
    times: dict[str, dict[int, list[float]]] = {"infer": {n: [] for n in SIZES},
                                                "train": {n: [] for n in SIZES}}
    for _ in range(args.rounds):  # rounds interleave the sizes: a load change hits all alike
        for n in SIZES:
            with torch.inference_mode():
                times["infer"][n].append(seconds(lambda n=n: model(inputs[n])))
            times["train"][n].append(seconds(lambda n=n: step(inputs[n])))
    infer, train = ({n: statistics.median(v) for n, v in times[k].items()}
                    for k in ("infer", "train"))
    out = {
        "provenance": harness.provenance(None),  # the architecture's compute, no weights
        "threads": torch.get_num_threads(),
        "label_roundtrip_dice": {str(n): {"mean": float(np.mean(list(d.values()))), "regions": d}
                                 for n, d in ceiling.items()},
        "unet_forward_batch4_s": {str(n): infer[n] for n in SIZES},
        "train_step_batch4_s": {str(n): train[n] for n in SIZES},
        "forward_ratio_vs_512": {str(n): infer[n] / infer[512] for n in SIZES},
        "train_ratio_vs_512": {str(n): train[n] / train[512] for n in SIZES},
    }
    harness.write_json(args.out, out)
    for n in SIZES:
        print(f"{n}: ceiling mean Dice {out['label_roundtrip_dice'][str(n)]['mean']:.3f} "
              f"min {min(ceiling[n].values()):.3f}  forward x{infer[n] / infer[512]:.2f}  "
              f"train x{train[n] / train[512]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
