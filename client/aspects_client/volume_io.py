"""Load and validate a NIfTI volume from a path or from bytes in memory.

No temporary file is ever written.  A gzip stream is inflated into one pre-sized buffer
whose size comes from the header, so a gzip bomb is refused after at most
``expected size + slack`` bytes of output, in bounded memory.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from . import contract

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
    NotNiftiError,
    VolumeTooLargeError,
    VoxelSizeError,
)

GZIP_MAGIC = b"\x1f\x8b"
NIFTI1_HEADER_BYTES = 348
NIFTI2_HEADER_BYTES = 540
_INFLATE_CHUNK = 1024 * 1024  # 1 MiB: as fast as 8 MiB, and a third of the peak
_TRAILING_SLACK = 1024 * 1024  # bytes a stream may carry past the data before it is a bomb


@dataclass(frozen=True)
class Limits:
    """Bounds applied while loading; defaults come from the contract."""

    max_voxels: int = contract.MAX_VOXELS
    max_decompressed_bytes: int = contract.MAX_DECOMPRESSED_BYTES
    voxel_size_range_mm: tuple[float, float] = contract.VOXEL_SIZE_RANGE_MM


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

    volume_index selects one volume of a 4D series; a 4D file holding a single volume is
    squeezed.  Raises an InvalidVolumeError subclass that says what to fix.
    """
    if isinstance(source, nib.spatialimages.SpatialImage):
        return _from_image(source, name or "<nibabel image>", volume_index, limits)
    if isinstance(source, (str, Path)):
        path = Path(source)
        label = name or str(path)
        if not path.is_file():
            raise InputNotFoundError(f"{label}: no such file; check the path")
        size = path.stat().st_size
        if size > limits.max_decompressed_bytes:
            raise VolumeTooLargeError(
                f"{label}: {size:,} bytes on disk exceed the bound of "
                f"{limits.max_decompressed_bytes:,}; crop or downsample the volume"
            )
        raw: bytes | bytearray | memoryview = path.read_bytes()
    else:
        raw, label = source, name or "<bytes>"
    buffer = decode_nifti_bytes(raw, label, limits)
    return volume_from_buffer(buffer, label, volume_index, limits)


def decode_nifti_bytes(
    raw: bytes | bytearray | memoryview, label: str, limits: Limits = Limits()
) -> bytes | bytearray | memoryview:
    """The uncompressed NIfTI bytes (header + data) of a .nii or .nii.gz byte string."""
    if len(raw) >= 2 and bytes(raw[:2]) == GZIP_MAGIC:
        return _inflate_bounded(raw, label, limits)
    _parse_header(raw, label)  # refuse non-NIfTI bytes before going further
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
                return b""  # input exhausted inside a member: truncated
            if out:
                return out


def _inflate_bounded(raw: bytes | bytearray | memoryview, label: str, limits: Limits) -> bytearray:
    stream = _GzipStream(raw)
    head = bytearray()
    try:
        # 1. inflate just enough for the header, then size the output from it
        while len(head) < NIFTI2_HEADER_BYTES:
            chunk = stream.read(NIFTI2_HEADER_BYTES - len(head))
            if not chunk:
                break
            head += chunk
        header = _parse_header(head, label)
        expected = _expected_nbytes(header, label, limits)
        if expected > len(raw) * MAX_DEFLATE_RATIO + NIFTI2_HEADER_BYTES:
            raise CorruptVolumeError(
                f"{label}: truncated: {len(raw):,} compressed bytes cannot hold the "
                f"{expected:,} bytes the header declares; re-download or re-export the file"
            )
        out = bytearray(expected)
        out[: len(head)] = head[:expected]
        filled = min(len(head), expected)
        extra = max(0, len(head) - expected)
        # 2. inflate the rest straight into the buffer; count what overflows it
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
    except (zlib.error, _inflate_lib.error) as exc:
        raise CorruptVolumeError(
            f"{label}: the gzip stream is corrupt ({exc}); re-export or re-upload the file"
        ) from None
    if filled < expected:
        raise CorruptVolumeError(
            f"{label}: truncated: {filled:,} of {expected:,} bytes present; "
            "re-download or re-export the file"
        )
    if not stream.complete:
        raise CorruptVolumeError(f"{label}: the gzip stream is truncated; re-download the file")
    return out


