"""Load and validate a NIfTI volume from a path or from bytes in memory.

No temporary file is ever written.  A gzip stream is inflated into one pre-sized buffer
whose size comes from the header, so a gzip bomb is refused after at most
``expected size + slack`` bytes of output, in bounded memory.

Everything that can be judged from the header is judged before a voxel is inflated or
allocated (``check_layout``): data type, dimensionality and volume choice, voxel count,
orientation (``header_affine``: geometry is never invented), voxel sizes and the in-plane
size and field of view of the display slices (``check_inplane``).  The nibabel-image path
runs the same checks on the image's shape and affine.

Memory: what ``load_volume`` + ``slicing.prepare`` allocate (tracemalloc peak) on top of
the source bytes handed in (for a path: the file, read once), for a file of V voxels of
``itemsize`` bytes::

    peak <= K * V + C,   K = (itemsize if gzip-compressed else 0)   the inflated data
                           + (4 if scl_slope/scl_inter apply else 0)   float32 scaled copy
                           + 1                                         uint8 display stack
                         C = 3 MiB + 1 % of itemsize * V  (inflate chunk, window scratch,
                                                            sample and tail candidates)

An uncompressed ``.nii`` is viewed, not copied; a nibabel image's array is the source
(a scaled ArrayProxy is read as float32: + 4 * V, never float64).  Measured at the bound
(1024 x 1024 x 64 = 64 Mi voxels; peak above the source, MiB): uint8 .nii 66.1 /
.nii.gz 129.1; int16 .nii 65.1 / .nii.gz 193.1; float32 .nii 65.1 / .nii.gz 321.1;
int16 scaled .nii 321.1 / .nii.gz 384.0, i.e. 1, 2, 1, 3, 1, 5, 5 and 6 bytes per voxel
+ at most 2.1 MiB (``memory_bound``; test: ``tests/unit/test_volume_safety.py``).
"""

from __future__ import annotations

import io
import math
import re
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.batteryrunners import BatteryRunner

from . import contract
from .geometry import geometry_of

try:  # python-isal: the same zlib API, about 1.4x faster inflate (ISA-L)
    from isal import isal_zlib as _inflate_lib
except ImportError:  # pragma: no cover - isal is a dependency; zlib is the fallback
    _inflate_lib = zlib  # type: ignore[assignment]

from .errors import (
    CorruptVolumeError,
    DecompressionBombError,
    DimensionalityError,
    DtypeError,
    InputNotFoundError,
    NonFiniteDataError,
    NotAHeadImageError,
    NotNiftiError,
    OrientationUnknownError,
    UsageError,
    VolumeTooLargeError,
    VoxelSizeError,
)

GZIP_MAGIC = b"\x1f\x8b"
NIFTI1_HEADER_BYTES = 348
NIFTI2_HEADER_BYTES = 540
_INFLATE_CHUNK = 1024 * 1024  # 1 MiB: as fast as 8 MiB, and a third of the peak
_TRAILING_SLACK = 1024 * 1024  # bytes a stream may carry past the data before it is a bomb
_ERROR_PROBLEM_LEVEL = 40  # nibabel's header problems at/above this level are errors

MEMORY_CONSTANT_BYTES = 3 * 1024 * 1024  # C of the memory bound (module docstring) ...
MEMORY_DATA_FRACTION = 0.01  # ... plus this share of the data bytes (window tail candidates)

FIX_ORIENTATION = (
    "re-convert the DICOM series with dcm2niix (it writes the scanner's orientation), or set "
    "it with nibabel: img.set_sform(affine, code=1) and img.set_qform(affine, code=1) with "
    "the scanner's voxel-to-world affine"
)


@dataclass(frozen=True)
class Limits:
    """Bounds applied while loading; defaults come from the contract."""

    max_voxels: int = contract.MAX_VOXELS
    max_decompressed_bytes: int = contract.MAX_DECOMPRESSED_BYTES
    voxel_size_range_mm: tuple[float, float] = contract.VOXEL_SIZE_RANGE_MM
    max_inplane_voxels: int = contract.MAX_INPLANE_VOXELS
    min_inplane_voxels: int = contract.MIN_INPLANE_VOXELS
    min_inplane_fov_mm: float = contract.MIN_INPLANE_FOV_MM


