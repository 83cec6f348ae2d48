"""Accuracy of the 2.5D network per ASPECTS region and hemisphere, in-process on the CPU
(issues 7, 11; method in benchmarks/README.md): Dice on held-out domain-randomised phantoms,
b1000 phantoms and real images against an atlas registration, plus left/right asymmetry.

    .venv/bin/python benchmarks/accuracy.py [--checkpoint demo|PATH] [--phantoms 12]
        [--b1000 4] [--no-real] [--no-context] [--out DIR]
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import harness
import nibabel as nib
import numpy as np
from harness import fmt, md_table

from aspects_client import contract
from aspects_client.display_stack import prepare
from aspects_client.geometry import from_display, to_display
from aspects_client.hemisphere import estimate_plane, hemisphere_map
from aspects_client.server_reference import context_stacks, network_input, postprocess
from aspects_client.volume_io import load_volume
from aspects_export import dice
from aspects_synth import VOXEL_ORDERS, Phantom, load_atlas, reorder
from aspects_synth.phantom import euler_rotation, grid_affine, sample_linear, sample_nearest

DIPY_VERSION = "1.12.1"
DIPY_MEMBER = "dipy/data/files/aniso_vox.nii.gz"
DIPY_FILE_SHA256 = "8440b6366d3dbd58d8f5af3ef6764dbd65e35b1061abe7bf4dc8fac32fb7aff7"
OBLIQUE_DEG = (0.0, 15.0, 0.0, -20.0)  # cycled over the domain-randomised volumes
T1_VOXEL_MM, T1_SHAPE, T1_ORDER = (1.5, 1.5, 5.0), (160, 160, 30), "LPS"
T1_TILT_DEG = 18.0  # grid pitch (about x) in the affine
T1_POSE_DEG = (0.0, 3.0, -4.0)  # head pose in the world: rotation about x, y, z ...
T1_SHIFT_MM = (4.0, -6.0, 10.0)  # ... and translation
GOALS = {"phantoms": 0.88, "b1000": 0.85, "aniso_vox": 0.75, "t1_head": 0.80}
MAX_ASYMMETRY = 0.15
OVERLAY_SLICES = 4
MEAN = "mean Dice (region × side)"
GOAL_ROWS = [  # (goal, comparison, target, path of the value in the report; None: asymmetry)
    (f"held-out domain-randomised phantoms: {MEAN}", "≥", GOALS["phantoms"],
     ("phantoms", "all", "mean_region_side")),
    (f"b1000 phantoms: {MEAN}", "≥", GOALS["b1000"], ("b1000", "all", "mean_region_side")),
    (f"aniso_vox: agreement with registration, {MEAN}", "≥", GOALS["aniso_vox"],
     ("real", "aniso_vox", "network_vs_registration", "mean_region_side")),
    ("oblique T1 head: mean Dice vs exact labels (region × side)", "≥", GOALS["t1_head"],
     ("real", "t1_head", "network_vs_exact", "mean_region_side")),
    ("real images: largest region asymmetry |Vr−Vl|/max (network)", "≤", MAX_ASYMMETRY, None)]
VERSIONS = ("torch", "segmentation-models-pytorch", "numpy", "nibabel", "opencv-python-headless",
            "SimpleITK", "matplotlib")
OPTIONS = [("--checkpoint", "demo", "demo | untrained | PATH"),
           ("--phantoms", 12, "domain-randomised volumes"), ("--b1000", 4, "b1000 phantom volumes"),
           ("--no-real", False, "skip the real images"),
           ("--no-context", False, "ablation: the slice itself in all 3 channels instead of its "
            "neighbours (-> accuracy_no_context.{json,md})"),
           ("--report-only", False, "re-render the .md from the .json in --out; no run")]
# Ablation switch (--no-context): feed every channel the slice itself (2D input), to measure
# how much the 2.5D network uses its neighbours.  Not a 2D-trained network.
CONTEXT = True


# --- labels, counts, Dice -----------------------------------------------------------------
@dataclass(frozen=True)
class Labels:
    """Classes 0..10 and hemisphere codes, uint8, in one volume's ORIGINAL voxel order."""

    classes: np.ndarray
    hemispheres: np.ndarray


