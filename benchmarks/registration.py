"""Atlas-registration reference for real images (SimpleITK: a benchmark-only dependency,
``pip install -e '.[bench]'``).

The MNI152 T1 head template (``aspects_synth.atlas.load_atlas().head``, 3 mm) is registered
to a subject with Mattes mutual information, rigid → affine → coarse B-spline, and the
ASPECTS atlas (classes and hemispheres, 2 mm) is carried onto the subject grid by nearest
neighbour through the same transform.

Orientation: nibabel arrays are indexed (i, j, k) with a voxel → RAS mm affine; SimpleITK
images are indexed (x, y, z) = (i, j, k) but stored as arrays [k, j, i], and their
origin/direction are in LPS mm.  :func:`to_sitk` / :func:`from_sitk` do both conversions, so
every array here stays in the nibabel voxel order of its file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk  # noqa: N813 (the usual alias)

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # its own inverse
HISTOGRAM_BINS = 32
SEED = 20251128  # metric sampling seed (same inputs → same samples)
BSPLINE_MESH = 4  # control-grid intervals per axis (finer meshes overfit MI on phantoms)
BSPLINE_ITERS = 30
MASK_MARGIN_MM = 4  # the metric only sees template points within this of the brain mask
WORKING_MM = 2.0  # registration runs on the subject resampled to at least this spacing


SETTINGS = {
    "moving": "MNI152_T1_3mm head (rapidtide 3.2.0), atlas ASPECTS_2mm carried by nearest",
    "metric": f"Mattes MI, {HISTOGRAM_BINS} bins, random sampling (seed {SEED}), moving mask = "
              f"brain mask dilated {MASK_MARGIN_MM} mm",
    "fixed": f"subject smoothed and resampled to >= {WORKING_MM} mm per axis",
    "stages": "rigid (moments init; shrink 4/2/1) -> affine (2/1), regular-step gradient "
              f"descent -> B-spline mesh {BSPLINE_MESH}^3, LBFGSB {BSPLINE_ITERS} iterations",
}


@dataclass(frozen=True)
class AtlasReference:
    """The registered atlas on the subject grid (subject voxel order) and how it was made.

    ``classes``: uint8 contract classes 0..10; ``hemispheres``: uint8 codes (atlas side);
    ``metric``: final Mattes MI of each stage (lower is better); ``seconds``: per stage.
    """

    classes: np.ndarray
    hemispheres: np.ndarray
    metric: dict[str, float]
    seconds: dict[str, float]


def to_sitk(array: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """A nibabel-order array [i, j, k] with a voxel → RAS mm affine → a SimpleITK image
    (same voxels; origin and direction converted to LPS)."""
    lps = RAS_TO_LPS @ np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array).transpose(2, 1, 0)))
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection([float(d) for d in (lps[:3, :3] / spacing).ravel()])
    image.SetOrigin([float(o) for o in lps[:3, 3]])
    return image


def from_sitk(image: sitk.Image) -> np.ndarray:
    """A SimpleITK image → its array in nibabel order [i, j, k]."""
    return np.ascontiguousarray(sitk.GetArrayFromImage(image).transpose(2, 1, 0))


def working_image(image: sitk.Image, spacing_mm: float = WORKING_MM) -> sitk.Image:
    """``image`` smoothed and resampled (linear) to a spacing of at least ``spacing_mm`` per
    axis, same direction and field of view: the template is 3 mm, finer voxels only cost."""
    old = np.asarray(image.GetSpacing())
    new = np.maximum(old, spacing_mm)
    if np.allclose(new, old):
        return image
    size = np.ceil(np.asarray(image.GetSize()) * old / new).astype(int)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    origin = np.asarray(image.GetOrigin()) + direction @ ((new - old) / 2)
    smooth = sitk.SmoothingRecursiveGaussian(image, [float(v) for v in new / 2])
    return sitk.Resample(smooth, [int(v) for v in size], sitk.Transform(), sitk.sitkLinear,
                         [float(v) for v in origin], [float(v) for v in new],
                         image.GetDirection(), 0.0, sitk.sitkFloat32)


def brain_mask() -> sitk.Image:
    """The template's brain mask (1 mm MNI) dilated by ``MASK_MARGIN_MM``: scalp and skull
    differ most between subjects and contrasts, so the metric looks at the brain only."""
    from aspects_synth.atlas import load_atlas

    atlas = load_atlas()
    mask = to_sitk(atlas.brain_mask.astype(np.uint8), atlas.tissue_affine)
    return sitk.BinaryDilate(mask, [MASK_MARGIN_MM] * 3)


def _method(shrink: list[int], sigmas_mm: list[float], sampling: float, mask: sitk.Image,
            iterations: int = 0) -> sitk.ImageRegistrationMethod:
    """Mattes MI with random sampling over a multi-level pyramid within the moving ``mask``;
    with ``iterations``, regular-step gradient descent with physical-shift scales (else the
    caller sets the optimizer)."""
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricMovingMask(mask)
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=HISTOGRAM_BINS)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(sampling, SEED)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetShrinkFactorsPerLevel(shrink)
    reg.SetSmoothingSigmasPerLevel(sigmas_mm)
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    if iterations:
        reg.SetOptimizerAsRegularStepGradientDescent(
            learningRate=2.0, minStep=1e-3, numberOfIterations=iterations,
            gradientMagnitudeTolerance=1e-6,
        )
        reg.SetOptimizerScalesFromPhysicalShift()
    return reg


def register(
    fixed: sitk.Image, moving: sitk.Image, bspline_mesh: int = BSPLINE_MESH,
    bspline_iters: int = BSPLINE_ITERS,
) -> tuple[sitk.Transform, dict[str, float], dict[str, float]]:
    """Transform mapping ``fixed`` physical points to ``moving`` ones: rigid → affine →
    coarse B-spline (``bspline_mesh`` control intervals per axis, LBFGSB; 0 skips it).
    Returns (transform, final metric per stage, seconds per stage)."""
    metric, seconds = {}, {}
    t = time.perf_counter()
    mask = brain_mask()
    rigid = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    reg = _method([4, 2, 1], [4.0, 2.0, 1.0], 0.2, mask, 200)
    reg.SetInitialTransform(rigid, inPlace=True)
    reg.Execute(fixed, moving)
    metric["rigid"], seconds["rigid"] = reg.GetMetricValue(), time.perf_counter() - t

    t = time.perf_counter()
    affine = sitk.AffineTransform(3)
    affine.SetCenter(rigid.GetCenter())
    affine.SetMatrix(rigid.GetMatrix())
    affine.SetTranslation(rigid.GetTranslation())
    reg = _method([2, 1], [2.0, 1.0], 0.2, mask, 200)
    reg.SetInitialTransform(affine, inPlace=True)
    reg.Execute(fixed, moving)
    metric["affine"], seconds["affine"] = reg.GetMetricValue(), time.perf_counter() - t
    if not bspline_mesh:
        return affine, metric, seconds

    t = time.perf_counter()
    bspline = sitk.BSplineTransformInitializer(fixed, [bspline_mesh] * 3, order=3)
    reg = _method([2, 1], [2.0, 1.0], 0.1, mask)
    reg.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5,
                             numberOfIterations=bspline_iters, maximumNumberOfCorrections=5)
    reg.SetMovingInitialTransform(affine)
    reg.SetInitialTransform(bspline, inPlace=True)
    reg.Execute(fixed, moving)
    metric["bspline"], seconds["bspline"] = reg.GetMetricValue(), time.perf_counter() - t
    # CompositeTransform applies its last transform first: x → bspline → affine.
    return sitk.CompositeTransform([affine, bspline]), metric, seconds


def register_atlas(data: np.ndarray, affine: np.ndarray, bspline_mesh: int = BSPLINE_MESH,
                   bspline_iters: int = BSPLINE_ITERS, threads: int = 2) -> AtlasReference:
    """Register the MNI152 T1 head to a subject (``data`` [i, j, k], voxel → RAS ``affine``)
    and carry the ASPECTS atlas onto the subject grid (nearest neighbour)."""
    from aspects_synth.atlas import load_atlas

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    atlas = load_atlas()
    fixed = sitk.Cast(to_sitk(np.asarray(data, np.float32), affine), sitk.sitkFloat32)
    moving = sitk.Cast(to_sitk(atlas.head, atlas.head_affine), sitk.sitkFloat32)
    transform, metric, seconds = register(working_image(fixed), moving, bspline_mesh,
                                          bspline_iters)
    t = time.perf_counter()
    out = []
    for labels in (atlas.classes, atlas.hemispheres):
        moved = sitk.Resample(to_sitk(labels, atlas.atlas_affine), fixed, transform,
                              sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        out.append(from_sitk(moved))
    seconds["resample"] = time.perf_counter() - t
    return AtlasReference(out[0], out[1], {k: round(float(v), 4) for k, v in metric.items()},
                          {k: round(v, 1) for k, v in seconds.items()})
