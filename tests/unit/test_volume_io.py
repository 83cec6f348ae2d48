"""Loading and validation: every bad input gets its own exception and a useful message."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from aspects_client import errors
from aspects_client.volume_io import Limits, load_volume

AFFINE = np.diag([0.9, 0.9, 5.0, 1.0])


def nii(data: np.ndarray, affine: np.ndarray = AFFINE, *, cls=nib.Nifti1Image) -> bytes:
    return cls(data, affine).to_bytes()


def gz(raw: bytes) -> bytes:
    return gzip.compress(raw, compresslevel=1)


def volume(shape=(96, 92, 4), dtype=np.float32, seed=0) -> np.ndarray:
    """Random intensities on a grid big enough for a head slice (>= 80 mm in-plane)."""
    return (np.random.default_rng(seed).random(shape) * 100).astype(dtype)


def bomb(declared_shape=(96, 96, 8), inflated_bytes=1 << 30) -> bytes:
    """A valid small NIfTI header followed by ~1 GiB of zeros, gzip-compressed."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(declared_shape)
    hdr.set_data_dtype(np.int16)
    hdr.set_sform(AFFINE, code="scanner")
    hdr.set_data_offset(352)
    header = hdr.binaryblock + bytes(4)  # 348-byte header + empty extension flag
    comp = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [comp.compress(header)]
    zeros = bytes(16 << 20)
    for _ in range(inflated_bytes // len(zeros)):
        parts.append(comp.compress(zeros))
    parts.append(comp.flush())
    return b"".join(parts)


# --- good input --------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
def test_loads_bytes_and_paths(tmp_path: Path, compress: bool, no_temp_files) -> None:
    data = volume()
    raw = nii(data)
    raw = gz(raw) if compress else raw
    from_bytes = load_volume(raw, name="mem")
    path = tmp_path / ("v.nii.gz" if compress else "v.nii")
    path.write_bytes(raw)
    from_path = load_volume(path)
    for v in (from_bytes, from_path):
        assert v.shape == data.shape
        np.testing.assert_array_equal(v.data, data)
        np.testing.assert_allclose(v.affine, AFFINE)
    assert from_path.source == str(path)


def test_scaled_integers_become_float(no_temp_files) -> None:
    stored = (np.arange(96 * 96 * 3) % 1000).astype(np.int16).reshape(96, 96, 3)
    img = nib.Nifti1Image(stored, AFFINE)
    img.header.set_slope_inter(0.5, 10.0)
    v = load_volume(img.to_bytes())
    assert v.data.dtype == np.float32
    np.testing.assert_allclose(v.data, stored * 0.5 + 10)


def test_nifti2_and_nibabel_image(no_temp_files) -> None:
    data = volume(dtype=np.int16)
    v2 = load_volume(nii(data, cls=nib.Nifti2Image))
    np.testing.assert_array_equal(v2.data, data)
    vi = load_volume(nib.Nifti1Image(data, AFFINE))
    np.testing.assert_array_equal(vi.data, data)


def test_single_volume_4d_is_squeezed_and_index_selects(no_temp_files) -> None:
    one = load_volume(nii(volume((96, 96, 3, 1))))
    assert one.shape == (96, 96, 3)
    series = volume((96, 96, 3, 4))
    picked = load_volume(nii(series), volume_index=2)
    np.testing.assert_array_equal(picked.data, series[..., 2])


# --- bad input: (bytes factory, kwargs, exception, words the message must contain) --------

BAD = {
    "not-nifti": (lambda: b"hello, I am a text file" * 40, {}, errors.NotNiftiError, "not a NIfTI"),
    "png": (lambda: b"\x89PNG\r\n\x1a\n" + bytes(600), {}, errors.NotNiftiError, "NIfTI"),
    "empty": (lambda: b"", {}, errors.NotNiftiError, "NIfTI"),
    "truncated-header": (lambda: nii(volume())[:200], {}, errors.CorruptVolumeError, "truncated"),
    "truncated-nii": (lambda: nii(volume())[:-500], {}, errors.CorruptVolumeError, "truncated"),
    "truncated-gz": (
        lambda: gz(nii(volume((96, 96, 8))))[:-3000],
        {},
        errors.CorruptVolumeError,
        "truncated",
    ),
    "corrupt-gz": (
        lambda: (lambda b: b[:40] + bytes(x ^ 0x5A for x in b[40:400]) + b[400:])(
            gz(nii(volume((96, 96, 8))))
        ),
        {},
        errors.CorruptVolumeError,
        "corrupt",
    ),
    "2d": (lambda: nii(volume((16, 12))), {}, errors.DimensionalityError, "3D"),
    "4d-series": (
        lambda: nii(volume((8, 8, 3, 5))),
        {},
        errors.DimensionalityError,
        "--volume-index",
    ),
    "4d-bad-index": (
        lambda: nii(volume((8, 8, 3, 5))),
        {"volume_index": 7},
        errors.DimensionalityError,
        "out of range",
    ),
    "complex": (
        lambda: nii(volume().astype(np.complex64)),
        {},
        errors.DtypeError,
        "not a real scalar",
    ),
    "rgb": (
        lambda: nii(np.zeros((4, 4, 2), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])),
        {},
        errors.DtypeError,
        "RGB",
    ),
    "nan": (
        lambda: nii(np.where(volume() > 50, np.nan, 1).astype(np.float32)),
        {},
        errors.NonFiniteDataError,
        "NaN",
    ),
    "inf": (
        lambda: nii(np.where(volume() > 99, np.inf, 1).astype(np.float32)),
        {},
        errors.NonFiniteDataError,
        "infinite",
    ),
    "tiny-voxels": (
        lambda: nii(volume(), np.diag([0.001, 0.9, 5, 1])),
        {},
        errors.VoxelSizeError,
        "voxel sizes",
    ),
    "huge-voxels": (
        lambda: nii(volume(), np.diag([0.9, 0.9, 80, 1])),
        {},
        errors.VoxelSizeError,
        "voxel sizes",
    ),
    "too-many-voxels": (
        lambda: nii(volume((40, 40, 10))),
        {"limits": Limits(max_voxels=10_000)},
        errors.VolumeTooLargeError,
        "exceed",
    ),
    "header-declares-huge": (
        lambda: bomb(declared_shape=(4096, 4096, 4096), inflated_bytes=16 << 20),
        {},
        errors.VolumeTooLargeError,
        "exceed",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_refused_clearly(case: str, tmp_path: Path, no_temp_files) -> None:
    make, kwargs, exc_type, words = BAD[case]
    raw = make()
    for source in (raw, tmp_path / f"{case}.nii"):
        if isinstance(source, Path):
            source.write_bytes(raw)
        with pytest.raises(exc_type) as info:
            load_volume(source, **kwargs)
        message = str(info.value)
        assert words in message, message
        assert "\n" not in message
        assert isinstance(info.value, errors.InvalidVolumeError)


def test_missing_path(tmp_path: Path, no_temp_files) -> None:
    with pytest.raises(errors.InputNotFoundError, match="no such file"):
        load_volume(tmp_path / "absent.nii.gz")


def test_gzip_bomb_refused_with_bounded_memory(no_temp_files) -> None:
    raw = bomb()  # inflates to 1 GiB; the header declares 144 KiB of voxels
    assert len(raw) < 2 << 20
    tracemalloc.start()
    try:
        with pytest.raises(errors.DecompressionBombError, match="gzip bomb"):
            load_volume(raw, name="bomb.nii.gz")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"peak {peak / 2**20:.1f} MiB while refusing a bomb"


def test_multi_member_gzip_is_read_like_gzip_does(no_temp_files) -> None:
    """bgzip/pigz-style streams: several gzip members back to back."""
    data = volume((96, 96, 6))
    raw = nii(data)
    members = b"".join(gzip.compress(raw[i : i + 3000]) for i in range(0, len(raw), 3000))
    assert gzip.decompress(members) == raw
    np.testing.assert_array_equal(load_volume(members).data, data)


def test_tiny_stream_declaring_a_huge_volume_is_refused_before_allocating(no_temp_files):
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((512, 512, 128))  # 128 MiB of float32, within every bound
    hdr.set_data_dtype(np.float32)
    hdr.set_sform(AFFINE, code="scanner")
    hdr.set_data_offset(352)
    raw = gzip.compress(hdr.binaryblock + bytes(4))
    tracemalloc.start()
    try:
        with pytest.raises(errors.CorruptVolumeError, match="cannot hold"):
            load_volume(raw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20


def test_empty_image_is_refused(no_temp_files) -> None:
    with pytest.raises(errors.DimensionalityError, match="empty"):
        load_volume(nib.Nifti1Image(np.zeros((4, 4, 0), np.float32), AFFINE))


def test_one_rule_for_nifti_and_dicom_slices_and_shear() -> None:
    """NIfTI took 1-2 slices and 85° shears where DICOM demanded 3 slices and <= 30°
    (issue 24): contract.MIN_SLICES and contract.MAX_SHEAR_DEG for both."""
    from aspects_client import contract
    from aspects_client.errors import DimensionalityError, VoxelSizeError

    rng = np.random.default_rng(0)
    two = rng.uniform(1, 100, (96, 96, contract.MIN_SLICES - 1)).astype(np.float32)
    with pytest.raises(DimensionalityError, match=r"only 2 slice\(s\).*at least 3"):
        load_volume(nib.Nifti1Image(two, AFFINE))
    sheared = AFFINE.copy()
    sheared[1, 2] = AFFINE[2, 2] * np.tan(np.radians(contract.MAX_SHEAR_DEG + 10))
    data = rng.uniform(1, 100, (96, 96, 6)).astype(np.float32)
    with pytest.raises(VoxelSizeError, match=r"sheared by 40\.0°"):
        load_volume(nib.Nifti1Image(data, sheared))
    sheared[1, 2] = AFFINE[2, 2] * np.tan(np.radians(contract.MAX_SHEAR_DEG - 10))
    assert load_volume(nib.Nifti1Image(data, sheared)).shape == (96, 96, 6)


def test_messages_print_plain_numbers_not_numpy_reprs() -> None:
    """An orientation message printed ``np.float64(2.0)`` (issue 24)."""
    from aspects_client.volume_io import plain_numbers

    assert plain_numbers("w2 is np.float64(-3.0), qfac np.float32(1.0)") == "w2 is -3.0, qfac 1.0"
