"""``aspects-export``: checkpoint → ONNX graphs → numeric report → model repository → TensorRT.

Subcommands::

    aspects-export onnx [--checkpoint demo|untrained|PATH] -o DIR [--oracle]
    aspects-export tensorrt --onnx DIR/unet.onnx -o DIR [--force]          (GPU host)
    aspects-export repository --onnx-dir DIR -o REPO [--layout cpu|gpu] [--engine PLAN]
        [--cpu-runtime auto|onnxruntime|openvino-f32|openvino-bf16]
    aspects-export all [--checkpoint demo|untrained|PATH] -o DIR [--layout cpu|gpu] [--tensorrt]
    aspects-export release publish --repository REPO --store s3://bucket/prefix|DIR [--id ID]
    aspects-export release list --store URL
    aspects-export release fetch --store URL --id ID -o DIR [--gpu auto|none|NAME]

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


def add_cpu_runtime(sp: argparse.ArgumentParser) -> None:
    """``--cpu-runtime``: the unet's runtime in the cpu layout (docs/cpu-serving.md)."""
    sp.add_argument(
        "--cpu-runtime",
        choices=("auto", "onnxruntime", "openvino-f32", "openvino-bf16"),  # repository.py's
        default="auto",
        help="cpu layout: the unet's runtime; auto = the measured winner on this CPU "
        "(openvino-bf16 where the CPU has bf16, else onnxruntime); non-FP32 profiles must "
        "pass the precision gate (default: %(default)s)",
    )


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
    add_cpu_runtime(sp)

    sp = sub.add_parser("all", help="onnx -> report -> repository [-> tensorrt]")
    add_checkpoint(sp)
    add_output(sp, "output directory (onnx/ and model_repository/)")
    sp.add_argument("--layout", choices=("cpu", "gpu"), default="cpu")
    sp.add_argument("--tensorrt", action="store_true", help="also build the engine (GPU host)")
    add_cpu_runtime(sp)
    _add_release_parser(sub)
    return p


def _add_release_parser(sub: argparse._SubParsersAction) -> None:
    """``release publish|list|fetch``: immutable repository releases (aspects_export.releases)."""
    rp = sub.add_parser("release", help="publish, list or fetch immutable repository releases")
    rsub = rp.add_subparsers(dest="release_command", required=True)
    store_help = "s3://bucket/prefix (boto3's standard endpoint/credential chain) or a directory"
    sp = rsub.add_parser("publish", help="upload a model repository as a NEW release")
    sp.add_argument("--repository", type=Path, required=True, help="model repository directory")
    sp.add_argument("--store", required=True, help=store_help)
    sp.add_argument("--id", dest="release_id", help="release id (default: UTC time + unet hash)")
    sp.add_argument("--triton-release", default="24.10", help="NGC release that will serve it")
    sp = rsub.add_parser("list", help="list the releases in a store, oldest first")
    sp.add_argument("--store", required=True, help=store_help)
    sp = rsub.add_parser("fetch", help="download and verify one release (before Triton starts)")
    sp.add_argument("--store", required=True, help=store_help)
    sp.add_argument("--id", dest="release_id", required=True, help="the release to serve")
    add_output(sp, "directory to create (absent or empty); Triton's --model-repository")
    sp.add_argument("--triton-release", default="24.10", help="NGC release of the serving Triton")
    sp.add_argument(
        "--gpu",
        default="auto",
        help="GPU the engine must have been built on: 'auto' (this node's, through NVML; "
        "required when the release has an engine), a name, or 'none' (skip: CPU fetch only)",
    )


def _release(args: argparse.Namespace) -> None:
    from . import releases

    store = releases.open_store(args.store)
    if args.release_command == "publish":
        manifest = releases.publish(
            args.repository, store, release_id=args.release_id, triton_release=args.triton_release
        )
        say(f"published release {manifest['release']} ({len(manifest['files'])} files) "
            f"to {store.url}; serve it by setting MODEL_RELEASE={manifest['release']}")
        print(manifest["release"])
    elif args.release_command == "list":
        for r in releases.list_releases(store):
            state = "complete" if r.complete else (f"CORRUPT (do not serve: {r.corrupt})"
                                                   if r.corrupt else "INCOMPLETE (do not serve)")
            row = (r.release_id, state, r.created_utc, r.engine_gpu or "-", r.checkpoint)
            print("\t".join(row))
    else:
        gpu: str | None = args.gpu
        if gpu == "none":
            gpu = None
        elif gpu == "auto":
            from .tensorrt_build import nvml_gpu_name

            gpu = nvml_gpu_name()
            has_engine = releases.read_manifest(store, args.release_id).get("engine_key")
            if gpu is None and has_engine:
                raise releases.ReleaseError(
                    f"release {args.release_id} has a TensorRT engine, but this node's GPU "
                    "cannot be read through NVML; run on the GPU node (or --gpu NAME)"
                )
        manifest = releases.fetch(
            store, args.release_id, args.out, triton_release=args.triton_release, gpu_name=gpu
        )
        say(f"release {args.release_id} verified ({len(manifest['files'])} files) in {args.out}")


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
        write_repo(args.onnx_dir, args.out, args.layout, args.engine, args.cpu_runtime)
    elif args.command == "release":
        _release(args)
        return 0
    elif args.command == "all":
        if args.tensorrt and args.layout != "gpu":
            parser.error("--tensorrt needs --layout gpu")
        onnx_dir = args.out / "onnx"
        export_onnx(args.checkpoint, onnx_dir, oracle=args.oracle, check_slices=args.check_slices)
        engine = None
        if args.tensorrt:
            engine = build_tensorrt(onnx_dir / f"{contract.UNET_MODEL}.onnx", onnx_dir)
        write_repo(onnx_dir, args.out / "model_repository", args.layout, engine, args.cpu_runtime)
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
