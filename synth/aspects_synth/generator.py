"""Domain-randomised synthetic DWI-like images with exact ASPECTS labels (after SynthSeg).

A *head* is drawn per seed (:func:`draw_head`): a random intensity per tissue label (b1000,
b0/T2, ADC, T1-like or arbitrary contrast), lesions as blobs inside arterial territories,
cortical atrophy, a random pose (tilts up to ~35°), per-axis scale and shear, a smooth
nonlinear deformation, ventricle enlargement, EPI distortion along the phase-encode axis with
signal dropout near the frontal sinus and temporal bones, a bias field and Rician noise.

Slices are *rendered* (:func:`render`) on an acquisition grid of any in-plane matrix and
slice thickness (with partial volume across the slice).  Image and labels go through one
point map (:func:`warp_points`: scanner mm → MNI mm), so the labels follow every
deformation exactly: a pixel's label is the atlas class at its warped centre.

Coordinates: *scanner* space is world RAS mm.  A display slice (contract orientation: row 0
anterior, column 0 patient left) at level ``z`` has pixel centres
``x = (c + 0.5 - M/2)·px``, ``y = -(r + 0.5 - M/2)·px``.  Torch only (CPU or GPU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from aspects_client import contract

from .head_labels import BRAIN_TISSUES, HEAD_TISSUES, LESION_TERRITORIES, TISSUES, LabelMaps, T
from .head_labels import load_label_maps as _load_maps

CONTRASTS: tuple[str, ...] = ("b1000", "b0", "adc", "t1", "random")
CONTRAST_WEIGHTS: tuple[float, ...] = (0.4, 0.15, 0.15, 0.1, 0.2)
# Mean intensity ranges per tissue (relative to cortical GM ≈ 1) for each contrast family.
_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "b1000": {"csf": (0.05, 0.3), "cortical_gm": (0.9, 1.1), "deep_gm": (0.85, 1.05),
              "wm": (0.6, 0.85), "head": (0.0, 0.5), "lesion": (1.5, 3.0)},
    "b0": {"csf": (1.4, 2.6), "cortical_gm": (0.9, 1.1), "deep_gm": (0.8, 1.0),
           "wm": (0.6, 0.85), "head": (0.0, 1.3), "lesion": (1.2, 1.9)},
    "adc": {"csf": (2.5, 3.8), "cortical_gm": (0.9, 1.1), "deep_gm": (0.85, 1.0),
            "wm": (0.8, 1.0), "head": (0.0, 0.8), "lesion": (0.35, 0.65)},
    "t1": {"csf": (0.1, 0.35), "cortical_gm": (0.55, 0.7), "deep_gm": (0.65, 0.8),
           "wm": (0.9, 1.1), "head": (0.05, 1.3), "lesion": (0.35, 0.55)},
}
MATRICES = (128, 160, 192, 224, 256, 320, 384, 448, 512)
PHASE_BLOBS_MNI = ((0.0, 38.0, -22.0, 18.0), (-46.0, 2.0, -32.0, 14.0), (46.0, 2.0, -32.0, 14.0))


@dataclass(frozen=True)
class HeadParams:
    """Per-volume random parameters (everything but the slice levels and the grid)."""

    seed: int
    contrast: str
    intensities: tuple[float, ...]  # per tissue code (len(TISSUES))
    rotation_deg: tuple[float, float, float]  # about x (pitch), y (roll), z (yaw)
    scale: tuple[float, float, float]
    shear: tuple[float, float, float]
    translation_mm: tuple[float, float, float]
    deform_mm: float  # std of the smooth displacement's control points
    ventricle_gain: float  # radial pull about the ventricles (0 = none)
    atrophy_voxels: int  # cortical GM within this distance of CSF becomes CSF
    epi_mm: float  # signed peak EPI shift along the phase axis (display rows)
    dropout: float  # peak signal loss in the susceptibility blobs, 0..1
    bias: float  # bias field strength
    noise: float  # Rician sigma relative to GM
    mask_background: bool  # scanner-masked background (exact zeros outside the head)
    lesions: tuple[tuple[int, tuple[float, float, float], tuple[float, float, float]], ...]
    # (territory value, centre MNI mm, radii mm)
    flip: bool  # mirror left/right


@dataclass(frozen=True)
class Grid:
    """An acquisition grid: ``matrix`` × ``matrix`` pixels over ``fov_mm``, slices
    ``thickness_mm`` thick at levels ``z_mm`` (scanner z of each slice centre)."""

    matrix: int
    fov_mm: float
    thickness_mm: float
    z_mm: tuple[float, ...]

    @property
    def pixel_mm(self) -> float:
        return self.fov_mm / self.matrix


def _pick(rng: np.random.Generator, weights: dict[str, float]) -> str:
    keys = list(weights)
    p = np.asarray([weights[k] for k in keys], float)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def draw_intensities(rng: np.random.Generator, contrast: str) -> tuple[float, ...]:
    """Mean intensity per tissue code for a contrast family (``random``: uniform 0–1)."""
    if contrast == "random":
        values = rng.uniform(0.0, 1.0, len(TISSUES))
        values[T["air"]] = rng.uniform(0.0, 0.15)
        return tuple(float(v) for v in values)
    r = _RANGES[contrast]
    v = np.zeros(len(TISSUES))
    v[T["csf"]] = rng.uniform(*r["csf"])
    v[T["ventricle"]] = v[T["csf"]] * rng.uniform(0.9, 1.1)
    for name in ("cortical_gm", "deep_gm", "wm", "lesion"):
        v[T[name]] = rng.uniform(*r[name])
    v[T["lesion"]] *= v[T["cortical_gm"]]
    if rng.random() < 0.15:  # skull-stripped or fat-suppressed: no head signal
        v[list(HEAD_TISSUES)] = 0.0
    else:
        v[list(HEAD_TISSUES)] = np.sort(rng.uniform(*r["head"], len(HEAD_TISSUES)))
        if contrast != "t1" and rng.random() < 0.5:
            v[list(HEAD_TISSUES)] = rng.permutation(v[list(HEAD_TISSUES)])
    v *= rng.uniform(0.85, 1.15, len(v))
    return tuple(float(x) for x in v)


def draw_lesions(rng: np.random.Generator, maps: LabelMaps, count: int):
    """``count`` lesion blobs: (territory value, centre MNI mm inside it, radii mm)."""
    out = []
    for _ in range(count):
        base = _pick(rng, LESION_TERRITORIES)
        side = "L" if rng.random() < 0.5 else "R"
        value = maps.territory_names.index(base + side) + 1
        idx = np.flatnonzero(maps.territories.reshape(-1) == value)
        voxel = np.unravel_index(int(idx[rng.integers(idx.size)]), maps.territories.shape)
        centre = maps.affine[:3, :3] @ np.asarray(voxel, float) + maps.affine[:3, 3]
        radii = rng.uniform(4.0, 22.0) * rng.uniform(0.6, 1.0, 3)
        out.append((int(value), tuple(float(c) for c in centre), tuple(float(r) for r in radii)))
    return tuple(out)


def draw_head(seed: int, maps: LabelMaps | None = None) -> HeadParams:
    """Seeded random head parameters (same seed → same parameters)."""
    maps = maps or _load_maps()
    rng = np.random.default_rng([int(seed), 11])
    contrast = CONTRASTS[int(rng.choice(len(CONTRASTS), p=CONTRAST_WEIGHTS))]
    pitch = float(np.clip(rng.normal(0.0, 14.0), -35.0, 35.0))
    roll, yaw = (float(np.clip(rng.normal(0.0, 6.0), -20.0, 20.0)) for _ in range(2))
    n_lesions = int(rng.choice([0, 0, 1, 1, 2, 3]))
    return HeadParams(
        seed=int(seed),
        contrast=contrast,
        intensities=draw_intensities(rng, contrast),
        rotation_deg=(pitch, roll, yaw),
        scale=tuple(float(s) for s in rng.uniform(0.88, 1.12, 3)),
        shear=tuple(float(s) for s in rng.uniform(-0.07, 0.07, 3)),
        translation_mm=(*(float(t) for t in rng.uniform(-12, 12, 2)), float(rng.uniform(-8, 8))),
        deform_mm=float(rng.uniform(0.0, 3.5)),
        ventricle_gain=float(rng.uniform(0.0, 0.3)),
        atrophy_voxels=int(rng.choice([0, 0, 1, 2])),
        epi_mm=float(rng.uniform(-8.0, 8.0)),
        dropout=float(rng.uniform(0.0, 0.9)),
        bias=float(rng.uniform(0.0, 0.35)),
        noise=float(np.exp(rng.uniform(np.log(0.01), np.log(0.1)))),
        mask_background=bool(rng.random() < 0.3),
        lesions=draw_lesions(rng, maps, n_lesions),
        flip=bool(rng.random() < 0.5),
    )


def draw_grid(rng: np.random.Generator, n_slices: int, z_centre_mm: float) -> Grid:
    """A random acquisition grid: matrix 128–512, FOV 180–260 mm, slices 2–7 mm thick
    (spacing = thickness × 1.0–1.2), ``n_slices`` centred on ``z_centre_mm``."""
    thickness = float(rng.uniform(2.0, 7.0))
    spacing = thickness * float(rng.choice([1.0, 1.0, rng.uniform(1.0, 1.2)]))
    offsets = (np.arange(n_slices) - (n_slices - 1) / 2) * spacing
    return Grid(
        matrix=int(rng.choice(MATRICES)),
        fov_mm=float(rng.uniform(180.0, 260.0)),
        thickness_mm=thickness,
        z_mm=tuple(float(z_centre_mm + o) for o in offsets),
    )


# --- the point map: scanner mm → MNI mm --------------------------------------------------


def pose_matrix(p: HeadParams) -> np.ndarray:
    """4×4 scanner-from-MNI affine: translation · rotation · shear · scale."""
    ax, ay, az = (math.radians(a) for a in p.rotation_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    shear = np.eye(3)
    shear[0, 1], shear[0, 2], shear[1, 2] = p.shear
    m = np.eye(4)
    m[:3, :3] = rz @ ry @ rx @ shear @ np.diag(p.scale)
    m[:3, 3] = p.translation_mm
    return m


def _blobs(points: torch.Tensor, blobs) -> torch.Tensor:
    """Sum of Gaussian blobs (x, y, z, sigma) in mm at points [..., 3]: [...]."""
    out = torch.zeros(points.shape[:-1], dtype=points.dtype, device=points.device)
    for x, y, z, s in blobs:
        c = torch.tensor((x, y, z), dtype=points.dtype, device=points.device)
        out += torch.exp(-((points - c) ** 2).sum(-1) / (2 * s * s))
    return out.clamp_(max=1.0)


def deformation_field(seed: int, std_mm: float, device) -> torch.Tensor:
    """Smooth displacement control points float32 [1, 3, 6, 7, 6] (mm) over the MNI box."""
    g = torch.Generator().manual_seed(int(seed) * 7919 + 3)
    field = torch.randn((1, 3, 6, 7, 6), generator=g) * std_mm
    return field.to(device)


class Warp:
    """The point map of one head: scanner mm → (MNI mm, susceptibility-blob weight)."""

    def __init__(self, p: HeadParams, maps: LabelMaps, device) -> None:
        self.p = p
        self.device = device
        mni_from_scanner = np.linalg.inv(pose_matrix(p))
        self.m = torch.tensor(mni_from_scanner, dtype=torch.float32, device=device)
        self.field = deformation_field(p.seed, p.deform_mm, device)
        self.vent_centre = torch.tensor(
            maps.ventricle_centre_mm, dtype=torch.float32, device=device
        )
        vox_from_mni = np.linalg.inv(maps.affine)
        self.vox = torch.tensor(vox_from_mni, dtype=torch.float32, device=device)
        self.shape = torch.tensor(maps.tissue.shape, dtype=torch.float32, device=device)

    def to_mni(self, scanner: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """scanner mm [..., 3] → (warped MNI mm [..., 3], blob weight [...] in 0..1)."""
        m = self.m
        rigid = scanner @ m[:3, :3].T + m[:3, 3]
        blob = _blobs(rigid, PHASE_BLOBS_MNI)
        # EPI: shift along the phase-encode axis (scanner y = display rows) near air/bone.
        shifted = scanner.clone()
        shifted[..., 1] += self.p.epi_mm * blob
        mni = shifted @ m[:3, :3].T + m[:3, 3]
        d = mni - self.vent_centre  # ventricle enlargement: pull towards their centre
        mni = mni - self.p.ventricle_gain * d * torch.exp(-(d * d).sum(-1, keepdim=True) / 968.0)
        if self.p.deform_mm > 0:
            mni = mni + self._sample_field(mni)
        return mni, blob

    def to_voxels(self, mni: torch.Tensor) -> torch.Tensor:
        """MNI mm [..., 3] → 1 mm label-map voxel coordinates [..., 3] (i, j, k)."""
        return mni @ self.vox[:3, :3].T + self.vox[:3, 3]

    def _sample_field(self, mni: torch.Tensor) -> torch.Tensor:
        grid = normalised(self.to_voxels(mni), self.shape)
        flat = grid.reshape(1, 1, 1, -1, 3)
        out = F.grid_sample(self.field, flat, mode="bilinear", padding_mode="border",
                            align_corners=True)
        return out.reshape(3, -1).T.reshape(mni.shape)


def normalised(vox: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
    """Voxel coordinates (i, j, k) [..., 3] → grid_sample's (k, j, i) in [-1, 1]."""
    return (2 * vox / (shape - 1) - 1).flip(-1)