@dataclass
class Tally:
    """Counts pooled over volumes, each voxel weighted by its volume in mL (so a head weighs
    by its size, not its matrix): classes [3, 11] and region × side [3, 21]."""

    classes: np.ndarray = field(default_factory=lambda: np.zeros((3, contract.NUM_CLASSES)))
    sides: np.ndarray = field(default_factory=lambda: np.zeros((3, 1 + 2 * len(contract.REGIONS))))
    per_volume: list[float] = field(default_factory=list)

    def add(self, pred: Labels, truth: Labels, voxel_ml: float) -> float:
        """Add one volume; returns its own mean region × side Dice."""
        if pred.classes.shape != truth.classes.shape:
            raise ValueError(f"grids differ: {pred.classes.shape} vs {truth.classes.shape}")
        c = dice.class_counts(pred.classes, truth.classes) * voxel_ml
        s = dice.class_counts(dice.side_labels(pred.classes, pred.hemispheres),
                              dice.side_labels(truth.classes, truth.hemispheres),
                              dice.SIDE_CLASSES) * voxel_ml
        self.classes += c
        self.sides += s
        self.per_volume.append(summarise_counts(c, s)["mean_region_side"])
        return self.per_volume[-1]


def summarise_counts(classes: np.ndarray, sides: np.ndarray) -> dict[str, Any]:
    """Dice per region × side and per region (sides pooled), and their means (NaN ignored)."""
    by_side, pooled = dice.region_side_dice(sides), dice.region_dice(classes)
    return {"region_side": by_side, "region": pooled,
            "mean_region_side": _nanmean([v for d in by_side.values() for v in d.values()]),
            "mean_region": _nanmean(list(pooled.values()))}


def summarise(tally: Tally) -> dict[str, Any]:
    """``summarise_counts`` of a tally, its volume count and the mean of the volumes' means."""
    return {"volumes": len(tally.per_volume), **summarise_counts(tally.classes, tally.sides),
            "mean_of_volumes": _nanmean(tally.per_volume)}


def compare(pred: Labels, truth: Labels) -> dict[str, Any]:
    """Dice of one volume's labelling against another, per region × side."""
    tally = Tally()
    tally.add(pred, truth, 1.0)
    return summarise(tally)


def voxel_ml(image: nib.Nifti1Image) -> float:
    return float(abs(np.linalg.det(image.affine[:3, :3]))) / 1000.0


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def asymmetry(labels: Labels, voxel_ml: float) -> dict[str, dict[str, float]]:
    """Per region: right and left volume (mL) and |Vr − Vl| / max(Vr, Vl) (NaN if both 0)."""
    codes, out = contract.HEMISPHERE_CODES, {}
    for region in contract.REGIONS:
        mask = labels.classes == region.index
        right, left = (int((mask & (labels.hemispheres == codes[s])).sum()) * voxel_ml
                       for s in ("r", "l"))
        top = max(right, left)
        out[region.key] = {"r_ml": round(right, 3), "l_ml": round(left, 3),
                           "asymmetry": abs(right - left) / top if top else float("nan")}
    return out


# --- the network, the client's way ----------------------------------------------------------
@dataclass(frozen=True)
class Segmentation:
    """The network's labels in the original grid, the display stack it saw, the plane rule."""

    labels: Labels
    prepared: Any  # aspects_client.display_stack.PreparedVolume
    plane_method: str
    seconds: float


def predict_display(model: Any, slices: np.ndarray, batch: int = 8) -> np.ndarray:
    """uint8 display slices [N, H, W] → contract labels [N, H, W] (2.5D stacks, in-process)."""
    import torch

    stacks = (context_stacks(slices) if CONTEXT
              else np.ascontiguousarray(np.repeat(slices[:, None], 3, axis=1)))
    out = []
    with torch.inference_mode():
        for i in range(0, len(stacks), batch):
            logits = model(torch.from_numpy(network_input(stacks[i : i + batch]))).numpy()
            out.append(postprocess(logits, slices.shape[1:])[0])
    return np.concatenate(out)


