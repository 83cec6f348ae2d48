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
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from aspects_client import contract
from aspects_client.errors import AspectsError, ExportError

ENGINE_FILE = "unet.plan"
TENSORRT_REPORT_FILE = "tensorrt_report.json"
DEFAULT_CHECK_SLICES = 4


def _say(msg: str) -> None:
    print(f"aspects-export: {msg}", file=sys.stderr, flush=True)


def export_onnx(
    checkpoint: str | None,
    out: Path,
    *,
    oracle: bool = False,
    check_slices: int = DEFAULT_CHECK_SLICES,
) -> dict:
    """Write preprocess.onnx, unet.onnx (network or oracle), postprocess.onnx and the numeric
    report into ``out``; returns the report.  ``check_slices=0`` skips the numeric check."""
    from aspects_export import graphs, numeric_check

    t0 = time.perf_counter()  # ``out`` is created only once the checkpoint has loaded
    model = None
    if oracle:
        from aspects_export.oracle import export_oracle_unet

        if checkpoint:
            raise ExportError("--oracle replaces the network; do not also give --checkpoint")
        source = "ORACLE (intensity bands -> classes; not a network)"
        _say(f"writing the oracle unet: {out / 'unet.onnx'}")
        export_oracle_unet(out / f"{contract.UNET_MODEL}.onnx")
    else:
        from aspects_export.checkpoints import BUILTIN_SPECS, load_model

        if not checkpoint:
            raise ExportError("give --checkpoint PATH (or 'demo', or --oracle)")
        _say(f"loading checkpoint {checkpoint}")
        model, source = load_model(checkpoint)
        if checkpoint in BUILTIN_SPECS:
            _say(f"NOTE: {source}")
        _say(f"exporting unet ({contract.ENCODER_NAME}) to {out / 'unet.onnx'}")
        graphs.export_unet(model, out / f"{contract.UNET_MODEL}.onnx", {"checkpoint": source})
    _say("writing preprocess.onnx and postprocess.onnx")
    graphs.export_preprocess(out / f"{contract.PREPROCESS_MODEL}.onnx")
    graphs.export_postprocess(out / f"{contract.POSTPROCESS_MODEL}.onnx")
    report: dict = {"checkpoint": source, "skipped": "numeric check not run"}
    if check_slices > 0:
        slices, described = numeric_check.phantom_slices(check_slices)
        report = numeric_check.check_all(
            out, model, slices, checkpoint=source, slices_source=described, progress=_say
        )
        _summarise(report)
        if not report["passed"]:
            raise ExportError(
                f"numeric check failed; see {out / numeric_check.REPORT_FILE} for the figures"
            )
    _say(f"onnx done in {time.perf_counter() - t0:.1f} s: {out}")
    return report


def _summarise(report: dict) -> None:
    unet = report.get("unet", {})
    if "max_abs_logit_diff" in unet:
        _say(
            "unet ORT vs torch: max |dlogit| {max_abs_logit_diff:.3g}, "
            "mean {mean_abs_logit_diff:.3g}, label agreement {label_agreement:.5f}".format(**unet)
        )
    for step in ("preprocess", "postprocess"):
        _say(f"{step} vs NumPy reference: passed={report[step]['passed']}")


def build_tensorrt(onnx_path: Path, out: Path, *, force: bool = False) -> Path:
    """Build ``out/unet.plan`` from ``onnx_path`` on this GPU and check it against ONNX Runtime
    (report in ``out/tensorrt_report.json``); returns the engine path."""
    from aspects_export import numeric_check, tensorrt_build

    engine = tensorrt_build.build_engine(onnx_path, out / ENGINE_FILE, force=force, log=_say)
    slices, described = numeric_check.phantom_slices(DEFAULT_CHECK_SLICES)
    _say("comparing TensorRT FP16 labels with ONNX Runtime")
    report = tensorrt_build.compare_with_onnxruntime(engine, onnx_path, slices)
    report["slices_source"] = described
    (out / TENSORRT_REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    _say(f"TensorRT vs ORT label agreement {report['label_agreement']:.5f}")
    if not report["passed"]:
        raise ExportError(
            f"TensorRT labels disagree with ONNX Runtime; see {out / TENSORRT_REPORT_FILE}"
        )
    return engine


def write_repo(onnx_dir: Path, out: Path, layout: str, engine: Path | None = None) -> Path:
    """Model repository via ``aspects_export.repository.write_repository`` (imported lazily)."""
    from aspects_export.repository import write_repository

    _say(f"writing the {layout.upper()} model repository to {out}")
    if engine is not None:
        return write_repository(onnx_dir, out, layout, engine=engine)  # type: ignore[arg-type]
    return write_repository(onnx_dir, out, layout)  # type: ignore[arg-type]


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
    sp.add_argument(
        "-o", "--output", "--out", dest="out", type=Path, required=True, help="output directory"
    )

    sp = sub.add_parser("tensorrt", help="build the FP16 TensorRT engine (GPU host)")
    sp.add_argument("--onnx", type=Path, required=True, help="unet.onnx")
    sp.add_argument(
        "-o",
        "--output",
        "--out",
        dest="out",
        type=Path,
        required=True,
        help="output directory for unet.plan",
    )
    sp.add_argument("--force", action="store_true", help="rebuild even if the cache key matches")

    sp = sub.add_parser("repository", help="write a Triton model repository")
    sp.add_argument("--onnx-dir", type=Path, required=True, help="directory with the .onnx files")
    sp.add_argument(
        "-o",
        "--output",
        "--out",
        dest="out",
        type=Path,
        required=True,
        help="repository directory to write",
    )
    sp.add_argument("--layout", choices=("cpu", "gpu"), default="cpu")
    sp.add_argument("--engine", type=Path, help="TensorRT plan for the gpu layout")

    sp = sub.add_parser("all", help="onnx -> report -> repository [-> tensorrt]")
    add_checkpoint(sp)
    sp.add_argument(
        "-o",
        "--output",
        "--out",
        dest="out",
        type=Path,
        required=True,
        help="output directory (onnx/ and model_repository/)",
    )
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
    _say("done")
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