def _parse_header(raw: bytes | bytearray | memoryview, label: str) -> nib.Nifti1Header:
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
    try:
        return klass.from_fileobj(io.BytesIO(head[:size]), check=True)
    except Exception as exc:  # nibabel raises several types for inconsistent headers
        raise CorruptVolumeError(f"{label}: inconsistent NIfTI header ({exc})") from None


def _looks_like_nifti_prefix(head: bytes) -> bool:
    """sizeof_hdr (348 or 540, either byte order) opens the bytes."""
    sizes = (NIFTI1_HEADER_BYTES, NIFTI2_HEADER_BYTES)
    return len(head) >= 4 and any(int.from_bytes(head[:4], e) in sizes for e in ("little", "big"))


def _expected_nbytes(header: nib.Nifti1Header, label: str, limits: Limits) -> int:
    shape = header.get_data_shape()
    _check_dtype(header, label)
    n_voxels = int(np.prod(shape, dtype=np.int64)) if shape else 0
    if n_voxels <= 0:
        raise DimensionalityError(f"{label}: the header declares an empty volume {shape}")
    if n_voxels > limits.max_voxels:
        raise VolumeTooLargeError(
            f"{label}: {n_voxels:,} voxels {tuple(shape)} exceed the bound of "
            f"{limits.max_voxels:,}; crop or downsample the volume"
        )
    nbytes = int(header.get_data_offset()) + n_voxels * header.get_data_dtype().itemsize
    if nbytes > limits.max_decompressed_bytes:
        raise VolumeTooLargeError(
            f"{label}: {nbytes:,} bytes decoded exceed the bound of "
            f"{limits.max_decompressed_bytes:,}; crop or downsample the volume"
        )
    return nbytes


def _check_dtype(header: nib.Nifti1Header, label: str) -> np.dtype:
    try:
        dtype = header.get_data_dtype()
    except Exception as exc:
        raise DtypeError(f"{label}: unknown NIfTI datatype ({exc})") from None
    _check_dtype_of(dtype, label)
    return dtype


def volume_from_buffer(
    buffer: bytes | bytearray | memoryview,
    label: str,
    volume_index: int | None = None,
    limits: Limits = Limits(),
) -> Volume:
    """Build a validated Volume viewing (not copying) the uncompressed NIfTI bytes."""
    header = _parse_header(buffer, label)
    nbytes = _expected_nbytes(header, label, limits)
    if len(buffer) < nbytes:
        raise CorruptVolumeError(
            f"{label}: truncated: {len(buffer):,} of {nbytes:,} bytes present; "
            "re-download or re-export the file"
        )
    shape = header.get_data_shape()
    data = np.ndarray(
        shape,
        dtype=header.get_data_dtype(),
        buffer=buffer,
        offset=int(header.get_data_offset()),
        order="F",
    )
    slope, inter = header.get_slope_inter()
    if (slope is not None and slope != 1.0) or (inter is not None and inter != 0.0):
        data = data.astype(np.float32) * np.float32(slope or 1.0) + np.float32(inter or 0.0)
    return _validated(data, header.get_best_affine(), header, label, volume_index, limits)


def _from_image(
    img: nib.spatialimages.SpatialImage, label: str, volume_index: int | None, limits: Limits
) -> Volume:
    header = img.header if isinstance(img.header, nib.Nifti1Header) else None
    if header is None:
        header = nib.Nifti1Header()
        header.set_data_shape(img.shape)
        header.set_sform(img.affine, code="scanner")
        header.set_qform(img.affine, code="scanner")
    _check_dtype_of(img.get_data_dtype(), label)
    n_voxels = int(np.prod(img.shape, dtype=np.int64))
    if n_voxels <= 0:
        raise DimensionalityError(f"{label}: an empty volume {img.shape}")
    if n_voxels > limits.max_voxels:
        raise VolumeTooLargeError(
            f"{label}: {n_voxels:,} voxels exceed the bound of {limits.max_voxels:,}"
        )
    data = np.asanyarray(img.dataobj)
    return _validated(
        data, np.asarray(img.affine, dtype=float), header, label, volume_index, limits
    )