def segment(model: Any, source: Any) -> Segmentation:
    """A NIfTI path, bytes or nibabel image → labels in its own voxel order, client sides."""
    began = time.perf_counter()
    prepared = prepare(load_volume(source))
    g, display = prepared.geometry, predict_display(model, prepared.slices)
    plane = estimate_plane(display, g)
    sides = hemisphere_map(display, g, plane)
    labels = Labels(np.asarray(from_display(display, g), np.uint8),
                    np.asarray(from_display(sides, g), np.uint8))
    return Segmentation(labels, prepared, plane.method, time.perf_counter() - began)


# --- data ---------------------------------------------------------------------------------
def domain_randomised_seeds(n: int) -> list[tuple[int, str]]:
    """(seed, contrast family) of n held-out heads: seeds from BENCHMARK_SEED_START upwards,
    each family taking at most ceil(n / 5) of them, so that every family is covered."""
    from aspects_synth.generator import CONTRASTS, draw_head
    from aspects_synth.head_labels import load_label_maps
    from aspects_synth.recipes import BENCHMARK_SEED_START

    maps, share, taken, out = load_label_maps(), math.ceil(n / len(CONTRASTS)), {}, []
    seed = BENCHMARK_SEED_START
    while len(out) < n:
        contrast = draw_head(seed, maps).contrast
        if taken.get(contrast, 0) < share:
            taken[contrast] = taken.get(contrast, 0) + 1
            out.append((seed, contrast))
        seed += 1
    return out


def oblique_t1_head() -> Any:
    """The MNI152 T1 head (3 mm, with scalp and skull) in a rigid pose, resampled to
    1.5×1.5×5 mm on a grid tilted by ``T1_TILT_DEG`` and stored ``T1_ORDER``, as an
    ``aspects_synth.Phantom``: image trilinear with 5 samples across each slice, exact labels
    = the ASPECTS atlas at each voxel centre through the same transform (nearest)."""
    atlas = load_atlas()
    pose = np.eye(4)  # world = pose · mni
    pose[:3, :3] = euler_rotation(T1_POSE_DEG)
    pose[:3, 3] = T1_SHIFT_MM
    centre = (pose @ [0.0, -18.0, 18.0, 1.0])[:3]  # the brain's centre, roughly
    grid = grid_affine(T1_SHAPE, T1_VOXEL_MM, centre, (T1_TILT_DEG, 0.0, 0.0))
    mni_from_voxel = np.linalg.inv(pose) @ grid
    ijk = np.stack(np.meshgrid(*map(np.arange, T1_SHAPE), indexing="ij"), -1).astype(float)
    head_from_voxel = np.linalg.inv(atlas.head_affine) @ mni_from_voxel
    image = np.mean([sample_linear(atlas.head, head_from_voxel, ijk + np.array((0.0, 0.0, dz)))
                     for dz in (-0.4, -0.2, 0.0, 0.2, 0.4)], axis=0)
    atlas_from_voxel = np.linalg.inv(atlas.atlas_affine) @ mni_from_voxel
    classes = sample_nearest(atlas.classes, atlas_from_voxel, ijk)
    hemispheres = sample_nearest(atlas.hemispheres, atlas_from_voxel, ijk)
    img = nib.Nifti1Image(image.astype(np.float32), grid)
    img.header.set_xyzt_units("mm", "sec")
    return reorder(Phantom(img, classes, hemispheres, 0, np.zeros_like(classes), pose), T1_ORDER)


def fetch_dipy_sample(cache: Path) -> Path:
    """dipy's aniso_vox.nii.gz (real DWI, 4×4×5 mm, oblique), from the dipy wheel on PyPI."""
    import subprocess

    dest = cache / "dipy" / "aniso_vox.nii.gz"
    if dest.is_file() and hashlib.sha256(dest.read_bytes()).hexdigest() == DIPY_FILE_SHA256:
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        f"dipy=={DIPY_VERSION}", "-d", tmp],
                       check=True, capture_output=True, timeout=600)
        data = zipfile.ZipFile(next(Path(tmp).glob("dipy-*.whl"))).read(DIPY_MEMBER)
    if hashlib.sha256(data).hexdigest() != DIPY_FILE_SHA256:
        raise RuntimeError(f"{DIPY_MEMBER} from dipy {DIPY_VERSION} fails its sha256 check")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)
    return dest


