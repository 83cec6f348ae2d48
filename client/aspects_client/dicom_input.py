"""DICOM input: the DWI series (and the ADC series, when present) as volumes.

    study = read_dicom("/data/case12/")            # a folder (recursive)
    study = read_dicom("case12.zip")                # a zip archive (read in memory)
    study = read_dicom(["a.dcm", "b.dcm", ...])     # a list of files
    study = read_dicom("s3://bucket/case12/", s3_client=client)   # an S3 prefix
    study.dwi.image       # float32 NIfTI [columns, rows, slices], affine voxel -> RAS+ mm
    study.adc             # the ADC series as a DicomSeries, or None

**Gathering** (bounded: at most ``MAX_FILES`` files and ``Limits.max_decompressed_bytes``
bytes in all; nothing is written to disk).  A folder, zip or S3 prefix may hold other
things: files that are obviously not DICOM are skipped by name (``DICOMDIR``, hidden
files, ``__MACOSX/``, and the suffixes in ``SKIPPED_SUFFIXES`` such as ``.txt``, ``.json``,
``.nii.gz``, ``.zip``), and so are DICOM objects without pixel data (reports, presentation
states, key objects, a DICOMDIR under another name).  Every other file must be DICOM Part
10 (``pydicom.dcmread(force=False)``: the 128-byte preamble and 'DICM'), else
``NotDicomError`` names it.  A list of files is taken literally: each must be DICOM.  Zip
members with an absolute path or a '..' segment are refused (``UnsafeArchiveError``); the
members' declared sizes count against the bound before anything is inflated, and no member
is inflated past its declared size (a zip bomb declaring less fails its CRC there:
``UnreadableDicomError``).

**Selecting** (series are grouped by SeriesInstanceUID; only MR images qualify):

* ADC: ImageType contains ``ADC``, or the series description names it ("ADC", "apparent
  diffusion") on a DERIVED series or one without b-values.
* DWI: images with a diffusion b-value > 0: the standard (0018,9087) Diffusion b-value
  (classic, or the MR Diffusion functional group of an enhanced multi-frame image), else
  Siemens (0019,xx0C) ``SIEMENS MR HEADER``, GE (0043,xx39) ``GEMS_PARM_01``, Philips
  (2001,xx03) ``Philips Imaging DD 001``.  Derived maps (FA, exponential ADC, tensor) and
  Siemens mosaics (``UnsupportedDicomError``: re-export the un-mosaicked trace series)
  do not qualify.
* b-value: the trace (ISOTROPIC, or any image that is the only one at its position) images
  at b = 1000 when present, else at the highest b ≤ ``MAX_B_VALUE``.  Directional images
  (DIRECTIONAL / BMATRIX, a gradient direction, Philips R/P/S/O) are not combined into a
  trace: a series with only directional images is refused (``NotDiffusionError``: send the
  scanner's trace series).
* Several DWI series: ``MixedSeriesError`` lists them (number, description — never patient
  data); choose with ``series=`` (SeriesNumber or SeriesInstanceUID).  The ADC must be in
  the DWI's study; several: ``adc_series=``.

**Geometry** (``InconsistentGeometryError`` & co. say what to send instead): one image size,
orientation and pixel spacing; slices sorted along the normal of the image plane (row
direction x column direction of ImageOrientationPatient); no two at one position
(``DuplicateSlicesError``); no gap of about twice the spacing or more
(``MissingSlicesError``), no other spacing change beyond max(0.01 mm, 1 %); the slice
positions on one line.  A stack whose positions step off the normal (gantry tilt) is kept
with a sheared affine (its third column is the exact step between slice positions; the
qform is then unset, since a quaternion cannot hold a shear) up to
``MAX_GANTRY_TILT_DEG``; beyond, ``GantryTiltError``.  The in-plane columns of the affine
come from ``highdicom.spatial.create_affine_matrix_from_attributes``; LPS becomes RAS+ by
negating x and y.  Values: stored x RescaleSlope + RescaleIntercept (per frame for
enhanced images), float32.

Privacy: nothing from the patient module is logged or used to name anything; logs and
messages name series by number and description only.
"""

from __future__ import annotations

import io
import logging
import math
import os
import re
import threading
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import nibabel as nib
import numpy as np

from . import contract
from .errors import (
    CancelledError,
    DecompressionBombError,
    DuplicateSlicesError,
    GantryTiltError,
    InconsistentGeometryError,
    InputNotFoundError,
    MissingSlicesError,
    MixedSeriesError,
    NotDicomError,
    NotDiffusionError,
    ObjectNotFoundError,
    UnreadableDicomError,
    UnsafeArchiveError,
    UnsupportedDicomError,
    UsageError,
    VolumeTooLargeError,
)
from .outputs import printable
from .volume_io import Limits, numbers_text

if TYPE_CHECKING:  # pydicom and highdicom are imported on first use (import stays cheap)
    from pydicom.dataset import Dataset

log = logging.getLogger("aspects_client")

MAX_FILES = 20_000  # files (zip members, S3 objects) in one DICOM input
MAX_B_VALUE = 1500.0  # s/mm²: the highest b-value taken as "the DWI" when 1000 is absent
PREFERRED_B_VALUE = 1000.0
B_VALUE_TOLERANCE = 1.0  # s/mm²: b-values closer than this are one b-value ...
B_VALUE_RTOL = 0.02  # ... or within 2 % of each other (999 and 1000.9: one shell, rounding)
MAX_INFLATE_RATIO = 200  # a zip member or deflated dataset inflating more than this much ...
MIN_BOMB_BYTES = 64 << 20  # ... to more than this is refused (a blank slice deflates ~550x,
# but real image data of this size never compresses 200x)
MIN_ENCAPSULATED_FRAME_BYTES = 8  # an encapsulated frame holds at least one item header
MAX_SPACING_OVER_THICKNESS = 1.9  # slices this far apart for their thickness: some missing
_DEFLATED_SYNTAX = b"1.2.840.10008.1.2.1.99"
_NATIVE_SYNTAXES = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2")
MIN_SLICES = contract.MIN_SLICES  # one rule for NIfTI and DICOM (docs/errors.md)
MAX_GANTRY_TILT_DEG = contract.MAX_SHEAR_DEG
SPACING_RTOL, SPACING_ATOL_MM = 0.01, 0.01  # slice spacing regularity: max(atol, rtol * s)
GEOMETRY_ATOL = 1e-4  # orientation cosines and pixel spacing (mm) equality
TILT_FREE_DEG = 0.01  # a stack within this angle of the normal is not sheared
SKIPPED_NAMES = frozenset({"dicomdir", "thumbs.db", "desktop.ini", "license", "readme"})
SKIPPED_SUFFIXES = (
    ".txt", ".md", ".json", ".xml", ".html", ".htm", ".pdf", ".csv", ".tsv", ".log", ".ini",
    ".cfg", ".yaml", ".yml", ".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".nii",
    ".nii.gz", ".gz", ".bval", ".bvec", ".zip", ".exe", ".bat", ".sh", ".db", ".dll", ".inf",
    ".sqlite", ".ctbl",  # .ctbl: the viewer colour table this client writes (--viewer)
)  # fmt: skip
_ADC_DESCRIPTION = re.compile(r"(?<![a-z])adc(?![a-z])|apparent\s*diffusion", re.IGNORECASE)
_DERIVED_MAP_TYPES = frozenset(
    {"FA", "EXP", "EADC", "TENSOR", "DIFFUSION_ANISO", "DIFFUSION_ATTNTD", "TRACE_TENSOR"}
)
_DIRECTIONAL = frozenset({"DIRECTIONAL", "BMATRIX"})
_NON_IMAGE_SOP_CLASSES = frozenset({"1.2.840.10008.1.3.10"})  # Media Storage Directory
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_S3_PAGE = 1000


