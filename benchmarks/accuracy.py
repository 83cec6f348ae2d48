"""Accuracy of a checkpoint on held-out synthetic phantoms, through the real Triton CPU
ensemble and through in-process PyTorch; and a look at real DWI (dipy's ``aniso_vox``).

Workload: ``--volumes`` phantoms drawn by the training recipe (``aspects_train.samples.
draw_recipe``: random pose, FOV, slice thickness and level, grid tilt, noise, lesions) from
seeds ``BENCHMARK_SEED_START + i`` (never trained or validated on), all at 512×512 in-plane,
each written in another voxel order (RAS, LPS, PIR, LAS, ...).

- **triton**: ``AspectsClient.segment`` (file bytes → client prepare → the ``aspects``
  ensemble on a local tritonserver: ONNX preprocess → unet → postprocess) → label map in
  the ORIGINAL grid; hemisphere of each labelled voxel from the client's mid-sagittal plane.
- **torch**: the same file → client ``prepare`` → ``preprocessing.network_input`` → the
  checkpoint's ``torch.nn.Module`` → ``preprocessing.postprocess`` (the NumPy definition of the
  contract's postprocess) → back to the original grid; same hemisphere rule.

Dice per region (both sides pooled) and per region × hemisphere (truth: the atlas's side), with
counts pooled over all volumes; the two paths must agree.  Writes
``benchmarks/results/accuracy.{json,md}``, an overlay of one held-out phantom and the overlay
of dipy's real DWI sample (unlabelled: for a person to look at).

    .venv/bin/python benchmarks/accuracy.py [--checkpoint demo] [--volumes 4]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
RESULTS = ROOT / "benchmarks" / "results"
ORDERS = ("RAS", "LPS", "PIR", "LAS", "ASR", "SPL")
DIPY_VERSION = "1.12.1"
DIPY_MEMBER = "dipy/data/files/aniso_vox.nii.gz"
DIPY_FILE_SHA256 = "8440b6366d3dbd58d8f5af3ef6764dbd65e35b1061abe7bf4dc8fac32fb7aff7"
AGREEMENT_MIN = 0.999  # voxel label agreement Triton vs PyTorch
DICE_GOAL = 0.7


def log(msg: str) -> None:
    print(f"[accuracy] {msg}", file=sys.stderr, flush=True)


def held_out_phantoms(n: int) -> list[tuple[Any, str, Any]]:
    """(phantom in its voxel order, order, recipe) for n held-out seeds, 512×512 in-plane."""
    from dataclasses import replace

    from aspects_export.phantom import reorder
    from aspects_train.samples import BENCHMARK_SEED_START, draw_recipe

    out = []
    for i in range(n):
        recipe = replace(draw_recipe(BENCHMARK_SEED_START + i), in_plane=(512, 512))
        order = ORDERS[i % len(ORDERS)]
        out.append((reorder(recipe.render(), order), order, recipe))
    return out


def display_with_sides(labels_original: np.ndarray, geometry) -> tuple[np.ndarray, np.ndarray]:
    """Original-grid classes → (display classes, display hemisphere codes by the client's
    mid-sagittal plane)."""
    from aspects_client.geometry import to_display
    from aspects_client.hemisphere import estimate_plane, hemisphere_map

    display = np.ascontiguousarray(to_display(labels_original, geometry))
    return display, hemisphere_map(display, geometry, estimate_plane(display, geometry))


def torch_labels(model, slices: np.ndarray, batch: int = 4) -> np.ndarray:
    """uint8 display slices [N, H, W] → contract labels [N, H, W] via in-process PyTorch."""
    import torch

    from aspects_client.preprocessing import network_input, postprocess

    out = []
    with torch.inference_mode():
        for i in range(0, len(slices), batch):
            chunk = slices[i : i + batch]
            logits = model(torch.from_numpy(network_input(chunk))).numpy()
            out.append(postprocess(logits, chunk.shape[1:])[0])
    return np.concatenate(out)


def fetch_dipy_sample(cache: Path) -> Path:
    """dipy's aniso_vox.nii.gz (real DWI, 4×4×5 mm, oblique), from the dipy wheel on PyPI."""
    import hashlib
    import subprocess

    dest = cache / "dipy" / "aniso_vox.nii.gz"
    if dest.is_file() and hashlib.sha256(dest.read_bytes()).hexdigest() == DIPY_FILE_SHA256:
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", f"dipy=={DIPY_VERSION}",
             "-d", tmp], check=True, capture_output=True, timeout=600,
        )
        wheel = next(Path(tmp).glob("dipy-*.whl"))
        data = zipfile.ZipFile(wheel).read(DIPY_MEMBER)
    if hashlib.sha256(data).hexdigest() != DIPY_FILE_SHA256:
        raise RuntimeError(f"{DIPY_MEMBER} from dipy {DIPY_VERSION} fails its sha256 check")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="demo", help="demo | untrained | PATH")
    parser.add_argument("--volumes", type=int, default=4)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-dipy", action="store_true", help="skip the real-DWI overlay")
    args = parser.parse_args(argv)

    import nibabel as nib
    from bench_env import cpu_model, server_env_versions

    from aspects_client import contract
    from aspects_client.client import AspectsClient
    from aspects_client.geometry import from_display, to_display
    from aspects_client.local_triton import LocalTriton
    from aspects_client.slicing import prepare
    from aspects_client.volume_io import load_volume
    from aspects_export.accuracy import (
        SIDE_CLASSES,
        class_counts,
        mean_region_dice,
        region_dice,
        region_side_dice,
        side_labels,
    )
    from aspects_export.checkpoints import load_model
    from aspects_export.cli import export_onnx, write_repo
    from aspects_export.phantom.atlas import cache_dir

    began = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    model, source = load_model(args.checkpoint)
    log(f"checkpoint: {source}")
    log(f"rendering {args.volumes} held-out phantoms")
    phantoms = held_out_phantoms(args.volumes)

    counts = {p: np.zeros((3, contract.NUM_CLASSES), np.int64) for p in ("triton", "torch")}
    side_counts = {p: np.zeros((3, SIDE_CLASSES), np.int64) for p in ("triton", "torch")}
    per_volume: list[dict[str, Any]] = []
    agree = total = 0
    seconds = {"triton": 0.0, "torch": 0.0}
    overlay_png = None
    with tempfile.TemporaryDirectory(prefix="aspects-accuracy-") as tmp:
        work = Path(tmp)
        export_onnx(args.checkpoint, work / "onnx", check_slices=0)
        repo = write_repo(work / "onnx", work / "model_repository", "cpu")
        with LocalTriton(repo) as triton, AspectsClient(triton.grpc_url) as client:
            for k, (ph, order, recipe) in enumerate(phantoms):
                raw = ph.image.to_bytes()
                t = time.perf_counter()
                result = client.segment(raw, name=f"held-out {recipe.seed} ({order})")
                seconds["triton"] += time.perf_counter() - t
                served = np.asanyarray(result.label_image.dataobj).astype(np.uint8)
                if k == 0:
                    overlay_png = result.overlay_png
                prepared = prepare(load_volume(raw))
                t = time.perf_counter()
                mine = from_display(torch_labels(model, prepared.slices), prepared.geometry)
                seconds["torch"] += time.perf_counter() - t
                g = prepared.geometry
                truth_d = to_display(ph.classes, g)
                truth_sides = side_labels(truth_d, to_display(ph.hemispheres, g))
                row: dict[str, Any] = {
                    "seed": recipe.seed, "voxel_order": order, "shape": list(ph.image.shape),
                    "lesions": [list(x) for x in recipe.lesions],
                    "slice_mm": round(recipe.slice_mm, 2), "fov_mm": round(recipe.fov_mm, 1),
                }
                for path, labels in (("triton", served), ("torch", mine)):
                    disp, sides = display_with_sides(labels, g)
                    c = class_counts(disp, truth_d)
                    counts[path] += c
                    side_counts[path] += class_counts(side_labels(disp, sides), truth_sides,
                                                      SIDE_CLASSES)
                    row[f"mean_dice_{path}"] = round(mean_region_dice(c), 4)
                agree += int((served == mine).sum())
                total += served.size
                row["voxel_agreement"] = float((served == mine).mean())
                per_volume.append(row)
                log(f"{recipe.seed} {order}: " + ", ".join(f"{k}={v}" for k, v in row.items()
                                                           if k.startswith(("mean", "voxel"))))

        dipy_info: dict[str, Any] = {}
        if not args.no_dipy:
            try:
                path = fetch_dipy_sample(cache_dir())
                t = time.perf_counter()
                with LocalTriton(repo) as triton, AspectsClient(triton.grpc_url) as client:
                    res = client.segment(str(path))
                dipy_info = {
                    "file": f"dipy {DIPY_VERSION}: {DIPY_MEMBER}",
                    "shape": list(nib.load(str(path)).shape),
                    "axcodes": "".join(nib.aff2axcodes(nib.load(str(path)).affine)),
                    "seconds": round(time.perf_counter() - t, 2),
                    "labelled_ml": {
                        key: {s: round(st.volume_ml, 2) for s, st in sides.items()}
                        for key, sides in res.regions.items()
                    },
                    "overlay": "accuracy_dipy_aniso_vox_overlay.png",
                }
                (args.out / dipy_info["overlay"]).write_bytes(res.overlay_png or b"")
            except Exception as exc:  # the sample is a look, not a figure: report and go on
                dipy_info = {"error": f"{type(exc).__name__}: {exc}"}
                log(f"dipy sample skipped: {dipy_info['error']}")
    if overlay_png:
        (args.out / "accuracy_phantom_overlay.png").write_bytes(overlay_png)

    report = {
        "checkpoint": args.checkpoint,
        "checkpoint_note": source,
        "volumes": per_volume,
        "dice": {p: region_dice(counts[p]) for p in counts},
        "dice_by_side": {p: region_side_dice(side_counts[p]) for p in side_counts},
        "mean_dice": {p: mean_region_dice(counts[p]) for p in counts},
        "voxel_agreement_triton_vs_torch": agree / max(total, 1),
        "voxels_differing_triton_vs_torch": total - agree,
        "voxels_compared": total,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "dipy": dipy_info,
        "machine": {"cpu": cpu_model(), "python": platform.python_version(),
                    **server_env_versions()},
        "wall_s": round(time.perf_counter() - began, 1),
    }
    (args.out / "accuracy.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "accuracy.md").write_text(render_markdown(report))
    log(f"mean Dice triton {report['mean_dice']['triton']:.4f} torch "
        f"{report['mean_dice']['torch']:.4f}; agreement "
        f"{report['voxel_agreement_triton_vs_torch']:.5f}; wrote {args.out / 'accuracy.md'}")
    ok = report["voxel_agreement_triton_vs_torch"] >= AGREEMENT_MIN
    return 0 if ok else 1


def render_markdown(r: dict[str, Any]) -> str:
    from aspects_client import contract

    mt, mp = r["mean_dice"]["triton"], r["mean_dice"]["torch"]
    lines = [
        "# Accuracy on held-out synthetic phantoms",
        "",
        f"Checkpoint: `{r['checkpoint']}` — {r['checkpoint_note']}.",
        f"Volumes: {len(r['volumes'])} held-out phantoms at 512×512 in-plane (seeds "
        f"{', '.join(str(v['seed']) for v in r['volumes'])}; never trained or validated on), "
        f"voxel orders {', '.join(v['voxel_order'] for v in r['volumes'])}. "
        "Dice pools voxel counts over all volumes. Produced by `benchmarks/accuracy.py`.",
        "",
        f"**Mean Dice over the 10 regions: {mt:.3f} through Triton (CPU ensemble), "
        f"{mp:.3f} through in-process PyTorch** (goal ≥ {DICE_GOAL}: "
        f"{'met' if mt >= DICE_GOAL else 'not met'}).  Voxel agreement Triton vs PyTorch: "
        f"{r['voxel_agreement_triton_vs_torch']:.7f} ({r['voxels_differing_triton_vs_torch']:,} of "
        f"{r['voxels_compared']:,} voxels differ; required ≥ {AGREEMENT_MIN}): the ONNX graphs "
        "served by Triton and the PyTorch module give the same segmentation.",
        "",
        "| region | Triton r | Triton l | Triton both | PyTorch r | PyTorch l | PyTorch both |",
        "|---|---|---|---|---|---|---|",
    ]
    for reg in contract.REGIONS:
        t, p = r["dice_by_side"]["triton"][reg.key], r["dice_by_side"]["torch"][reg.key]
        lines.append(
            f"| {reg.key} ({reg.name}) | {t['r']:.3f} | {t['l']:.3f} | "
            f"{r['dice']['triton'][reg.key]:.3f} | {p['r']:.3f} | {p['l']:.3f} | "
            f"{r['dice']['torch'][reg.key]:.3f} |"
        )
    lines += ["", "Per volume:", "", "| seed | order | shape | slice mm | lesions | mean Dice "
              "Triton | mean Dice PyTorch | voxel agreement |", "|---|---|---|---|---|---|---|---|"]
    for v in r["volumes"]:
        lesions = ", ".join(f"{a}-{b}" for a, b in v["lesions"]) or "none"
        lines.append(
            f"| {v['seed']} | {v['voxel_order']} | {'×'.join(map(str, v['shape']))} | "
            f"{v['slice_mm']} | {lesions} | {v['mean_dice_triton']:.3f} | "
            f"{v['mean_dice_torch']:.3f} | {v['voxel_agreement']:.7f} |"
        )
    d = r["dipy"]
    lines += ["", "## Real DWI: dipy `aniso_vox.nii.gz` (unlabelled)", ""]
    if "error" in d:
        lines.append(f"Not run: {d['error']}")
    elif d:
        lines.append(
            f"{d['file']}, shape {d['shape']}, stored {d['axcodes']} with an oblique affine; "
            f"segmented through Triton in {d['seconds']} s. Overlay: `{d['overlay']}` (for a "
            "person to judge: no labels exist for this file). Labelled volume per region (mL, "
            "r / l): " + ", ".join(
                f"{k} {v.get('r', 0)}/{v.get('l', 0)}" for k, v in d["labelled_ml"].items()
            ) + "."
        )
    lines += [
        "",
        f"Time: Triton path {r['seconds']['triton']} s, PyTorch path {r['seconds']['torch']} s "
        f"for all volumes; whole run {r['wall_s']} s on {r['machine']['cpu']} (2 cores, no GPU).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
