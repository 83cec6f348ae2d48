"""README's first command, end to end: the embedded demo with the committed demo weights
(export → local Triton + SeaweedFS → `aspects segment s3://…`) segments the held-out demo
phantom (seed 3, never trained on) in its LPS file, checked against its exact labels."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from aspects_devkit import demo

from aspects_client import contract
from aspects_client.document import validate

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEMO_MEAN_DICE_FLOOR = 0.6  # the trained demo weights reach ~0.8 here; untrained ones 0.0


def test_demo_segments_the_phantom_with_the_trained_weights(tmp_path) -> None:
    result = demo.run(tmp_path, seed=3, orientation="LPS")
    assert result["mean_dice"] >= DEMO_MEAN_DICE_FLOOR, result["dice"]
    assert sum(d > 0.3 for d in result["dice"].values()) >= 8, result["dice"]
    document = json.loads((tmp_path / "phantom_LPS.json").read_text())
    validate(document)
    assert "synthetic images only" in document["provenance"]["steps"]["unet"]["checkpoint"]
    summary = document["summary"]
    sides = {s for region in summary.values() for s, e in region.items() if e["voxels"] > 0}
    assert sides == set(contract.HEMISPHERES)
    labels = np.asanyarray(nib.load(tmp_path / "phantom_LPS_labels.nii.gz").dataobj)
    assert labels.shape == (512, 512, 20) and labels.max() <= contract.NUM_CLASSES - 1
    for path in result["outputs"]:
        assert path.is_file() and path.stat().st_size > 0