# --- the result ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DicomSeries:
    """One image series read from DICOM, as a volume in the instances' own pixel grid.

    image: float32 3D NIfTI [columns, rows, K]: voxel (i, j, k) = pixel (column i, row j)
    of the k-th frame in slice order (k increasing along the normal of the image plane);
    affine voxel -> world RAS+ mm (DICOM's LPS with x, y negated); sform (and qform unless
    sheared) code 'scanner'; values after Rescale Slope/Intercept.
    datasets: the instances that hold the frames (pixel data kept), in first-use order.
    frames: frames[k] = (index into ``datasets``, 1-based frame number) of slice k.
    role: "dwi" or "adc"; b_value: the selected b-value (s/mm²) for DWI, None for ADC.
    """

    image: nib.Nifti1Image
    datasets: tuple[Dataset, ...]
    frames: tuple[tuple[int, int], ...]
    role: str
    b_value: float | None
    series_instance_uid: str
    frame_of_reference_uid: str

    @property
    def series_number(self) -> int | None:
        value = self.datasets[0].get("SeriesNumber")
        return None if value in (None, "") else int(value)

    @property
    def series_description(self) -> str:
        return str(self.datasets[0].get("SeriesDescription", "") or "")


@dataclass(frozen=True)
class DicomStudy:
    """The DWI series and, when the input holds one of the same study, the ADC series."""

    dwi: DicomSeries
    adc: DicomSeries | None


# --- sources ---------------------------------------------------------------------------------


def is_dicom_source(source: object) -> bool:
    """True for a directory, a .zip path (local or s3://), a list/tuple of paths, or an
    s3:// URL ending in '/' (a prefix)."""
    if isinstance(source, (list, tuple)):
        return bool(source) and all(
            isinstance(p, (str, Path)) and not isinstance(p, bool) for p in source
        )
    if isinstance(source, str) and source.startswith("s3://"):
        return source.endswith("/") or source.lower().endswith(".zip")
    if isinstance(source, (str, Path)) and str(source):
        return str(source).lower().endswith(".zip") or Path(source).is_dir()
    return False


def dicom_source_name(source: str | Path | Sequence[str | Path]) -> str:
    """The name a result records for a DICOM source: the folder's, zip's or prefix's last
    segment; for a list of files, their common folder's (never anything from the files)."""
    if isinstance(source, (list, tuple)):
        parents = [os.path.dirname(os.path.abspath(str(p))) for p in source]
        try:
            common = os.path.commonpath(parents)
        except ValueError:  # different drives
            return "dicom"
        return os.path.basename(common) or "dicom"
    text = str(source).replace("\\", "/").rstrip("/")
    if not text.startswith("s3://") and Path(source).is_dir():  # '.', '..': the folder's name
        return os.path.basename(os.path.abspath(str(source))) or "dicom"
    return text.rsplit("/", 1)[-1] or "dicom"


def parse_s3_prefix(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix/`` -> (bucket, prefix); UsageError for what S3 would not list
    literally (no prefix, empty segments, '.' or '..')."""
    from .storage import parse_s3_url

    if not (url.startswith("s3://") and url.endswith("/")):
        raise UsageError(f"{printable(url)}: a DICOM S3 prefix looks like s3://bucket/case12/")
    bucket, key = parse_s3_url(url[:-1])  # validates the bucket and the key's segments
    return bucket, key + "/"


def check_dicom_source(source: object) -> None:
    """UsageError for a DICOM source that cannot be read (before any work)."""
    if isinstance(source, str) and source.startswith("s3://"):
        if source.endswith("/"):
            parse_s3_prefix(source)
        else:
            from .storage import parse_s3_url

            parse_s3_url(source)


# --- reading ---------------------------------------------------------------------------------


def read_dicom(
    source: str | Path | Sequence[str | Path],
    *,
    s3_client: Any = None,
    label: str | None = None,
    limits: Limits = Limits(),
    series: str | int | None = None,
    adc_series: str | int | None = None,
    adc: bool = True,
    max_object_bytes: int | None = None,
    cancel: threading.Event | None = None,
) -> DicomStudy:
    """A folder (recursive), a .zip, a list of files, or an s3://bucket/prefix/ (ending
    '/'): gather the files' bytes, then ``read_dicom_files``."""
    label = label or _default_label(source)
    files = gather_files(
        source,
        s3_client=s3_client,
        label=label,
        limits=limits,
        max_object_bytes=max_object_bytes,
        cancel=cancel,
    )
    return read_dicom_files(
        files, label=label, limits=limits, series=series, adc_series=adc_series, adc=adc,
        cancel=cancel,
    )


def read_dicom_files(
    files: Sequence[tuple[str, bytes]],
    *,
    label: str,
    limits: Limits = Limits(),
    series: str | int | None = None,
    adc_series: str | int | None = None,
    adc: bool = True,
    cancel: threading.Event | None = None,
) -> DicomStudy:
    """Pure function on (name, bytes) pairs: parse, group by series, select the DWI (and
    the ADC unless ``adc`` is False), build the volumes.  ``cancel`` is checked per file
    and per slice (CancelledError: Ctrl-C and SIGTERM stop reading, too)."""
    groups = _group(_parse_all(files, label, cancel), label)
    dwi_group, b_value = _select_dwi(groups, series, label)
    dwi = _series_volume(dwi_group, "dwi", b_value, files, label, limits, cancel)
    log.info("DICOM: DWI %s, b=%g s/mm², %d slices", dwi_group.title, b_value, len(dwi.frames))
    adc_volume = None
    if adc:
        adc_group = _select_adc(groups, adc_series, dwi_group, label)
        if adc_group is not None:
            adc_volume = _series_volume(adc_group, "adc", None, files, label, limits, cancel)
            log.info("DICOM: ADC %s, %d slices", adc_group.title, len(adc_volume.frames))
    return DicomStudy(dwi=dwi, adc=adc_volume)