def sample_volume(volume: torch.Tensor, vox: torch.Tensor, mode: str) -> torch.Tensor:
    """Values of ``volume`` [X, Y, Z] at voxel coordinates [..., 3]; 0 outside.

    ``mode``: ``bilinear`` (trilinear) or ``nearest`` (the label lookup: round to the
    nearest voxel centre)."""
    shape = torch.tensor(volume.shape, dtype=vox.dtype, device=vox.device)
    if mode == "nearest":  # exact integer lookup (grid_sample's rounding is not specified)
        idx = torch.round(vox).long()
        inside = ((idx >= 0) & (idx < shape.long())).all(-1)
        idx = torch.where(inside[..., None], idx, torch.zeros_like(idx))
        values = volume[idx[..., 0], idx[..., 1], idx[..., 2]]
        return torch.where(inside, values, torch.zeros_like(values))
    grid = normalised(vox, shape).reshape(1, 1, 1, -1, 3)
    out = F.grid_sample(volume[None, None].float(), grid, mode="bilinear", align_corners=True)
    return out.reshape(vox.shape[:-1])


def display_points(grid: Grid, size: int, z_offsets: torch.Tensor, device) -> torch.Tensor:
    """Scanner mm of display pixel centres: [S, D, size, size, 3] for each slice level and
    through-slice offset (``z_offsets`` [D] mm), on a ``size``² grid over the FOV."""
    px = grid.fov_mm / size
    centres = (torch.arange(size, dtype=torch.float32, device=device) + 0.5 - size / 2) * px
    x = centres[None, :].expand(size, size)  # column → patient left to right
    y = -centres[:, None].expand(size, size)  # row → anterior to posterior
    z = torch.tensor(grid.z_mm, dtype=torch.float32, device=device)
    zz = z[:, None, None, None] + z_offsets[None, :, None, None]
    shape = (len(grid.z_mm), len(z_offsets), size, size)
    return torch.stack([x.expand(shape), y.expand(shape), zz.expand(shape)], dim=-1)


