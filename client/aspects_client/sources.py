"""What a caller hands to ``segment()``: a :class:`Source`, classified and checked once.

Kinds (``Source.kind``): ``s3`` (an ``s3://bucket/key`` NIfTI object), ``file`` (a NIfTI
path), ``bytes`` (NIfTI bytes), ``image`` (a nibabel image), ``dicom`` (a folder, a .zip,
a list of files or an ``s3://bucket/prefix/`` — read by the ``aspects_client.dicom`` room).
Pure path logic: nothing here reads a file's content or imports pydicom.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib

from .errors import UsageError
from .outputs import printable
from .storage import check_source_string, is_s3_url, parse_s3_url

NIFTI_TYPES = (str, Path, bytes, bytearray, memoryview, nib.spatialimages.SpatialImage)
SOURCE_HELP = (
    "an s3:// URL, a file path, NIfTI bytes, a nibabel image or a DICOM series (a folder, "
    "a .zip, a list of files or an s3://bucket/prefix/)"
)


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
            parse_s3_url(source)


def recorded_name(source: object) -> str:
    """What a result records by default: the last path segment of a path or S3 key (no
    directories, no bucket or prefix, which often hold patient identifiers); for DICOM the
    folder's, zip's or prefix's last segment (never anything from the files)."""
    if is_dicom_source(source):
        return dicom_source_name(source)  # type: ignore[arg-type]
    if isinstance(source, (str, Path)):
        return str(source).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    if isinstance(source, nib.spatialimages.SpatialImage):
        return "<nibabel image>"
    return "<bytes>"


def _kind(value: object) -> str:
    """The kind of a checked source value."""
    if is_dicom_source(value):
        return "dicom"
    if is_s3_url(value):
        return "s3"
    if isinstance(value, (str, Path)):
        return "file"
    if isinstance(value, nib.spatialimages.SpatialImage):
        return "image"
    return "bytes"


@dataclass(frozen=True)
class Source:
    """One input, classified once: ``kind`` (see the module), ``value`` (as given),
    ``name`` (what a result records; never a directory or bucket) and ``label`` (the path
    or URL as given, which messages show; None for bytes and images)."""

    kind: str
    value: Any
    name: str
    label: str | None

    @classmethod
    def of(cls, value: Any, name: str | None = None, what: str = "source") -> Source:
        """Check and classify ``value``; ``name`` overrides the recorded name ("" = none).

        UsageError for what cannot be a source, before any work."""
        if isinstance(value, Source):
            return value
        if name is not None and not isinstance(name, str):
            raise UsageError(f"name must be a string, got {type(name).__name__}")
        if is_dicom_source(value):
            check_dicom_source(value)
        elif isinstance(value, bool) or not isinstance(value, NIFTI_TYPES):
            raise UsageError(f"{what} must be {SOURCE_HELP}, got {type(value).__name__}")
        elif isinstance(value, str):
            check_source_string(value)
        recorded = recorded_name(value) if name is None else name
        label = str(value) if isinstance(value, (str, Path)) else None
        return cls(_kind(value), value, recorded, label)

    @property
    def is_dicom(self) -> bool:
        return self.kind == "dicom"

    @property
    def is_s3(self) -> bool:
        """An S3 object or prefix (NIfTI or DICOM)."""
        return is_s3_url(self.value)
