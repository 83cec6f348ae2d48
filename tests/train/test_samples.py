"""Training data uses the serving contract: the client's prepare, resize and normalisation,
byte for byte, in every voxel order; augmentations keep labels exact."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from aspects_client import contract
from aspects_client.display_stack import prepare
from aspects_client.server_reference import (
    context_stacks,
    network_input,
    normalise,
    resize_image,
    resize_labels,
)
from aspects_client.volume_io import load_volume
from aspects_synth import VOXEL_ORDERS, reorder
from aspects_synth.recipes import draw_recipe
from aspects_train.augment import AugmentConfig, crop_transform, random_crop, warp_pair
from aspects_train.dataset import CropDataset, SliceDataset, SynthDataset, stack_input
from aspects_train.samples import (
    LabelMismatchError,
    SliceStack,
    stack_from_files,
    stack_from_volume,
)


@pytest.fixture(scope="module")
def small_stack(phantom_small) -> SliceStack:
    return stack_from_volume(load_volume(phantom_small.image), phantom_small.classes)


def test_training_slices_are_the_serving_slices(phantom_small, small_stack):
    served = prepare(load_volume(phantom_small.image))
    assert small_stack.slices.tobytes() == served.slices.tobytes()
    assert small_stack.slices.shape == served.slices.shape


HW = contract.NETWORK_SIZE
N = HW[0]


def test_training_input_is_the_serving_input_bytes(small_stack):
    """SliceDataset (validation) and an identity crop (training) give the bytes of
    network_input over the client's 2.5D stacks, first and last slice included."""
    served_stacks = context_stacks(small_stack.slices)
    ds = SliceDataset([small_stack], labelled_only=False)
    last = len(small_stack.slices) - 1
    for n in (0, 4, last):
        assert np.array_equal(stack_input(small_stack, n), served_stacks[n])
        x, y = ds[n]
        served = network_input(served_stacks[n : n + 1])[0]
        assert x.numpy().tobytes() == served.tobytes()
        expected = resize_labels(small_stack.labels[n : n + 1], HW)[0]
        assert np.array_equal(y.numpy(), expected)
    image = resize_image(served_stacks[4:5])[0]
    labels = resize_labels(small_stack.labels[4:5], HW)[0]
    centre = (N - 1) / 2
    img, lab = warp_pair(image, labels, crop_transform((centre, centre), N), N)
    assert img.tobytes() == image.tobytes() and np.array_equal(lab, labels)
    assert normalise(img[None]).tobytes() == network_input(served_stacks[4:5]).tobytes()


def test_synth_dataset_is_reproducible_and_new_each_epoch():
    ds = SynthDataset(samples_per_epoch=4, seed_start=1000, per_head=2)
    x0, y0 = ds[1]
    assert x0.shape == (contract.NETWORK_CHANNELS, *HW) and y0.shape == HW
    assert ds.head_seed(0) == ds.head_seed(1) != ds.head_seed(2)
    again = SynthDataset(samples_per_epoch=4, seed_start=1000, per_head=2)[1]
    assert np.array_equal(x0, again[0]) and np.array_equal(y0, again[1])
    ds.set_epoch(1)
    assert ds.head_seed(0) not in {SynthDataset(4, 1000, 2).head_seed(i) for i in range(4)}


@pytest.mark.parametrize("order", VOXEL_ORDERS)
def test_training_stack_is_the_same_in_every_voxel_order(phantom_small, small_stack, order):
    ph = reorder(phantom_small, order)
    stack = stack_from_volume(load_volume(ph.image), ph.classes)
    assert np.array_equal(stack.slices, small_stack.slices)
    assert np.array_equal(stack.labels, small_stack.labels)


def test_stack_from_files_reads_any_orientation(tmp_path, phantom_small, small_stack):
    ph = reorder(phantom_small, "PIR")
    vol, lab = tmp_path / "v.nii.gz", tmp_path / "l.nii.gz"
    nib.save(ph.image, vol)
    nib.save(ph.label_image(), lab)
    stack = stack_from_files(vol, lab)
    assert np.array_equal(stack.labels, small_stack.labels)


def test_stack_from_files_refuses_misfits(tmp_path, phantom_small):
    vol = tmp_path / "v.nii.gz"
    nib.save(phantom_small.image, vol)
    shifted = phantom_small.image.affine.copy()
    shifted[0, 3] += 5.0
    cases = {
        "affine": nib.Nifti1Image(phantom_small.classes, shifted),
        "shape": nib.Nifti1Image(phantom_small.classes[:-1], phantom_small.image.affine),
        "values": nib.Nifti1Image(
            (phantom_small.classes.astype(np.int16) + 20), phantom_small.image.affine
        ),
        "non-integer": nib.Nifti1Image(
            phantom_small.classes.astype(np.float32) + 0.5, phantom_small.image.affine
        ),
    }
    messages = {"affine": "affine", "shape": "shape", "values": "0..10", "non-integer": "integer"}
    for name, img in cases.items():
        lab = tmp_path / f"{name}.nii.gz"
        nib.save(img, lab)
        with pytest.raises(LabelMismatchError, match=messages[name]):
            stack_from_files(vol, lab)


def _sample(small_stack):
    image = resize_image(context_stacks(small_stack.slices)[4:5])[0]
    labels = resize_labels(small_stack.labels[4:5], HW)[0]
    return image, labels


def test_flip_mirrors_image_and_keeps_every_label(small_stack):
    """Classes are hemisphere-agnostic: a mirrored slice has mirrored labels, same values."""
    image, labels = _sample(small_stack)
    centre = (100.0, 130.0)
    img, lab = warp_pair(image, labels, crop_transform(centre, 128, 7.0, 1.1), 128)
    fimg, flab = warp_pair(image, labels, crop_transform(centre, 128, 7.0, 1.1, flip=True), 128)
    assert np.array_equal(flab, lab[:, ::-1])
    np.testing.assert_allclose(fimg, img[:, :, ::-1], atol=0.01)  # OpenCV fixed-point weights
    assert set(np.unique(flab)) == set(np.unique(lab)) and len(np.unique(lab)) > 3


def test_rotation_and_scale_keep_labels_exact_classes(small_stack):
    image, labels = _sample(small_stack)
    rng = np.random.default_rng(0)
    for _ in range(5):
        img, lab = random_crop(image, labels, 96, rng, AugmentConfig())
        assert lab.dtype == np.uint8 and set(np.unique(lab)) <= set(np.unique(labels))
        assert img.dtype == np.float32 and img.min() >= 0 and img.max() <= 255


def test_crop_dataset_is_reproducible_per_epoch(small_stack):
    ds = CropDataset([small_stack], crop=64, samples_per_epoch=3, seed=5)
    a = [ds[i] for i in range(3)]
    b = [ds[i] for i in range(3)]
    assert all(
        np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b, strict=True)
    )
    ds.set_epoch(1)
    c = ds[0]
    assert not np.array_equal(a[0][0], c[0])
    assert a[0][0].shape == (3, 64, 64) and a[0][1].dtype.is_floating_point is False


def test_recipes_are_seeded_and_varied():
    assert draw_recipe(1000) == draw_recipe(1000)
    recipes = [draw_recipe(s) for s in range(1000, 1020)]
    assert len({r.key() for r in recipes}) == 20
    assert {r.in_plane for r in recipes} >= {(512, 512), (256, 256)}
    assert any(r.lesions for r in recipes) and any(not r.lesions for r in recipes)