def _check_dtype_of(dtype: np.dtype, label: str) -> None:
    """The one dtype rule: real integer or float scalars of at most 64 bits."""
    if dtype.fields is not None or dtype.kind not in "biuf" or dtype.itemsize > 8:
        raise DtypeError(
            f"{label}: voxel type {dtype} is not a real scalar; "
            "send integer or float (≤64-bit) intensities, not RGB/complex data"
        )


def _validated(
    data: np.ndarray,
    affine: np.ndarray,
    header: nib.Nifti1Header,
    label: str,
    volume_index: int | None,
    limits: Limits,
) -> Volume:
    _check_dtype_of(data.dtype, label)
    data = _as_3d(data, label, volume_index)
    _check_geometry(affine, header, label, limits)
    if data.dtype.kind == "f" and data.size:
        lo, hi = np.min(data), np.max(data)  # both propagate NaN; inf shows as +-inf
        if not (np.isfinite(lo) and np.isfinite(hi)):
            n_bad = int(np.count_nonzero(~np.isfinite(data)))
            raise NonFiniteDataError(
                f"{label}: {n_bad:,} voxels are NaN or infinite; "
                "fix the reconstruction or replace them (e.g. with 0) before sending"
            )
    if data.dtype.kind == "b":
        data = data.astype(np.uint8)
    return Volume(
        data=data, affine=np.asarray(affine, dtype=np.float64), header=header, source=label
    )


def _as_3d(data: np.ndarray, label: str, volume_index: int | None) -> np.ndarray:
    if data.ndim < 3:
        raise DimensionalityError(
            f"{label}: {data.ndim}D data {data.shape}; send a 3D volume (X, Y, slices)"
        )
    extra = data.shape[3:]
    if data.ndim == 3:
        if volume_index not in (None, 0):
            raise DimensionalityError(f"{label}: a 3D volume has no volume {volume_index}")
        return data
    n_volumes = int(np.prod(extra))
    if n_volumes == 1:
        return data.reshape(data.shape[:3], order="F")
    if data.ndim == 4 and volume_index is not None:
        if not 0 <= volume_index < n_volumes:
            raise DimensionalityError(
                f"{label}: volume index {volume_index} out of range 0..{n_volumes - 1}"
            )
        return data[..., volume_index]
    raise DimensionalityError(
        f"{label}: a {data.ndim}D series {data.shape} with {n_volumes} volumes; "
        "choose one with volume_index / --volume (e.g. the b=1000 trace)"
    )


def _check_geometry(
    affine: np.ndarray, header: nib.Nifti1Header, label: str, limits: Limits
) -> None:
    if not np.all(np.isfinite(affine)):
        raise VoxelSizeError(f"{label}: the affine has NaN/inf entries; fix the header")
    linear = np.asarray(affine, dtype=float)[:3, :3]
    zooms = np.linalg.norm(linear, axis=0)
    lo, hi = limits.voxel_size_range_mm
    if np.any(zooms < lo) or np.any(zooms > hi):
        raise VoxelSizeError(
            f"{label}: voxel sizes {tuple(round(float(z), 4) for z in zooms)} mm are outside "
            f"{lo}..{hi} mm; fix pixdim/sform in the header"
        )
    if abs(np.linalg.det(linear)) < 1e-6 * float(np.prod(zooms)):
        raise VoxelSizeError(f"{label}: the affine is degenerate (axes collinear); fix the header")
    units = header.get_xyzt_units()[0] if hasattr(header, "get_xyzt_units") else "unknown"
    if units not in ("mm", "unknown"):
        raise VoxelSizeError(f"{label}: spatial units are {units!r}; rescale the header to mm")
