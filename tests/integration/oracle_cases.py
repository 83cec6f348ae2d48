"""Known-answer volumes for the oracle unet (shared by the end-to-end and load tests).

A phantom painted with the oracle's band centres of its true classes windows band-to-band,
so the oracle's answer is the truth itself minus classes that the per-slice min-area rule
removes.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from aspects_client import contract
from aspects_client.geometry import Geometry, from_display, to_display
from aspects_client.intensity import window_bounds
from aspects_export.oracle import oracle_intensity
from aspects_export.phantom import Phantom, make_phantom

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


def expected_classes(classes: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Truth [X, Y, Z] minus classes under MIN_AREA_PIXELS in a display slice."""
    stack = np.array(to_display(classes, geometry))
    for n in range(len(stack)):
        counts = np.bincount(stack[n].ravel(), minlength=contract.NUM_CLASSES)
        small = np.flatnonzero((counts > 0) & (counts < contract.MIN_AREA_PIXELS))
        stack[n][np.isin(stack[n], small[small > 0])] = 0
    return from_display(stack, geometry)