def read_dicom_adc(
    source: str | Path | Sequence[str | Path],
    *,
    s3_client: Any = None,
    label: str | None = None,
    limits: Limits = Limits(),
    adc_series: str | int | None = None,
    max_object_bytes: int | None = None,
    cancel: threading.Event | None = None,
) -> DicomSeries:
    """The ADC series of a DICOM source that holds one (``adc=`` given as DICOM)."""
    label = label or _default_label(source)
    files = gather_files(
        source,
        s3_client=s3_client,
        label=label,
        limits=limits,
        max_object_bytes=max_object_bytes,
        cancel=cancel,
    )
    groups = _group(_parse_all(files, label, cancel), label)
    group = _select_adc(groups, adc_series, None, label)
    if group is None:
        raise NotDiffusionError(
            f"{label}: no ADC series (ImageType ADC or a description naming ADC) among "
            f"{_listing(groups)}; send the scanner's ADC map series"
        )
    return _series_volume(group, "adc", None, files, label, limits, cancel)


def _default_label(source: str | Path | Sequence[str | Path]) -> str:
    return dicom_source_name(source) if isinstance(source, (list, tuple)) else str(source)


# --- gathering bytes ------------------------------------------------------------------------


def gather_files(
    source: str | Path | Sequence[str | Path],
    *,
    s3_client: Any = None,
    label: str,
    limits: Limits = Limits(),
    max_object_bytes: int | None = None,
    cancel: threading.Event | None = None,
) -> list[tuple[str, bytes]]:
    """(name relative to the source, bytes) of every candidate file, bounded by
    ``MAX_FILES`` and ``limits.max_decompressed_bytes`` in all."""
    budget = _Budget(label, limits.max_decompressed_bytes, cancel)
    if isinstance(source, (list, tuple)):
        return [_read_listed(p, label, budget) for p in source]
    if isinstance(source, str) and source.startswith("s3://"):
        if s3_client is None:
            from .storage import make_s3_client

            s3_client = make_s3_client()
        if source.endswith("/"):
            return _gather_s3_prefix(source, s3_client, label, budget, max_object_bytes, cancel)
        from .storage import DEFAULT_MAX_OBJECT_BYTES, fetch_object

        cap = min(max_object_bytes or DEFAULT_MAX_OBJECT_BYTES, budget.cap)
        raw = fetch_object(source, s3_client, max_bytes=cap, cancel=cancel)
        return _gather_zip(bytes(raw), label, budget)
    path = Path(source)
    if path.is_dir():
        return _gather_folder(path, label, budget)
    if str(source).lower().endswith(".zip"):
        if not path.is_file():
            raise InputNotFoundError(f"{label}: no such zip file; check the path")
        if path.stat().st_size > budget.cap:
            raise VolumeTooLargeError(
                f"{label}: the zip is larger than {budget.cap:,} bytes; zip the DWI and ADC "
                "series only"
            )
        return _gather_zip(path.read_bytes(), label, budget)
    raise InputNotFoundError(
        f"{label}: not a folder, a .zip, a list of files or an s3:// prefix ending in '/'"
    )


class _Budget:
    """Counts files and bytes against MAX_FILES and the byte cap."""

    def __init__(self, label: str, cap: int, cancel: threading.Event | None = None) -> None:
        self.label, self.cap, self.files, self.bytes = label, int(cap), 0, 0
        self.cancel = cancel

    def check_size(self, size: int, name: str) -> None:
        _check_cancel(self.cancel, self.label)  # once per file: Ctrl-C stops gathering
        self.files += 1
        self.bytes += int(size)
        if self.files > MAX_FILES:
            raise VolumeTooLargeError(
                f"{self.label}: more than {MAX_FILES:,} files; give the DWI series' folder "
                "(or a zip or prefix holding the DWI and ADC series only)"
            )
        if self.bytes > self.cap:
            raise VolumeTooLargeError(
                f"{self.label}: more than {self.cap:,} bytes of files (at {printable(name)}); "
                "give only the DWI and ADC series"
            )


def skipped_name(name: str) -> bool:
    """True for a file name that is obviously not a DICOM image (see the module doc)."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    base = parts[-1].lower() if parts else ""
    if not base or base in SKIPPED_NAMES or base.startswith("."):
        return True
    if any(p == "__MACOSX" or p.startswith(".") for p in parts[:-1]):
        return True
    return base.endswith(SKIPPED_SUFFIXES)


def _read_listed(path: str | Path, label: str, budget: _Budget) -> tuple[str, bytes]:
    p = Path(path)
    if not p.is_file():
        what = "is a directory" if p.is_dir() else "does not exist or is not a regular file"
        raise InputNotFoundError(f"{printable(str(path))} {what}; list DICOM files only")
    budget.check_size(p.stat().st_size, str(path))
    try:
        return str(path), p.read_bytes()
    except OSError as exc:
        raise InputNotFoundError(
            f"{printable(str(path))}: cannot be read ({exc.strerror})"
        ) from None


def _gather_folder(folder: Path, label: str, budget: _Budget) -> list[tuple[str, bytes]]:
    out = []
    for root, dirs, names in os.walk(folder, followlinks=False):
        dirs.sort()
        for name in sorted(names):
            path = Path(root) / name
            rel = path.relative_to(folder).as_posix()
            if skipped_name(rel) or not path.is_file():
                continue
            if path.is_symlink() and not path.resolve().is_relative_to(folder.resolve()):
                raise UnsafeArchiveError(
                    f"{label}: {printable(rel)} is a link to a file outside the folder; "
                    "copy the series into one folder (links leading out are not followed)"
                )
            budget.check_size(path.stat().st_size, rel)
            try:
                out.append((rel, path.read_bytes()))
            except OSError as exc:
                raise InputNotFoundError(
                    f"{label}: {printable(rel)} cannot be read ({exc.strerror})"
                ) from None
    if not out:
        raise NotDicomError(f"{label}: the folder holds no DICOM files; give the DWI series")
    return out


def _gather_zip(raw: bytes, label: str, budget: _Budget) -> list[tuple[str, bytes]]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw))
    except (zipfile.BadZipFile, OSError):
        raise NotDicomError(
            f"{label}: not a zip archive; send a .zip of the DICOM series"
        ) from None
    out = []
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        for member in members:  # every name is checked before anything is inflated
            _check_member_name(member.filename, label)
        members = [m for m in members if not skipped_name(m.filename)]
        for member in members:
            budget.check_size(member.file_size, member.filename)
            if member.file_size > max(MAX_INFLATE_RATIO * member.compress_size, MIN_BOMB_BYTES):
                raise DecompressionBombError(
                    f"{label}: {printable(member.filename)} inflates {member.file_size:,} "
                    f"bytes from {member.compress_size:,} (more than {MAX_INFLATE_RATIO}x: "
                    "possible zip bomb); refusing the archive"
                )
        for member in members:
            if member.flag_bits & 0x1:
                raise UnsafeArchiveError(
                    f"{label}: {printable(member.filename)} is encrypted; send an unencrypted zip"
                )
            out.append((member.filename, _inflate_member(archive, member, label)))
    if not out:
        raise NotDicomError(f"{label}: the zip holds no DICOM files; zip the DWI series")
    return out


def _check_member_name(name: str, label: str) -> None:
    posix = name.replace("\\", "/")
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix) or ".." in posix.split("/"):
        raise UnsafeArchiveError(
            f"{label}: the zip member {printable(name)!r} has an absolute path or a '..' "
            "segment; refusing the archive (re-create it with relative paths)"
        )


def _inflate_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, label: str) -> bytes:
    """The member's bytes, never more than its declared size (+1 to detect a lie)."""
    try:
        with archive.open(member) as handle:
            data = handle.read(member.file_size + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise UnreadableDicomError(
            f"{label}: {printable(member.filename)} is corrupt in the zip ({exc}); re-create it"
        ) from None
    except (NotImplementedError, RuntimeError, OSError) as exc:
        raise UnreadableDicomError(
            f"{label}: {printable(member.filename)} cannot be extracted ({exc}); "
            "re-create the zip with deflate or no compression"
        ) from None
    if len(data) > member.file_size:
        raise DecompressionBombError(
            f"{label}: {printable(member.filename)} inflates past its declared "
            f"{member.file_size:,} bytes (possible zip bomb); refusing the archive"
        )
    return data


def _gather_s3_prefix(
    url: str,
    client: Any,
    label: str,
    budget: _Budget,
    max_object_bytes: int | None,
    cancel: threading.Event | None,
) -> list[tuple[str, bytes]]:
    import botocore.exceptions as bce

    from .storage import DEFAULT_MAX_OBJECT_BYTES, _botocore_error, fetch_object

    bucket, prefix = parse_s3_prefix(url)
    keys: list[str] = []
    try:
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": _S3_PAGE}
        )
        for page in pages:
            if cancel is not None and cancel.is_set():
                from .errors import CancelledError

                raise CancelledError(f"{printable(url)}: listing cancelled")
            for entry in page.get("Contents", []):
                key = entry["Key"]
                rel = key[len(prefix) :]
                if key.endswith("/") or skipped_name(rel):
                    continue
                budget.check_size(int(entry.get("Size", 0)), rel)
                keys.append(key)
    except (bce.ClientError, bce.BotoCoreError) as exc:
        raise _botocore_error(printable(url), bucket, exc) from None
    if not keys:
        raise ObjectNotFoundError(f"{printable(url)}: no files under this prefix; check it")
    cap = min(max_object_bytes or DEFAULT_MAX_OBJECT_BYTES, budget.cap)
    from concurrent.futures import ThreadPoolExecutor

    def fetch(key: str) -> tuple[str, bytes]:
        return key[len(prefix) :], bytes(
            fetch_object(f"s3://{bucket}/{key}", client, max_bytes=cap, cancel=cancel)
        )

    with ThreadPoolExecutor(max_workers=min(8, len(keys))) as pool:
        return list(pool.map(fetch, keys))