def describe(image: nib.Nifti1Image) -> dict[str, Any]:
    """Shape, stored voxel order and voxel size of an image."""
    return {"shape": list(image.shape[:3]), "voxel_order": "".join(nib.aff2axcodes(image.affine)),
            "voxel_mm": [round(float(z), 3) for z in image.header.get_zooms()[:3]]}


# --- overlays -----------------------------------------------------------------------------
def overlay(path: Path, seg: Segmentation, rows: list[tuple[str, Labels]], title: str) -> str:
    """PNG: ``OVERLAY_SLICES`` display slices (radiological view: patient right on the
    image's left), one row per labelling; region colours from the contract, patient right
    bright and patient left dark.  Slices: spread over those the last row labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    g, slices = seg.prepared.geometry, seg.prepared.slices
    shown = [(name, to_display(lab.classes, g), to_display(lab.hemispheres, g))
             for name, lab in rows]
    labelled = np.flatnonzero(shown[-1][1].reshape(len(shown[-1][1]), -1).any(axis=1))
    if labelled.size == 0:
        labelled = np.arange(len(slices))
    picks = np.unique(labelled[np.round(np.linspace(0.15, 0.85, OVERLAY_SLICES)
                                        * (labelled.size - 1)).astype(int)])
    colours = np.zeros((contract.NUM_CLASSES, 3), np.float32)
    for region in contract.REGIONS:
        colours[region.index] = np.asarray(region.colour_rgb) / 255.0
    row_mm, col_mm = g.display_pixel_spacing_mm
    fig, axes = plt.subplots(len(rows), len(picks), squeeze=False,
                             figsize=(2.6 * len(picks), 2.6 * len(rows) + 0.9))
    for r, (name, classes, hemis) in enumerate(shown):
        for c, n in enumerate(picks):
            grey = slices[n].astype(np.float32)[..., None].repeat(3, -1) / 255.0
            left = hemis[n] == contract.HEMISPHERE_CODES[contract.HEMISPHERE_LEFT]
            tint = colours[classes[n]] * np.where(left, 0.45, 1.0)[..., None]
            alpha = np.where(classes[n] > 0, 0.55, 0.0)[..., None]
            ax = axes[r, c]
            ax.imshow((grey * (1 - alpha) + tint * alpha)[:, ::-1],  # radiological
                      aspect=row_mm / col_mm, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            for x, side in ((0.02, "R"), (0.94, "L")):
                ax.text(x, 0.5, side, color="w", transform=ax.transAxes, fontsize=8)
            if r == 0:
                ax.set_title(f"slice {g.original_slice_index(int(n))}", fontsize=8)
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
    fig.legend(handles=[Patch(color=colours[x.index], label=x.key) for x in contract.REGIONS],
               loc="lower center", ncol=10, fontsize=7, frameon=False, title_fontsize=7,
               title="bright = patient right, dark = patient left (sides of each labelling)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.07, 1, 0.97))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path.name


# --- the datasets ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One phantom of a dataset: its family (the first of each gets an overlay), stored voxel
    order, renderer, the row's own fields (before and after the common ones), overlay file,
    title and log name."""

    family: str
    order: str
    render: Callable[[], Any]
    head: dict[str, Any]
    tail: dict[str, Any]
    figure: str
    title: str
    name: str


def phantom_cases(n: int) -> list[Case]:
    """Held-out domain-randomised phantoms, every voxel order, some oblique."""
    from aspects_synth.generator import render_volume

    out = []
    for i, (seed, contrast) in enumerate(domain_randomised_seeds(n)):
        order, oblique = VOXEL_ORDERS[i % len(VOXEL_ORDERS)], OBLIQUE_DEG[i % len(OBLIQUE_DEG)]
        out.append(Case(
            contrast, order, lambda s=seed, o=oblique: render_volume(s, oblique_deg=o),
            {"seed": seed, "contrast": contrast, "oblique_deg": oblique}, {},
            f"accuracy_phantom_{seed}_{contrast}.png", f"domain-randomised phantom {seed} "
            f"({contrast}, stored {order}, oblique {oblique:g}°)",
            f"phantom {seed} {contrast} {order} {oblique:g}°"))
    return out


