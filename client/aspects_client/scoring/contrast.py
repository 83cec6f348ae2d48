"""What contrast an image has, judged with its segmentation: pure functions for the score's
refusals (docs/scoring.md, "What the score refuses").

Every array is a display stack [N, H, W] (``geometry.to_display``): ``image`` float32 (any
unit: only ratios are used), ``classes`` uint8 contract class indices, ``hemis`` uint8
hemisphere codes.

- ``csf_tissue_ratio``: the median of the unlabelled pixels on the line between the two
  caudate heads (the frontal horns of the lateral ventricles: CSF) over the median of the
  caudates (grey matter).  On a b≈1000 DWI CSF is dark (ratio ≈ 0.3–0.6); on a b0/T2 image
  it is bright (≈ 1.5–3); on an ADC map CSF is bright (≈ 3–4).
- ``bilateral_hyperintense``: the regions whose median on BOTH sides exceeds a ratio times
  the unlabelled brain tissue around them: a bilateral lesion, which the DWI-only rule
  (each side against the other) cannot see.
"""

from __future__ import annotations

import numpy as np

from .. import contract

MIN_CAUDATE_PIXELS = 3  # a caudate side with fewer pixels in a slice gives no centroid
MIN_VENTRICLE_SAMPLES = 12  # fewer CSF samples over the volume: contrast not judged
DWI_MAX_CSF_RATIO = 1.2  # a DWI whose CSF/caudate ratio is above this has b0/T2 contrast
ADC_MIN_CSF_RATIO = 0.6  # an ADC map whose CSF/caudate ratio is below this is a DWI (a DWI
# gives 0.2-0.5; slit ventricles and partial volume can bring a real ADC map towards 0.9)
TISSUE_PERCENTILE = 75.0  # reference tissue: this percentile of the unlabelled pixels inside
# the regions' bounding box per slice (CSF, dark on b1000, falls below it)
MIN_TISSUE_PIXELS = 200


def _caudate_sides(classes: np.ndarray, hemis: np.ndarray, n: int) -> list[np.ndarray]:
    caudate = classes[n] == contract.REGION_BY_KEY["c"].index
    return [caudate & (hemis[n] == code) for code in contract.HEMISPHERE_CODES.values()]


def _line_pixels(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the pixels on the segment a → b (1 px steps, both ends)."""
    steps = int(np.ceil(np.abs(b - a).max())) + 1
    t = np.linspace(0.0, 1.0, steps)
    points = np.rint(a[None, :] + t[:, None] * (b - a)[None, :]).astype(np.intp)
    return points[:, 0], points[:, 1]


def csf_tissue_ratio(image: np.ndarray, classes: np.ndarray, hemis: np.ndarray) -> float | None:
    """median(ventricle CSF) / median(caudate), or None where it cannot be judged (no slice
    with both caudate heads, too few unlabelled pixels between them, caudate median <= 0)."""
    csf: list[np.ndarray] = []
    grey: list[np.ndarray] = []
    for n in range(classes.shape[0]):
        sides = _caudate_sides(classes, hemis, n)
        if min(int(s.sum()) for s in sides) < MIN_CAUDATE_PIXELS:
            continue
        a, b = (np.argwhere(s).mean(axis=0) for s in sides)
        rows, cols = _line_pixels(a, b)
        between = classes[n, rows, cols] == 0
        line = image[n, rows[between], cols[between]]
        csf.append(line[line > 0])  # 0: no value (an ADC map's uncovered voxels)
        grey.extend(image[n][s & (image[n] > 0)] for s in sides)
    if not csf or sum(v.size for v in csf) < MIN_VENTRICLE_SAMPLES:
        return None
    tissue = float(np.median(np.concatenate(grey)))
    if not tissue > 0:
        return None
    return float(np.median(np.concatenate(csf))) / tissue


def tissue_reference(image: np.ndarray, classes: np.ndarray) -> float | None:
    """TISSUE_PERCENTILE of the unlabelled pixels inside each slice's bounding box of the
    labelled regions (ACA/PCA territory, thalamus, white matter, CSF), or None."""
    values = []
    for n in range(classes.shape[0]):
        rows, cols = np.nonzero(classes[n])
        if rows.size == 0:
            continue
        box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
        inside = image[n][box][classes[n][box] == 0]
        values.append(inside[inside > 0])
    pooled = np.concatenate(values) if values else np.empty(0)
    if pooled.size < MIN_TISSUE_PIXELS:
        return None
    reference = float(np.percentile(pooled, TISSUE_PERCENTILE))
    return reference if reference > 0 else None


def bilateral_hyperintense(
    image: np.ndarray, classes: np.ndarray, hemis: np.ndarray, ratio: float
) -> list[str]:
    """Region keys whose median DWI on both sides is above ``ratio`` x the tissue reference
    (``tissue_reference``); [] when the reference cannot be taken."""
    reference = tissue_reference(image, classes)
    if reference is None:
        return []
    found = []
    codes = contract.HEMISPHERE_CODES.values()
    for region in contract.REGIONS:
        in_region = classes == region.index
        sides = [image[in_region & (hemis == code)] for code in codes]
        if all(m.size and float(np.median(m)) > ratio * reference for m in sides):
            found.append(region.key)
    return found