# --- parsing and grouping ---------------------------------------------------------------


@dataclass(frozen=True)
class _Instance:
    file: int  # index into the (name, bytes) list
    name: str
    ds: Dataset  # header only (no pixel data)
    size: int = 0  # bytes of the file (bounds what its header may claim)


@dataclass
class _Group:
    uid: str
    instances: list[_Instance]

    @property
    def first(self) -> Dataset:
        return self.instances[0].ds

    @property
    def number(self) -> str:
        value = self.first.get("SeriesNumber")
        return "" if value in (None, "") else str(value)

    @property
    def description(self) -> str:
        return printable(str(self.first.get("SeriesDescription", "") or ""))

    @property
    def title(self) -> str:
        number = self.number or "?"
        return f"series {number} '{self.description}'" if self.description else f"series {number}"


def _check_cancel(cancel: threading.Event | None, label: str) -> None:
    if cancel is not None and cancel.is_set():
        raise CancelledError(f"{label}: reading the DICOM series cancelled")


def _parse_all(
    files: Sequence[tuple[str, bytes]], label: str, cancel: threading.Event | None = None
) -> list[_Instance]:
    """The image instances among the files (headers only); NotDicomError for a file that is
    not DICOM, UnreadableDicomError for one that cannot be parsed."""
    out = []
    for index, (name, data) in enumerate(files):
        _check_cancel(cancel, label)
        ds = _parse(data, name, label, stop_before_pixels=True)
        sop_class = str(ds.get("SOPClassUID", ds.file_meta.get("MediaStorageSOPClassUID", "")))
        if sop_class in _NON_IMAGE_SOP_CLASSES or "Rows" not in ds or "Columns" not in ds:
            log.debug("DICOM: skipping a non-image object")
            continue
        out.append(_Instance(index, name, ds, len(data)))
    if not out:
        raise NotDicomError(
            f"{label}: no DICOM images among {len(files)} file(s); send the DWI series"
        )
    return out


def _parse(data: bytes, name: str, label: str, *, stop_before_pixels: bool) -> Dataset:
    import pydicom
    from pydicom.errors import InvalidDicomError

    shown = printable(name)
    _check_deflated(data, shown, label)
    try:
        return pydicom.dcmread(io.BytesIO(data), force=False, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        raise NotDicomError(
            f"{label}: {shown} is not a DICOM Part 10 file (no 'DICM' preamble); remove it "
            "or send the series as exported by the scanner/PACS"
        ) from None
    except Exception as exc:  # pydicom raises several types for truncated/bad files
        raise UnreadableDicomError(
            f"{label}: {shown} is a damaged DICOM file ({type(exc).__name__}); re-export it"
        ) from None


def _meta_end(data: bytes) -> int | None:
    """Offset where the (explicit VR little endian) file meta group 0002 ends, found by
    walking its elements (the group length element is optional); None when malformed."""
    long_vr = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR",
               b"UT", b"UV"}
    at = 132
    while at + 8 <= len(data) and data[at : at + 2] == b"\x02\x00":
        vr = data[at + 4 : at + 6]
        if vr in long_vr:
            at += 12 + int.from_bytes(data[at + 8 : at + 12], "little")
        else:
            at += 8 + int.from_bytes(data[at + 6 : at + 8], "little")
    return at if at <= len(data) else None


def _check_deflated(data: bytes, shown: str, label: str) -> None:
    """A Deflated Explicit VR file inflates (in pydicom, without a bound): it may inflate to
    at most max(MAX_INFLATE_RATIO x its size, MIN_BOMB_BYTES), checked here first, in a
    stream, 1 MiB at a time; a stream that cannot be checked is refused."""
    if data[128:132] != b"DICM" or _DEFLATED_SYNTAX not in data[132:1024]:
        return
    start = _meta_end(data)
    limit, inflated = max(MAX_INFLATE_RATIO * len(data), MIN_BOMB_BYTES), 0
    stream = zlib.decompressobj(-zlib.MAX_WBITS)
    pending = data[start:] if start is not None else b""
    try:
        while pending and inflated <= limit and not stream.eof:
            inflated += len(stream.decompress(pending, 1 << 20))
            pending = stream.unconsumed_tail
    except zlib.error:
        start = None
    if start is None:
        raise UnreadableDicomError(
            f"{label}: {shown} is a deflated DICOM file whose stream cannot be read; "
            "re-export the series uncompressed"
        )
    if inflated > limit:
        raise DecompressionBombError(
            f"{label}: {shown} is a deflated DICOM file that inflates more than "
            f"{MAX_INFLATE_RATIO}x its {len(data):,} bytes (possible decompression bomb); "
            "refusing it: re-export the series uncompressed"
        )


