"""Loading never invents geometry, never floods memory and says what is wrong in words a
user can check: orientation, voxel sizes, scaling, content, in-plane size, memory bound,
messages (aspects_client.volume_io, .intensity, .slicing)."""

from __future__ import annotations

import contextlib
import gzip
import io
import logging
import re
import tracemalloc
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from aspects_client import contract, errors
from aspects_client.display_stack import prepare
from aspects_client.intensity import window_bounds, window_to_uint8
from aspects_client.volume_io import Limits, load_volume, memory_bound

AFFINE = np.diag([0.9, 0.9, 5.0, 1.0])  # 96 x 0.9 mm = 86 mm in-plane: a (small) head
MiB = 1 << 20


def head(shape=(96, 96, 6), dtype=np.float32, seed=0) -> np.ndarray:
    """A disc of random intensities 1..999 in every slice, 0 outside: [X, Y, Z] of dtype."""
    x, y = np.ogrid[: shape[0], : shape[1]]
    disc = (x - shape[0] / 2) ** 2 + (y - shape[1] / 2) ** 2 < (0.4 * min(shape[:2])) ** 2
    rng = np.random.default_rng(seed)
    data = np.zeros(shape, dtype)
    data[disc] = rng.integers(1, 1000, size=(int(disc.sum()), *shape[2:])).astype(dtype)
    return data


def nii(data: np.ndarray, affine: np.ndarray = AFFINE) -> bytes:
    return nib.Nifti1Image(data, affine).to_bytes()


def patched(raw: bytes, **fields) -> bytes:
    """raw NIfTI-1 bytes with header fields overwritten as stored (no nibabel fix-ups);
    ``pixdim`` may be given as its [1:4] part."""
    hdr = nib.Nifti1Header.from_fileobj(io.BytesIO(raw[:348]), check=False)
    for key, value in fields.items():
        if key == "pixdim":
            hdr["pixdim"][1:4] = value
        else:
            hdr[key] = value
    return hdr.binaryblock + raw[348:]


def qform_only(raw: bytes) -> bytes:
    """The same file with its orientation in the qform only (sform_code = 0)."""
    hdr = nib.Nifti1Header.from_fileobj(io.BytesIO(raw[:348]), check=False)
    hdr.set_qform(hdr.get_sform(), code=1)
    hdr["sform_code"] = 0
    return hdr.binaryblock + raw[348:]


def sources(raw: bytes, tmp_path: Path) -> list:
    """The same file as bytes, .nii.gz bytes and a path."""
    path = tmp_path / "v.nii"
    path.write_bytes(raw)
    return [raw, gzip.compress(raw, compresslevel=1), path]


def gzip_of_header_and_zeros(hdr: nib.Nifti1Header, n_bytes: int) -> bytes:
    """A valid .nii.gz (header + n_bytes of zeros) compressed piecewise (small memory)."""
    hdr.set_data_offset(352)
    comp = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [comp.compress(hdr.binaryblock + bytes(4))]
    zeros = bytes(min(n_bytes, 16 * MiB))
    for start in range(0, n_bytes, len(zeros)):
        parts.append(comp.compress(zeros[: min(len(zeros), n_bytes - start)]))
    parts.append(comp.flush())
    return b"".join(parts)


def peak_of(fn) -> tuple[object, int]:
    """(result or raised exception, tracemalloc peak in bytes) of fn()."""
    tracemalloc.start()
    try:
        try:
            result = fn()
        except Exception as exc:  # returned for the test to judge
            result = exc
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


# --- 1. geometry is never invented --------------------------------------------------------


def test_no_orientation_is_refused_and_says_how_to_fix(tmp_path: Path) -> None:
    raw = patched(nii(head()), sform_code=0, qform_code=0)
    images = [nib.Nifti1Image.from_bytes(raw)]  # nibabel gives it an invented affine
    for source in sources(raw, tmp_path) + images:
        with pytest.raises(errors.OrientationUnknownError) as info:
            load_volume(source)
        message = str(info.value)
        for words in ("sform_code = qform_code = 0", "left or right", "dcm2niix", "set_sform"):
            assert words in message, message


