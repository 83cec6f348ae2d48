"""Known-answer volumes for the oracle unet (shared by the end-to-end and load tests).

A phantom painted with the oracle's band centres of its true classes windows band-to-band,
so the oracle's answer is the truth as seen at network resolution: the painted truth is
resized to ``contract.NETWORK_SIZE`` (bilinear), banded by the oracle (centre channel of the
2.5D stack = the slice itself), thinned by the per-slice min-area rule and resized back
(nearest).  ``expected_classes`` computes that from the TRUE classes with the NumPy reference
(``aspects_client.server_reference`` + ``aspects_export.oracle.oracle_logits``), not from what
the client sent.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from aspects_client import contract
from aspects_client.geometry import Geometry, from_display, to_display
from aspects_client.intensity import window_bounds, window_to_uint8
from aspects_client.server_reference import context_stacks, network_input, postprocess
from aspects_export.oracle import oracle_classes, oracle_intensity, oracle_logits
from aspects_synth import Phantom, make_phantom

BAND_CENTRES = np.array(
    [oracle_intensity(c) for c in range(contract.NUM_CLASSES)], dtype=np.float32
)


def painted_phantom(**make_phantom_kwargs) -> Phantom:
    """make_phantom(...) with voxel values = the oracle band centre of each voxel's class."""
    phantom = make_phantom(**make_phantom_kwargs)
    data = BAND_CENTRES[phantom.classes]
    assert window_bounds(data) == (BAND_CENTRES[0], BAND_CENTRES[-1]), (
        "premise: the window must map bands to bands; choose other phantom parameters"
    )
    return dataclasses.replace(phantom, image=phantom.image.__class__(data, phantom.image.affine))


def oracle_answer(slices: np.ndarray, batch: int = 8) -> np.ndarray:
    """The oracle ensemble in NumPy: a volume's uint8 display slices [N, H, W] → labels
    [N, H, W] (2.5D stacks → network_input → oracle → postprocess at the native size)."""
    stacks = context_stacks(slices)
    out = np.empty(slices.shape, np.uint8)
    for lo in range(0, len(stacks), batch):
        logits = oracle_logits(network_input(stacks[lo : lo + batch]))
        out[lo : lo + batch] = postprocess(logits, slices.shape[1:])[0]
    return out


def expected_classes(classes: np.ndarray, geometry: Geometry) -> np.ndarray:
    """The oracle's answer [X, Y, Z] for a phantom painted with band centres of ``classes``:
    the truth seen at network resolution (see the module docstring)."""
    stack = np.ascontiguousarray(to_display(classes, geometry))
    painted = window_to_uint8(BAND_CENTRES[stack])  # what the client windows the volume to
    # premise: windowing keeps every class in its band, so the labels are a function of truth
    assert np.array_equal(oracle_classes(painted), stack), "the window moved a class's band"
    return from_display(oracle_answer(painted), geometry)


def truth_agreement(expected: np.ndarray, classes: np.ndarray) -> float:
    """Fraction of voxels labelled in the truth or in ``expected`` where the two agree: how
    much the network resolution costs (near 1 when resizing only blurs region borders)."""
    either = (expected > 0) | (classes > 0)
    return float(np.mean(expected[either] == classes[either]))