@dataclass(frozen=True)
class Volume:
    """A validated 3D volume in the file's own voxel order.

    data: [X, Y, Z] numeric array (the file's dtype, or float32 when scaled); affine: 4x4
    voxel index -> world RAS+ mm; header: the source header (geometry kept for writing
    label maps in the same grid).
    """

    data: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header | nib.Nifti2Header
    source: str

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.data.shape)  # type: ignore[return-value]

    @property
    def zooms_mm(self) -> tuple[float, float, float]:
        """Voxel edge lengths (mm) along the three array axes, from the affine."""
        return tuple(float(z) for z in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]


def load_volume(
    source: str | Path | bytes | bytearray | memoryview | nib.spatialimages.SpatialImage,
    *,
    name: str | None = None,
    volume_index: int | None = None,
    limits: Limits = Limits(),
) -> Volume:
    """Load, decode and validate a NIfTI-1/2 volume (.nii or .nii.gz) or a nibabel image.

    volume_index (int) selects one volume of a 4D series; a 4D file holding a single volume
    is squeezed (index 0 or None).  Raises UsageError for a volume_index that is not an
    int, else an InvalidVolumeError subclass that says what to fix.
    """
    volume_index = check_volume_index(volume_index)
    if isinstance(source, nib.spatialimages.SpatialImage):
        return _from_image(source, name or "<nibabel image>", volume_index, limits)
    if isinstance(source, (str, Path)):
        label = name or (str(source) if str(source) else "''")
        raw: bytes | bytearray | memoryview = _read_path(source, label, limits)
    else:
        raw, label = source, name or "<bytes>"
    buffer = decode_nifti_bytes(raw, label, limits, volume_index=volume_index)
    return volume_from_buffer(buffer, label, volume_index, limits)


def check_volume_index(volume_index: object) -> int | None:
    """None or a non-bool int (numpy integers too); anything else is a UsageError."""
    if volume_index is None:
        return None
    if isinstance(volume_index, (bool, np.bool_)) or not isinstance(
        volume_index, (int, np.integer)
    ):
        raise UsageError(
            f"volume_index must be an int (the 0-based volume of a 4D series), "
            f"not {type(volume_index).__name__} {volume_index!r}"
        )
    return int(volume_index)


def _read_path(source: str | Path, label: str, limits: Limits) -> bytes:
    """The bytes of a local file, or InputNotFoundError saying what the path is instead."""
    if isinstance(source, str) and not source.strip():
        raise InputNotFoundError(
            f"the input path is empty ({source!r}); give the path of a NIfTI file (.nii/.nii.gz)"
        )
    path = Path(source)
    if path.is_dir():
        raise InputNotFoundError(f"{label}: is a directory; give a NIfTI file (.nii/.nii.gz)")
    if not path.exists():
        raise InputNotFoundError(f"{label}: no such file; check the path")
    if not path.is_file():
        raise InputNotFoundError(f"{label}: not a regular file; give a NIfTI file")
    size = path.stat().st_size
    if size > limits.max_decompressed_bytes:
        raise VolumeTooLargeError(
            f"{label}: {size:,} bytes on disk exceed the bound of "
            f"{limits.max_decompressed_bytes:,}; crop or downsample the volume"
        )
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputNotFoundError(f"{label}: cannot be read ({exc.strerror or exc})") from None


def decode_nifti_bytes(
    raw: bytes | bytearray | memoryview,
    label: str,
    limits: Limits = Limits(),
    *,
    volume_index: int | None = None,
) -> bytes | bytearray | memoryview:
    """The uncompressed NIfTI bytes (header + data) of a .nii or .nii.gz byte string.

    The header is checked (``check_layout``) before any data is inflated."""
    if len(raw) >= 2 and bytes(raw[:2]) == GZIP_MAGIC:
        return _inflate_bounded(raw, label, limits, volume_index)
    header = _parse_header(raw, label)  # refuse non-NIfTI bytes before going further
    check_layout(header, label, limits, volume_index)
    return raw


MAX_DEFLATE_RATIO = 1032  # deflate cannot expand input by more than this


