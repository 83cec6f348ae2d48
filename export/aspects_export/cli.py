"""``aspects-export``: checkpoint → ONNX graphs → numeric report → model repository → TensorRT.

Subcommands::

    aspects-export onnx [--checkpoint demo|untrained|PATH] -o DIR [--oracle]
    aspects-export tensorrt --onnx DIR/unet.onnx -o DIR [--force]          (GPU host)
    aspects-export repository --onnx-dir DIR -o REPO [--layout cpu|gpu] [--engine PLAN]
    aspects-export all [--checkpoint demo|untrained|PATH] -o DIR [--layout cpu|gpu] [--tensorrt]

Progress goes to stderr; errors are one line on stderr with exit status 1 (2 for bad usage).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from aspects_client import contract
from aspects_client.errors import AspectsError

from .pipeline import DEFAULT_CHECK_SLICES, build_tensorrt, export_onnx, say, write_repo


def add_output(sp: argparse.ArgumentParser, help: str) -> None:
    """The one output option of every subcommand: -o/--output (--out still accepted)."""
    sp.add_argument("-o", "--output", "--out", dest="out", type=Path, required=True, help=help)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aspects-export",
        description="Export the ASPECTS UNet: checkpoint -> ONNX -> numeric report -> "
        "Triton model repository (-> TensorRT FP16 on a GPU host).",
    )
    sub = p.add_subparsers(dest="command", required=True)

    def add_checkpoint(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--checkpoint",
            help="checkpoint file (.pt/.pth/.ckpt state_dict, Lightning, .safetensors), "
            "'demo' (default: weights trained on synthetic phantoms, models/demo/) or "
            "'untrained' (seeded random weights)",
        )
        sp.add_argument(
            "--oracle", action="store_true", help="write the oracle unet instead of a network"
        )
        sp.add_argument(
            "--check-slices",
            type=int,
            default=DEFAULT_CHECK_SLICES,
            metavar="N",
            help=f"slices for the numeric check (default {DEFAULT_CHECK_SLICES}; 0 skips it)",
        )

    sp = sub.add_parser("onnx", help="write the three ONNX graphs and numeric_report.json")
    add_checkpoint(sp)
    add_output(sp, "output directory")

    sp = sub.add_parser("tensorrt", help="build the FP16 TensorRT engine (GPU host)")
    sp.add_argument("--onnx", type=Path, required=True, help="unet.onnx")
    add_output(sp, "output directory for unet.plan")
    sp.add_argument("--force", action="store_true", help="rebuild even if the cache key matches")

    sp = sub.add_parser("repository", help="write a Triton model repository")
    sp.add_argument("--onnx-dir", type=Path, required=True, help="directory with the .onnx files")
    add_output(sp, "repository directory to write")
    sp.add_argument("--layout", choices=("cpu", "gpu"), default="cpu")
    sp.add_argument("--engine", type=Path, help="TensorRT plan for the gpu layout")

    sp = sub.add_parser("all", help="onnx -> report -> repository [-> tensorrt]")
    add_checkpoint(sp)
    add_output(sp, "output directory (onnx/ and model_repository/)")
    sp.add_argument("--layout", choices=("cpu", "gpu"), default="cpu")
    sp.add_argument("--tensorrt", action="store_true", help="also build the engine (GPU host)")
    return p


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if getattr(args, "check_slices", 0) < 0:
        parser.error("--check-slices must be >= 0")
    if args.command in ("onnx", "all"):
        if args.oracle and args.checkpoint:
            parser.error("--oracle replaces the network; do not also give --checkpoint")
        if not args.oracle and not args.checkpoint:
            args.checkpoint = "demo"  # checkpoints.DEMO_SPEC (not imported here: no torch yet)
    if args.command == "onnx":
        export_onnx(args.checkpoint, args.out, oracle=args.oracle, check_slices=args.check_slices)
    elif args.command == "tensorrt":
        build_tensorrt(args.onnx, args.out, force=args.force)
    elif args.command == "repository":
        write_repo(args.onnx_dir, args.out, args.layout, args.engine)
    elif args.command == "all":
        if args.tensorrt and args.layout != "gpu":
            parser.error("--tensorrt needs --layout gpu")
        onnx_dir = args.out / "onnx"
        export_onnx(args.checkpoint, onnx_dir, oracle=args.oracle, check_slices=args.check_slices)
        engine = None
        if args.tensorrt:
            engine = build_tensorrt(onnx_dir / f"{contract.UNET_MODEL}.onnx", onnx_dir)
        write_repo(onnx_dir, args.out / "model_repository", args.layout, engine)
    say("done")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``aspects-export``; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return _run(args, parser)
    except AspectsError as exc:
        print(f"aspects-export: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"aspects-export: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("aspects-export: interrupted", file=sys.stderr)
        return 130


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
