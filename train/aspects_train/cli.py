"""``aspects-train``: fit | tune | profile | cache | export-weights | import-markup.

Errors print one line and exit 1 (2 for bad usage), as the other CLIs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aspects_client.errors import AspectsError

from .samples import LabelMismatchError


def _pairs(path: str | None) -> list[tuple[str, str]]:
    """A manifest file: one ``volume.nii.gz<TAB or comma>labels.nii.gz`` pair per line."""
    if not path:
        return []
    pairs = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.replace("\t", ",").split(",")]
        if len(parts) != 2:
            raise ValueError(f"{path}:{n}: expected 'volume,labels', got {line!r}")
        base = Path(path).parent
        pairs.append(tuple(str((base / p) if not Path(p).is_absolute() else p) for p in parts))
    return pairs  # type: ignore[return-value]


def _add_fit_args(p: argparse.ArgumentParser) -> None:
    from .fit import FitConfig

    d = FitConfig()
    p.add_argument(
        "-o",
        "--output",
        "--out",
        dest="out",
        default=d.out_dir,
        help="run directory (checkpoints, logs, recipe)",
    )
    p.add_argument("--train", help="manifest of labelled training pairs (default: phantoms)")
    p.add_argument("--val", help="manifest of labelled validation pairs (default: phantoms)")
    p.add_argument(
        "--source",
        choices=("synth", "phantoms"),
        default=d.source,
        help="without --train: domain-randomised synthetic heads (default) or b1000 phantoms",
    )
    p.add_argument("--synth-per-head", type=int, default=d.synth_per_head)
    p.add_argument("--synth-val", type=int, default=d.synth_val)
    p.add_argument("--synth-crop", type=int, default=d.synth_crop,
                   help="train on random crop² windows of the 256² synthetic samples")
    p.add_argument("--synth-partial", type=int, default=d.synth_partial,
                   help="samples across a synthetic slice (partial volume), at most")
    p.add_argument("--deep-fraction", type=float, default=d.deep_fraction,
                   help="share of synthetic levels drawn from the ganglionic band")
    p.add_argument("--ema-decay", type=float, default=d.ema_decay,
                   help="exponential moving average of the weights (0 = off)")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format")
    p.add_argument("--train-phantoms", type=int, default=d.train_phantoms)
    p.add_argument("--val-phantoms", type=int, default=d.val_phantoms)
    p.add_argument("--crop", type=int, default=d.crop, help="crop edge at 512×512 scale (px)")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--accumulate", type=int, default=d.accumulate, help="gradient accumulation")
    p.add_argument("--samples-per-epoch", type=int, default=d.samples_per_epoch)
    p.add_argument("--epochs", type=int, default=d.max_epochs)
    p.add_argument("--max-minutes", type=float, default=None, help="wall-clock budget")
    p.add_argument(
        "--stop-after-epochs", type=int, default=None, help="end early (schedule spans --epochs)"
    )
    p.add_argument("--optimizer", default=d.optimizer)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--top-k", type=int, default=d.top_k)
    p.add_argument("--init-from", help="start from a checkpoint's network weights (fine-tune)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--precision", default=d.precision, help="auto | 32-true | bf16-mixed | ...")
    p.add_argument("--no-progress", action="store_true", help="one line per epoch, no bars")


def _fit_config(args: argparse.Namespace):
    from .fit import FitConfig

    return FitConfig(
        out_dir=args.out,
        source=args.source,
        synth_per_head=args.synth_per_head,
        synth_val=args.synth_val,
        synth_crop=args.synth_crop,
        synth_partial=args.synth_partial,
        deep_fraction=args.deep_fraction,
        ema_decay=args.ema_decay,
        channels_last=args.channels_last,
        train_phantoms=args.train_phantoms,
        val_phantoms=args.val_phantoms,
        train_pairs=_pairs(args.train),
        val_pairs=_pairs(args.val),
        crop=args.crop,
        batch_size=args.batch_size,
        accumulate=args.accumulate,
        samples_per_epoch=args.samples_per_epoch,
        max_epochs=args.epochs,
        max_minutes=args.max_minutes,
        stop_after_epochs=args.stop_after_epochs,
        optimizer=args.optimizer,
        lr=args.lr,
        weight_decay=args.weight_decay,
        top_k=args.top_k,
        init_from=args.init_from,
        seed=args.seed,
        threads=args.threads,
        precision=args.precision,
        progress=not args.no_progress,
    )


def cmd_fit(args: argparse.Namespace) -> int:
    from .fit import fit

    result = fit(_fit_config(args))
    print(f"best checkpoint: {result.best_checkpoint} (val mean Dice {result.best_score})")
    if args.weights and result.best_checkpoint:
        from .weights import export_weights, recipe_metadata

        path = export_weights(
            result.best_checkpoint, args.weights, recipe_metadata(Path(args.out) / "recipe.json")
        )
        print(f"weights: {path}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from .tune import tune

    study = tune(
        _fit_config(args),
        n_trials=args.trials,
        optimizers=tuple(args.optimizers.split(",")),
        lr_range=(args.lr_min, args.lr_max),
        storage=args.storage,
    )
    print(
        f"best trial {study.best_trial.number}: {study.best_trial.params} "
        f"val mean Dice {study.best_value:.4f}"
    )
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from .profile import main_profile

    return main_profile(args.batch_size, args.steps, args.threads, args.json)


def cmd_cache(args: argparse.Namespace) -> int:
    from aspects_synth.recipes import TRAIN_SEED_START, VAL_SEED_START, seed_range

    from .samples import phantom_stacks

    phantom_stacks(seed_range(TRAIN_SEED_START, args.train_phantoms), progress=True)
    phantom_stacks(seed_range(VAL_SEED_START, args.val_phantoms), progress=True)
    return 0


def cmd_export_weights(args: argparse.Namespace) -> int:
    from .weights import export_weights, recipe_metadata

    meta = recipe_metadata(args.recipe) if args.recipe else {}
    print(export_weights(args.checkpoint, args.out, meta, fp16=not args.fp32))
    return 0


def cmd_import_markup(args: argparse.Namespace) -> int:
    from .markup import import_markup_volume

    img = import_markup_volume(args.volume, args.markup, tolerance=args.tolerance)
    import nibabel as nib

    nib.save(img, args.out)
    print(args.out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aspects-train", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fit", help="train; keep top-k checkpoints by validation mean Dice")
    _add_fit_args(p)
    p.add_argument("--weights", help="also write the best checkpoint as FP16 safetensors here")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("tune", help="Optuna search over optimiser and learning rate")
    _add_fit_args(p)
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--optimizers", default="adamw,adam,sgd")
    p.add_argument("--lr-min", type=float, default=1e-4)
    p.add_argument("--lr-max", type=float, default=3e-3)
    p.add_argument("--storage", help="Optuna storage URL (e.g. sqlite:///study.db) to resume")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("profile", help="CPU per training sample: generator vs step")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="also write the figures here")
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("cache", help="render the training/validation phantoms into the cache")
    p.add_argument("--train-phantoms", type=int, default=48)
    p.add_argument("--val-phantoms", type=int, default=2)
    p.set_defaults(func=cmd_cache)

    p = sub.add_parser("export-weights", help="checkpoint → FP16 safetensors for aspects-export")
    p.add_argument("checkpoint")
    p.add_argument("out")
    p.add_argument("--recipe", help="recipe.json to store in the file's metadata")
    p.add_argument("--fp32", action="store_true", help="keep FP32")
    p.set_defaults(func=cmd_export_weights)

    p = sub.add_parser("import-markup", help="coloured markup PNGs → label-map NIfTI")
    p.add_argument("volume", help="the NIfTI the markup was drawn on")
    p.add_argument("markup", nargs="+", help="one PNG per display slice, in slice order")
    p.add_argument(
        "-o",
        "--output",
        "--out",
        dest="out",
        required=True,
        help="label map .nii.gz (the volume's grid)",
    )
    p.add_argument("--tolerance", type=float, default=40.0, help="RGB distance to a palette colour")
    p.set_defaults(func=cmd_import_markup)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (AspectsError, LabelMismatchError, ValueError, OSError) as exc:
        print(f"aspects-train: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("aspects-train: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