class _GzipStream:
    """Inflate a gzip byte string piecewise, at most ``max_out`` bytes per read, following
    multi-member streams (bgzip, pigz, concatenation) as gzip/nibabel do."""

    def __init__(self, raw: bytes | bytearray | memoryview) -> None:
        self.view = memoryview(raw)
        self.pos = 0  # absolute position of the next compressed byte to feed
        self.inflater = _inflate_lib.decompressobj(wbits=16 + zlib.MAX_WBITS)

    @property
    def complete(self) -> bool:
        """True when the stream ended at a member boundary (not truncated)."""
        return bool(self.inflater.eof)

    def read(self, max_out: int) -> bytes:
        """Up to max_out inflated bytes; b"" at the end of the stream (or of the input)."""
        max_out = max(int(max_out), 1)
        while True:
            d = self.inflater
            if d.eof:
                member_end = self.pos - len(d.unused_data)
                if bytes(self.view[member_end : member_end + 2]) != GZIP_MAGIC:
                    return b""  # the end; trailing bytes (if any) are ignored
                self.pos = member_end
                self.inflater = _inflate_lib.decompressobj(wbits=16 + zlib.MAX_WBITS)
                continue
            if d.unconsumed_tail:
                out = d.decompress(d.unconsumed_tail, max_out)
            elif self.pos < len(self.view):
                end = min(self.pos + _INFLATE_CHUNK, len(self.view))
                out = d.decompress(self.view[self.pos : end], max_out)
                self.pos = end
            else:
                # input exhausted: drain what the inflater still holds (ISA-L consumes all
                # input at once and buffers the output beyond max_out), then stop
                return d.decompress(b"", max_out)
            if out:
                return out


def _inflate_bounded(
    raw: bytes | bytearray | memoryview, label: str, limits: Limits, volume_index: int | None
) -> bytearray:
    stream = _GzipStream(raw)
    n_raw = len(raw)
    try:
        # 1. inflate just enough for the header, check it, then size the output from it
        head = _inflate_header(stream, label)
        expected = _declared_bytes(head, n_raw, label, limits, volume_index)
        # 2. inflate the rest straight into the buffer; count what overflows it
        out, filled = _inflate_body(stream, head, expected, label)
    except (zlib.error, _inflate_lib.error) as exc:
        raise CorruptVolumeError(
            f"{label}: the gzip stream is corrupt ({exc}); re-export or re-upload the file"
        ) from None
    _check_inflated(stream, filled, expected, n_raw, label)
    return out


def _inflate_header(stream: _GzipStream, label: str) -> bytearray:
    """Up to NIFTI2_HEADER_BYTES inflated; CorruptVolumeError if short of a NIfTI-1 header."""
    head = bytearray()
    while len(head) < NIFTI2_HEADER_BYTES:
        chunk = stream.read(NIFTI2_HEADER_BYTES - len(head))
        if not chunk:
            break
        head += chunk
    if len(head) < NIFTI1_HEADER_BYTES and not stream.complete:
        raise CorruptVolumeError(
            f"{label}: truncated: the gzip stream ends after {len(head)} inflated bytes, "
            "inside the NIfTI header; re-download or re-export the file"
        )
    return head


def _declared_bytes(
    head: bytearray, n_raw: int, label: str, limits: Limits, volume_index: int | None
) -> int:
    """The file size the checked header declares; refused beyond what n_raw can inflate to."""
    header = _parse_header(head, label)
    expected = check_layout(header, label, limits, volume_index)
    if expected > n_raw * MAX_DEFLATE_RATIO + NIFTI2_HEADER_BYTES:
        raise CorruptVolumeError(
            f"{label}: truncated: the file is incomplete: its {n_raw:,} compressed bytes "
            f"cannot hold the {expected:,} bytes its header declares; "
            "re-download or re-export the file"
        )
    return expected


def _inflate_body(
    stream: _GzipStream, head: bytearray, expected: int, label: str
) -> tuple[bytearray, int]:
    """(the expected-size buffer, bytes filled); DecompressionBombError past the slack."""
    out = bytearray(expected)
    out[: len(head)] = head[:expected]
    filled = min(len(head), expected)
    extra = max(0, len(head) - expected)
    while True:
        want = min(_INFLATE_CHUNK, max(expected - filled, 0) + _TRAILING_SLACK - extra + 1)
        chunk = stream.read(want)
        if not chunk:
            break
        take = min(len(chunk), expected - filled)
        if take > 0:
            out[filled : filled + take] = chunk[:take]
            filled += take
        extra += len(chunk) - take
        if extra > _TRAILING_SLACK:
            raise DecompressionBombError(
                f"{label}: the gzip stream inflates past the {expected:,} bytes its NIfTI "
                "header declares; refusing it (possible gzip bomb). Re-export the volume."
            )
    return out, filled


