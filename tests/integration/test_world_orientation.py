"""Where the answer lands in WORLD space, with a network whose answer depends on position.

A pixel-wise oracle cannot see an orientation error that the client makes on the way to the
network and undoes on the way back (mirror, flip or transpose the display slices, or reverse
the slice order, then invert it): the labels still land on the right voxels.  A real network,
trained on the contract's orientation (row 0 anterior, column 0 patient left, channel 0 the
slice below), would then see a mirrored head.  Here the unet is a QUADRANT oracle: each
network pixel reads ONE channel of the 2.5D stack, chosen by its quadrant::

    network rows 0..127 (anterior)   | columns 0..127 (patient left): channel 0 (slice below)
                                     | columns 128..255 (right):      channel 1 (the slice)
    network rows 128..255 (posterior)| columns 0..127 (left):         channel 2 (slice above)
                                     | columns 128..255 (right):      channel 1 (the slice)

so any mirror (L/R or A/P), transpose or slice-order reversal before the network changes
which class appears where, even when it is undone afterwards.  The phantom: axial level k
(inferior first) is painted uniformly with the oracle band of class ``k % 11``.  The expected
label of every voxel is computed from its WORLD coordinates only (the affine, patient
left = smaller x, anterior = larger y, inferior = smaller z), never from the project's
geometry code, for volumes stored RAS, LPS, PIR and ASL, and compared voxel by voxel with what
``AspectsClient.segment`` returns through a real Triton.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import nibabel.orientations as nio
import numpy as np
import onnx
import pytest
from aspects_devkit.local_triton import LocalTriton
from onnx import helper, numpy_helper

from aspects_client import contract
from aspects_client.client import AspectsClient
from aspects_client.rasterize import rasterize_document
from aspects_export.oracle import oracle_intensity, oracle_model

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("triton_server_venv")]

ORDERS = ("RAS", "LPS", "PIR", "ASL")
N_LEVELS = 12  # axial levels; level k painted with class k % 11 (0..10, then 0 again)
LEVEL_CLASSES = np.arange(N_LEVELS) % contract.NUM_CLASSES
# canonical grid: 40 columns (patient L-R) x 48 rows (A-P) x 12 levels; EVEN in-plane sizes, so
# the native halves map exactly onto the network halves (nearest, half-pixel centres)
RAS_SHAPE = (40, 48, N_LEVELS)
RAS_AFFINE = np.array(
    [[2.5, 0, 0, -48.75], [0, 2.0, 0, -47.0], [0, 0, 4.0, -22.0], [0, 0, 0, 1]], float
)  # a 100 x 96 mm field of view: the client refuses slices under 80 mm (not a head)
# channel read by each network quadrant: [anterior?][patient left?]
QUADRANT_CHANNEL = {(True, True): 0, (True, False): 1, (False, True): 2, (False, False): 1}


def quadrant_channels() -> np.ndarray:
    """int64 [H, W]: the channel each network pixel reads (see the module docstring)."""
    h, w = contract.NETWORK_SIZE
    anterior = (np.arange(h) < h // 2)[:, None]
    left = (np.arange(w) < w // 2)[None, :]
    out = np.empty((h, w), np.int64)
    for (a, lft), channel in QUADRANT_CHANNEL.items():
        out[(anterior == a) & (left == lft)] = channel
    return out


def quadrant_oracle_model() -> onnx.ModelProto:
    """The strip oracle's graph with a per-pixel channel choice: its constants ``select``
    ([1, 3, 1, W] one-hot per column) and ``mean_sel`` become [1, 3, H, W] per pixel."""
    model = oracle_model(context=True)
    ch = contract.NETWORK_CHANNELS
    select = (np.arange(ch)[:, None, None] == quadrant_channels()[None]).astype(np.float32)[None]
    mean = np.asarray(contract.IMAGENET_MEAN, np.float32).reshape(1, ch, 1, 1)
    replace = {"select": select, "mean_sel": (mean * select).astype(np.float32)}
    for node in model.graph.node:
        name = node.output[0]
        if node.op_type == "Constant" and name in replace:
            del node.attribute[:]
            node.attribute.append(
                helper.make_attribute("value", numpy_helper.from_array(replace.pop(name), name))
            )
    assert not replace, f"the strip oracle graph changed: {sorted(replace)} not found"
    model.doc_string = "ORACLE unet (not a network): quadrant q of the image reads channel c(q)"
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def triton_quadrant_oracle(
    tmp_path_factory: pytest.TempPathFactory, pre_post_onnx_dir: Path
) -> Iterator[LocalTriton]:
    """tritonserver serving a CPU repository whose unet is the quadrant oracle."""
    import shutil

    from aspects_export.repository import write_repository

    onnx_dir = tmp_path_factory.mktemp("onnx_quadrant")
    for name in (contract.PREPROCESS_MODEL, contract.POSTPROCESS_MODEL):
        shutil.copyfile(pre_post_onnx_dir / f"{name}.onnx", onnx_dir / f"{name}.onnx")
    onnx.save(quadrant_oracle_model(), str(onnx_dir / f"{contract.UNET_MODEL}.onnx"))
    repository = write_repository(onnx_dir, tmp_path_factory.mktemp("repo_quadrant"), "cpu")
    log = tmp_path_factory.mktemp("log_quadrant") / "tritonserver.log"
    with LocalTriton(repository, log_path=log) as server:
        yield server


def stored(order: str) -> tuple[np.ndarray, tuple[int, int, int]]:
    """(affine, shape) of the canonical grid stored in voxel order ``order`` (nibabel only):
    every voxel keeps its world position."""
    transform = nio.ornt_transform(nio.axcodes2ornt("RAS"), nio.axcodes2ornt(tuple(order)))
    affine = RAS_AFFINE @ nio.inv_ornt_aff(transform, RAS_SHAPE)
    shape = tuple(int(RAS_SHAPE[int(axis)]) for axis in np.argsort(transform[:, 0]))
    assert nib.aff2axcodes(affine) == tuple(order)
    return affine, shape  # type: ignore[return-value]


def world_of(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """World mm of every voxel centre: float64 [*shape, 3]."""
    ijk = np.indices(shape).reshape(3, -1).T
    return nib.affines.apply_affine(affine, ijk).reshape(*shape, 3)


class WorldTruth:
    """The phantom and the quadrant oracle's answer, from world coordinates alone."""

    def __init__(self, affine: np.ndarray, shape: tuple[int, ...]) -> None:
        xyz = world_of(affine, shape)
        self.x_mid = (xyz[..., 0].min() + xyz[..., 0].max()) / 2  # the grid's own middle
        self.y_mid = (xyz[..., 1].min() + xyz[..., 1].max()) / 2
        self.levels = np.unique(np.round(xyz[..., 2], 6))  # inferior to superior
        assert len(self.levels) == N_LEVELS
        self.painted = LEVEL_CLASSES[self.level(xyz[..., 2])]
        self.answer = self.classes_at(xyz)

    def level(self, z: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.levels, np.round(z, 6))

    def classes_at(self, xyz: np.ndarray) -> np.ndarray:
        """Expected class at world points [..., 3]: the class of the level the quadrant reads."""
        left = xyz[..., 0] < self.x_mid  # patient left: smaller x (RAS+)
        anterior = xyz[..., 1] > self.y_mid
        channel = np.where(anterior & left, 0, np.where(left, 2, 1))
        offset = np.asarray(contract.CONTEXT_OFFSETS)[channel]
        source = np.clip(self.level(xyz[..., 2]) + offset, 0, N_LEVELS - 1)
        return LEVEL_CLASSES[source]