@pytest.mark.parametrize("pixdim", [(0.0, 0.9, 5.0), (0.9, 0.9, 0.0), (-0.9, 0.9, 5.0)])
def test_qform_without_positive_pixdim_is_refused(pixdim, tmp_path: Path) -> None:
    """The qform needs pixdim: nibabel would take 0 as 1 mm (a 602 mL brain became 49 mL)
    and -0.9 as 0.9 (a left/right guess)."""
    raw = patched(qform_only(nii(head())), pixdim=pixdim)
    for source in sources(raw, tmp_path):
        with pytest.raises(errors.OrientationUnknownError, match="pixdim"):
            load_volume(source)


def test_qform_with_positive_pixdim_is_used() -> None:
    v = load_volume(qform_only(nii(head())))
    np.testing.assert_allclose(v.affine, AFFINE, atol=1e-6)


def test_sform_with_zero_pixdim_is_accepted_with_the_sform_sizes(capfd, caplog) -> None:
    """The sform carries the voxel sizes; pixdim is not used, and the kept header gets the
    sform's sizes and no qform (so label maps copy nothing broken)."""
    raw = patched(nii(head()), pixdim=(0.0, 0.0, 0.0), qform_code=1)
    with caplog.at_level(logging.DEBUG):
        v = load_volume(raw)
    np.testing.assert_allclose(v.affine, AFFINE)
    assert v.zooms_mm == pytest.approx((0.9, 0.9, 5.0))
    np.testing.assert_allclose(v.header["pixdim"][1:4], (0.9, 0.9, 5.0), rtol=1e-6)
    assert int(v.header["qform_code"]) == 0 and int(v.header["sform_code"]) > 0
    assert capfd.readouterr().err == ""
    assert not [r for r in caplog.records if r.name.startswith("nibabel")]


@pytest.mark.parametrize(
    "fields",
    [
        {"pixdim": (-0.9, -0.9, 5.0)},  # sform path: accepted, silently
        {"sform_code": 0, "qform_code": 0},  # refused, silently
        {"pixdim": (0.0, 0.9, 5.0), "sform_code": 0, "qform_code": 1},  # refused, silently
    ],
)
def test_nibabel_never_logs_header_fixups(fields, capfd, caplog) -> None:
    raw = patched(nii(head()), **fields)
    with caplog.at_level(logging.DEBUG):
        for source in (raw, gzip.compress(raw)):
            with contextlib.suppress(errors.OrientationUnknownError):
                load_volume(source)
    assert capfd.readouterr().err == ""
    assert not [r for r in caplog.records if r.name.startswith("nibabel")]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # nibabel's own det() of NaN
def test_nibabel_image_with_nan_affine_is_a_voxel_size_error() -> None:
    affine = AFFINE.copy()
    affine[0, 0] = np.nan
    for make in (nib.AnalyzeImage, nib.Nifti1Image):
        try:
            img = make(head(), affine)
        except Exception:  # this nibabel refuses to build it: set it afterwards
            img = make(head(), AFFINE)
            img.affine[0, 0] = np.nan
        with pytest.raises(errors.VoxelSizeError, match="NaN"):
            load_volume(img)


@pytest.mark.parametrize("index", [True, False, np.bool_(True), "1", 1.0, [0]])
def test_volume_index_must_be_an_int(index) -> None:
    raw = nii(head((96, 96, 3, 2)))
    with pytest.raises(errors.UsageError, match="volume_index must be an int"):
        load_volume(raw, volume_index=index)


def test_numpy_integer_volume_index_is_fine() -> None:
    series = head((96, 96, 3, 2))
    v = load_volume(nii(series), volume_index=np.int64(1))
    np.testing.assert_array_equal(v.data, series[..., 1])


# --- 2. scl_slope / scl_inter -------------------------------------------------------------


def test_nan_scl_inter_with_a_valid_slope_is_refused() -> None:
    raw = patched(nii(head(dtype=np.int16)), scl_slope=2.0, scl_inter=np.nan)
    for source in (raw, gzip.compress(raw)):
        with pytest.raises(errors.CorruptVolumeError, match="fix scl_inter"):
            load_volume(source)
    with pytest.raises(errors.CorruptVolumeError, match="scl_inter"):
        load_volume(patched(raw, scl_inter=np.inf))