def _check_inflated(
    stream: _GzipStream, filled: int, expected: int, n_raw: int, label: str
) -> None:
    """CorruptVolumeError when the stream gave fewer bytes than declared, or has no end."""
    if filled < expected:
        raise CorruptVolumeError(
            f"{label}: truncated: the file is incomplete: its {n_raw:,} compressed bytes "
            f"inflate to {filled:,} of the {expected:,} bytes its header declares; "
            "re-download or re-export the file"
        )
    if not stream.complete:
        raise CorruptVolumeError(
            f"{label}: truncated: the file is incomplete: its {n_raw:,} compressed bytes hold "
            f"the {expected:,} bytes its header declares but the gzip stream has no end "
            "(trailer missing); re-download the file"
        )


def memory_bound(n_voxels: int, itemsize: int, *, compressed: bool, scaled: bool) -> int:
    """Bytes ``load_volume`` + ``slicing.prepare`` may allocate beyond the source bytes for a
    file of n_voxels voxels of itemsize bytes: K * V + C (module docstring)."""
    k = (itemsize if compressed else 0) + (4 if scaled else 0) + 1
    c = MEMORY_CONSTANT_BYTES + MEMORY_DATA_FRACTION * itemsize * n_voxels
    return int(k * n_voxels + c)


# --- the header ------------------------------------------------------------------------


def _parse_header(raw: bytes | bytearray | memoryview, label: str) -> nib.Nifti1Header:
    """The NIfTI-1/2 header at the start of ``raw``, with nibabel's benign fixes applied
    silently (qfac, bitpix, unknown xform codes): nothing is logged to stderr."""
    head = bytes(raw[:NIFTI2_HEADER_BYTES])
    if len(head) >= NIFTI2_HEADER_BYTES and head[4:12] == b"n+2\x00\r\n\x1a\n":
        klass: type[nib.Nifti1Header] = nib.Nifti2Header
        size = NIFTI2_HEADER_BYTES
    elif len(head) >= NIFTI1_HEADER_BYTES and head[344:348] == b"n+1\x00":
        klass, size = nib.Nifti1Header, NIFTI1_HEADER_BYTES
    elif len(head) >= NIFTI1_HEADER_BYTES and head[344:348] == b"ni1\x00":
        raise NotNiftiError(
            f"{label}: a NIfTI .hdr/.img pair header; convert it to a single .nii/.nii.gz file"
        )
    elif len(head) < NIFTI1_HEADER_BYTES and _looks_like_nifti_prefix(head):
        raise CorruptVolumeError(f"{label}: truncated inside the NIfTI header; re-download it")
    else:
        raise NotNiftiError(
            f"{label}: not a NIfTI file (no NIfTI-1/2 magic); "
            "send a .nii or .nii.gz volume (DICOM must be converted first, e.g. dcm2niix)"
        )
    _check_dim0(head, klass is nib.Nifti2Header, label)
    try:
        header = klass.from_fileobj(io.BytesIO(head[:size]), check=False)
        file_pixdim = np.array(header["pixdim"][1:4], copy=True)
        _check_vox_offset(float(header["vox_offset"]), size + 4, label)
        header, reports = BatteryRunner(klass._get_checks()).check_fix(header)
    except CorruptVolumeError:
        raise
    except Exception as exc:  # nibabel raises several types for inconsistent headers
        raise CorruptVolumeError(f"{label}: inconsistent NIfTI header ({exc})") from None
    errors = [r.problem_msg for r in reports if r.problem_level >= _ERROR_PROBLEM_LEVEL]
    if errors:
        raise CorruptVolumeError(f"{label}: inconsistent NIfTI header ({'; '.join(errors)})")
    header["pixdim"][1:4] = file_pixdim  # undo nibabel's 0 -> 1 mm and abs(): never invent
    return header


def _check_dim0(head: bytes, nifti2: bool, label: str) -> None:
    """dim[0] (the number of dimensions, 1..7) also tells the byte order: a value that is
    valid in neither order would make nibabel read every field byte-swapped."""
    at, fmt = (16, "q") if nifti2 else (40, "h")
    values = {struct.unpack(f"{order}{fmt}", head[at : at + struct.calcsize(fmt)])[0]
              for order in "<>"}
    if not any(1 <= v <= 7 for v in values):
        shown = struct.unpack(f"<{fmt}", head[at : at + struct.calcsize(fmt)])[0]
        raise CorruptVolumeError(
            f"{label}: the header's dim[0] (the number of dimensions) is {shown}, not 1..7: "
            "the header is damaged; re-export the file"
        )