def _group(instances: list[_Instance], label: str) -> list[_Group]:
    groups: dict[str, _Group] = {}
    for inst in instances:
        uid = str(inst.ds.get("SeriesInstanceUID", ""))
        if not uid:
            raise UnreadableDicomError(
                f"{label}: {printable(inst.name)} has no SeriesInstanceUID; re-export the series"
            )
        groups.setdefault(uid, _Group(uid, [])).instances.append(inst)
    for group in groups.values():
        seen: dict[str, str] = {}
        for inst in group.instances:
            sop = str(inst.ds.get("SOPInstanceUID", ""))
            if sop in seen:
                raise DuplicateSlicesError(
                    f"{label}: {printable(inst.name)} and {printable(seen[sop])} are the same "
                    f"instance of {group.title}; remove the copy"
                )
            seen[sop] = inst.name
    return sorted(groups.values(), key=lambda g: (_int_or(g.number), g.uid))


def _int_or(text: str, default: int = 1 << 30) -> int:
    try:
        return int(text)
    except ValueError:
        return default


# --- frames ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Frame:
    """One 2D image: a single-frame instance or one frame of a multi-frame instance."""

    instance: int  # index into the group's instances
    number: int  # 1-based frame number
    rows: int
    columns: int
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    spacing: tuple[float, float] | None
    b_value: float | None
    directional: bool
    slope: float
    intercept: float


def _frames(group: _Group, label: str) -> list[_Frame]:
    out = []
    for i, inst in enumerate(group.instances):
        ds = inst.ds
        n_frames = _frame_count(inst, f"{label}: {group.title}")
        if "PerFrameFunctionalGroupsSequence" in ds or n_frames > 1:
            out.extend(_enhanced_frame(ds, i, f) for f in range(1, n_frames + 1))
        else:
            out.append(_classic_frame(ds, i))
    return out