def b1000_cases(n: int) -> list[Case]:
    """Today's b1000 phantoms (``draw_recipe(seed).render()``) in varied voxel orders."""
    from aspects_synth.recipes import BENCHMARK_SEED_START, draw_recipe

    recipes = [draw_recipe(BENCHMARK_SEED_START + i) for i in range(n)]
    return [Case("b1000", order, r.render, {"seed": r.seed},
                 {"lesions": [list(x) for x in r.lesions]}, f"accuracy_b1000_{r.seed}.png",
                 f"b1000 phantom {r.seed} (stored {order})", f"b1000 {r.seed} {order}")
            for i, r in enumerate(recipes) for order in [VOXEL_ORDERS[(i + 3) % len(VOXEL_ORDERS)]]]


def run_dataset(model: Any, cases: list[Case], out: Path, by_family: bool) -> dict[str, Any]:
    """Segment every case against its exact labels: Dice pooled (and per family)."""
    total, families, rows, figures = Tally(), {}, [], []
    for i, case in enumerate(cases):
        t = time.perf_counter()
        ph = reorder(case.render(), case.order)
        render_s = time.perf_counter() - t
        seg, truth = segment(model, ph.image.to_bytes()), Labels(ph.classes, ph.hemispheres)
        mean = total.add(seg.labels, truth, voxel_ml(ph.image))
        if by_family:
            families.setdefault(case.family, Tally()).add(seg.labels, truth, voxel_ml(ph.image))
        row = {**case.head, **describe(ph.image), "mean_dice": mean, "plane": seg.plane_method,
               "render_s": round(render_s, 1), "segment_s": round(seg.seconds, 1), **case.tail}
        if case.family not in {c.family for c in cases[:i]}:
            row["overlay"] = overlay(out / case.figure, seg, [("network", seg.labels),
                                     ("exact", truth)], f"{case.title}: network vs exact labels")
            figures.append(row["overlay"])
        rows.append(row)
        harness.log(f"{case.name}: mean Dice {row['mean_dice']:.3f}")
    by = {"by_contrast": {k: summarise(v) for k, v in sorted(families.items())}}
    return {"all": summarise(total), **(by if by_family else {}), "volumes": rows,
            "overlays": figures}


def real_case(model: Any, out: Path, key: str, image: nib.Nifti1Image, source: Any,
              title: str, file: str, exact: Labels | None = None) -> dict[str, Any]:
    """Network vs the atlas registration on one real image (and both vs ``exact``)."""
    from registration import register_atlas

    seg = segment(model, source)
    t = time.perf_counter()
    ref = register_atlas(np.asarray(image.dataobj, np.float32), image.affine)
    reg, ml = Labels(ref.classes, ref.hemispheres), voxel_ml(image)
    labellings = [("network", seg.labels), ("registration", reg)]
    result = {"file": file, **describe(image)}
    if exact is not None:
        labellings.append(("exact", exact))
        result["network_vs_exact"] = compare(seg.labels, exact)
        result["registration_vs_exact"] = compare(reg, exact)
    result["network_vs_registration"] = compare(seg.labels, reg)
    result["asymmetry"] = {name: asymmetry(lab, ml) for name, lab in labellings}
    result["registration"] = {"metric": ref.metric, "seconds": ref.seconds,
                              "wall_s": round(time.perf_counter() - t, 1)}
    result["plane"], result["segment_s"] = seg.plane_method, round(seg.seconds, 1)
    result["overlay"] = overlay(out / f"accuracy_{key}.png", seg, labellings, title)
    for name in ("network_vs_exact", "registration_vs_exact", "network_vs_registration"):
        if name in result:
            harness.log(f"{key}: {name} {result[name]['mean_region_side']:.3f}")
    return result