def _check_vox_offset(offset: float, minimum: int, label: str) -> None:
    """A single-file NIfTI's voxels start after its header (and the 4-byte extension
    flag): a vox_offset of 0, NaN or inside the header would read header bytes as voxels."""
    if not (math.isfinite(offset) and offset >= minimum and offset == int(offset)):
        raise CorruptVolumeError(
            f"{label}: the header's vox_offset is {offset:g}, but a single-file NIfTI's data "
            f"start at byte {minimum} or later: the header is damaged; re-export the file"
        )


def _looks_like_nifti_prefix(head: bytes) -> bool:
    """sizeof_hdr (348 or 540, either byte order) opens the bytes."""
    sizes = (NIFTI1_HEADER_BYTES, NIFTI2_HEADER_BYTES)
    return len(head) >= 4 and any(int.from_bytes(head[:4], e) in sizes for e in ("little", "big"))


def header_affine(header: nib.Nifti1Header, label: str) -> np.ndarray:
    """4x4 voxel -> world (mm) from the header, as the NIfTI standard orders it.

    sform_code > 0: the sform (srow_x/y/z carry the voxel sizes; pixdim is not used);
    else qform_code > 0: the qform, which needs pixdim[1:4] > 0 (nibabel would silently
    take 0 as 1 mm and a negative size as its absolute value); else no orientation at all.
    Raises OrientationUnknownError: left/right and volumes would otherwise be invented.
    """
    if int(header["sform_code"]) > 0:
        return np.asarray(header.get_sform(), dtype=np.float64)
    if int(header["qform_code"]) > 0:
        pixdim = np.asarray(header["pixdim"][1:4], dtype=np.float64)
        if not np.all(pixdim > 0):  # also catches NaN
            raise OrientationUnknownError(
                f"{label}: the voxel sizes pixdim[1:4] = {numbers_text(pixdim)} are not all "
                "positive and the header has no sform (sform_code = 0), so the voxel sizes "
                f"(volumes) and the left/right orientation are unknown; {FIX_ORIENTATION}"
            )
        try:
            return np.asarray(header.get_qform(), dtype=np.float64)
        except Exception as exc:  # a quaternion nibabel cannot use
            raise OrientationUnknownError(
                f"{label}: the qform cannot be read ({plain_numbers(str(exc))}); {FIX_ORIENTATION}"
            ) from None
    raise OrientationUnknownError(
        f"{label}: the header holds no orientation (sform_code = qform_code = 0): which side "
        f"is the patient's left or right is unknown; {FIX_ORIENTATION}"
    )


def _kept_header(header: nib.Nifti1Header, affine: np.ndarray) -> nib.Nifti1Header:
    """The header kept with the Volume (label maps copy its sform/qform): when the sform
    was used and pixdim[1:4] are not all positive, a copy with pixdim from the sform and no
    qform (its quaternion assumes those broken sizes); else the header itself."""
    pixdim = np.asarray(header["pixdim"][1:4], dtype=np.float64)
    if np.all(pixdim > 0):
        return header
    kept = header.copy()
    kept["pixdim"][1:4] = np.linalg.norm(affine[:3, :3], axis=0)
    kept["qform_code"] = 0
    return kept


def plain_numbers(text: str) -> str:
    """``text`` with numpy scalar reprs (``np.float64(2.0)``) written as plain numbers."""
    return re.sub(r"np\.(?:float|int|uint)\d+\(([^()]*)\)", r"\1", text)


def numbers_text(values: Iterable[float]) -> str:
    """``(2, 0.5, 1)``: plain numbers for a message (never ``np.float64(2.0)``)."""
    return "(" + ", ".join(f"{float(v):g}" for v in values) + ")"


def check_layout(
    header: nib.Nifti1Header, label: str, limits: Limits, volume_index: int | None = None
) -> int:
    """Every check the header alone allows, before any voxel is inflated or allocated.

    Data type, dimensionality and volume choice, voxel count, orientation and voxel sizes,
    in-plane size and field of view, decoded size.  Returns the bytes header + data take.
    """
    dtype = _check_dtype(header, label)
    shape = tuple(int(n) for n in header.get_data_shape())
    check_shape(shape, label, limits, volume_index)
    affine = header_affine(header, label)
    check_affine(affine, label, limits)
    _check_units(header, label)
    check_inplane(shape, affine, label, limits)
    n_voxels = int(np.prod(shape, dtype=np.int64))
    nbytes = int(header.get_data_offset()) + n_voxels * dtype.itemsize
    if nbytes > limits.max_decompressed_bytes:
        raise VolumeTooLargeError(
            f"{label}: {nbytes:,} bytes decoded exceed the bound of "
            f"{limits.max_decompressed_bytes:,}; crop or downsample the volume"
        )
    return nbytes


