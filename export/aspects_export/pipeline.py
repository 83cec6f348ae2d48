"""The exporter's API: checkpoint -> ONNX graphs (+ numeric report) -> Triton model
repository (-> TensorRT FP16 engine on a GPU host).  ``aspects-export`` (``cli.py``) and the
dev kit's local stack call these functions.  Progress goes to stderr."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from aspects_client import contract
from aspects_export.errors import ExportError

ENGINE_FILE = "unet.plan"
TENSORRT_REPORT_FILE = "tensorrt_report.json"
DEFAULT_CHECK_SLICES = 4


def say(msg: str) -> None:
    """One progress line on stderr."""
    print(f"aspects-export: {msg}", file=sys.stderr, flush=True)


def gate_slices(n: int = DEFAULT_CHECK_SLICES) -> tuple[np.ndarray, str]:
    """The slices the numeric gates run on: ``n`` atlas-phantom slices, else synthetic ellipses.
    With ``ASPECTS_REQUIRE_PHANTOM=1`` (the exporter image, where the atlas is baked in) the
    ellipses are refused: a gate on them says little about a real head."""
    from aspects_export import numeric_check

    slices, described = numeric_check.phantom_slices(n)
    if os.environ.get("ASPECTS_REQUIRE_PHANTOM") == "1" and described.startswith("synthetic"):
        raise ExportError(
            f"the numeric gates need atlas phantoms, got {described}; fill the atlas cache "
            "($ASPECTS_CACHE_DIR) with `python -m aspects_synth.atlas fetch`, or unset "
            "ASPECTS_REQUIRE_PHANTOM"
        )
    return slices, described


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
        say(f"writing the oracle unet: {out / 'unet.onnx'}")
        export_oracle_unet(out / f"{contract.UNET_MODEL}.onnx")
    else:
        from aspects_export.checkpoints import BUILTIN_SPECS, load_model

        if not checkpoint:
            raise ExportError("give --checkpoint PATH (or 'demo', or --oracle)")
        say(f"loading checkpoint {checkpoint}")
        model, source = load_model(checkpoint)
        if checkpoint in BUILTIN_SPECS:
            say(f"NOTE: {source}")
        say(f"exporting unet ({contract.ENCODER_NAME}) to {out / 'unet.onnx'}")
        graphs.export_unet(model, out / f"{contract.UNET_MODEL}.onnx", {"checkpoint": source})
    say("writing preprocess.onnx and postprocess.onnx")
    graphs.export_preprocess(out / f"{contract.PREPROCESS_MODEL}.onnx")
    graphs.export_postprocess(out / f"{contract.POSTPROCESS_MODEL}.onnx")
    report: dict = {"checkpoint": source, "skipped": "numeric check not run"}
    if check_slices > 0:
        slices, described = gate_slices(check_slices)
        report = numeric_check.check_all(
            out, model, slices, checkpoint=source, slices_source=described, progress=say
        )
        _summarise(report)
        if not report["passed"]:
            raise ExportError(
                f"numeric check failed; see {out / numeric_check.REPORT_FILE} for the figures"
            )
    say(f"onnx done in {time.perf_counter() - t0:.1f} s: {out}")
    return report


def _summarise(report: dict) -> None:
    unet = report.get("unet", {})
    if "max_abs_logit_diff" in unet:
        say(
            "unet ORT vs torch: max |dlogit| {max_abs_logit_diff:.3g}, "
            "mean {mean_abs_logit_diff:.3g}, label agreement {label_agreement:.5f}".format(**unet)
        )
    for step in ("preprocess", "postprocess"):
        say(f"{step} vs NumPy reference: passed={report[step]['passed']}")


def build_tensorrt(onnx_path: Path, out: Path, *, force: bool = False) -> Path:
    """Build ``out/unet.plan`` from ``onnx_path`` on this GPU and check it against ONNX Runtime
    (report in ``out/tensorrt_report.json``); returns the engine path."""
    from aspects_export import tensorrt_build

    slices, described = gate_slices(DEFAULT_CHECK_SLICES)  # before the (minutes-long) build
    engine = tensorrt_build.build_engine(onnx_path, out / ENGINE_FILE, force=force, log=say)
    say("comparing TensorRT FP16 labels with ONNX Runtime")
    report = tensorrt_build.compare_with_onnxruntime(engine, onnx_path, slices)
    report["slices_source"] = described
    (out / TENSORRT_REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    say(f"TensorRT vs ORT label agreement {report['label_agreement']:.5f}")
    if not report["passed"]:
        raise ExportError(
            f"TensorRT labels disagree with ONNX Runtime; see {out / TENSORRT_REPORT_FILE}"
        )
    return engine


def write_repo(
    onnx_dir: Path,
    out: Path,
    layout: str,
    engine: Path | None = None,
    cpu_runtime: str | None = None,
) -> Path:
    """Model repository via ``aspects_export.repository.write_repository`` (imported lazily).
    ``cpu_runtime`` (cpu layout): the unet's profile, e.g. ``auto`` (docs/cpu-serving.md)."""
    from aspects_export.repository import resolve_cpu_runtime, write_repository

    say(f"writing the {layout.upper()} model repository to {out}")
    if engine is not None:
        return write_repository(onnx_dir, out, layout, engine=engine)  # type: ignore[arg-type]
    if layout == "cpu" and cpu_runtime is not None:
        runtime = resolve_cpu_runtime(cpu_runtime)
        say(f"CPU runtime of the unet: {runtime.name} (asked for {cpu_runtime})")
        return write_repository(onnx_dir, out, "cpu", cpu_runtime=runtime, progress=say)
    return write_repository(onnx_dir, out, layout)  # type: ignore[arg-type]
