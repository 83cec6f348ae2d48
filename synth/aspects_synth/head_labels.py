"""The label maps the domain-randomised generator draws images from (SynthSeg's idea: the
image is a random function of labels; the truth is a separate, exact label map).

All on the 1 mm MNI152 grid of the FAST segmentation ([182, 218, 182], ``Atlas.tissue_affine``):

* ``tissue``: uint8 generator tissue codes (``TISSUES``): air, sulcal CSF, ventricles,
  cortical GM, deep GM, WM, and four non-brain head classes (scalp, skull, eyes, fat...)
  taken as intensity quartiles of the MNI152 T1 head template outside the brain;
* ``classes`` / ``hemispheres``: the ASPECTS atlas (contract classes, hemisphere codes);
* ``territories``: JHU arterial territories (level 1), for lesion shapes;
* ``csf_distance``: 0 for CSF, else 1, 2, 3 = chessboard distance to CSF (capped), for atrophy.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .atlas import TISSUE_CSF, TISSUE_GM, TISSUE_WM, load_atlas
from .phantom import atlas_grid_to_tissue_grid, atlas_on_tissue_grid

TISSUES: tuple[str, ...] = (
    "air",
    "csf",
    "ventricle",
    "cortical_gm",
    "deep_gm",
    "wm",
    "head_dark",  # skull, air cells, vitreous
    "head_mid",
    "head_bright",
    "head_brightest",  # scalp fat, marrow
    "lesion",  # drawn per volume, never in the static map
)
T = {name: code for code, name in enumerate(TISSUES)}
BRAIN_TISSUES = (T["cortical_gm"], T["deep_gm"], T["wm"])
HEAD_TISSUES = (T["head_dark"], T["head_mid"], T["head_bright"], T["head_brightest"])
VENTRICLE_DEPTH_MM = 6  # CSF at least this deep inside the brain mask is ventricle
DEEP_GM_DEPTH_MM = 14  # GM this deep inside the brain mask is deep grey matter
HEAD_THRESHOLD = 0.12  # of the T1 head's 99th percentile: inside the head
# Lesion territories (JHU level 1 names without the side letter): MCA branches, the
# lenticulostriate and anterior choroidal territories, ACA and PCA (rarer).
LESION_TERRITORIES: dict[str, float] = {
    "MCAF": 3.0,
    "MCAP": 3.0,
    "MCAT": 2.0,
    "MCAI": 2.0,
    "MCAO": 1.0,
    "LLS": 2.0,
    "MLS": 1.0,
    "ACTP": 1.0,
    "ACA": 1.0,
    "PCAT": 0.5,
}


@dataclass(frozen=True)
class LabelMaps:
    """uint8 arrays [182, 218, 182] on the 1 mm MNI grid and that grid's ``affine``."""

    tissue: np.ndarray
    classes: np.ndarray
    hemispheres: np.ndarray
    territories: np.ndarray
    territory_names: tuple[str, ...]
    csf_distance: np.ndarray
    affine: np.ndarray

    @property
    def ventricle_centre_mm(self) -> np.ndarray:
        """MNI mm [3] of the ventricles' centroid."""
        idx = np.argwhere(self.tissue == T["ventricle"]).mean(axis=0)
        return self.affine[:3, :3] @ idx + self.affine[:3, 3]


def erode(mask: torch.Tensor, voxels: int) -> torch.Tensor:
    """Binary erosion of a bool [X, Y, Z] mask by a (2·voxels+1)³ cube."""
    if voxels <= 0:
        return mask
    grown = (~mask).float()[None, None]
    k = 2 * voxels + 1
    for kernel in ((k, 1, 1), (1, k, 1), (1, 1, k)):  # a cube is separable
        pad = tuple(n // 2 for n in kernel)
        grown = F.max_pool3d(grown, kernel, stride=1, padding=pad)
    return ~(grown[0, 0] > 0)


def chessboard_distance(mask: np.ndarray, cap: int) -> np.ndarray:
    """uint8 chessboard distance of every voxel to ``mask`` (0 inside), capped at ``cap``."""
    dist = np.full(mask.shape, cap, np.uint8)
    current = torch.from_numpy(mask)[None, None].float()
    dist[mask] = 0
    for d in range(1, cap):
        current = F.max_pool3d(current, 3, stride=1, padding=1)
        ring = (current[0, 0] > 0).numpy() & (dist == cap)
        dist[ring] = d
    return dist


def _head_t1_on_grid(head: np.ndarray, head_affine: np.ndarray, affine, shape) -> np.ndarray:
    """The 3 mm T1 head template, trilinearly resampled onto the 1 mm grid: float32."""
    vox = np.linalg.inv(head_affine) @ affine
    idx = np.indices(shape, dtype=np.float32).reshape(3, -1)
    coords = vox[:3, :3].astype(np.float32) @ idx + vox[:3, 3:4].astype(np.float32)
    size = torch.tensor(head.shape, dtype=torch.float32)[:, None]
    norm = 2 * torch.from_numpy(coords) / (size - 1) - 1  # (i, j, k) → [-1, 1]
    grid = norm.flip(0).T.reshape(1, 1, 1, -1, 3)  # grid_sample wants (k, j, i)
    out = F.grid_sample(
        torch.from_numpy(np.array(head))[None, None], grid, mode="bilinear", align_corners=True
    )
    return out.reshape(shape).numpy()


@functools.lru_cache(maxsize=1)
def load_label_maps() -> LabelMaps:
    """Build (once per process) the generator's label maps from the atlas data."""
    atlas = load_atlas()
    affine = atlas.tissue_affine
    shape = atlas.tissue.shape
    fast = atlas.tissue
    brain = torch.from_numpy(atlas.brain_mask | (fast > 0))
    deep_vent = erode(brain, VENTRICLE_DEPTH_MM).numpy()
    deep_gm = erode(brain, DEEP_GM_DEPTH_MM).numpy()
    classes, hemispheres = atlas_on_tissue_grid()

    tissue = np.zeros(shape, np.uint8)
    head_t1 = _head_t1_on_grid(atlas.head, atlas.head_affine, affine, shape)
    head = head_t1 > HEAD_THRESHOLD * np.percentile(atlas.head, 99)
    outside = head & ~brain.numpy()
    if outside.any():
        edges = np.quantile(head_t1[outside], [0.25, 0.5, 0.75])
        bins = np.digitize(head_t1[outside], edges)  # 0..3
        tissue[outside] = np.asarray(HEAD_TISSUES, np.uint8)[bins]
    tissue[fast == TISSUE_CSF] = T["csf"]
    tissue[(fast == TISSUE_CSF) & deep_vent] = T["ventricle"]
    tissue[fast == TISSUE_GM] = T["cortical_gm"]
    is_deep = (fast == TISSUE_GM) & (deep_gm | np.isin(classes, (8, 9)))  # + lentiform, caudate
    tissue[is_deep] = T["deep_gm"]
    tissue[fast == TISSUE_WM] = T["wm"]

    territories = atlas_grid_to_tissue_grid(atlas.territories)
    csf_distance = chessboard_distance(fast == TISSUE_CSF, cap=3)
    maps = LabelMaps(
        tissue=tissue,
        classes=np.ascontiguousarray(classes),
        hemispheres=np.ascontiguousarray(hemispheres),
        territories=territories,
        territory_names=atlas.territory_names,
        csf_distance=csf_distance,
        affine=affine.copy(),
    )
    for arr in (maps.tissue, maps.classes, maps.hemispheres, maps.territories, maps.csf_distance):
        arr.setflags(write=False)
    return maps