def run_real(model: Any, out: Path) -> dict[str, Any]:
    """dipy's aniso_vox (network vs registration) and the oblique MNI152 T1 head (network and
    registration vs exact); asymmetry of every labelling."""
    from registration import SETTINGS

    from aspects_synth.atlas import cache_dir

    path, t1 = fetch_dipy_sample(cache_dir()), oblique_t1_head()
    return {
        "registration_settings": SETTINGS,
        "aniso_vox": real_case(
            model, out, "aniso_vox", nib.load(str(path)), str(path),
            "dipy aniso_vox (real b0 DWI, 4×4×5 mm, oblique): network vs atlas registration",
            f"dipy {DIPY_VERSION}: {DIPY_MEMBER} (sha256 {DIPY_FILE_SHA256[:16]}…)"),
        "t1_head": real_case(
            model, out, "t1_head", t1.image, t1.image.to_bytes(),
            f"MNI152 T1 head, {T1_VOXEL_MM[0]:g}×{T1_VOXEL_MM[1]:g}×{T1_VOXEL_MM[2]:g} mm, "
            f"{T1_TILT_DEG:g}° oblique, stored {T1_ORDER}",
            f"MNI152_T1_3mm head resampled to {T1_VOXEL_MM} mm, grid tilt {T1_TILT_DEG}°, "
            f"pose {T1_POSE_DEG}° / {T1_SHIFT_MM} mm", Labels(t1.classes, t1.hemispheres)),
    }


# --- goals, report --------------------------------------------------------------------------
def goal_value(report: dict[str, Any], path: tuple[str, ...] | None) -> float | None:
    """The value at ``path`` (None where not run); ``None`` path: the largest network
    asymmetry over both real images."""
    real = report.get("real") or {}
    if path is None:
        return max((v["asymmetry"] for name in ("aniso_vox", "t1_head")
                    for v in real[name]["asymmetry"]["network"].values()
                    if math.isfinite(v["asymmetry"])), default=None) if real else None
    section: Any = report
    for key in path:
        section = (section or {}).get(key)
    return None if section is None else float(section)