def check_shape(
    shape: tuple[int, ...], label: str, limits: Limits, volume_index: int | None
) -> None:
    """Dimensionality, voxel count and the choice of one volume, from the shape alone."""
    if len(shape) < 3:
        raise DimensionalityError(
            f"{label}: {len(shape)}D data {shape}; send a 3D volume (X, Y, slices)"
        )
    n_voxels = int(np.prod(shape, dtype=np.int64))
    if n_voxels <= 0:
        raise DimensionalityError(f"{label}: the header declares an empty volume {shape}")
    if n_voxels > limits.max_voxels:
        raise VolumeTooLargeError(
            f"{label}: {n_voxels:,} voxels {shape} exceed the bound of "
            f"{limits.max_voxels:,}; crop or downsample the volume"
        )
    _check_volume_choice(shape, label, volume_index)


def _check_volume_choice(shape: tuple[int, ...], label: str, volume_index: int | None) -> None:
    n_volumes = int(np.prod(shape[3:], dtype=np.int64))
    if len(shape) == 3:
        if volume_index not in (None, 0):
            raise DimensionalityError(
                f"{label}: a 3D volume has no volume {volume_index}; omit --volume-index"
            )
        return
    if n_volumes == 1 or (len(shape) == 4 and volume_index is not None):
        if not 0 <= (volume_index or 0) < n_volumes:
            raise DimensionalityError(
                f"{label}: volume index {volume_index} out of range 0..{n_volumes - 1} "
                f"(the series {shape} holds {n_volumes} volume{'s' * (n_volumes > 1)})"
            )
        return
    if len(shape) == 4:
        raise DimensionalityError(
            f"{label}: a 4D series {shape} with {n_volumes} volumes; choose one with "
            "--volume-index (API: volume_index), e.g. the b=1000 trace"
        )
    raise DimensionalityError(
        f"{label}: a {len(shape)}D series {shape} with {n_volumes} volumes; export the one "
        "3D volume to segment"
    )


def check_affine(affine: np.ndarray, label: str, limits: Limits) -> None:
    """A finite, non-degenerate 4x4 voxel -> world affine with sane voxel sizes (mm)."""
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise VoxelSizeError(f"{label}: the affine has NaN/inf entries; fix the header")
    linear = affine[:3, :3]
    zooms = np.linalg.norm(linear, axis=0)
    lo, hi = limits.voxel_size_range_mm
    if np.any(zooms < lo) or np.any(zooms > hi):
        raise VoxelSizeError(
            f"{label}: voxel sizes {tuple(round(float(z), 4) for z in zooms)} mm are outside "
            f"{lo}..{hi} mm; fix pixdim/sform in the header"
        )
    if abs(np.linalg.det(linear)) < 1e-6 * float(np.prod(zooms)):
        raise VoxelSizeError(f"{label}: the affine is degenerate (axes collinear); fix the header")


def check_inplane(shape: tuple[int, ...], affine: np.ndarray, label: str, limits: Limits) -> None:
    """The display slices of a [X, Y, Z, ...] array with this affine must look like axial
    head slices: H and W (pixels) within min..max_inplane_voxels and a field of view of at
    least min_inplane_fov_mm along both in-plane axes.  The slice axis is the array axis
    closest to the patient's S-I direction (``geometry.geometry_of``).

    Raises VolumeTooLargeError (too many pixels) or NotAHeadImageError (too few / too small).
    """
    geometry = geometry_of(affine, shape[:3])
    _, h, w = geometry.display_shape
    row_mm, col_mm = geometry.display_pixel_spacing_mm
    fov = (h * row_mm, w * col_mm)
    axis = geometry.slice_axis
    where = f"slices along array axis {axis} (closest to the patient's S-I direction)"
    if max(h, w) > limits.max_inplane_voxels:
        raise VolumeTooLargeError(
            f"{label}: {where} are {h} x {w} pixels, which exceed the in-plane bound of "
            f"{limits.max_inplane_voxels} x {limits.max_inplane_voxels}; downsample in-plane"
        )
    if min(h, w) < limits.min_inplane_voxels:
        least = limits.min_inplane_voxels
        raise NotAHeadImageError(
            f"{label}: {where} are only {h} x {w} pixels (at least {least} x {least} "
            "expected): not axial head slices; check the orientation in the header and that "
            "this is the DWI volume"
        )
    if min(fov) < limits.min_inplane_fov_mm:
        raise NotAHeadImageError(
            f"{label}: {where} cover only {fov[0]:.1f} x {fov[1]:.1f} mm (at least "
            f"{limits.min_inplane_fov_mm:g} mm each way expected for a head): check the voxel "
            "sizes in the header and that this is the DWI volume"
        )
    if shape[axis] < contract.MIN_SLICES:
        raise DimensionalityError(
            f"{label}: only {shape[axis]} slice(s) along array axis {axis} (the patient's S-I "
            f"direction); send the whole DWI volume (at least {contract.MIN_SLICES} slices "
            "covering the brain)"
        )
    shear = shear_deg(affine, axis)
    if shear > contract.MAX_SHEAR_DEG:
        raise VoxelSizeError(
            f"{label}: the slices are sheared by {shear:.1f}° (gantry tilt; at most "
            f"{contract.MAX_SHEAR_DEG:g}° is handled); send a volume resampled without tilt"
        )