def _frame_count(inst: _Instance, where: str) -> int:
    """NumberOfFrames, checked before any per-frame loop: a positive integer that the file's
    size can hold (stored pixels, or one item per compressed frame), with one per-frame
    functional group item per frame; UnreadableDicomError otherwise."""
    ds, shown = inst.ds, printable(inst.name)
    try:
        raw = ds.get("NumberOfFrames", 1)
        n = int(str(raw if raw not in (None, "") else 1).strip())
    except (ValueError, TypeError):  # pydicom converts IS lazily: "abc" raises here
        item = ds.get_item(0x00280008)
        value = getattr(item, "value", b"")
        raw = value.decode("ascii", "replace").strip() if isinstance(value, bytes) else value
        n = 0
    rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if n < 1 or rows < 1 or columns < 1:
        raise UnreadableDicomError(
            f"{where}: {shown} declares NumberOfFrames {printable(str(raw))}, Rows {rows}, "
            f"Columns {columns}: not an image (each must be a positive integer); re-export it"
        )
    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    deflated = syntax == _DEFLATED_SYNTAX.decode()
    native = deflated or syntax in ("", *_NATIVE_SYNTAXES)
    bits = int(ds.get("BitsAllocated", 16) or 16)
    per_frame = max(1, rows * columns * int(ds.get("SamplesPerPixel", 1) or 1) * bits // 8) \
        if native else MIN_ENCAPSULATED_FRAME_BYTES
    room = max(inst.size * MAX_INFLATE_RATIO, MIN_BOMB_BYTES) if deflated else inst.size
    if inst.size and n * per_frame > room:
        raise UnreadableDicomError(
            f"{where}: {shown} declares {n:,} frames of {rows} x {columns}, more than its "
            f"{inst.size:,} bytes can hold: the file is damaged or truncated; re-export it"
        )
    items = ds.get("PerFrameFunctionalGroupsSequence")
    if items is not None and len(items) != n:
        raise UnreadableDicomError(
            f"{where}: {shown} has {len(items)} per-frame functional group items for {n} "
            "frames: an inconsistent enhanced instance (frames would be dropped); re-export it"
        )
    return n


def _classic_frame(ds: Dataset, index: int) -> _Frame:
    b, directional = _classic_diffusion(ds)
    return _Frame(
        instance=index,
        number=1,
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        position=_floats(ds.get("ImagePositionPatient"), 3),
        orientation=_floats(ds.get("ImageOrientationPatient"), 6),
        spacing=_floats(ds.get("PixelSpacing"), 2),
        b_value=b,
        directional=directional,
        slope=_number(ds.get("RescaleSlope"), 1.0),
        intercept=_number(ds.get("RescaleIntercept"), 0.0),
    )


def _enhanced_frame(ds: Dataset, index: int, number: int) -> _Frame:
    def group(keyword: str) -> Dataset | None:
        return _functional_group(ds, number, keyword)

    position = group("PlanePositionSequence")
    orientation = group("PlaneOrientationSequence")
    measures = group("PixelMeasuresSequence")
    values = group("PixelValueTransformationSequence")
    diffusion = group("MRDiffusionSequence")
    b = None if diffusion is None else _number(diffusion.get("DiffusionBValue"), None)
    directional = False
    if diffusion is not None:
        kind = str(diffusion.get("DiffusionDirectionality", "") or "").upper()
        directional = kind in _DIRECTIONAL
    return _Frame(
        instance=index,
        number=number,
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        position=None if position is None else _floats(position.get("ImagePositionPatient"), 3),
        orientation=None
        if orientation is None
        else _floats(orientation.get("ImageOrientationPatient"), 6),
        spacing=None if measures is None else _floats(measures.get("PixelSpacing"), 2),
        b_value=b,
        directional=directional,
        slope=_number(None if values is None else values.get("RescaleSlope"), 1.0),
        intercept=_number(None if values is None else values.get("RescaleIntercept"), 0.0),
    )


def _functional_group(ds: Dataset, number: int, keyword: str) -> Dataset | None:
    """The first item of ``keyword`` for frame ``number`` (per-frame, else shared)."""
    for name, index in (
        ("PerFrameFunctionalGroupsSequence", number - 1),
        ("SharedFunctionalGroupsSequence", 0),
    ):
        groups = ds.get(name)
        if groups is not None and len(groups) > index:
            seq = groups[index].get(keyword)
            if seq is not None and len(seq) > 0:
                return seq[0]
    return None


def _classic_diffusion(ds: Dataset) -> tuple[float | None, bool]:
    """(b-value, directional) of a single-frame image from the standard attribute or the
    Siemens / GE / Philips private ones."""
    b = _number(ds.get("DiffusionBValue"), None)
    kind = str(ds.get("DiffusionDirectionality", "") or "").upper()
    directional = kind in _DIRECTIONAL or _nonzero(ds.get("DiffusionGradientOrientation"))
    if b is None:
        b = _number(_private(ds, 0x0019, "SIEMENS MR HEADER", 0x0C), None)
        if b is not None:
            kind = str(_private(ds, 0x0019, "SIEMENS MR HEADER", 0x0D) or "").strip().upper()
            directional = directional or kind in _DIRECTIONAL
            directional = directional or _nonzero(_private(ds, 0x0019, "SIEMENS MR HEADER", 0x0E))
    if b is None:
        first = _number(_private(ds, 0x0043, "GEMS_PARM_01", 0x39), None)  # first value
        if first is not None:
            b = float(first % 1e9)  # GE adds multiples of 1e9 as flags
    if b is None:
        b = _number(_private(ds, 0x2001, "Philips Imaging DD 001", 0x03), None)
        if b is not None:
            kind = str(_private(ds, 0x2001, "Philips Imaging DD 001", 0x04) or "").strip()
            directional = directional or kind.upper() in ("R", "P", "S", "O")
    return b, directional


def _private(ds: Dataset, group: int, creator: str, offset: int) -> Any:
    try:
        return ds.private_block(group, creator)[offset].value
    except (KeyError, ValueError):
        return None


def _is_multi(value: Any) -> bool:
    return hasattr(value, "__len__") and not isinstance(value, (str, bytes)) and len(value) > 0


def _number(value: Any, default: float | None) -> float | None:
    """A finite float from a DICOM value (DS/IS/FD, multi-valued: the first; bytes of an
    unknown-VR element: ASCII or a little-endian float), else ``default``."""
    if value is None or value == "":
        return default
    if isinstance(value, bytes):
        text = value.strip(b"\x00 ")
        try:
            value = float(text.decode("ascii").split("\\")[0])
        except (UnicodeDecodeError, ValueError):
            if len(value) in (4, 8):
                value = float(np.frombuffer(value, "<f4" if len(value) == 4 else "<f8")[0])
            else:
                return default
    elif _is_multi(value):
        value = value[0]
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


def _floats(value: Any, n: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == n and all(map(math.isfinite, numbers)) else None


def _nonzero(value: Any) -> bool:
    numbers = _floats(value, 3)
    return numbers is not None and any(abs(v) > 1e-6 for v in numbers)


# --- classification and selection ----------------------------------------------------------


def _image_type(group: _Group) -> set[str]:
    values = group.first.get("ImageType") or ()
    if isinstance(values, str):
        values = values.split("\\")
    return {str(v).strip().upper() for v in values}


def _is_adc(group: _Group, frames: list[_Frame]) -> bool:
    if str(group.first.get("Modality", "")).upper() != "MR":
        return False
    types = _image_type(group)
    if "ADC" in types:
        return True
    described = bool(_ADC_DESCRIPTION.search(str(group.first.get("SeriesDescription", ""))))
    has_b = any(f.b_value is not None and f.b_value > 0 for f in frames)
    return described and ("DERIVED" in types or not has_b)


def _dwi_rejection(group: _Group, frames: list[_Frame]) -> tuple[type[Exception], str] | None:
    """None when the group can be the DWI, else (error type, reason)."""
    modality = str(group.first.get("Modality", "") or "?")
    if modality.upper() != "MR":
        return NotDiffusionError, f"modality {printable(modality)}, not MR"
    types = _image_type(group)
    if "MOSAIC" in types:
        return UnsupportedDicomError, (
            "Siemens mosaic images (not supported: export the un-mosaicked trace series, "
            "or convert with dcm2niix)"
        )
    if types & _DERIVED_MAP_TYPES:
        return NotDiffusionError, f"a derived map ({'/'.join(sorted(types & _DERIVED_MAP_TYPES))})"
    bs = [f.b_value for f in frames if f.b_value is not None]
    if not bs:
        return NotDiffusionError, "no diffusion b-value (not a DWI series)"
    if max(bs) <= 0:
        return NotDiffusionError, "only b = 0 images"
    if not _trace_b_values(frames):
        trace = [f.b_value for f in frames if f.b_value is not None and not f.directional]
        if trace and max(trace) > MAX_B_VALUE:
            return NotDiffusionError, (
                f"trace b-values up to {max(trace):g} s/mm², none in 0 < b <= {MAX_B_VALUE:g} "
                "(a damaged DiffusionBValue?); send the b≈1000 trace series"
            )
        return NotDiffusionError, (
            "only directional diffusion images (no trace/isotropic image); send the "
            "scanner's trace (TRACEW/isotropic) series"
        )
    return None


def same_b(a: float, b: float) -> bool:
    """One b-value shell: within B_VALUE_TOLERANCE or B_VALUE_RTOL of each other (a scanner
    writing 999 and 1000.9 on alternating slices acquired one shell)."""
    return abs(a - b) < max(B_VALUE_TOLERANCE, B_VALUE_RTOL * max(abs(a), abs(b)))


def _trace_b_values(frames: list[_Frame]) -> list[float]:
    """The b-value shells in (0, MAX_B_VALUE] with non-directional images (each shell by its
    lowest value)."""
    bs = sorted(
        {round(f.b_value, 3) for f in frames if f.b_value is not None and not f.directional}
    )
    shells: list[float] = []
    for b in bs:
        if not shells or not same_b(shells[-1], b):
            shells.append(b)
    return [b for b in shells if 0 < b <= MAX_B_VALUE]


def _choose_b(frames: list[_Frame]) -> float:
    candidates = _trace_b_values(frames)
    near = [b for b in candidates if same_b(b, PREFERRED_B_VALUE)]
    return near[0] if near else candidates[-1]


def _matches(group: _Group, selector: str | int) -> bool:
    text = str(selector).strip()
    return text == group.uid or (group.number != "" and text == group.number)


def _listing(groups: Iterable[_Group]) -> str:
    return "; ".join(g.title for g in groups) or "no image series"


def _select_dwi(
    groups: list[_Group], selector: str | int | None, label: str
) -> tuple[_Group, float]:
    frames = {g.uid: _frames(g, label) for g in groups}
    if selector is not None:
        chosen = [g for g in groups if _matches(g, selector)]
        if not chosen:
            raise MixedSeriesError(
                f"{label}: no series {printable(str(selector))!s} in the input; it holds "
                f"{_listing(groups)}; give one of these numbers or a SeriesInstanceUID"
            )
        if len(chosen) > 1:
            raise MixedSeriesError(
                f"{label}: several series have the number {printable(str(selector))}: "
                f"{_listing(chosen)}; choose by SeriesInstanceUID "
                f"({', '.join(g.uid for g in chosen)})"
            )
        group = chosen[0]
        rejection = _dwi_rejection(group, frames[group.uid])
        if rejection is not None or _is_adc(group, frames[group.uid]):
            kind, reason = rejection or (NotDiffusionError, "an ADC map")
            raise kind(f"{label}: {group.title} is not a DWI series: {reason}")
        return group, _choose_b(frames[group.uid])
    candidates = []
    rejections: list[tuple[_Group, type[Exception], str]] = []
    for group in groups:
        if _is_adc(group, frames[group.uid]):
            continue
        rejection = _dwi_rejection(group, frames[group.uid])
        if rejection is None:
            candidates.append(group)
        else:
            rejections.append((group, *rejection))
    if len(candidates) > 1:
        raise MixedSeriesError(
            f"{label}: {len(candidates)} DWI series: {_listing(candidates)}; choose one with "
            "series= (CLI: --series NUMBER_OR_UID)"
        )
    if candidates:
        return candidates[0], _choose_b(frames[candidates[0].uid])
    reasons = "; ".join(f"{g.title}: {reason}" for g, _, reason in rejections)
    kinds = [kind for _, kind, _ in rejections]
    kind = UnsupportedDicomError if UnsupportedDicomError in kinds else NotDiffusionError
    adc_only = not rejections
    raise kind(
        f"{label}: no DWI series (diffusion images with b > 0) in the input"
        + (" (only ADC maps)" if adc_only else f" ({reasons})")
        + "; send the DWI trace series (e.g. b = 1000), with its ADC series if there is one"
    )


def _select_adc(
    groups: list[_Group], selector: str | int | None, dwi: _Group | None, label: str
) -> _Group | None:
    if selector is not None:
        chosen = [g for g in groups if _matches(g, selector)]
        if len(chosen) != 1:
            raise MixedSeriesError(
                f"{label}: {'no' if not chosen else 'several'} series "
                f"{printable(str(selector))} for the ADC; the input holds {_listing(groups)}"
            )
        return chosen[0]
    candidates = [g for g in groups if g is not dwi and _is_adc(g, _frames(g, label))]
    if dwi is not None:
        study = dwi.first.get("StudyInstanceUID")
        others = [g for g in candidates if g.first.get("StudyInstanceUID") != study]
        candidates = [g for g in candidates if g.first.get("StudyInstanceUID") == study]
        if others and not candidates:  # never scored DWI-only in silence
            raise MixedSeriesError(
                f"{label}: the ADC series {_listing(others)} belongs to another study than the "
                f"DWI {dwi.title}; send the ADC map of the DWI's own study (or leave it out)"
            )
        same_frame = [
            g
            for g in candidates
            if g.first.get("FrameOfReferenceUID") == dwi.first.get("FrameOfReferenceUID")
        ]
        candidates = same_frame or candidates
    if len(candidates) > 1:
        raise MixedSeriesError(
            f"{label}: {len(candidates)} ADC series: {_listing(candidates)}; choose one with "
            "adc_series= (API), or give that series' files as --adc (CLI) and leave the "
            "other out of the input"
        )
    return candidates[0] if candidates else None


# --- the volume ---------------------------------------------------------------------------


def _series_volume(
    group: _Group,
    role: str,
    b_value: float | None,
    files: Sequence[tuple[str, bytes]],
    label: str,
    limits: Limits,
    cancel: threading.Event | None = None,
) -> DicomSeries:
    frames = _frames(group, label)
    if role == "dwi":
        frames = [
            f
            for f in frames
            if f.b_value is not None
            and not f.directional
            and same_b(f.b_value, float(b_value or 0))
        ]
    where = f"{label}: {group.title}"
    layout = _check_frames(frames, where, limits)
    order, affine, sheared = _stack_geometry(frames, layout, where)
    _check_against_thickness(float(np.linalg.norm(affine[:3, 2])), group.first, where)
    # the instances with pixel data, parsed again in full (only those of this series)
    used: list[int] = []
    for k in order:
        if frames[k].instance not in used:
            used.append(frames[k].instance)
    _check_cancel(cancel, label)
    full = {
        i: _parse(
            files[group.instances[i].file][1],
            group.instances[i].name,
            label,
            stop_before_pixels=False,
        )
        for i in used
    }
    rows, columns = layout
    data = np.empty((columns, rows, len(order)), dtype=np.float32)
    pixels: dict[int, np.ndarray] = {}
    for k, index in enumerate(order):
        _check_cancel(cancel, label)
        frame = frames[index]
        if frame.instance not in pixels:
            pixels[frame.instance] = _pixels(
                full[frame.instance], group.instances[frame.instance].name, where
            )
        array = pixels[frame.instance]
        plane = array[frame.number - 1] if array.ndim == 3 else array
        if plane.shape != (rows, columns):
            raise UnreadableDicomError(
                f"{where}: frame {frame.number} of "
                f"{printable(group.instances[frame.instance].name)} "
                f"decodes to {plane.shape}, not Rows x Columns {(rows, columns)}; re-export it"
            )
        slab = plane.T.astype(np.float32)
        if frame.slope != 1.0:
            slab *= np.float32(frame.slope)
        if frame.intercept != 0.0:
            slab += np.float32(frame.intercept)
        data[:, :, k] = slab
    image = nib.Nifti1Image(data, affine)
    image.set_sform(affine, code="scanner")
    if sheared:
        image.set_qform(None, code=0)
    else:
        image.set_qform(affine, code="scanner")
    image.header.set_xyzt_units("mm", "sec")
    datasets = tuple(full[i] for i in used)
    position = {i: n for n, i in enumerate(used)}
    first = datasets[0]
    return DicomSeries(
        image=image,
        datasets=datasets,
        frames=tuple((position[frames[k].instance], frames[k].number) for k in order),
        role=role,
        b_value=None if role != "dwi" else float(b_value or 0.0),
        series_instance_uid=group.uid,
        frame_of_reference_uid=str(first.get("FrameOfReferenceUID", "") or ""),
    )


def _pixels(ds: Dataset, name: str, where: str) -> np.ndarray:
    """The stored pixel values [rows, columns] or [frames, rows, columns]."""
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise UnsupportedDicomError(
            f"{where}: {printable(name)} is a colour image; send the grey-scale DWI series"
        )
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise UnreadableDicomError(f"{where}: {printable(name)} has no pixel data; re-export it")
    try:
        return np.asarray(ds.pixel_array)
    except Exception as exc:  # missing decoder, truncated data, bad attributes
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        what = f" ({syntax.name})" if syntax is not None else ""
        raise UnreadableDicomError(
            f"{where}: the pixel data of {printable(name)}{what} cannot be decoded "
            f"({type(exc).__name__}); re-export the series uncompressed"
        ) from None


def _check_frames(frames: list[_Frame], where: str, limits: Limits) -> tuple[int, int]:
    """One size, orientation and pixel spacing, enough slices, within the voxel bound;
    returns (rows, columns)."""
    if len(frames) < MIN_SLICES:
        raise MissingSlicesError(
            f"{where}: only {len(frames)} image(s) for the volume; send the whole series "
            f"(at least {MIN_SLICES} slices covering the brain)"
        )
    sizes = {(f.rows, f.columns) for f in frames}
    if len(sizes) > 1:
        shown = ", ".join(f"{r}x{c}" for r, c in sorted(sizes))
        raise InconsistentGeometryError(
            f"{where}: images of {len(sizes)} sizes ({shown}) in one series; send the series "
            "as acquired (one image size)"
        )
    rows, columns = sizes.pop()
    n_voxels = rows * columns * len(frames)
    if n_voxels > limits.max_voxels:
        raise VolumeTooLargeError(
            f"{where}: {columns} x {rows} x {len(frames)} voxels exceed the bound of "
            f"{limits.max_voxels:,}; send a smaller series"
        )
    for attribute, what in (
        ("position", "ImagePositionPatient"),
        ("orientation", "ImageOrientationPatient"),
        ("spacing", "PixelSpacing"),
    ):
        if any(getattr(f, attribute) is None for f in frames):
            raise InconsistentGeometryError(
                f"{where}: images without a valid {what}; the geometry is unknown, re-export "
                "the series from the scanner"
            )
    reference = np.array(frames[0].orientation)
    if any(np.max(np.abs(np.array(f.orientation) - reference)) > GEOMETRY_ATOL for f in frames):
        raise InconsistentGeometryError(
            f"{where}: the images have different orientations (ImageOrientationPatient); "
            "send one stack of parallel slices (a single acquisition)"
        )
    spacing = np.array(frames[0].spacing)
    if any(np.max(np.abs(np.array(f.spacing) - spacing)) > GEOMETRY_ATOL for f in frames):
        raise InconsistentGeometryError(
            f"{where}: the images have different pixel spacings; send one acquisition"
        )
    if np.min(spacing) <= 0:
        raise InconsistentGeometryError(
            f"{where}: PixelSpacing {numbers_text(spacing)} is not positive"
        )
    row_dir, col_dir = reference[:3], reference[3:]
    if (
        abs(np.linalg.norm(row_dir) - 1) > 1e-3
        or abs(np.linalg.norm(col_dir) - 1) > 1e-3
        or abs(row_dir @ col_dir) > 1e-3
    ):
        raise InconsistentGeometryError(
            f"{where}: ImageOrientationPatient {numbers_text(reference)} is not two orthogonal "
            "unit vectors; re-export the series"
        )
    return rows, columns


def _slice_measures(ds: Dataset) -> tuple[float | None, float | None]:
    """(SpacingBetweenSlices, SliceThickness) in mm, from the dataset or its shared
    functional groups; None where absent."""
    shared = _functional_group(ds, 1, "PixelMeasuresSequence") if "NumberOfFrames" in ds \
        else None
    values = []
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = _number(ds.get(keyword, None if shared is None else shared.get(keyword)), None)
        values.append(value if value is not None and value > 0 else None)
    return values[0], values[1]


def _check_against_thickness(step: float, ds: Dataset, where: str) -> None:
    """MissingSlicesError when evenly spaced slices lie further apart than the series says
    (every other slice file missing keeps the spacing even)."""
    spacing, thickness = _slice_measures(ds)
    if spacing is not None and step >= MAX_SPACING_OVER_THICKNESS * spacing:
        said, nominal = f"SpacingBetweenSlices {spacing:g} mm", spacing
    elif spacing is None and thickness is not None and (
        step >= MAX_SPACING_OVER_THICKNESS * thickness
    ):
        said, nominal = f"SliceThickness {thickness:g} mm", thickness
    else:
        return
    every = round(step / nominal)
    raise MissingSlicesError(
        f"{where}: the slices are {step:.2f} mm apart, but the series says {said}: about "
        f"{every - 1} of every {every} slices are missing; send the complete series"
    )


def _stack_geometry(
    frames: list[_Frame], layout: tuple[int, int], where: str
) -> tuple[list[int], np.ndarray, bool]:
    """(slice order: frame indices along the normal, 4x4 voxel -> RAS+ affine, sheared)."""
    from highdicom.spatial import create_affine_matrix_from_attributes, get_normal_vector

    orientation = list(frames[0].orientation)  # type: ignore[arg-type]
    normal = get_normal_vector(orientation, index_convention="RD")
    positions = np.array([f.position for f in frames], dtype=np.float64)
    distance = positions @ normal
    order = [int(i) for i in np.argsort(distance, kind="stable")]
    d = distance[order]
    gaps = np.diff(d)
    if np.any(gaps < SPACING_ATOL_MM):
        k = int(np.argmax(gaps < SPACING_ATOL_MM))
        count = int(np.sum(gaps < SPACING_ATOL_MM))
        raise DuplicateSlicesError(
            f"{where}: {count + 1} or more images share a slice position (e.g. at "
            f"{d[k]:.2f} mm along the normal): repeated or mixed acquisitions; send one "
            "image per slice (one repetition of the b-value)"
        )
    step = float(np.median(gaps))
    tol = max(SPACING_ATOL_MM, SPACING_RTOL * step)
    multiples = np.round(gaps / step)
    missing = (multiples >= 2) & (np.abs(gaps - multiples * step) <= tol * multiples)
    if np.any(missing):
        n_missing = int(np.sum(multiples[missing] - 1))
        k = int(np.argmax(missing))
        raise MissingSlicesError(
            f"{where}: {n_missing} slice(s) missing (a gap of {gaps[k]:.2f} mm after "
            f"{d[k]:.2f} mm along the normal, the spacing is {step:.2f} mm); send the "
            "complete series"
        )
    if np.max(np.abs(gaps - step)) > tol:
        raise InconsistentGeometryError(
            f"{where}: the slice spacing varies from {gaps.min():.3f} to {gaps.max():.3f} mm; "
            "send a series with evenly spaced slices (one acquisition)"
        )
    first, last = positions[order[0]], positions[order[-1]]
    column3 = (last - first) / (len(order) - 1)
    expected = first + np.outer(np.arange(len(order)), column3)
    off_line = float(np.max(np.linalg.norm(positions[order] - expected, axis=1)))
    if off_line > tol:
        raise InconsistentGeometryError(
            f"{where}: the slice positions are not on one line (off by up to {off_line:.3f} "
            "mm); send one stack of parallel slices"
        )
    tilt = math.degrees(math.acos(min(1.0, abs(column3 @ normal) / np.linalg.norm(column3))))
    if tilt > MAX_GANTRY_TILT_DEG:
        raise GantryTiltError(
            f"{where}: the slices are sheared by {tilt:.1f}° (gantry tilt; at most "
            f"{MAX_GANTRY_TILT_DEG:g}° is handled); send a series reconstructed without tilt"
        )
    affine = create_affine_matrix_from_attributes(
        first,
        orientation,
        list(frames[0].spacing),
        step,
        index_convention="RD",  # type: ignore[arg-type]
    )
    affine[:3, 2] = column3
    return order, _LPS_TO_RAS @ affine, tilt > TILT_FREE_DEG


__all__ = [
    "DicomSeries",
    "DicomStudy",
    "dicom_source_name",
    "is_dicom_source",
    "read_dicom",
    "read_dicom_adc",
    "read_dicom_files",
]
