"""Parsing and grouping: the image instances among (name, bytes) pairs, headers only,
grouped by SeriesInstanceUID; the bounds on what a file may inflate to (a deflated dataset
here, a zip member in ``gather``), and the cancel check every stage makes.

Every file must be DICOM Part 10 (``pydicom.dcmread(force=False)``: the 128-byte preamble
and 'DICM'), else ``NotDicomError`` names it; DICOM objects without pixel data (reports,
presentation states, key objects, a DICOMDIR under another name) are skipped.  pydicom is
imported on first use.
"""

from __future__ import annotations

import io
import logging
import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import (
    CancelledError,
    DecompressionBombError,
    DuplicateSlicesError,
    NotDicomError,
    UnreadableDicomError,
)
from ..outputs import printable

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

log = logging.getLogger("aspects_client")

MAX_INFLATE_RATIO = 200  # a zip member or deflated dataset inflating more than this much ...
MIN_BOMB_BYTES = 64 << 20  # ... to more than this is refused (a blank slice deflates ~550x,
# but real image data of this size never compresses 200x)
DEFLATED_SYNTAX = b"1.2.840.10008.1.2.1.99"
NATIVE_SYNTAXES = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2")
_NON_IMAGE_SOP_CLASSES = frozenset({"1.2.840.10008.1.3.10"})  # Media Storage Directory


@dataclass(frozen=True)
class Instance:
    file: int  # index into the (name, bytes) list
    name: str
    ds: Dataset  # header only (no pixel data)
    size: int = 0  # bytes of the file (bounds what its header may claim)


@dataclass
class Group:
    uid: str
    instances: list[Instance]

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


def check_cancel(cancel: threading.Event | None, label: str) -> None:
    if cancel is not None and cancel.is_set():
        raise CancelledError(f"{label}: reading the DICOM series cancelled")


def parse_all(
    files: Sequence[tuple[str, bytes]], label: str, cancel: threading.Event | None = None
) -> list[Instance]:
    """The image instances among the files (headers only); NotDicomError for a file that is
    not DICOM, UnreadableDicomError for one that cannot be parsed."""
    out = []
    for index, (name, data) in enumerate(files):
        check_cancel(cancel, label)
        ds = parse_dataset(data, name, label, stop_before_pixels=True)
        sop_class = str(ds.get("SOPClassUID", ds.file_meta.get("MediaStorageSOPClassUID", "")))
        if sop_class in _NON_IMAGE_SOP_CLASSES or "Rows" not in ds or "Columns" not in ds:
            log.debug("DICOM: skipping a non-image object")
            continue
        out.append(Instance(index, name, ds, len(data)))
    if not out:
        raise NotDicomError(
            f"{label}: no DICOM images among {len(files)} file(s); send the DWI series"
        )
    return out


def parse_dataset(data: bytes, name: str, label: str, *, stop_before_pixels: bool) -> Dataset:
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
    if data[128:132] != b"DICM" or DEFLATED_SYNTAX not in data[132:1024]:
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


def group_series(instances: list[Instance], label: str) -> list[Group]:
    """The instances grouped by SeriesInstanceUID, sorted by SeriesNumber (then UID);
    DuplicateSlicesError for one instance given twice."""
    groups: dict[str, Group] = {}
    for inst in instances:
        uid = str(inst.ds.get("SeriesInstanceUID", ""))
        if not uid:
            raise UnreadableDicomError(
                f"{label}: {printable(inst.name)} has no SeriesInstanceUID; re-export the series"
            )
        groups.setdefault(uid, Group(uid, [])).instances.append(inst)
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