def shear_deg(affine: np.ndarray, slice_axis: int) -> float:
    """Degrees between the slice axis and the normal of the two in-plane axes (0: no tilt)."""
    linear = np.asarray(affine, np.float64)[:3, :3]
    a, b = (linear[:, i] for i in range(3) if i != slice_axis)
    normal, step = np.cross(a, b), linear[:, slice_axis]
    cosine = abs(float(normal @ step)) / float(np.linalg.norm(normal) * np.linalg.norm(step))
    return math.degrees(math.acos(min(1.0, cosine)))


def _check_units(header: nib.Nifti1Header, label: str) -> None:
    units = header.get_xyzt_units()[0] if hasattr(header, "get_xyzt_units") else "unknown"
    if units not in ("mm", "unknown"):
        raise VoxelSizeError(f"{label}: spatial units are {units!r}; rescale the header to mm")


def _check_dtype(header: nib.Nifti1Header, label: str) -> np.dtype:
    try:
        dtype = header.get_data_dtype()
    except Exception as exc:
        raise DtypeError(f"{label}: unknown NIfTI datatype ({exc})") from None
    _check_dtype_of(dtype, label)
    return dtype


def _check_dtype_of(dtype: np.dtype, label: str) -> None:
    """The one dtype rule: real integer or float scalars of at most 64 bits."""
    if dtype.fields is not None or dtype.kind not in "biuf" or dtype.itemsize > 8:
        raise DtypeError(
            f"{label}: voxel type {dtype} is not a real scalar; "
            "send integer or float (≤64-bit) intensities, not RGB/complex data"
        )


def scaling(header: nib.Nifti1Header, label: str) -> tuple[float, float] | None:
    """(slope, inter) to apply to the stored values, or None when they are used as stored.

    The NIfTI rule (as nibabel reads it): scl_slope 0 or not finite means unscaled, and
    scl_inter is then ignored; a valid slope with a NaN/inf scl_inter is refused.
    """
    slope = float(header["scl_slope"])
    inter = float(header["scl_inter"])
    if slope == 0.0 or not np.isfinite(slope):
        return None
    if not np.isfinite(inter):
        raise CorruptVolumeError(
            f"{label}: scl_slope is {slope:g} but scl_inter is {inter}; fix scl_inter in the "
            "header (0 when the values need no offset)"
        )
    if slope == 1.0 and inter == 0.0:
        return None
    return slope, inter


def _scaled(data: np.ndarray, slope: float, inter: float) -> np.ndarray:
    """float32 copy of data * slope + inter (one volume-sized allocation)."""
    out = data.astype(np.float32)
    out *= np.float32(slope)
    out += np.float32(inter)
    return out


# --- from a buffer or an image -----------------------------------------------------------


