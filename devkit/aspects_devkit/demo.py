"""The embedded demo: S3 -> Triton (CPU) -> contours, on one machine, no GPU/Docker/cloud.

Stages: export the demo checkpoint (weights trained on synthetic images only, see
``models/demo/MODEL_CARD.md``; ``--checkpoint`` takes another) to ONNX and a CPU model
repository; start the local Triton and a local S3-compatible server (SeaweedFS, with
credentials); upload a synthetic DWI phantom; download it back from ``s3://``, prepare it,
run ``aspects segment s3://...`` against both (download, prepare, the ``aspects``
ensemble, contours), which writes the contours JSON, label map and overlay; stop every
process it started.  The phantom's exact labels give a per-region Dice and a ground-truth
overlay to compare with.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .commands import Command
from .commands import main as run_commands


def add_demo_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of ``aspects-dev demo``."""
    parser.add_argument(
        "-o", "--output", "--out", dest="out", default="demo_out", help="output directory"
    )
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--orientation", default="LPS", help="voxel order of the phantom file")
    parser.add_argument(
        "--checkpoint", default="demo", help="demo (default) | untrained | checkpoint PATH"
    )
    return parser


def run_demo(args: argparse.Namespace) -> int:
    """``aspects-dev demo``: run, print the outputs; exceptions go to the CLI."""
    run(Path(args.out), seed=args.seed, orientation=args.orientation, checkpoint=args.checkpoint)
    return 0


DEMO = Command(
    "demo", "the embedded demo: export, local Triton + S3, segment", add_demo_arguments, run_demo
)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m aspects_devkit.demo`` = ``aspects-dev demo``."""
    return run_commands([DEMO], ["demo", *(argv if argv is not None else sys.argv[1:])])


def run(out: Path, *, seed: int, orientation: str, checkpoint: str = "demo") -> dict:
    """Run the demo into ``out``; returns {"dice": {region: Dice}, "mean_dice", "outputs"}."""
    from aspects_client import contract
    from aspects_client.assemble import assemble
    from aspects_client.display_stack import prepare
    from aspects_client.document import validate
    from aspects_client.geometry import to_display
    from aspects_client.outputs import write_atomic
    from aspects_client.storage import make_s3_client
    from aspects_client.volume_io import load_volume
    from aspects_export.dice import class_counts, mean_region_dice, region_dice
    from aspects_synth import ensure_atlas, make_phantom, reorder

    from .stack import LocalStack, cpu_repository, export_onnx_dir

    timings: dict[str, float] = {}

    def stage(name: str, t0: float) -> None:
        timings[name] = time.perf_counter() - t0
        print(f"[demo] {name}: {timings[name]:.2f} s", file=sys.stderr)

    import onnx  # noqa: F401  the [devkit] extra's heaviest needs: missing, nothing is written
    import torch  # noqa: F401

    ensure_atlas()  # the phantom and the precision gate need it: fetched once, up front
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    onnx_dir, report = export_onnx_dir(out / "onnx", checkpoint=checkpoint, check_slices=1)
    note = report["checkpoint"]
    print(f"[demo] checkpoint: {note}", file=sys.stderr)
    # the CPU profile a CPU host would run (docs/cpu-serving.md): OpenVINO bf16 where the CPU
    # has bf16 (after its precision gate against FP32), else onnxruntime FP32
    repo = cpu_repository(onnx_dir, out / "model_repository", cpu_runtime="auto")
    stage(f"export checkpoint '{checkpoint}' -> ONNX -> CPU model repository", t)

    t = time.perf_counter()
    phantom = reorder(make_phantom(seed=seed), orientation)
    nii_gz = gzip.compress(phantom.image.to_bytes(), compresslevel=6)
    stage(f"synthesise phantom {phantom.image.shape} ({orientation})", t)

    t = time.perf_counter()
    with LocalStack(out, repository=repo, s3=True) as stack:
        assert stack.triton is not None and stack.s3 is not None
        triton, s3 = stack.triton, stack.s3
        stage("start local Triton (CPU) + SeaweedFS S3", t)
        client = make_s3_client(stack.s3_settings())
        url = f"s3://aspects-demo/cases/phantom_{orientation}.nii.gz"
        t = time.perf_counter()
        client.create_bucket(Bucket="aspects-demo")
        client.put_object(Bucket="aspects-demo", Key=url.split("/", 3)[3], Body=nii_gz)
        stage(f"upload {url} ({len(nii_gz) / 1e6:.1f} MB)", t)

        t = time.perf_counter()
        base = out / f"phantom_{orientation}"
        cmd = [sys.executable, "-m", "aspects_client.cli", "segment", url]
        cmd += ["-o", f"{base}.json", "--labels", "--overlay", "--overwrite", "--quiet"]
        cmd += ["--url", triton.grpc_url, "--endpoint-url", s3.endpoint_url]
        print(
            f"[demo] $ aspects segment {url} -o {base}.json --labels --overlay --overwrite",
            file=sys.stderr,
        )
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": s3.access_key,
            "AWS_SECRET_ACCESS_KEY": s3.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"aspects segment failed: {proc.stderr.strip()}")
        stage(
            f"aspects segment (download, prepare, Triton '{contract.ENSEMBLE_MODEL}', contours)", t
        )

    document = json.loads(Path(f"{base}.json").read_text())
    validate(document)
    for name, seconds in document["provenance"]["timings_s"].items():
        print(f"[demo]   segment stage {name}: {seconds:.2f} s", file=sys.stderr)

    t = time.perf_counter()
    volume = load_volume(nii_gz, name=url)
    prepared = prepare(volume)
    truth = np.ascontiguousarray(to_display(phantom.classes, prepared.geometry))
    truth_result = assemble(volume, prepared, truth, overlay=False)
    write_atomic(
        out / "overlay_truth.png",
        truth_result.render(
            prepared,
            title=f"{url}: phantom ground truth",
            note="exact phantom labels, for comparison",
        ),
    )
    write_atomic(out / f"phantom_{orientation}.nii.gz", nii_gz)
    stage("ground-truth overlay for comparison", t)

    import nibabel as nib

    predicted = np.asanyarray(nib.load(f"{base}_labels.nii.gz").dataobj)
    counts = class_counts(predicted, phantom.classes)
    dice = region_dice(counts)
    print(
        f"[demo] Dice against the phantom's exact labels: mean {mean_region_dice(counts):.3f} ("
        + ", ".join(f"{k} {v:.2f}" for k, v in dice.items())
        + f"); checkpoint: {note}",
        file=sys.stderr,
    )
    print(f"[demo] all servers stopped; outputs in {out.resolve()}:")
    outputs = [
        out / name
        for name in (
            f"{base.name}.json",
            f"{base.name}_labels.nii.gz",
            f"{base.name}_overlay.png",
            "overlay_truth.png",
            f"phantom_{orientation}.nii.gz",
        )
    ]
    for path in outputs:
        print(f"  {path}")
    print("[demo] stage timings: " + ", ".join(f"{k}: {v:.1f} s" for k, v in timings.items()))
    return {"dice": dice, "mean_dice": mean_region_dice(counts), "outputs": outputs}


if __name__ == "__main__":
    sys.exit(main())
