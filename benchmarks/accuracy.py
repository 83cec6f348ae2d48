"""Accuracy of the 2.5D network per ASPECTS region and hemisphere, in-process on the CPU
(issues 7, 11; method in benchmarks/README.md): each volume the client's way (``load_volume``
→ ``prepare`` → 2.5D stacks → the checkpoint's network → ``postprocess`` → original voxel
order, sides from the client's mid-sagittal plane), Dice from ``aspects_export.dice`` on
held-out domain-randomised phantoms, b1000 phantoms and real images against an
atlas-registration reference (``registration.py``), plus left/right asymmetry.  Writes
``accuracy.{json,md}`` (``accuracy_no_context.*`` with ``--no-context``) and overlays.

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
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import harness
import nibabel as nib
import numpy as np
from harness import md_table

from aspects_client import contract

DIPY_VERSION = "1.12.1"
DIPY_MEMBER = "dipy/data/files/aniso_vox.nii.gz"
DIPY_FILE_SHA256 = "8440b6366d3dbd58d8f5af3ef6764dbd65e35b1061abe7bf4dc8fac32fb7aff7"
OBLIQUE_DEG = (0.0, 15.0, 0.0, -20.0)  # cycled over the domain-randomised volumes
T1_VOXEL_MM = (1.5, 1.5, 5.0)
T1_SHAPE = (160, 160, 30)
T1_TILT_DEG = 18.0  # grid pitch (about x) in the affine
T1_POSE_DEG = (0.0, 3.0, -4.0)  # head pose in the world: rotation about x, y, z ...
T1_SHIFT_MM = (4.0, -6.0, 10.0)  # ... and translation
T1_ORDER = "LPS"
GOALS = {"phantoms": 0.88, "b1000": 0.85, "aniso_vox": 0.75, "t1_head": 0.80}
MAX_ASYMMETRY = 0.15
OVERLAY_SLICES = 4


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
    sides: np.ndarray = field(
        default_factory=lambda: np.zeros((3, 1 + 2 * len(contract.REGIONS))))
    per_volume: list[float] = field(default_factory=list)

    def add(self, pred: Labels, truth: Labels, voxel_ml: float) -> float:
        """Add one volume; returns its own mean region × side Dice."""
        from aspects_export.dice import SIDE_CLASSES, class_counts, side_labels

        if pred.classes.shape != truth.classes.shape:
            raise ValueError(f"grids differ: {pred.classes.shape} vs {truth.classes.shape}")
        c = class_counts(pred.classes, truth.classes) * voxel_ml
        s = class_counts(side_labels(pred.classes, pred.hemispheres),
                         side_labels(truth.classes, truth.hemispheres), SIDE_CLASSES) * voxel_ml
        self.classes += c
        self.sides += s
        self.per_volume.append(summarise_counts(c, s)["mean_region_side"])
        return self.per_volume[-1]


def summarise_counts(classes: np.ndarray, sides: np.ndarray) -> dict[str, Any]:
    """Dice per region × side and per region (sides pooled), and their means (NaN ignored)."""
    from aspects_export.dice import region_dice, region_side_dice

    by_side, pooled = region_side_dice(sides), region_dice(classes)
    return {"region_side": by_side, "region": pooled,
            "mean_region_side": _nanmean([v for d in by_side.values() for v in d.values()]),
            "mean_region": _nanmean(list(pooled.values()))}


def summarise(tally: Tally) -> dict[str, Any]:
    """``summarise_counts`` of a tally, with its volume count and the mean of the volumes'
    own means (every volume weighted equally)."""
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
        right = int((mask & (labels.hemispheres == codes["r"])).sum()) * voxel_ml
        left = int((mask & (labels.hemispheres == codes["l"])).sum()) * voxel_ml
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


# Ablation switch (--no-context): feed every channel the slice itself (2D input), to measure
# how much the 2.5D network uses its neighbours.  Not a 2D-trained network.
CONTEXT = True


def predict_display(model: Any, slices: np.ndarray, batch: int = 8) -> np.ndarray:
    """uint8 display slices [N, H, W] → contract labels [N, H, W] (2.5D stacks, in-process)."""
    import torch

    from aspects_client.server_reference import context_stacks, network_input, postprocess

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
    from aspects_client.display_stack import prepare
    from aspects_client.geometry import from_display
    from aspects_client.hemisphere import estimate_plane, hemisphere_map
    from aspects_client.volume_io import load_volume

    began = time.perf_counter()
    prepared = prepare(load_volume(source))
    display = predict_display(model, prepared.slices)
    plane = estimate_plane(display, prepared.geometry)
    sides = hemisphere_map(display, prepared.geometry, plane)
    labels = Labels(np.asarray(from_display(display, prepared.geometry), np.uint8),
                    np.asarray(from_display(sides, prepared.geometry), np.uint8))
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
    from aspects_synth import Phantom, load_atlas, reorder
    from aspects_synth.phantom import euler_rotation, grid_affine, sample_linear, sample_nearest

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

    from aspects_client.geometry import to_display

    g = seg.prepared.geometry
    shown = [(name, to_display(lab.classes, g), to_display(lab.hemispheres, g))
             for name, lab in rows]
    labelled = np.flatnonzero(shown[-1][1].reshape(len(shown[-1][1]), -1).any(axis=1))
    if labelled.size == 0:
        labelled = np.arange(len(seg.prepared.slices))
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
            grey = seg.prepared.slices[n].astype(np.float32)[..., None].repeat(3, -1) / 255.0
            left = hemis[n] == contract.HEMISPHERE_CODES[contract.HEMISPHERE_LEFT]
            tint = colours[classes[n]] * np.where(left, 0.45, 1.0)[..., None]
            alpha = np.where(classes[n] > 0, 0.55, 0.0)[..., None]
            ax = axes[r, c]
            ax.imshow((grey * (1 - alpha) + tint * alpha)[:, ::-1],  # radiological
                      aspect=row_mm / col_mm, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.text(0.02, 0.5, "R", color="w", transform=ax.transAxes, fontsize=8)
            ax.text(0.94, 0.5, "L", color="w", transform=ax.transAxes, fontsize=8)
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
def scored(model: Any, ph: Any, tally: Tally, render_s: float) -> tuple[Segmentation, Labels,
                                                                        dict[str, Any]]:
    """Segment a phantom, add it to ``tally``; (segmentation, truth, its row's common part)."""
    seg = segment(model, ph.image.to_bytes())
    truth = Labels(ph.classes, ph.hemispheres)
    dice = tally.add(seg.labels, truth, voxel_ml(ph.image))
    return seg, truth, {**describe(ph.image), "mean_dice": dice, "plane": seg.plane_method,
                        "render_s": round(render_s, 1), "segment_s": round(seg.seconds, 1)}


def run_phantoms(model: Any, n: int, out: Path) -> dict[str, Any]:
    """Held-out domain-randomised phantoms, every voxel order, some oblique; per contrast."""
    from aspects_synth import VOXEL_ORDERS, reorder
    from aspects_synth.generator import render_volume

    total, families, rows, figures = Tally(), {}, [], []
    for i, (seed, contrast) in enumerate(domain_randomised_seeds(n)):
        order, oblique = VOXEL_ORDERS[i % len(VOXEL_ORDERS)], OBLIQUE_DEG[i % len(OBLIQUE_DEG)]
        t = time.perf_counter()
        ph = reorder(render_volume(seed, oblique_deg=oblique), order)
        seg, truth, common = scored(model, ph, total, time.perf_counter() - t)
        families.setdefault(contrast, Tally()).add(seg.labels, truth, voxel_ml(ph.image))
        row = {"seed": seed, "contrast": contrast, "oblique_deg": oblique, **common}
        if contrast not in {r["contrast"] for r in rows}:
            row["overlay"] = overlay(out / f"accuracy_phantom_{seed}_{contrast}.png", seg,
                                     [("network", seg.labels), ("exact", truth)],
                                     f"domain-randomised phantom {seed} ({contrast}, stored "
                                     f"{order}, oblique {oblique:g}°): network vs exact labels")
            figures.append(row["overlay"])
        rows.append(row)
        harness.log(f"phantom {seed} {contrast} {order} {oblique:g}°: mean Dice "
                    f"{row['mean_dice']:.3f}")
    return {"all": summarise(total),
            "by_contrast": {k: summarise(v) for k, v in sorted(families.items())},
            "volumes": rows, "overlays": figures}


def run_b1000(model: Any, n: int, out: Path) -> dict[str, Any]:
    """Today's b1000 phantoms (``draw_recipe(seed).render()``) in varied voxel orders."""
    from aspects_synth import VOXEL_ORDERS, reorder
    from aspects_synth.recipes import BENCHMARK_SEED_START, draw_recipe

    total, rows, figures = Tally(), [], []
    for i in range(n):
        recipe = draw_recipe(BENCHMARK_SEED_START + i)
        order = VOXEL_ORDERS[(i + 3) % len(VOXEL_ORDERS)]
        t = time.perf_counter()
        ph = reorder(recipe.render(), order)
        seg, truth, common = scored(model, ph, total, time.perf_counter() - t)
        row = {"seed": recipe.seed, **common, "lesions": [list(x) for x in recipe.lesions]}
        if i == 0:
            row["overlay"] = overlay(out / f"accuracy_b1000_{recipe.seed}.png", seg,
                                     [("network", seg.labels), ("exact", truth)],
                                     f"b1000 phantom {recipe.seed} (stored {order}): "
                                     "network vs exact labels")
            figures.append(row["overlay"])
        rows.append(row)
        harness.log(f"b1000 {recipe.seed} {order}: mean Dice {row['mean_dice']:.3f}")
    return {"all": summarise(total), "volumes": rows, "overlays": figures}


def real_case(model: Any, out: Path, key: str, image: nib.Nifti1Image, source: Any,
              title: str, file: str, exact: Labels | None = None) -> dict[str, Any]:
    """Network vs the atlas registration on one real image (and both vs ``exact``)."""
    from registration import register_atlas

    seg = segment(model, source)
    t = time.perf_counter()
    ref = register_atlas(np.asarray(image.dataobj, np.float32), image.affine)
    reg, ml = Labels(ref.classes, ref.hemispheres), voxel_ml(image)
    labellings = [("network", seg.labels), ("registration", reg)]
    if exact is not None:
        labellings.append(("exact", exact))
    result = {"file": file, **describe(image)}
    if exact is not None:
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

    path = fetch_dipy_sample(cache_dir())
    t1 = oblique_t1_head()
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
def goals(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal with its value and whether it is met (``None``: not run)."""
    real = report.get("real") or {}

    def dice(section: dict[str, Any] | None, *keys: str) -> float | None:
        for key in keys:
            section = (section or {}).get(key)
        return None if section is None else float(section)

    worst = max((v["asymmetry"] for name in ("aniso_vox", "t1_head")
                 for v in real[name]["asymmetry"]["network"].values()
                 if math.isfinite(v["asymmetry"])), default=None) if real else None
    items = [
        ("held-out domain-randomised phantoms: mean Dice (region × side)", "≥", GOALS["phantoms"],
         dice(report.get("phantoms"), "all", "mean_region_side")),
        ("b1000 phantoms: mean Dice (region × side)", "≥", GOALS["b1000"],
         dice(report.get("b1000"), "all", "mean_region_side")),
        ("aniso_vox: agreement with registration, mean Dice (region × side)", "≥",
         GOALS["aniso_vox"], dice(real, "aniso_vox", "network_vs_registration",
                                  "mean_region_side")),
        ("oblique T1 head: mean Dice vs exact labels (region × side)", "≥", GOALS["t1_head"],
         dice(real, "t1_head", "network_vs_exact", "mean_region_side")),
        ("real images: largest region asymmetry |Vr−Vl|/max (network)", "≤", MAX_ASYMMETRY,
         worst),
    ]
    return [{"goal": name, "target": f"{op} {target}", "value": value,
             "met": None if value is None or not math.isfinite(value)
             else (value >= target if op == "≥" else value <= target)}
            for name, op, target, value in items]


def checkpoint_identity(spec: str) -> dict[str, Any]:
    """Name, path and sha256 of the checkpoint file (none for ``untrained``)."""
    from aspects_export.checkpoints import DEMO_SPEC, UNTRAINED_SPEC, demo_weights_path

    if spec == UNTRAINED_SPEC:
        return {"spec": spec, "name": "untrained", "sha256": None}
    path = demo_weights_path() if spec == DEMO_SPEC else Path(spec).resolve()
    shown = path.relative_to(harness.ROOT) if path.is_relative_to(harness.ROOT) else path
    return {"spec": spec, "name": path.name, "path": str(shown),
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def _clean(value: Any) -> Any:
    """JSON-ready: floats rounded to 4 decimals, NaN/inf → null."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return round(float(value), 4) if math.isfinite(value) else None
    return int(value) if isinstance(value, np.integer) else value


def _f(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.3f}"


def _pct(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.0%}"


def _x(values: list) -> str:
    return "×".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def render_markdown(r: dict[str, Any]) -> list[str]:
    """The report as Markdown tables (figures are in the JSON too)."""
    ck, real = r["checkpoint"], r.get("real") or {}
    states = {True: "met", False: "**missed**", None: "not run"}
    lines = [
        "# Accuracy per ASPECTS region and hemisphere", "",
        f"Produced by `benchmarks/accuracy.py` on {r['date']} ({r['versions']['cpu']}, "
        f"torch {r['versions']['torch']}, SimpleITK {r['versions']['SimpleITK']}), in-process "
        f"PyTorch on the CPU with the contract's NumPy pre/postprocessing; "
        f"{r['seconds']['total']:.0f} s in all.",
        f"Checkpoint: `{ck['name']}` (sha256 `{ck['sha256']}`) — {ck['note']}.", "",
        "Dice pools voxel counts over the volumes of a dataset, in each file's original voxel "
        "order, each voxel weighted by its volume (so every head counts by its size, not by "
        "its matrix); *mean of volumes* is the plain mean of each volume's own mean. "
        "*Region × side*: a voxel counts for a region only on the right side — the "
        "network's side is the client's mid-sagittal plane, the truth's side the atlas's. "
        "Means are over the 20 region × side (or 10 region) Dice values.", "",
        "## Goals", "",
        *md_table(["goal", "value", "target", ""], [
            [g["goal"].replace("|", "\\|"), _f(g["value"]), g["target"], states[g["met"]]]
            for g in r["goals"]], "lrrl"),
    ]
    columns = [(n, r[k]["all"]) for n, k in (("domain-randomised", "phantoms"), ("b1000", "b1000"))
               if k in r]
    if real:
        columns += [("aniso_vox net vs reg", real["aniso_vox"]["network_vs_registration"]),
                    ("T1 head net vs exact", real["t1_head"]["network_vs_exact"]),
                    ("T1 head reg vs exact", real["t1_head"]["registration_vs_exact"])]
    dice_rows = [[f"{reg.key} ({reg.name})", side,
                  *(_f(s["region_side"][reg.key][side]) for _, s in columns)]
                 for reg in contract.REGIONS for side in contract.HEMISPHERES]
    dice_rows += [["**mean, region × side**", "",
                   *(f"**{_f(s['mean_region_side'])}**" for _, s in columns)],
                  ["mean, regions (sides pooled)", "", *(_f(s["mean_region"]) for _, s in columns)],
                  ["mean of volumes (region × side)", "",
                   *(_f(s["mean_of_volumes"]) for _, s in columns)]]
    lines += ["", "## Dice per region and hemisphere", "",
              *md_table(["region", "side", *(n for n, _ in columns)], dice_rows,
                        "ll" + "r" * len(columns))]
    keys = contract.REGION_KEYS
    if "phantoms" in r:
        p = r["phantoms"]
        lines += ["", "## Domain-randomised phantoms per contrast family", "",
                  *md_table(["contrast", "volumes", "mean (region × side)", *keys], [
                      [name, s["volumes"], _f(s["mean_region_side"]),
                       *(_f(s["region"][k]) for k in keys)]
                      for name, s in p["by_contrast"].items()], "lrr" + "r" * len(keys)),
                  "", "Volumes (held-out seeds ≥ 100000; render + segment seconds):", "",
                  *md_table(["seed", "contrast", "stored", "oblique", "shape", "voxel mm",
                             "mean Dice", "plane", "s"], [
                      [v["seed"], v["contrast"], v["voxel_order"], f"{v['oblique_deg']:g}°",
                       _x(v["shape"]), _x(v["voxel_mm"]), _f(v["mean_dice"]), v["plane"],
                       f"{v['render_s'] + v['segment_s']:.0f}"] for v in p["volumes"]],
                      "lllrllrlr")]
    if "b1000" in r:
        lines += ["", "b1000 phantoms:", "", *md_table(
            ["seed", "stored", "shape", "lesions", "mean Dice"],
            [[v["seed"], v["voxel_order"], _x(v["shape"]),
              ", ".join("-".join(x) for x in v["lesions"]) or "none", _f(v["mean_dice"])]
             for v in r["b1000"]["volumes"]], "llllr")]
    if real:
        a, t = real["aniso_vox"], real["t1_head"]
        sources = [("aniso_vox network", a["asymmetry"]["network"]),
                   ("aniso_vox registration", a["asymmetry"]["registration"]),
                   ("T1 network", t["asymmetry"]["network"]),
                   ("T1 registration", t["asymmetry"]["registration"]),
                   ("T1 exact", t["asymmetry"]["exact"])]
        metric = " → ".join(f"{k} {v:.3f}" for k, v in a["registration"]["metric"].items())
        lines += [
            "", "## Real images", "",
            f"- aniso_vox: {a['file']}, {_x(a['shape'])} voxels of {_x(a['voxel_mm'])} mm stored "
            f"{a['voxel_order']}; registration {a['registration']['wall_s']} s (Mattes MI "
            f"{metric}).",
            f"- T1 head: {t['file']}, {_x(t['shape'])} voxels stored {t['voxel_order']}; "
            f"registration {t['registration']['wall_s']} s. Reference check — registration vs "
            f"exact labels: **{_f(t['registration_vs_exact']['mean_region_side'])}**; network "
            f"vs registration: {_f(t['network_vs_registration']['mean_region_side'])}.",
            "", "Left/right asymmetry |Vr − Vl| / max(Vr, Vl) per region "
            f"(goal for the network ≤ {MAX_ASYMMETRY:.0%}):", "",
            *md_table(["region", *(n for n, _ in sources)],
                      [[k, *(_pct(s[k]["asymmetry"]) for _, s in sources)] for k in keys],
                      "l" + "r" * len(sources))]
    figures = [*r.get("phantoms", {}).get("overlays", []), *r.get("b1000", {}).get("overlays", []),
               *(real[k]["overlay"] for k in ("aniso_vox", "t1_head") if k in real)]
    return [*lines, "", "Overlays (radiological view; bright = patient right, dark = patient "
            "left): " + ", ".join(f"`{f}`" for f in figures) + "."]


def main(argv: list[str] | None = None) -> int:
    parser = harness.cli(__doc__)
    parser.add_argument("--checkpoint", default="demo", help="demo | untrained | PATH")
    parser.add_argument("--phantoms", type=int, default=12, help="domain-randomised volumes")
    parser.add_argument("--b1000", type=int, default=4, help="b1000 phantom volumes")
    parser.add_argument("--no-real", action="store_true", help="skip the real images")
    parser.add_argument("-o", "--out", "--output", dest="out", type=Path, default=harness.RESULTS,
                        help="directory for accuracy[_no_context].{json,md} and the overlays")
    parser.add_argument("--no-context", action="store_true",
                        help="ablation: the slice itself in all 3 channels instead of its "
                        "neighbours (-> accuracy_no_context.{json,md})")
    parser.add_argument("--report-only", action="store_true",
                        help="re-render the .md from the .json in --out; no run")
    args = parser.parse_args(argv)
    global CONTEXT
    CONTEXT = not args.no_context
    stem = args.out / ("accuracy" if CONTEXT else "accuracy_no_context")
    if args.report_only:
        harness.write_markdown(stem.with_suffix(".md"),
                               render_markdown(json.loads(stem.with_suffix(".json").read_text())))
        return 0
    from aspects_export.checkpoints import load_model

    began = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
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
                     **harness.package_versions((
                         "torch", "segmentation-models-pytorch", "numpy", "nibabel",
                         "opencv-python-headless", "SimpleITK", "matplotlib"))},
    }
    seconds = {}
    runs = [("phantoms", args.phantoms, run_phantoms), ("b1000", args.b1000, run_b1000),
            ("real", 0 if args.no_real else 1, lambda m, _n, out: run_real(m, out))]
    for key, count, run in runs:
        if count > 0:
            t = time.perf_counter()
            report[key] = run(model, count, args.out)
            seconds[key] = round(time.perf_counter() - t, 1)
    report["goals"] = goals(report)
    report["seconds"] = {**seconds, "total": round(time.perf_counter() - began, 1)}
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
