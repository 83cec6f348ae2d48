"""The embedded demo: a synthetic DWI phantom -> contours JSON, label map and overlay.

Runs with no GPU, no Docker and no cloud account.  This stage uses the phantom's own
exact labels as the "segmentation" (no network involved), which proves the geometry
chain end to end; later stages put the Triton ensemble in between.
"""

from __future__ import annotations

import argparse
import gzip
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aspects_export.demo", description=__doc__)
    parser.add_argument("--out", default="demo_out", help="output directory")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--orientation", default="LPS", help="voxel order of the phantom file")
    args = parser.parse_args(argv)

    from aspects_client.assemble import assemble
    from aspects_client.cli import write_atomic
    from aspects_client.document import dumps, validate
    from aspects_client.geometry import to_display
    from aspects_client.labelmap import label_map_bytes
    from aspects_client.slicing import prepare
    from aspects_client.volume_io import load_volume

    from .phantom import make_phantom, reorder

    out = Path(args.out)
    timings: dict[str, float] = {}

    def stage(name: str, t0: float) -> None:
        timings[name] = time.perf_counter() - t0
        print(f"[demo] {name}: {timings[name]:.2f} s", file=sys.stderr)

    t = time.perf_counter()
    phantom = reorder(make_phantom(seed=args.seed), args.orientation)
    source = out / f"phantom_{args.orientation}.nii.gz"
    write_atomic(source, gzip.compress(phantom.image.to_bytes(), compresslevel=6))
    write_atomic(
        out / "phantom_truth_labels.nii.gz", gzip.compress(phantom.label_image().to_bytes())
    )
    stage("synthesise phantom (512x512x20, 5 mm slices)", t)

    t = time.perf_counter()
    volume = load_volume(source)
    prepared = prepare(volume)
    stage("load + validate + window + slice", t)

    t = time.perf_counter()
    labels = np.ascontiguousarray(to_display(phantom.classes, prepared.geometry))
    result = assemble(
        volume,
        prepared,
        labels,
        provenance={"segmentation": "phantom ground truth (no network in this demo stage)"},
        overlay_note="Labels = the phantom's exact ground truth (geometry check, no network)",
    )
    validate(result.document)
    write_atomic(out / "contours.json", dumps(result.document).encode())
    write_atomic(out / "labels.nii.gz", label_map_bytes(result.label_image))
    write_atomic(out / "overlay.png", result.overlay_png or b"")
    stage("contours + JSON + label map + overlay", t)

    print(f"[demo] outputs in {out.resolve()}:")
    for name in ("contours.json", "labels.nii.gz", "overlay.png", source.name):
        print(f"  {out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