@pytest.fixture(scope="module")
def segmented(triton_quadrant_oracle: LocalTriton) -> dict[str, tuple[WorldTruth, object]]:
    band = np.array([oracle_intensity(c) for c in range(contract.NUM_CLASSES)], np.float32)
    results = {}
    with AspectsClient(triton_quadrant_oracle.grpc_url, overlay=False) as client:
        for order in ORDERS:
            affine, shape = stored(order)
            truth = WorldTruth(affine, shape)
            image = nib.Nifti1Image(band[truth.painted], affine)
            results[order] = (truth, client.segment(image, name=f"quadrants_{order}.nii.gz"))
    return results


def test_the_world_answer_is_position_dependent() -> None:
    """Premises: every class is expected somewhere, and a left/right mirror, an
    anterior/posterior flip or a reversed slice order would each change the answer."""
    truth = WorldTruth(*stored("RAS"))
    answer = truth.answer  # stored RAS: axes 0, 1, 2 = x (L->R), y (P->A), z (I->S)
    assert set(np.unique(answer)) == set(range(contract.NUM_CLASSES))
    for axis in range(3):
        assert np.mean(np.flip(answer, axis) != answer) > 0.3, axis


@pytest.mark.parametrize("order", ORDERS)
def test_label_map_matches_the_world_answer_voxel_by_voxel(segmented, order) -> None:
    truth, result = segmented[order]
    labels = np.asanyarray(result.label_image.dataobj)
    assert labels.shape == truth.answer.shape
    np.testing.assert_allclose(result.label_image.affine, stored(order)[0])
    mismatch = labels != truth.answer
    assert not mismatch.any(), (
        f"{order}: {int(mismatch.sum())} of {mismatch.size} voxels differ from the world "
        f"answer, e.g. at {np.argwhere(mismatch)[:3].tolist()}"
    )
    classes, _ = rasterize_document(result.document)
    np.testing.assert_array_equal(classes, truth.answer)