@pytest.mark.parametrize(
    ("slope", "inter"), [(np.nan, np.nan), (np.nan, 5.0), (0.0, np.inf), (np.inf, 1.0)]
)
def test_zero_or_non_finite_slope_means_unscaled(slope, inter) -> None:
    data = head(dtype=np.int16)
    v = load_volume(patched(nii(data), scl_slope=slope, scl_inter=inter))
    assert v.data.dtype == np.int16
    np.testing.assert_array_equal(v.data, data)


def test_scaling_is_applied_in_float32() -> None:
    data = head(dtype=np.int16)
    v = load_volume(patched(nii(data), scl_slope=0.5, scl_inter=-3.0))
    assert v.data.dtype == np.float32
    np.testing.assert_array_equal(v.data, data.astype(np.float32) * 0.5 - 3.0)


# --- 3. content and in-plane size ---------------------------------------------------------


@pytest.mark.parametrize("value", [0, 1, 7.5], ids=["all-zero", "all-one", "constant-float"])
def test_constant_image_is_not_a_head(value, tmp_path: Path) -> None:
    data = np.full((96, 96, 6), value, dtype=np.float32)
    for source in [*sources(nii(data), tmp_path), nib.Nifti1Image(data, AFFINE)]:
        with pytest.raises(errors.NotAHeadImageError, match="every voxel has the value"):
            load_volume(source)


def test_one_pixel_wide_slices_are_refused_from_the_header() -> None:
    """1 x 512 x 512 with the third axis S-I: 512 slices of 512 x 1 pixels."""
    raw = gzip.compress(nii(head((1, 512, 512)), np.diag([0.45, 0.45, 0.45, 1.0])))
    result, peak = peak_of(lambda: load_volume(raw))
    assert isinstance(result, errors.NotAHeadImageError), result
    assert "512 x 1 pixels" in str(result) and "axis 2" in str(result)
    assert peak < 4 * MiB  # refused before the data were inflated


def test_small_field_of_view_is_refused() -> None:
    with pytest.raises(errors.NotAHeadImageError, match=r"cover only 57\.6 x 57\.6 mm"):
        load_volume(nii(head((64, 64, 6))))  # 64 x 0.9 mm
    assert load_volume(nii(head((64, 64, 6))), limits=Limits(min_inplane_fov_mm=50.0))


def test_the_slice_axis_is_the_one_closest_to_s_i() -> None:
    """Stored sagittal-first (axis 0 = S-I): the in-plane axes are 1 and 2."""
    affine = np.array([[0, 0, 0.9, -40], [0, 0.9, 0, -40], [5.0, 0, 0, -10], [0, 0, 0, 1]])
    assert load_volume(nii(head((6, 96, 96)).astype(np.float32), affine)).shape == (6, 96, 96)
    with pytest.raises(errors.NotAHeadImageError, match="axis 0"):
        load_volume(nii(head((6, 96, 20)), affine))


@pytest.mark.parametrize(
    ("shape", "dtype"), [((4096, 4096, 1), np.float32), ((16384, 16384, 1), np.uint8)]
)
def test_huge_slices_are_refused_from_the_header_in_bounded_memory(shape, dtype) -> None:
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(dtype)
    hdr.set_sform(np.diag([0.05, 0.05, 1.0, 1.0]), code="scanner")
    n_bytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = gzip_of_header_and_zeros(hdr, n_bytes)
    assert len(raw) < n_bytes // 200  # a valid, small file that inflates to 64-256 MiB
    result, peak = peak_of(lambda: load_volume(raw, name="huge.nii.gz"))
    assert isinstance(result, errors.VolumeTooLargeError), result
    assert "exceed" in str(result)
    assert peak < 50 * MiB, f"peak {peak / MiB:.1f} MiB while refusing {shape}"


def test_huge_slices_of_a_nibabel_image_are_refused() -> None:
    img = nib.Nifti1Image(np.ones((1100, 64, 2), np.uint8), np.diag([0.2, 2.0, 5.0, 1.0]))
    with pytest.raises(errors.VolumeTooLargeError, match="in-plane bound of 1024 x 1024"):
        load_volume(img)


# --- 4. memory per volume -----------------------------------------------------------------


def test_memory_bound_constants_are_as_documented() -> None:
    v = 1024 * 1024 * 64
    assert memory_bound(v, 4, compressed=True, scaled=False) == int(5 * v + 3 * MiB + 0.04 * v)
    assert memory_bound(v, 2, compressed=False, scaled=True) == int(5 * v + 3 * MiB + 0.02 * v)