def volume_from_buffer(
    buffer: bytes | bytearray | memoryview,
    label: str,
    volume_index: int | None = None,
    limits: Limits = Limits(),
) -> Volume:
    """Build a validated Volume viewing (not copying) the uncompressed NIfTI bytes."""
    volume_index = check_volume_index(volume_index)
    header = _parse_header(buffer, label)
    nbytes = check_layout(header, label, limits, volume_index)
    if len(buffer) < nbytes:
        raise CorruptVolumeError(
            f"{label}: truncated: the file is incomplete: {len(buffer):,} of the {nbytes:,} "
            "bytes its header declares are present; re-download or re-export the file"
        )
    affine = header_affine(header, label)
    data = np.ndarray(
        header.get_data_shape(),
        dtype=header.get_data_dtype(),
        buffer=buffer,
        offset=int(header.get_data_offset()),
        order="F",
    )
    data = _as_3d(data, volume_index)
    factors = scaling(header, label)
    if factors is not None:
        data = _scaled(data, *factors)
    return _validated(data, affine, _kept_header(header, affine), label)


def _from_image(
    img: nib.spatialimages.SpatialImage, label: str, volume_index: int | None, limits: Limits
) -> Volume:
    _check_dtype_of(np.dtype(img.get_data_dtype()), label)
    shape = tuple(int(n) for n in img.shape)
    check_shape(shape, label, limits, volume_index)
    affine = _image_affine(img, label)
    check_affine(affine, label, limits)
    check_inplane(shape, affine, label, limits)
    header = img.header if isinstance(img.header, nib.Nifti1Header) else None
    if header is None:
        header = nib.Nifti1Header()
        header.set_data_shape(shape)
        header.set_sform(affine, code="scanner")
        header.set_qform(affine, code="scanner")
    else:
        _check_units(header, label)
        header = _kept_header(header, affine)
    data = _as_3d(_image_data(img), volume_index)
    return _validated(data, affine, header, label)


def _image_affine(img: nib.spatialimages.SpatialImage, label: str) -> np.ndarray:
    """The image's affine; a NIfTI image whose header has sform_code = qform_code = 0 (its
    affine was invented from pixdim by nibabel) or an image without affine is refused."""
    if img.affine is None:
        raise OrientationUnknownError(
            f"{label}: the image has no affine, so left/right is unknown; {FIX_ORIENTATION}"
        )
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)):
        raise VoxelSizeError(f"{label}: the affine has NaN/inf entries; fix the header")
    header = img.header
    no_codes = isinstance(header, nib.Nifti1Header) and not (
        int(header["sform_code"]) > 0 or int(header["qform_code"]) > 0
    )
    if no_codes:
        header_affine(header, label)  # raises OrientationUnknownError
    return affine


def _image_data(img: nib.spatialimages.SpatialImage) -> np.ndarray:
    """The image's voxels; a scaled nibabel ArrayProxy becomes float32 (not float64)."""
    dataobj = img.dataobj
    if nib.is_proxy(dataobj) and hasattr(dataobj, "get_unscaled"):
        slope = float(np.asarray(getattr(dataobj, "slope", 1.0)))
        inter = float(np.asarray(getattr(dataobj, "inter", 0.0)))
        if np.isfinite(slope) and np.isfinite(inter) and (slope, inter) != (1.0, 0.0):
            return _scaled(np.asanyarray(dataobj.get_unscaled()), slope, inter)
    return np.asanyarray(dataobj)


def _as_3d(data: np.ndarray, volume_index: int | None) -> np.ndarray:
    """[X, Y, Z] of data whose shape and volume_index passed ``check_shape``."""
    if data.ndim == 3:
        return data
    if int(np.prod(data.shape[3:])) == 1:
        return data.reshape(data.shape[:3], order="F")
    return data[..., volume_index or 0]


def _validated(
    data: np.ndarray, affine: np.ndarray, header: nib.Nifti1Header, label: str
) -> Volume:
    """Content checks on the voxels: real dtype, finite, not constant."""
    _check_dtype_of(data.dtype, label)
    if data.dtype.kind == "b":
        data = data.astype(np.uint8)
    lo, hi = np.min(data), np.max(data)  # both propagate NaN; inf shows as +-inf
    if data.dtype.kind == "f" and not (np.isfinite(lo) and np.isfinite(hi)):
        n_bad = int(np.count_nonzero(~np.isfinite(data)))
        raise NonFiniteDataError(
            f"{label}: {n_bad:,} voxels are NaN or infinite; "
            "fix the reconstruction or replace them (e.g. with 0) before sending"
        )
    if lo == hi:
        raise NotAHeadImageError(
            f"{label}: every voxel has the value {float(lo):g}: a blank image, not a head; "
            "check that this is the DWI volume (and the volume index of a 4D series)"
        )
    return Volume(
        data=data, affine=np.asarray(affine, dtype=np.float64), header=header, source=label
    )