@pytest.mark.parametrize("order", ORDERS)
def test_contours_lie_in_the_expected_world_quadrant(segmented, order) -> None:
    """Every contour point (world mm) lies where the world answer expects that region; on each
    inner level the class of the level BELOW is found only in the patient's left anterior
    quadrant and the class of the level ABOVE only in the left posterior one; hemispheres are
    the patient's (x < the grid's middle = left)."""
    truth, result = segmented[order]
    seen: dict[tuple[int, str], set[tuple[bool, bool]]] = {}
    for entry in result.document["slices"]:
        for key, by_hemi in entry["regions"].items():
            index = contract.REGION_BY_KEY[key].index
            for hemi, rings in by_hemi.items():
                for ring in rings:
                    xyz = np.asarray(ring["world_mm"], float)
                    assert np.all(truth.classes_at(xyz) == index), (order, key, hemi, xyz[:3])
                    left = xyz[:, 0] < truth.x_mid
                    assert np.all(left == (hemi == contract.HEMISPHERE_LEFT)), (order, key, hemi)
                    level = int(truth.level(xyz[:1, 2])[0])
                    anterior = xyz[:, 1] > truth.y_mid
                    quadrants = set(zip(anterior.tolist(), left.tolist(), strict=True))
                    seen.setdefault((level, key), set()).update(quadrants)
    for level in range(1, N_LEVELS - 1):
        below, here, above = (int(LEVEL_CLASSES[level + d]) for d in (-1, 0, 1))
        if below:  # the slice below is read only by the anterior-left quadrant
            key = contract.REGION_BY_INDEX[below].key
            assert seen.get((level, key)) == {(True, True)}, (order, level, key, seen)
        if above:
            key = contract.REGION_BY_INDEX[above].key
            assert seen.get((level, key)) == {(False, True)}, (order, level, key, seen)
        if here:
            key = contract.REGION_BY_INDEX[here].key
            assert seen.get((level, key)) == {(True, False), (False, False)}, (order, level, key)