@pytest.mark.parametrize(
    ("dtype", "compressed", "scl"),
    [
        (np.float32, True, None),
        (np.uint8, False, None),
        (np.int16, True, None),
        (np.int16, False, (0.5, 3.0)),  # background 0 -> 3.0: a tail of ties
    ],
)
def test_load_and_prepare_stay_within_the_stated_bound(dtype, compressed, scl) -> None:
    shape = (256, 256, 64)
    img = nib.Nifti1Image(head(shape, dtype), np.diag([0.9, 0.9, 2.0, 1.0]))
    if scl:
        img.header.set_slope_inter(*scl)
    raw = img.to_bytes()
    source = gzip.compress(raw, compresslevel=1) if compressed else raw
    del raw, img
    prepared, peak = peak_of(lambda: prepare(load_volume(source)))
    assert prepared.slices.shape == (64, 256, 256)
    n = int(np.prod(shape))
    bound = memory_bound(n, np.dtype(dtype).itemsize, compressed=compressed, scaled=bool(scl))
    assert peak <= bound, f"peak {peak / MiB:.1f} MiB > bound {bound / MiB:.1f} MiB"


def test_window_functions_allocate_no_volume_sized_temporary() -> None:
    data = head((256, 256, 64), np.float32)
    view = data.transpose(2, 1, 0)[:, ::-1, :]  # a display-like view: not contiguous
    bounds, peak = peak_of(lambda: window_bounds(view))
    assert bounds == tuple(np.percentile(data[data != 0], contract.WINDOW_PERCENTILES))
    assert peak < 3 * MiB
    out, peak = peak_of(lambda: window_to_uint8(view, bounds))
    assert out.flags.c_contiguous and out.dtype == np.uint8
    assert peak < data.size + 2 * MiB  # the uint8 result and a small scratch
    expected = np.clip(
        (view - np.float32(bounds[0])) * np.float32(255 / (bounds[1] - bounds[0])), 0, 255
    )
    np.testing.assert_array_equal(out, np.rint(expected).astype(np.uint8))


# --- 5. messages a user can act on --------------------------------------------------------


def test_a_directory_is_named_as_one(tmp_path: Path) -> None:
    with pytest.raises(errors.InputNotFoundError, match="is a directory; give a NIfTI file"):
        load_volume(tmp_path)
    with pytest.raises(errors.InputNotFoundError, match="is a directory"):
        load_volume(str(tmp_path))


@pytest.mark.parametrize("path", ["", "   "])
def test_an_empty_path_is_called_empty(path) -> None:
    with pytest.raises(errors.InputNotFoundError, match="the input path is empty"):
        load_volume(path)


def test_a_4d_series_names_the_option() -> None:
    with pytest.raises(errors.DimensionalityError, match="--volume-index"):
        load_volume(nii(head((96, 96, 3, 3))))


def test_a_4d_file_with_one_volume_takes_index_0_only() -> None:
    raw = nii(head((96, 96, 3, 1)))
    assert load_volume(raw, volume_index=0).shape == (96, 96, 3)
    assert load_volume(raw).shape == (96, 96, 3)
    for index in (1, -1, 5):
        with pytest.raises(errors.DimensionalityError, match=r"out of range 0\.\.0"):
            load_volume(raw, volume_index=index)


@pytest.mark.parametrize("fraction", [0.5, 0.1])
def test_a_cut_gzip_file_reports_counts_the_user_can_check(fraction, tmp_path: Path) -> None:
    raw = nii(head((128, 128, 16), np.int16))
    whole = gzip.compress(raw, compresslevel=1)
    cut = whole[: int(len(whole) * fraction)]
    inflated = len(zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(cut))
    path = tmp_path / "cut.nii.gz"
    path.write_bytes(cut)
    for source in (cut, path):
        with pytest.raises(errors.CorruptVolumeError) as info:
            load_volume(source)
        message = str(info.value)
        assert "truncated" in message and "incomplete" in message
        assert f"its {len(cut):,} compressed bytes" in message, message
        found = re.search(r"inflate to ([\d,]+) of the ([\d,]+) bytes", message)
        assert found, message
        got, declared = (int(g.replace(",", "")) for g in found.groups())
        assert declared == len(raw)
        assert abs(got - inflated) <= 8, (got, inflated)  # zlib and ISA-L differ at the cut
