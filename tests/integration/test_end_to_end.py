"""Known answers end to end: phantom files in several voxel orders, uploaded to a real
SeaweedFS (SigV4), downloaded, segmented by a real Triton serving the ORACLE unet (maps
intensity bands to classes), contoured, and rasterised back into each original grid.

The phantom's intensities are the oracle's band centres of its true classes, so the
right answer is the truth as seen at network resolution (``oracle_cases.expected_classes``:
resized to the network size and back, minus classes under the per-slice min-area rule),
computed from the true classes, and close to the truth itself.
"""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from aspects_client import contract
from aspects_client.assemble import assemble
from aspects_client.client import AspectsClient
from aspects_client.display_stack import prepare
from aspects_client.document import validate
from aspects_client.geometry import geometry_of, to_display
from aspects_client.inference import TritonSegmenter
from aspects_client.rasterize import rasterize_document
from aspects_client.storage import fetch_object
from aspects_client.volume_io import load_volume
from aspects_synth import reorder

from .oracle_cases import expected_classes, painted_phantom, truth_agreement

pytestmark = pytest.mark.integration
ORDERS = ("RAS", "LPS", "LAS", "PIR")
BUCKET = "e2e-known-answers"


@pytest.fixture(scope="module")
def oracle_phantom():
    """A 512x512x6 phantom whose voxel values are the oracle band centres of its classes."""
    return painted_phantom(seed=3, n_slices=6)


@pytest.fixture(scope="module")
def segmented(oracle_phantom, triton_oracle, s3_client):
    s3_client.create_bucket(Bucket=BUCKET)
    segmenter = TritonSegmenter(triton_oracle.server.grpc_url)
    results = {}
    for order in ORDERS:
        variant = reorder(oracle_phantom, order)
        key = f"cases/{order}.nii.gz"
        s3_client.put_object(Bucket=BUCKET, Key=key, Body=gzip.compress(variant.image.to_bytes()))
        volume = load_volume(fetch_object(f"s3://{BUCKET}/{key}", s3_client), name=key)
        prepared = prepare(volume)
        labels, confidence = segmenter.infer(prepared.slices)
        result = assemble(volume, prepared, labels, overlay=False)
        results[order] = (variant, prepared, labels, confidence, result)
    segmenter.close()
    return results


@pytest.mark.parametrize("order", ORDERS)
def test_labels_land_on_the_original_voxels(segmented, order) -> None:
    variant, prepared, _, confidence, result = segmented[order]
    validate(result.document)
    classes, hemis = rasterize_document(result.document)
    expected = expected_classes(variant.classes, prepared.geometry)
    assert np.count_nonzero(expected) > 10_000
    assert truth_agreement(expected, variant.classes) > 0.9  # only borders blur
    np.testing.assert_array_equal(classes, expected)
    labelled = (expected > 0) & (variant.classes > 0)  # the truth has hemispheres there
    assert np.array_equal(hemis[labelled], variant.hemispheres[labelled]), "wrong hemisphere"
    # the oracle is certain: every present class has confidence ~1
    assert confidence.shape == (6, contract.NUM_CLASSES)
    present = np.stack([np.bincount(s.ravel(), minlength=11) > 0 for s in segmented[order][2]])
    assert np.all(confidence[present] > 0.99)


def test_every_voxel_order_agrees_in_world_space(segmented) -> None:
    def world_set(order):
        variant, _, _, _, result = segmented[order]
        classes, hemis = rasterize_document(result.document)
        ijk = np.argwhere(classes > 0)
        xyz = ijk @ variant.image.affine[:3, :3].T + variant.image.affine[:3, 3]
        keys = classes[tuple(ijk.T)].astype(np.int64) * 4 + hemis[tuple(ijk.T)]
        return {(int(k), *np.round(p, 2)) for k, p in zip(keys, xyz, strict=True)}

    reference = world_set(ORDERS[0])
    for order in ORDERS[1:]:
        assert world_set(order) == reference, order
    summaries = [segmented[o][4].document["summary"] for o in ORDERS]
    assert all(s == summaries[0] for s in summaries)


@pytest.mark.parametrize("order", ["LPS", "PIR"])
def test_more_slices_than_one_batch_of_non_square_slices_voxel_by_voxel(triton_oracle, order):
    """23 axial slices (more than MAX_BATCH_SIZE = 16: two requests) of 200 x 170 pixels (not
    square, not the network's 256) through the whole client (``AspectsClient.segment``: window,
    2.5D stacks, requests, the Triton ensemble with the oracle unet, contours, label map):
    every voxel of the label map equals the oracle's NumPy reference answer."""
    phantom = reorder(
        painted_phantom(seed=7, in_plane=(170, 200), n_slices=23, slice_mm=2.0, centre_z_mm=5.0),
        order,
    )
    geometry = geometry_of(phantom.image.affine, phantom.image.shape)
    n, h, w = geometry.display_shape
    assert n == 23 > contract.MAX_BATCH_SIZE and (h, w) == (200, 170)
    expected = expected_classes(phantom.classes, geometry)
    # every slice, in both requests, has plenty to get right (a lost or shifted request shows)
    per_slice = [int(np.count_nonzero(s)) for s in to_display(expected, geometry)]
    assert min(per_slice) > 1000, per_slice
    assert len(np.unique(expected)) == contract.NUM_CLASSES
    assert truth_agreement(expected, phantom.classes) > 0.9  # only borders blur

    with AspectsClient(triton_oracle.server.grpc_url, overlay=False) as client:
        result = client.segment(phantom.image, name=f"{order}.nii.gz")
    labels = np.asanyarray(result.label_image.dataobj)
    assert labels.shape == phantom.classes.shape
    np.testing.assert_allclose(result.label_image.affine, phantom.image.affine)
    np.testing.assert_array_equal(labels, expected)
    validate(result.document)
    classes, hemis = rasterize_document(result.document)
    np.testing.assert_array_equal(classes, expected)
    labelled = (expected > 0) & (phantom.classes > 0)
    assert np.array_equal(hemis[labelled], phantom.hemispheres[labelled]), "wrong hemisphere"