def goals(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal with its value and whether it is met (``None``: not run)."""
    out = []
    for name, op, target, path in GOAL_ROWS:
        v = goal_value(report, path)
        met = None if v is None or not math.isfinite(v) else (v >= target if op == "≥"
                                                              else v <= target)
        out.append({"goal": name, "target": f"{op} {target}", "value": v, "met": met})
    return out


def checkpoint_identity(spec: str) -> dict[str, Any]:
    """Name, path and sha256 of the checkpoint file (none for ``untrained``)."""
    from aspects_export.checkpoints import DEMO_SPEC, UNTRAINED_SPEC, demo_weights_path

    if spec == UNTRAINED_SPEC:
        return {"spec": spec, "name": "untrained", "sha256": None}
    path = demo_weights_path() if spec == DEMO_SPEC else Path(spec).resolve()
    shown = path.relative_to(harness.ROOT) if path.is_relative_to(harness.ROOT) else path
    return {"spec": spec, "name": path.name, "path": str(shown), "sha256": harness.sha256_of(path)}


def _clean(value: Any) -> Any:
    """JSON-ready: floats rounded to 4 decimals, NaN/inf → null."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return round(float(value), 4) if math.isfinite(value) else None
    return int(value) if isinstance(value, np.integer) else value


def _x(values: list) -> str:
    return "×".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def _head(r: dict[str, Any]) -> list[str]:
    """Title, checkpoint, method and the goals table."""
    ck, v, states = r["checkpoint"], r["versions"], {True: "met", False: "**missed**"}
    return [
        "# Accuracy per ASPECTS region and hemisphere", "",
        f"Produced by `benchmarks/accuracy.py` on {r['date']} ({v['cpu']}, torch {v['torch']}, "
        f"SimpleITK {v['SimpleITK']}), in-process PyTorch on the CPU with the contract's NumPy "
        f"pre/postprocessing; {r['seconds']['total']:.0f} s in all.",
        f"Checkpoint: `{ck['name']}` (sha256 `{ck['sha256']}`) — {ck['note']}.", "",
        "Dice pools voxel counts over the volumes of a dataset, in each file's original voxel "
        "order, each voxel weighted by its volume (so every head counts by its size, not by "
        "its matrix); *mean of volumes* is the plain mean of each volume's own mean. "
        "*Region × side*: a voxel counts for a region only on the right side — the "
        "network's side is the client's mid-sagittal plane, the truth's side the atlas's. "
        "Means are over the 20 region × side (or 10 region) Dice values.", "", "## Goals", "",
        *md_table(["goal", "value", "target", ""], [
            [g["goal"].replace("|", "\\|"), fmt(g["value"]), g["target"],
             states.get(g["met"], "not run")] for g in r["goals"]], "lrrl")]


def _dice(r: dict[str, Any], real: dict[str, Any]) -> list[str]:
    """Dice per region and side: one column per dataset and real-image comparison."""
    columns = [(n, r[k]["all"]) for n, k in (("domain-randomised", "phantoms"), ("b1000", "b1000"))
               if k in r]
    if real:
        columns += [("aniso_vox net vs reg", real["aniso_vox"]["network_vs_registration"]),
                    ("T1 head net vs exact", real["t1_head"]["network_vs_exact"]),
                    ("T1 head reg vs exact", real["t1_head"]["registration_vs_exact"])]
    rows = [[f"{reg.key} ({reg.name})", side, *(fmt(s["region_side"][reg.key][side])
                                                for _, s in columns)]
            for reg in contract.REGIONS for side in contract.HEMISPHERES]
    rows += [["**mean, region × side**", "",
              *(f"**{fmt(s['mean_region_side'])}**" for _, s in columns)],
             ["mean, regions (sides pooled)", "", *(fmt(s["mean_region"]) for _, s in columns)],
             ["mean of volumes (region × side)", "",
              *(fmt(s["mean_of_volumes"]) for _, s in columns)]]
    return ["", "## Dice per region and hemisphere", "", *md_table(
        ["region", "side", *(n for n, _ in columns)], rows, "ll" + "r" * len(columns))]


def _phantoms(p: dict[str, Any]) -> list[str]:
    """Per contrast family, and every volume, of the domain-randomised phantoms."""
    keys = contract.REGION_KEYS
    return ["", "## Domain-randomised phantoms per contrast family", "",
            *md_table(["contrast", "volumes", "mean (region × side)", *keys], [
                [name, s["volumes"], fmt(s["mean_region_side"]),
                 *(fmt(s["region"][k]) for k in keys)]
                for name, s in p["by_contrast"].items()], "lrr" + "r" * len(keys)),
            "", "Volumes (held-out seeds ≥ 100000; render + segment seconds):", "",
            *md_table(["seed", "contrast", "stored", "oblique", "shape", "voxel mm",
                       "mean Dice", "plane", "s"], [
                [v["seed"], v["contrast"], v["voxel_order"], f"{v['oblique_deg']:g}°",
                 _x(v["shape"]), _x(v["voxel_mm"]), fmt(v["mean_dice"]), v["plane"],
                 f"{v['render_s'] + v['segment_s']:.0f}"] for v in p["volumes"]], "lllrllrlr")]


def _b1000(b: dict[str, Any]) -> list[str]:
    return ["", "b1000 phantoms:", "", *md_table(
        ["seed", "stored", "shape", "lesions", "mean Dice"],
        [[v["seed"], v["voxel_order"], _x(v["shape"]),
          ", ".join("-".join(x) for x in v["lesions"]) or "none", fmt(v["mean_dice"])]
         for v in b["volumes"]], "llllr")]


def _real(real: dict[str, Any]) -> list[str]:
    """The real images: files, registration and the asymmetry of every labelling."""
    a, t = real["aniso_vox"], real["t1_head"]
    sources = [(f"{name} {who}", case["asymmetry"][who])
               for name, case, whos in (("aniso_vox", a, ("network", "registration")),
                                        ("T1", t, ("network", "registration", "exact")))
               for who in whos]
    metric = " → ".join(f"{k} {v:.3f}" for k, v in a["registration"]["metric"].items())
    return [
        "", "## Real images", "",
        f"- aniso_vox: {a['file']}, {_x(a['shape'])} voxels of {_x(a['voxel_mm'])} mm stored "
        f"{a['voxel_order']}; registration {a['registration']['wall_s']} s (Mattes MI {metric}).",
        f"- T1 head: {t['file']}, {_x(t['shape'])} voxels stored {t['voxel_order']}; "
        f"registration {t['registration']['wall_s']} s. Reference check — registration vs "
        f"exact labels: **{fmt(t['registration_vs_exact']['mean_region_side'])}**; network "
        f"vs registration: {fmt(t['network_vs_registration']['mean_region_side'])}.",
        "", "Left/right asymmetry |Vr − Vl| / max(Vr, Vl) per region "
        f"(goal for the network ≤ {MAX_ASYMMETRY:.0%}):", "",
        *md_table(["region", *(n for n, _ in sources)],
                  [[k, *(fmt(s[k]["asymmetry"], ".0%") for _, s in sources)]
                   for k in contract.REGION_KEYS], "l" + "r" * len(sources))]


def render_markdown(r: dict[str, Any]) -> list[str]:
    """The report as Markdown tables (figures are in the JSON too)."""
    real = r.get("real") or {}
    lines = [*_head(r), *_dice(r, real), *(_phantoms(r["phantoms"]) if "phantoms" in r else []),
             *(_b1000(r["b1000"]) if "b1000" in r else []), *(_real(real) if real else [])]
    figures = [*r.get("phantoms", {}).get("overlays", []), *r.get("b1000", {}).get("overlays", []),
               *(real[k]["overlay"] for k in ("aniso_vox", "t1_head") if k in real)]
    return [*lines, "", "Overlays (radiological view; bright = patient right, dark = patient "
            "left): " + ", ".join(f"`{f}`" for f in figures) + "."]


def measure(args: Any) -> dict[str, Any]:
    """Every dataset asked for, timed, with the checkpoint, versions and goals."""
    from aspects_export.checkpoints import load_model

    began = time.perf_counter()
    model, note = load_model(args.checkpoint)
    harness.log(f"checkpoint: {note}")
    report: dict[str, Any] = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "checkpoint": {**checkpoint_identity(args.checkpoint), "note": note},
        # the network ran in PyTorch here: no unet.onnx measured
        "provenance": harness.provenance(harness.network_of(args.checkpoint)),
        "arguments": {"phantoms": args.phantoms, "b1000": args.b1000, "real": not args.no_real,
                      "context": CONTEXT},
        "versions": {"python": platform.python_version(), "cpu": harness.cpu_model(),
                     **harness.package_versions(VERSIONS)}}
    runs = [("phantoms", args.phantoms, lambda: run_dataset(
                model, phantom_cases(args.phantoms), args.out, True)),
            ("b1000", args.b1000, lambda: run_dataset(
                model, b1000_cases(args.b1000), args.out, False)),
            ("real", 0 if args.no_real else 1, lambda: run_real(model, args.out))]
    seconds = {}
    for key, count, run in runs:
        if count > 0:
            t = time.perf_counter()
            report[key] = run()
            seconds[key] = round(time.perf_counter() - t, 1)
    report["goals"] = goals(report)
    report["seconds"] = {**seconds, "total": round(time.perf_counter() - began, 1)}
    return report


def main(argv: list[str] | None = None) -> int:
    parser = harness.cli(__doc__, options=OPTIONS)
    parser.add_argument("-o", "--out", "--output", dest="out", type=Path, default=harness.RESULTS,
                        help="directory for accuracy[_no_context].{json,md} and the overlays")
    args = parser.parse_args(argv)
    global CONTEXT
    CONTEXT = not args.no_context
    stem = args.out / ("accuracy" if CONTEXT else "accuracy_no_context")
    if args.report_only:
        harness.write_markdown(stem.with_suffix(".md"),
                               render_markdown(json.loads(stem.with_suffix(".json").read_text())))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    report = measure(args)
    harness.write_json(stem.with_suffix(".json"), _clean(report))
    harness.write_markdown(stem.with_suffix(".md"), render_markdown(report), echo=False)
    for g in report["goals"]:
        state = {True: "met", False: "MISSED", None: "not run"}[g["met"]]
        value = "–" if g["value"] is None else f"{g['value']:.3f}"
        print(f"{state:8} {g['goal']}: {value} (goal {g['target']})")
    harness.log(f"wrote {stem.with_suffix('.md')} in {report['seconds']['total']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
