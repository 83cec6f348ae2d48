"""Gathering bytes: (name, bytes) of every candidate file of a folder, a zip, a list of
files or an S3 prefix.

Bounded: at most ``MAX_FILES`` files and ``Limits.max_decompressed_bytes`` bytes in all;
nothing is written to disk.  A folder, zip or S3 prefix may hold other things: files that
are obviously not DICOM are skipped by name (``DICOMDIR``, hidden files, ``__MACOSX/``, and
the suffixes in ``SKIPPED_SUFFIXES`` such as ``.txt``, ``.json``, ``.nii.gz``, ``.zip``).  A
list of files is taken literally.  Zip members with an absolute path or a '..' segment are
refused (``UnsafeArchiveError``); the members' declared sizes count against the bound before
anything is inflated, and no member is inflated past its declared size (a zip bomb declaring
less fails its CRC there: ``UnreadableDicomError``).  No pydicom here.
"""

from __future__ import annotations

import io
import os
import re
import threading
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import (
    DecompressionBombError,
    InputNotFoundError,
    NotDicomError,
    ObjectNotFoundError,
    UnreadableDicomError,
    UnsafeArchiveError,
    VolumeTooLargeError,
)
from ..outputs import printable
from ..sources import parse_s3_prefix
from ..volume_io import Limits
from .parse import MAX_INFLATE_RATIO, MIN_BOMB_BYTES, check_cancel

MAX_FILES = 20_000  # files (zip members, S3 objects) in one DICOM input
SKIPPED_NAMES = frozenset({"dicomdir", "thumbs.db", "desktop.ini", "license", "readme"})
SKIPPED_SUFFIXES = (
    ".txt", ".md", ".json", ".xml", ".html", ".htm", ".pdf", ".csv", ".tsv", ".log", ".ini",
    ".cfg", ".yaml", ".yml", ".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".nii",
    ".nii.gz", ".gz", ".bval", ".bvec", ".zip", ".exe", ".bat", ".sh", ".db", ".dll", ".inf",
    ".sqlite", ".ctbl",  # .ctbl: the viewer colour table this client writes (--viewer)
)  # fmt: skip
_S3_PAGE = 1000


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
        return _gather_s3(source, s3_client, label, budget, max_object_bytes, cancel)
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
        check_cancel(self.cancel, self.label)  # once per file: Ctrl-C stops gathering
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


def _gather_s3(
    url: str,
    client: Any,
    label: str,
    budget: _Budget,
    max_object_bytes: int | None,
    cancel: threading.Event | None,
) -> list[tuple[str, bytes]]:
    """An s3:// prefix (ending '/'): its files; any other s3:// URL: a zip."""
    if client is None:
        from ..storage import make_s3_client

        client = make_s3_client()
    if url.endswith("/"):
        return _gather_s3_prefix(url, client, label, budget, max_object_bytes, cancel)
    from ..storage import DEFAULT_MAX_OBJECT_BYTES, fetch_object

    cap = min(max_object_bytes or DEFAULT_MAX_OBJECT_BYTES, budget.cap)
    raw = fetch_object(url, client, max_bytes=cap, cancel=cancel)
    return _gather_zip(bytes(raw), label, budget)


def _gather_s3_prefix(
    url: str,
    client: Any,
    label: str,
    budget: _Budget,
    max_object_bytes: int | None,
    cancel: threading.Event | None,
) -> list[tuple[str, bytes]]:
    from ..storage import DEFAULT_MAX_OBJECT_BYTES, fetch_object

    bucket, prefix = parse_s3_prefix(url)
    keys = _list_s3_prefix(url, client, bucket, prefix, budget, cancel)
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


def _list_s3_prefix(
    url: str,
    client: Any,
    bucket: str,
    prefix: str,
    budget: _Budget,
    cancel: threading.Event | None,
) -> list[str]:
    """The keys of the candidate files under the prefix (paged), counted against the budget."""
    import botocore.exceptions as bce

    from ..storage import botocore_error

    keys: list[str] = []
    try:
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": _S3_PAGE}
        )
        for page in pages:
            if cancel is not None and cancel.is_set():
                from ..errors import CancelledError

                raise CancelledError(f"{printable(url)}: listing cancelled")
            for entry in page.get("Contents", []):
                key = entry["Key"]
                rel = key[len(prefix) :]
                if key.endswith("/") or skipped_name(rel):
                    continue
                budget.check_size(int(entry.get("Size", 0)), rel)
                keys.append(key)
    except (bce.ClientError, bce.BotoCoreError) as exc:
        raise botocore_error(printable(url), bucket, exc) from None
    return keys
