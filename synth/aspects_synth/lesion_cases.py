"""Known-answer stroke cases for the ASPECTS score: a b1000 DWI and an ADC map of one
domain-randomised head with lesion blobs in arterial territories, and the exact truth.

A case is drawn per seed (:func:`render_lesion_case`).  The head is the generator's
(:func:`aspects_synth.generator.draw_head`: pose, scale, shear, smooth deformation, ventricle
enlargement, atrophy, EPI distortion, dropout, bias, noise), never mirrored, with its
contrast fixed to b1000; the lesions are this module's: 0–4 blobs (rotated, wobbly
ellipsoids, radii 5–30 mm × 0.65–1 per axis) inside JHU arterial territories, most of them
centred on a boundary between two ASPECTS regions so that they cross it, clipped to their
artery's whole territory (MCA, ACA, PCA, anterior choroidal) or to the branch's, some on
the other hemisphere.

Everything goes through the head's one point map (:class:`aspects_synth.generator.Warp`:
world mm → MNI mm): the DWI and ADC intensities are sampled (trilinear, averaged across the
slice thickness) from tissue-intensity volumes on the 1 mm MNI grid, and the truth — ASPECTS
classes, hemispheres, lesion ids, tissue — is the MNI label at each DWI voxel centre
(nearest), exactly as the generator labels its images.  So ``lesion`` is "the blobs ∩ their
territories ∩ brain tissue" resolved at the voxel centre, the same way as ``classes``.

Units: the DWI is b1000 signal (cortical GM ≈ 1000 before bias and noise, lesions 1.5–3 ×
GM); the ADC is in ``contract.ADC_UNIT`` (1e-6 mm²/s): cortical GM 780–880, deep GM
720–800, WM 710–800, CSF 2600–3200, lesion core 350–550 (below
``contract.ADC_CORE_THRESHOLD``), head tissue 0–400, air 0, mild Gaussian noise.

Seeds: scoring benchmarks draw from ``SCORE_SEED_START`` upwards, a range held out from
training (1000…), validation (9000…) and the segmentation benchmark (100000…).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform

from aspects_client import contract

from .generator import (
    HeadParams,
    Warp,
    bias_field,
    device_maps,
    draw_head,
    draw_intensities,
    pose_matrix,
    sample_volume,
    through_slice_offsets,
)
from .head_labels import BRAIN_TISSUES, HEAD_TISSUES, LESION_TERRITORIES, LabelMaps, T
from .head_labels import load_label_maps as _load_maps
from .phantom import Phantom, euler_rotation, grid_affine
from .voxel_order import VOXEL_ORDERS, parse_axcodes

# Held-out seeds of the scoring benchmark (disjoint from recipes.TRAIN/VAL/BENCHMARK ranges).
SCORE_SEED_START = 200_000
CASE_VERSION = "v1"

# Number of lesion blobs when not given: seeds divisible by LESION_FREE_EVERY are
# lesion-free (exactly 20 % of any run of consecutive seeds), the others draw 1–4 blobs.
LESION_FREE_EVERY = 5
LESION_COUNT_WEIGHTS: dict[int, float] = {1: 0.44, 2: 0.31, 3: 0.15, 4: 0.10}
LESION_RADIUS_MM = (5.0, 30.0)  # uniform base radius; each axis × LESION_AXIS_FACTOR
LESION_AXIS_FACTOR = (0.65, 1.0)
BOUNDARY_CENTRE_P = 0.85  # a blob is centred within BOUNDARY_MM of >= 2 ASPECTS regions
BOUNDARY_MM = 3
FAMILY_P = 0.65  # a blob is clipped to its artery's whole territory (else its branch's)
CONTRALATERAL_P = 0.3  # a further blob lies on the other hemisphere
# JHU level-1 territories (without the side letter) grouped by artery.
FAMILIES: tuple[tuple[str, ...], ...] = (
    ("MCAF", "MCAP", "MCAT", "MCAI", "MCAO", "LLS"),
    ("ACA", "MLS"),
    ("PCAT", "PCAO", "PCTP"),
    ("ACTP",),
)
DWI_LESION_RATIO_RANGE = (1.5, 3.0)  # lesion b1000 signal / cortical GM signal
DWI_SCALE = 1000.0  # stored DWI = relative signal × this (as generator.render_volume)

# ADC per tissue (contract.ADC_UNIT), uniform ranges.
ADC_RANGES: dict[str, tuple[float, float]] = {
    "csf": (2600.0, 3200.0),
    "cortical_gm": (780.0, 880.0),
    "deep_gm": (720.0, 800.0),
    "wm": (710.0, 800.0),
    "head": (0.0, 400.0),
    "lesion": (350.0, 550.0),
}
ADC_NOISE_RANGE = (10.0, 30.0)  # Gaussian sigma, contract.ADC_UNIT
ADC_GRIDS = ("same", "other")
CHUNK_POINTS = 1_500_000  # sample points per rendering chunk (memory bound)


@dataclass(frozen=True)
class LesionBlob:
    """One lesion blob on the MNI grid (all mm / MNI RAS).

    ``side``: patient hemisphere key (``contract.HEMISPHERES``); ``territories``: the JHU
    territory names it is clipped to; ``centre_mm``, ``radii_mm``, ``rotation`` (3×3, blob
    axes as columns), ``wobble`` (relative amplitude of the surface ripple);
    ``on_boundary``: centred within ``BOUNDARY_MM`` of two ASPECTS regions; ``dwi_ratio``:
    b1000 signal / cortical GM; ``adc``: its ADC (``contract.ADC_UNIT``); ``mni_ml``: its
    volume on the 1 mm MNI grid (mL, after the territory and brain clip and after the
    blobs drawn later took their overlap).
    """

    side: str
    territories: tuple[str, ...]
    centre_mm: tuple[float, float, float]
    radii_mm: tuple[float, float, float]
    rotation: tuple[tuple[float, float, float], ...]
    wobble: float
    ripples: tuple[tuple[float, float, float, float], ...]  # (kx, ky, kz, phase) in blob units
    on_boundary: bool
    dwi_ratio: float
    adc: float
    mni_ml: float = 0.0


@dataclass(frozen=True)
class CaseParams:
    """Everything drawn for one case (for reports and reproduction)."""

    seed: int
    head: HeadParams  # the generator's head: contrast "b1000", flip False, lesions ()
    lesions: tuple[LesionBlob, ...]
    dwi_axcodes: str
    dwi_rotation_deg: tuple[float, float, float]  # acquisition tilt about the grid centre
    dwi_voxel_mm: tuple[float, float, float]  # (px, px, slice spacing), acquisition order
    dwi_thickness_mm: float
    dwi_noise: float  # Rician sigma relative to cortical GM
    adc_grid: str  # "same" or "other"
    adc_axcodes: str
    adc_rotation_deg: tuple[float, float, float]
    adc_voxel_mm: tuple[float, float, float]  # acquisition order (slice axis last)
    adc_thickness_mm: float
    adc_tissue: tuple[float, ...]  # ADC per generator tissue code (contract.ADC_UNIT)
    adc_noise: float  # Gaussian sigma (contract.ADC_UNIT)
    version: str = CASE_VERSION


@dataclass(frozen=True)
class LesionCase:
    """A DWI + ADC pair with its exact truth; every array is in the DWI's voxel order.

    ``dwi``: float32 Nifti1Image, b1000 trace (affine voxel → world RAS mm).
    ``adc``: float32 Nifti1Image, ADC in ``contract.ADC_UNIT``; on the DWI's grid
    (``params.adc_grid == "same"``: same shape and affine) or on its own grid ("other").
    ``classes``: uint8, contract class 0..10 at each DWI voxel centre.
    ``hemispheres``: uint8, 0 or ``contract.HEMISPHERE_CODES`` (patient side).
    ``lesion``: bool, lesion blobs ∩ territories ∩ brain tissue at each DWI voxel centre.
    ``lesion_ids``: uint8, 0 or the 1-based index into ``params.lesions`` of that voxel's blob.
    ``tissue``: uint8, the generator's tissue code (``head_labels.TISSUES``, after atrophy,
    under the lesion) at each DWI voxel centre; ``brain`` (property): cortical GM, deep GM
    or WM there.
    ``lesion_count``: the number of blobs drawn (some may fall outside the slab).
    """

    dwi: nib.Nifti1Image
    adc: nib.Nifti1Image
    classes: np.ndarray
    hemispheres: np.ndarray
    lesion: np.ndarray
    lesion_ids: np.ndarray
    tissue: np.ndarray
    lesion_count: int
    seed: int
    params: CaseParams
    world_from_mni: np.ndarray  # the head's linear pose (the nonlinear part aside)

    @property
    def brain(self) -> np.ndarray:
        """bool, DWI voxel order: brain tissue (cortical GM, deep GM, WM) at the centre."""
        return np.isin(self.tissue, BRAIN_TISSUES)

    @property
    def voxel_ml(self) -> float:
        """Volume of one DWI voxel in mL."""
        return voxel_ml(self.dwi)

    @property
    def visible_lesions(self) -> int:
        """How many blobs have at least one voxel on the DWI grid."""
        return len(set(np.unique(self.lesion_ids).tolist()) - {0})

    def lesion_voxels_by_region(self) -> dict[tuple[str, str], int]:
        """Lesion voxel counts per (region key, hemisphere key) touched (no threshold)."""
        out: dict[tuple[str, str], int] = {}
        codes = self.classes[self.lesion].astype(np.int32) * 4 + self.hemispheres[self.lesion]
        for code, n in zip(*np.unique(codes, return_counts=True), strict=True):
            cls, hemi = divmod(int(code), 4)
            if cls and hemi:
                side = next(k for k, v in contract.HEMISPHERE_CODES.items() if v == hemi)
                out[(contract.REGION_BY_INDEX[cls].key, side)] = int(n)
        return dict(sorted(out.items()))

    def as_phantom(self) -> Phantom:
        """The DWI and its classes as an ``aspects_synth.Phantom`` (tissue as FAST codes:
        1 CSF, 2 GM, 3 WM, 0 else) — e.g. for ``aspects_synth.reorder``."""
        fast = np.zeros(256, np.uint8)
        fast[[T["csf"], T["ventricle"]]] = 1
        fast[[T["cortical_gm"], T["deep_gm"]]] = 2
        fast[T["wm"]] = 3
        return Phantom(self.dwi, self.classes, self.hemispheres, self.seed, fast[self.tissue],
                       self.world_from_mni)


def voxel_ml(image: nib.Nifti1Image) -> float:
    """Volume of one voxel of ``image`` in mL (|det| of the affine's 3×3, mm³ / 1000)."""
    return float(abs(np.linalg.det(np.asarray(image.affine, float)[:3, :3])) / 1000.0)


# --- static per-process tables -------------------------------------------------------------

_BOUNDARY: dict[int, np.ndarray] = {}


def boundary_voxels(maps: LabelMaps, mm: int = BOUNDARY_MM) -> np.ndarray:
    """bool [182, 218, 182]: voxels with at least two ASPECTS classes within ``mm`` (cube)."""
    if id(maps) in _BOUNDARY:
        return _BOUNDARY[id(maps)]
    classes = np.asarray(maps.classes)
    nz = np.argwhere(classes > 0)
    lo = np.maximum(nz.min(0) - mm, 0)
    hi = np.minimum(nz.max(0) + mm + 1, classes.shape)
    crop = torch.from_numpy(np.array(classes[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]))
    count = torch.zeros(crop.shape, dtype=torch.int16)
    k = 2 * mm + 1
    for region in contract.REGIONS:
        grown = (crop == region.index).float()[None, None]
        for kernel in ((k, 1, 1), (1, k, 1), (1, 1, k)):
            grown = F.max_pool3d(grown, kernel, stride=1, padding=tuple(n // 2 for n in kernel))
        count += (grown[0, 0] > 0).to(torch.int16)
    out = np.zeros(classes.shape, bool)
    out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = (count >= 2).numpy()
    out.setflags(write=False)
    _BOUNDARY[id(maps)] = out
    return out


# --- drawing a case -------------------------------------------------------------------------


def _t3(values) -> tuple[float, float, float]:
    a, b, c = (float(v) for v in values)
    return a, b, c


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _territory_value(maps: LabelMaps, base: str, side: str) -> int:
    return maps.territory_names.index(base + side.upper()) + 1


def draw_lesion_blobs(rng: np.random.Generator, maps: LabelMaps, count: int,
                      tissue: np.ndarray) -> tuple[LesionBlob, ...]:
    """``count`` blobs (before the clip's volume is known): territory, side, centre, shape,
    contrast.  ``tissue``: the head's tissue codes on the MNI grid (after atrophy)."""
    if count <= 0:
        return ()
    brain = np.isin(tissue, BRAIN_TISSUES)
    boundary = boundary_voxels(maps)
    main_side = contract.HEMISPHERES[int(rng.integers(2))]
    other = {"r": "l", "l": "r"}[main_side]
    names = list(LESION_TERRITORIES)
    weights = np.asarray([LESION_TERRITORIES[n] for n in names], float)
    out = []
    for i in range(count):
        side = main_side if i == 0 or rng.random() >= CONTRALATERAL_P else other
        base = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        value = _territory_value(maps, base, side)
        inside = (maps.territories == value) & brain
        want_boundary = rng.random() < BOUNDARY_CENTRE_P
        candidates = np.flatnonzero((inside & boundary) if want_boundary else inside)
        on_boundary = want_boundary and candidates.size > 0
        if candidates.size == 0:
            candidates = np.flatnonzero(inside)
        voxel = np.unravel_index(int(candidates[rng.integers(candidates.size)]), inside.shape)
        centre = maps.affine[:3, :3] @ np.asarray(voxel, float) + maps.affine[:3, 3]
        territories: tuple[str, ...] = (base + side.upper(),)
        if rng.random() < FAMILY_P:
            family = next(f for f in FAMILIES if base in f)
            territories = tuple(b + side.upper() for b in family)
        radii = rng.uniform(*LESION_RADIUS_MM) * rng.uniform(*LESION_AXIS_FACTOR, 3)
        rotation = _random_rotation(rng)
        wobble = float(rng.uniform(0.0, 0.3))
        ripples = []
        for _ in range(3):
            k = rng.standard_normal(3)
            k = k / np.linalg.norm(k) * rng.uniform(1.5, 3.5)
            ripples.append((*(float(v) for v in k), float(rng.uniform(0, 2 * math.pi))))
        out.append(LesionBlob(
            side=side,
            territories=territories,
            centre_mm=_t3(centre),
            radii_mm=_t3(radii),
            rotation=tuple(tuple(float(v) for v in row) for row in rotation),
            wobble=wobble,
            ripples=tuple(ripples),
            on_boundary=bool(on_boundary),
            dwi_ratio=float(rng.uniform(*DWI_LESION_RATIO_RANGE)),
            adc=float(rng.uniform(*ADC_RANGES["lesion"])),
        ))
    return tuple(out)


_RIPPLE_GAIN = math.sqrt(2.0 / 3.0)  # three ripples of this amplitude: unit variance
_RIPPLE_MAX = 3 * _RIPPLE_GAIN


def blob_ids(maps: LabelMaps, blobs: tuple[LesionBlob, ...], tissue: np.ndarray) -> np.ndarray:
    """uint8 [182, 218, 182]: 1-based blob index (a later blob wins an overlap) where the
    blob's wobbly ellipsoid ∩ its territories ∩ brain tissue (``tissue`` codes); else 0."""
    ids = np.zeros(tissue.shape, np.uint8)
    brain = np.isin(tissue, BRAIN_TISSUES)
    inv = np.linalg.inv(maps.affine)
    for n, b in enumerate(blobs, start=1):
        c = np.asarray(b.centre_mm)
        reach = max(b.radii_mm) * (1.0 + b.wobble * _RIPPLE_MAX) + 1.0
        corners = np.asarray([inv[:3, :3] @ (c + s * reach) + inv[:3, 3]
                              for s in (-1.0, 1.0)])
        lo = np.clip(np.floor(corners.min(0)).astype(int), 0, None)
        hi = np.minimum(np.ceil(corners.max(0)).astype(int) + 1, tissue.shape)
        if np.any(hi <= lo):
            continue
        box = tuple(slice(int(a), int(z)) for a, z in zip(lo, hi, strict=True))
        idx = np.stack(np.meshgrid(*(np.arange(s.start, s.stop) for s in box), indexing="ij"), -1)
        mm = idx @ maps.affine[:3, :3].T + maps.affine[:3, 3]
        u = ((mm - c) @ np.asarray(b.rotation)) / np.asarray(b.radii_mm)  # blob units
        ripple = sum(_RIPPLE_GAIN * np.sin(u @ np.asarray(r[:3]) + r[3]) for r in b.ripples)
        shape = np.sqrt((u * u).sum(-1)) <= 1.0 + b.wobble * ripple
        values = [maps.territory_names.index(t) + 1 for t in b.territories]
        inside = shape & np.isin(maps.territories[box], values) & brain[box]
        ids[box][inside] = n
    return ids


def _atrophied_tissue(maps: LabelMaps, head: HeadParams) -> np.ndarray:
    tissue = np.array(maps.tissue)
    if head.atrophy_voxels:
        thin = (tissue == T["cortical_gm"]) & (maps.csf_distance <= head.atrophy_voxels)
        tissue[thin] = T["csf"]
    return tissue


def _adc_lut(rng: np.random.Generator) -> np.ndarray:
    v = np.zeros(len(T))
    v[T["csf"]] = rng.uniform(*ADC_RANGES["csf"])
    v[T["ventricle"]] = v[T["csf"]] * rng.uniform(0.97, 1.03)
    for name in ("cortical_gm", "deep_gm", "wm"):
        v[T[name]] = rng.uniform(*ADC_RANGES[name])
    v[T["lesion"]] = np.mean(ADC_RANGES["lesion"])  # per blob in practice
    if rng.random() >= 0.3:  # else: the scanner masked everything outside the brain
        v[list(HEAD_TISSUES)] = rng.uniform(*ADC_RANGES["head"], len(HEAD_TISSUES))
    return v


def _intensity(lut: np.ndarray, tissue: torch.Tensor, ids: torch.Tensor,
               blob_values: list[float]) -> torch.Tensor:
    """Tissue values with per-blob lesion values, lightly blurred (as the generator)."""
    table = torch.tensor(lut, dtype=torch.float32, device=tissue.device)
    sharp = table[tissue.long()]
    if blob_values:
        lesion_table = torch.tensor([0.0, *blob_values], dtype=torch.float32,
                                    device=tissue.device)
        sharp = torch.where(ids > 0, lesion_table[ids.long()], sharp)
    blurred = F.avg_pool3d(sharp[None, None], 3, stride=1, padding=1)[0, 0]
    return blurred * 0.5 + sharp * 0.5


# --- rendering on any grid ----------------------------------------------------------------


def _slice_points(affine: np.ndarray, shape: tuple[int, int, int], ks: range,
                  offsets: torch.Tensor, device) -> torch.Tensor:
    """World mm [K, D, nx, ny, 3] of voxel centres of slices ``ks`` (third array axis),
    displaced by ``offsets`` [D] mm along the slice normal (partial volume)."""
    a = torch.tensor(affine, dtype=torch.float32, device=device)
    i = torch.arange(shape[0], dtype=torch.float32, device=device)[:, None, None]
    j = torch.arange(shape[1], dtype=torch.float32, device=device)[None, :, None]
    k = torch.tensor(list(ks), dtype=torch.float32, device=device)
    base = (a[:3, 0] * i + a[:3, 1] * j)[None] + (k[:, None, None, None] * a[:3, 2] + a[:3, 3])
    normal = a[:3, 2] / torch.linalg.norm(a[:3, 2])
    return base[:, None] + offsets[None, :, None, None, None] * normal


def _render(warp: Warp, head: HeadParams, volumes: torch.Tensor, dropout: list[bool],
            affine: np.ndarray, shape: tuple[int, int, int], thickness_mm: float,
            partial: int, labels: dict[str, torch.Tensor]):
    """Sample ``volumes`` [C, X, Y, Z] (MNI grid, trilinear, mean across the slice;
    susceptibility dropout where ``dropout[c]``) and ``labels`` (nearest, at the voxel
    centre) on the grid (``affine``, ``shape``; slices along the third axis).

    Returns (float32 [C, *shape], {name: uint8 [*shape]}, the bias field float32 [*shape]
    at each voxel's mean sample point)."""
    device = volumes.device
    offsets = through_slice_offsets(thickness_mm, device, partial)
    centre = torch.zeros(1, device=device)
    per_slice = shape[0] * shape[1] * (len(offsets) + 1)
    step = max(1, CHUNK_POINTS // per_slice)
    images = np.zeros((volumes.shape[0], *shape), np.float32)
    out = {name: np.zeros(shape, np.uint8) for name in labels}
    bias = np.ones(shape, np.float32)
    drop = torch.tensor(dropout[: volumes.shape[0]], device=device)
    for start in range(0, shape[2], step):
        ks = range(start, min(start + step, shape[2]))
        pts = _slice_points(affine, shape, ks, offsets, device)
        mni, blob = warp.to_mni(pts)
        vox = warp.to_voxels(mni)
        grid = (2 * vox / (torch.tensor(volumes.shape[1:], dtype=torch.float32, device=device)
                           - 1) - 1).flip(-1)
        values = F.grid_sample(volumes[None], grid.reshape(1, 1, 1, -1, 3), mode="bilinear",
                               align_corners=True).reshape(volumes.shape[0], *vox.shape[:-1])
        loss = 1.0 - head.dropout * blob
        values = torch.where(drop[:, None, None, None, None], values * loss, values)
        images[..., ks.start:ks.stop] = values.mean(dim=2).permute(0, 2, 3, 1).cpu().numpy()
        cpts = _slice_points(affine, shape, ks, centre, device)[:, 0]
        cvox = warp.to_voxels(warp.to_mni(cpts)[0])
        for name, volume in labels.items():
            lab = sample_volume(volume, cvox, "nearest").to(torch.uint8)
            out[name][..., ks.start:ks.stop] = lab.permute(1, 2, 0).cpu().numpy()
        bias[..., ks.start:ks.stop] = (
            bias_field(head, pts.mean(dim=1)).permute(1, 2, 0).cpu().numpy()
        )
    return images, out, bias


def _covering_grid(affine: np.ndarray, brain: np.ndarray, voxel_mm, rotation_deg,
                   fov_mm: float, margin_mm: np.ndarray, jitter_mm: np.ndarray):
    """(shape, affine) of a grid tilted by ``rotation_deg`` with ``voxel_mm`` voxels that
    holds every ``brain`` voxel centre of the grid ``affine`` with ``margin_mm`` to spare
    (in-plane at least ``fov_mm``, the surplus shifting the centre by up to ``jitter_mm``)."""
    rot = euler_rotation(rotation_deg)
    world = affine[:3, :3] @ np.argwhere(brain).T.astype(float) + affine[:3, 3:4]
    if world.shape[1] == 0:  # no brain in the slab: cover the slab itself
        corners = np.stack(np.meshgrid(*([0, n - 1] for n in brain.shape), indexing="ij"), -1)
        world = affine[:3, :3] @ corners.reshape(-1, 3).T.astype(float) + affine[:3, 3:4]
    frame = rot.T @ world  # coordinates along the new grid's axes
    lo, hi = frame.min(1) - margin_mm, frame.max(1) + margin_mm
    extent = hi - lo
    voxel = np.asarray(voxel_mm, float)
    wanted = extent.copy()
    wanted[:2] = np.maximum(wanted[:2], fov_mm)
    shape = np.ceil(wanted / voxel).astype(int) + 1
    slack = shape * voxel - extent  # >= 0: room to move the centre
    centre = (lo + hi) / 2 + np.clip(jitter_mm, -slack / 2, slack / 2)
    shape_t = tuple(int(n) for n in shape)
    return shape_t, grid_affine(shape_t, tuple(voxel), rot @ centre, rotation_deg)


def _reorder(affine: np.ndarray, shape, axcodes: str):
    """(function that re-lays an array, new affine) for storing a grid in ``axcodes``."""
    transform = ornt_transform(nib.io_orientation(affine), axcodes2ornt(parse_axcodes(axcodes)))
    new_affine = affine @ inv_ornt_aff(transform, shape)

    def arrange(array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(apply_orientation(array, transform))

    return arrange, new_affine


def _nifti(array: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    img = nib.Nifti1Image(array.astype(np.float32), affine)
    img.set_data_dtype(np.float32)
    img.header.set_xyzt_units("mm", "sec")
    return img


def render_lesion_case(
    seed: int,
    *,
    n_lesions: int | None = None,
    matrix: int = 256,
    slices: int | None = None,
    slice_mm: float | None = None,
    adc_grid: str = "same",
    voxel_order: str | None = None,
    oblique_deg: float | None = None,
    partial: int = 5,
    device: str | torch.device = "cpu",
    maps: LabelMaps | None = None,
) -> LesionCase:
    """The known-answer stroke case of ``seed`` (same seed and arguments → same arrays).

    ``n_lesions``: blobs to draw (None: 0 when ``seed`` is divisible by
    ``LESION_FREE_EVERY``, else 1–4 drawn).  ``matrix``:
    DWI in-plane size (FOV 200–250 mm drawn).  ``slices`` / ``slice_mm``: DWI slice count
    and thickness (None: thickness 3–6 mm, spacing up to 1.2 × thickness, slices covering
    about 135 mm around the basal ganglia, 16–45).  ``adc_grid``: "same" (the ADC on the
    DWI's grid) or "other" (its own grid: ~2 mm isotropic or ~1.8 × 1.8 × 5 mm, its own
    FOV, tilt, centre and voxel order, covering the brain).  ``voxel_order``: storage
    order of the DWI (axcodes such as "LPS"; None: drawn from ``VOXEL_ORDERS``).
    ``oblique_deg``: DWI acquisition tilt about the world x axis (None: drawn, 0 in half
    the cases, else up to ±15° plus up to ±5° about y).  ``partial``: at most this many
    samples across a slice.
    """
    if adc_grid not in ADC_GRIDS:
        raise ValueError(f"adc_grid must be one of {ADC_GRIDS}, got {adc_grid!r}")
    if n_lesions is not None and not 0 <= n_lesions <= 255:
        raise ValueError(f"n_lesions must be in 0..255, got {n_lesions}")
    maps = maps or _load_maps()
    device = torch.device(device)

    def stream(part: int) -> np.random.Generator:
        # one stream per part: an argument that overrides one part leaves the others alone
        # (n_lesions=0 gives the same head, contrast and grids without the blobs)
        return np.random.default_rng([int(seed), 41, part])

    # the head: the generator's, as b1000, never mirrored, lesions are ours
    rng = stream(0)
    dwi_lut = np.asarray(draw_intensities(rng, "b1000"), float)
    head = replace(draw_head(seed, maps), contrast="b1000", intensities=tuple(dwi_lut.tolist()),
                   lesions=(), flip=False)
    warp = Warp(head, maps, device)
    tissue = _atrophied_tissue(maps, head)
    adc_lut = _adc_lut(rng)
    adc_noise = float(rng.uniform(*ADC_NOISE_RANGE))
    rng = stream(1)
    counts = list(LESION_COUNT_WEIGHTS)
    p = np.asarray([LESION_COUNT_WEIGHTS[c] for c in counts])
    drawn = int(counts[int(rng.choice(len(counts), p=p / p.sum()))])
    if n_lesions is None:
        n_lesions = 0 if int(seed) % LESION_FREE_EVERY == 0 else drawn
    blobs = draw_lesion_blobs(stream(2), maps, n_lesions, tissue)
    ids = blob_ids(maps, blobs, tissue)
    mni_voxel_ml = abs(np.linalg.det(maps.affine[:3, :3])) / 1000.0
    ml = np.bincount(ids.reshape(-1), minlength=len(blobs) + 1)[1:] * mni_voxel_ml
    blobs = tuple(replace(b, mni_ml=float(v)) for b, v in zip(blobs, ml, strict=True))

    # the DWI acquisition grid (slice axis last, then stored in voxel_order): all drawn,
    # then overridden by the arguments
    rng = stream(3)
    thickness = float(rng.uniform(3.0, 6.0))
    spacing = thickness * float(rng.choice([1.0, 1.0, rng.uniform(1.0, 1.2)]))
    if slice_mm:
        thickness = spacing = float(slice_mm)
    n = int(slices) if slices else int(np.clip(round(135.0 / spacing), 16, 45))
    fov = float(rng.uniform(200.0, 250.0))
    z_centre = float(rng.uniform(8.0, 22.0))
    oblique = rng.random() >= 0.5
    tilt = _t3((rng.uniform(-15, 15), rng.uniform(-5, 5), 0.0) if oblique else (0.0, 0.0, 0.0))
    if oblique_deg is not None:
        tilt = (float(oblique_deg), 0.0, 0.0)
    drawn_order = str(VOXEL_ORDERS[int(rng.integers(len(VOXEL_ORDERS)))])
    order = str(voxel_order or drawn_order)
    shape = (int(matrix), int(matrix), n)
    voxel = (fov / matrix, fov / matrix, spacing)
    affine = grid_affine(shape, voxel, (0.0, 0.0, z_centre), tilt)

    # the ADC's own grid ("other")
    rng = stream(4)
    kind = "iso" if rng.random() < 0.5 else "thick"
    if kind == "iso":
        adc_voxel = _t3(rng.uniform(1.8, 2.2) * rng.uniform(0.95, 1.05, 3))
        adc_thick = adc_voxel[2]
    else:
        px = float(rng.uniform(1.6, 2.0))
        adc_thick = float(rng.uniform(4.0, 6.0))
        adc_voxel = (px, px, adc_thick * float(rng.choice([1.0, 1.1])))
    adc_fov = float(rng.uniform(220.0, 250.0))
    adc_margin = rng.uniform(5.0, 15.0, 3)  # beyond the DWI's brain voxels, mm
    adc_jitter = rng.uniform(-5.0, 5.0, 3)  # of the centre when the FOV is wider, mm
    adc_tilt = _t3(rng.uniform(-12.0, 12.0, 3))
    others = [o for o in VOXEL_ORDERS if o != order]
    adc_order = str(others[int(rng.integers(len(others)))])

    # intensity volumes on the MNI grid, rendered through the one point map
    t = device_maps(maps, device)
    tissue_t = torch.from_numpy(tissue).to(device)
    ids_t = torch.from_numpy(ids).to(device)
    gm = dwi_lut[T["cortical_gm"]]
    dwi_vol = _intensity(dwi_lut, tissue_t, ids_t, [b.dwi_ratio * gm for b in blobs])
    adc_vol = _intensity(adc_lut, tissue_t, ids_t, [b.adc for b in blobs])
    labels = {"classes": t["classes"], "hemispheres": t["hemispheres"], "ids": ids_t,
              "tissue": tissue_t, "head": t["tissue"]}
    same = adc_grid == "same"
    volumes = torch.stack([dwi_vol, adc_vol]) if same else dwi_vol[None]
    images, truth, bias = _render(warp, head, volumes, [True, False], affine, shape,
                                  thickness, partial, labels)
    noise_rng = stream(5)
    sigma = head.noise * max(gm, 0.05)
    dwi = images[0] * bias
    dwi = np.sqrt((dwi + sigma * noise_rng.standard_normal(shape, dtype=np.float32)) ** 2
                  + (sigma * noise_rng.standard_normal(shape, dtype=np.float32)) ** 2)
    in_head = truth["head"] != T["air"]
    if head.mask_background:
        dwi = dwi * in_head
    dwi = (dwi * DWI_SCALE).astype(np.float32)
    if same:
        adc_raw, adc_head, adc_affine, adc_full_shape = images[1], in_head, affine, shape
    else:
        adc_shape, adc_affine = _covering_grid(
            affine, np.isin(truth["tissue"], BRAIN_TISSUES), adc_voxel, adc_tilt, adc_fov,
            adc_margin, adc_jitter)
        adc_images, adc_truth, _ = _render(
            warp, head, adc_vol[None], [False], adc_affine, adc_shape, adc_thick, partial,
            {"head": t["tissue"]})
        adc_raw, adc_head, adc_full_shape = adc_images[0], adc_truth["head"] != T["air"], \
            adc_shape
    adc = adc_raw + adc_noise * noise_rng.standard_normal(adc_full_shape, dtype=np.float32)
    adc = (np.clip(adc, 0.0, None) * adc_head).astype(np.float32)

    arrange, dwi_affine = _reorder(affine, shape, order)
    if same:
        adc_arrange, adc_affine_out = arrange, dwi_affine
    else:
        adc_arrange, adc_affine_out = _reorder(adc_affine, adc_shape, adc_order)
    params = CaseParams(
        seed=int(seed),
        head=head,
        lesions=blobs,
        dwi_axcodes=order,
        dwi_rotation_deg=tilt,
        dwi_voxel_mm=_t3(voxel),
        dwi_thickness_mm=thickness,
        dwi_noise=float(head.noise),
        adc_grid=adc_grid,
        adc_axcodes=order if same else adc_order,
        adc_rotation_deg=tilt if same else adc_tilt,
        adc_voxel_mm=_t3(voxel if same else adc_voxel),
        adc_thickness_mm=thickness if same else adc_thick,
        adc_tissue=tuple(float(v) for v in adc_lut),
        adc_noise=adc_noise,
    )
    return LesionCase(
        dwi=_nifti(arrange(dwi), dwi_affine),
        adc=_nifti(adc_arrange(adc), adc_affine_out),
        classes=arrange(truth["classes"]),
        hemispheres=arrange(truth["hemispheres"]),
        lesion=arrange(truth["ids"] > 0),
        lesion_ids=arrange(truth["ids"]),
        tissue=arrange(truth["tissue"]),
        lesion_count=len(blobs),
        seed=int(seed),
        params=params,
        world_from_mni=pose_matrix(head),
    )


def lesion_cases(start: int = SCORE_SEED_START, count: int = 10, **kwargs):
    """Cases ``start`` … ``start + count - 1`` (a generator; kwargs as render_lesion_case)."""
    for seed in range(int(start), int(start) + int(count)):
        yield render_lesion_case(seed, **kwargs)


def _summary(case: LesionCase, seconds: float) -> str:
    regions = case.lesion_voxels_by_region()
    return (f"seed {case.seed}: {case.dwi.shape} {case.params.dwi_axcodes} adc "
            f"{case.adc.shape} {case.params.adc_axcodes}; blobs {case.lesion_count} "
            f"(visible {case.visible_lesions}), lesion {case.lesion.sum() * case.voxel_ml:.1f} "
            f"mL, regions {sorted(regions)}; {seconds:.1f} s")


if __name__ == "__main__":  # pragma: no cover - a quick look
    import sys

    first = int(sys.argv[1]) if len(sys.argv) > 1 else SCORE_SEED_START
    for s in range(first, first + 3):
        t0 = time.perf_counter()
        c = render_lesion_case(s)
        print(_summary(c, time.perf_counter() - t0))