def through_slice_offsets(thickness_mm: float, device, most: int = 7) -> torch.Tensor:
    """Partial-volume sample offsets across a slice [D] mm (about 1 mm apart, ≤ ``most``)."""
    n = int(min(most, max(1, round(thickness_mm))))
    return ((torch.arange(n, dtype=torch.float32, device=device) + 0.5) / n - 0.5) * thickness_mm


# --- the head's intensity volume ---------------------------------------------------------


class Head:
    """One drawn head: parameters, its tissue-intensity volume and its point map."""

    def __init__(self, seed: int, device: str | torch.device = "cpu",
                 maps: LabelMaps | None = None) -> None:
        self.maps = maps or _load_maps()
        self.device = torch.device(device)
        self.params = draw_head(seed, self.maps)
        self.warp = Warp(self.params, self.maps, self.device)
        tensors = device_maps(self.maps, self.device)
        self.classes, self.hemispheres = tensors["classes"], tensors["hemispheres"]
        self.intensity = self._intensity_volume(tensors)

    def _intensity_volume(self, t: dict[str, torch.Tensor]) -> torch.Tensor:
        p = self.params
        tissue = t["tissue"].clone()
        if p.atrophy_voxels:
            thin = (tissue == T["cortical_gm"]) & (t["csf_distance"] <= p.atrophy_voxels)
            tissue[thin] = T["csf"]
        if p.lesions:
            tissue[self.lesion_mask(t)] = T["lesion"]
        lut = torch.tensor(p.intensities, dtype=torch.float32, device=self.device)
        volume = lut[tissue.long()]
        # light blur: tissue boundaries are not steps at 1 mm
        volume = F.avg_pool3d(volume[None, None], 3, stride=1, padding=1)[0, 0]
        return volume * 0.5 + lut[tissue.long()] * 0.5

    def lesion_mask(self, t: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """bool [182, 218, 182]: the lesion blobs ∩ their territories ∩ brain tissue."""
        t = t or device_maps(self.maps, self.device)
        mask = torch.zeros_like(t["tissue"], dtype=torch.bool)
        brain = torch.zeros_like(mask)
        for code in BRAIN_TISSUES:
            brain |= t["tissue"] == code
        inv = torch.tensor(np.linalg.inv(self.maps.affine), dtype=torch.float32)
        for value, centre, radii in self.params.lesions:
            c = torch.tensor(centre, dtype=torch.float32)
            r = torch.tensor(radii, dtype=torch.float32)
            lo = (inv[:3, :3] @ (c - r * 1.0) + inv[:3, 3]).round().long()
            hi = (inv[:3, :3] @ (c + r * 1.0) + inv[:3, 3]).round().long()
            lo, hi = torch.minimum(lo, hi).clamp(min=0), torch.maximum(lo, hi) + 1
            box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
            idx = torch.stack(torch.meshgrid(
                *(torch.arange(s.start, min(s.stop, n)) for s, n in zip(box, mask.shape,
                                                                         strict=True)),
                indexing="ij"), -1).float()
            mm = idx @ torch.tensor(self.maps.affine[:3, :3], dtype=torch.float32).T
            mm = mm + torch.tensor(self.maps.affine[:3, 3], dtype=torch.float32)
            inside = (((mm - c) / r) ** 2).sum(-1) <= 1.0
            sub = mask[box]
            sub |= inside.to(self.device) & (t["territories"][box] == value) & brain[box]
        return mask

    def render(self, grid: Grid, label_size: int | None = None, partial: int = 7,
               label_slice: int | None = None) -> Rendered:
        """Raw intensities and exact labels of ``grid``'s slices (display orientation).

        Returns image float32 [S, M, M] (M = ``grid.matrix``), and classes / hemispheres
        uint8 [S, L, L] at the slice centres on a ``label_size``² grid over the same FOV
        (default M).  With ``params.flip`` every array is mirrored left/right.  ``partial``:
        at most this many samples across a slice (partial volume).  ``label_slice``: labels
        of that slice only ([1, L, L]; training needs the centre slice's).
        """
        p = self.params
        offsets = through_slice_offsets(grid.thickness_mm, self.device, partial)
        pts = display_points(grid, grid.matrix, offsets, self.device)
        mni, blob = self.warp.to_mni(pts)
        values = sample_volume(self.intensity, self.warp.to_voxels(mni), "bilinear")
        loss = 1.0 - p.dropout * blob
        image = (values * loss).mean(dim=1)  # partial volume across the slice
        scanner = pts.mean(dim=1)
        image = image * bias_field(p, scanner)
        gen = torch.Generator(device="cpu").manual_seed(p.seed * 104729 + len(grid.z_mm))
        sigma = p.noise * max(p.intensities[T["cortical_gm"]], 0.05)
        n1 = torch.randn(image.shape, generator=gen).to(self.device) * sigma
        n2 = torch.randn(image.shape, generator=gen).to(self.device) * sigma
        image = torch.sqrt((image + n1) ** 2 + n2**2)
        if p.mask_background:
            tissue = device_maps(self.maps, self.device)["tissue"]
            head = sample_volume(tissue, self.warp.to_voxels(mni.mean(dim=1)), "nearest")
            image = image * (head != T["air"])
        size = label_size or grid.matrix
        centre = display_points(grid, size, torch.zeros(1, device=self.device), self.device)
        if label_slice is not None:
            centre = centre[label_slice : label_slice + 1]
        vox = self.warp.to_voxels(self.warp.to_mni(centre[:, 0])[0])
        classes = sample_volume(self.classes, vox, "nearest")
        hemis = sample_volume(self.hemispheres, vox, "nearest")
        if p.flip:
            image, classes, hemis = (a.flip(-1) for a in (image, classes, hemis))
        return Rendered(image.float(), classes.to(torch.uint8), hemis.to(torch.uint8))


@dataclass(frozen=True)
class Rendered:
    """image float32 [S, M, M] (raw, before the window); classes, hemispheres uint8 [S, L, L]."""

    image: torch.Tensor
    classes: torch.Tensor
    hemispheres: torch.Tensor


def bias_field(p: HeadParams, scanner: torch.Tensor) -> torch.Tensor:
    """Smooth multiplicative field at scanner mm [..., 3]: exp(quadratic), about 1 ± bias."""
    g = torch.Generator().manual_seed(p.seed * 31 + 5)
    c = (torch.rand(9, generator=g) * 2 - 1).to(scanner.device)
    x, y, z = (scanner[..., a] / 100.0 for a in range(3))
    terms = torch.stack([x, y, z, x * x, y * y, z * z, x * y, y * z, z * x], -1)
    return torch.exp(p.bias * (terms @ c) / 2)


_DEVICE_MAP_CACHE: dict[tuple[int, str], dict[str, torch.Tensor]] = {}


def device_maps(maps: LabelMaps, device: torch.device) -> dict[str, torch.Tensor]:
    """The label maps as tensors on ``device`` (cached per maps object and device)."""
    key = (id(maps), str(device))
    if key not in _DEVICE_MAP_CACHE:
        _DEVICE_MAP_CACHE[key] = {
            name: torch.from_numpy(np.array(getattr(maps, name))).to(device)
            for name in ("tissue", "classes", "hemispheres", "territories", "csf_distance")
        }
    return _DEVICE_MAP_CACHE[key]


# --- the training sample: the serving contract on a 2.5D slab -----------------------------


def window_limits(image: torch.Tensor) -> tuple[float, float]:
    """The contract window's (lo, hi): percentiles of the non-zero values (0, 0 if none)."""
    nz = image[image != 0]
    if nz.numel() == 0:
        return 0.0, 0.0
    if nz.numel() > 1_000_000:
        nz = nz[:: nz.numel() // 1_000_000 + 1]
    lo_p, hi_p = contract.WINDOW_PERCENTILES
    q = torch.quantile(nz.float(), torch.tensor([lo_p / 100, hi_p / 100], device=nz.device))
    return float(q[0]), float(q[1])


def apply_window(image: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """float [...] → uint8 by the contract's rule (round half to even, clipped)."""
    if hi <= lo:
        return ((image != 0) & (image >= hi)).to(torch.uint8) * 255
    return torch.round(torch.clamp((image - lo) / (hi - lo) * 255.0, 0, 255)).to(torch.uint8)


def network_tensor(stacks: torch.Tensor) -> torch.Tensor:
    """The contract network input in torch: uint8 [N, 3, H, W] → float32 [N, 3, h, w]
    (bilinear, half-pixel, no antialias; /255; ImageNet mean/std per channel)."""
    h, w = contract.NETWORK_SIZE
    x = F.interpolate(stacks.float(), size=(h, w), mode="bilinear", align_corners=False)
    mean = torch.tensor(contract.IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(contract.IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x / contract.PIXEL_SCALE - mean) / std


# Scanner z (mm) of a training slab's centre slice: from the posterior fossa to the vertex.
LEVEL_RANGE_MM = (-45.0, 88.0)
# ... and the ganglionic/supraganglionic band where the deep regions (lentiform, caudate,
# internal capsule) and the M1–M6 transition lie: the weakest regions on real images.
DEEP_LEVEL_MM = (-12.0, 30.0)


@dataclass(frozen=True)
class SampleOptions:
    """How training samples are drawn from a head.

    ``crop``: a random ``crop``² window of the network-size sample (fully convolutional
    network, same pixel size as served; ``None`` = the whole 256²); ``partial``: at most this
    many samples across a slice; ``deep_fraction``: share of levels drawn from
    ``DEEP_LEVEL_MM`` instead of ``LEVEL_RANGE_MM``; ``centre_labels_only``: look up the
    labels of the centre slice only (the others are never used; ``False`` is the old cost).
    """

    crop: int | None = None
    partial: int = 5
    deep_fraction: float = 0.0
    centre_labels_only: bool = True


def draw_level(rng: np.random.Generator, deep_fraction: float) -> float:
    """Scanner z (mm) of a sample's centre slice."""
    deep = deep_fraction > 0 and rng.random() < deep_fraction  # no draw when off: same stream
    band = DEEP_LEVEL_MM if deep else LEVEL_RANGE_MM
    return float(rng.uniform(*band))


def crop_window(rng: np.random.Generator, crop: int | None) -> tuple[slice, slice]:
    """A random ``crop``² window of the network grid (the whole grid for ``None``)."""
    size = contract.NETWORK_SIZE[0]
    if crop is None or crop >= size:
        return slice(None), slice(None)
    r, c = (int(v) for v in rng.integers(0, size - crop + 1, 2))
    return slice(r, r + crop), slice(c, c + crop)


def training_samples(
    head: Head, rng: np.random.Generator, n: int, options: SampleOptions = SampleOptions()
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` 2.5D training samples of one head at random levels and acquisition grids.

    Returns x float32 [n, 3, c, c] (contract-normalised: slice below, slice, slice above)
    and y int64 [n, c, c] (classes at the centre slice), c = ``options.crop`` or
    ``contract.NETWORK_SIZE``.
    """
    size = contract.NETWORK_SIZE[0]
    xs, ys = [], []
    for _ in range(n):
        grid = draw_grid(rng, 3, draw_level(rng, options.deep_fraction))
        # Finer matrices are resized down to the network anyway: render them at its size
        # (the same FOV), which is what the bilinear resize keeps of them, 5× faster.
        grid = replace(grid, matrix=min(grid.matrix, size))
        centre = 1 if options.centre_labels_only else None
        out = head.render(grid, label_size=size, partial=options.partial, label_slice=centre)
        lo, hi = window_limits(out.image)
        lo, hi = lo * float(rng.uniform(0.8, 1.2)), hi * float(rng.uniform(0.85, 1.2))
        stack = apply_window(out.image, lo, hi)  # [3, M, M], inferior first
        if rng.random() < 0.1:  # the first or last slice of a volume: replicated neighbour
            edge = 0 if rng.random() < 0.5 else 2
            stack[edge] = stack[1]
        rows, cols = crop_window(rng, options.crop)
        xs.append(network_tensor(stack[None])[0][:, rows, cols])
        ys.append(out.classes[0 if centre else 1].long()[rows, cols])
    return torch.stack(xs), torch.stack(ys)


# --- whole volumes with exact truth (the held-out benchmark) -------------------------------


def volume_affine(grid: Grid) -> np.ndarray:
    """4×4 voxel → scanner (RAS mm) affine of ``grid`` stored RAS ([M, M, S] array)."""
    px, m = grid.pixel_mm, grid.matrix
    z = grid.z_mm
    spacing = (z[-1] - z[0]) / (len(z) - 1) if len(z) > 1 else grid.thickness_mm
    affine = np.diag([px, px, spacing, 1.0])
    affine[:3, 3] = ((0.5 - m / 2) * px, (0.5 - m / 2) * px, z[0])
    return affine


def display_to_ras(array: np.ndarray) -> np.ndarray:
    """Display stack [S, M(rows), M(cols)] → RAS-stored array [M(x), M(y), S]
    (the inverse of the contract's ``rot90`` display of canonical slices)."""
    moved = np.moveaxis(array, 0, -1)
    return np.ascontiguousarray(np.rot90(moved, k=-contract.DISPLAY_ROT90_K, axes=(0, 1)))


def render_volume(
    seed: int,
    n_slices: int | None = None,
    oblique_deg: float = 0.0,
    device: str | torch.device = "cpu",
):
    """A whole domain-randomised volume with exact truth, as an ``aspects_synth.Phantom``.

    Head ``seed`` (never mirrored, so hemispheres stay the patient's), its random
    acquisition grid (matrix, FOV, thickness) over about 130 mm around the basal ganglia,
    rendered at full matrix with up to 7 partial-volume samples per slice.  The image is
    stored RAS; ``oblique_deg`` rotates the whole scene about the world x axis in the affine
    (the voxels do not change).  ``tissue`` is zeros (the generator's tissue codes are not
    kept).  ``world_from_mni`` is the head's linear pose (the nonlinear part aside).
    """
    import nibabel as nib

    from .phantom import Phantom

    head = Head(seed, device=device)
    head.params = replace(head.params, flip=False)
    rng = np.random.default_rng([int(seed), 23])
    probe = draw_grid(rng, 1, 0.0)
    spacing_guess = probe.thickness_mm * 1.1
    n = n_slices or int(np.clip(round(130.0 / spacing_guess), 16, 60))
    grid = draw_grid(rng, n, float(rng.uniform(8.0, 22.0)))
    images, classes, hemis = [], [], []
    for z in grid.z_mm:
        out = head.render(replace(grid, z_mm=(z,)))
        images.append(out.image[0].cpu().numpy())
        classes.append(out.classes[0].cpu().numpy())
        hemis.append(out.hemispheres[0].cpu().numpy())
    image = display_to_ras(np.stack(images)).astype(np.float32) * 1000.0
    affine = volume_affine(grid)
    if oblique_deg:
        a = math.radians(oblique_deg)
        rot = np.eye(4)
        rot[1:3, 1:3] = [[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]
        affine = rot @ affine
    img = nib.Nifti1Image(image, affine)
    img.set_data_dtype(np.float32)
    img.header.set_xyzt_units("mm", "sec")
    cls = display_to_ras(np.stack(classes)).astype(np.uint8)
    hem = display_to_ras(np.stack(hemis)).astype(np.uint8)
    return Phantom(img, cls, hem, int(seed), np.zeros_like(cls), pose_matrix(head.params))
