"""Frames and vendor tags: every 2D image of a series (a classic single-frame instance, or
one frame of an enhanced multi-frame instance, read from its functional groups) with its
geometry, rescale and diffusion b-value.

The b-value: the standard (0018,9087) Diffusion b-value (classic, or the MR Diffusion
functional group of an enhanced image), else Siemens (0019,xx0C) ``SIEMENS MR HEADER``, GE
(0043,xx39) ``GEMS_PARM_01``, Philips (2001,xx03) ``Philips Imaging DD 001``.  Directional
images: DIRECTIONAL / BMATRIX, a gradient direction, Philips R/P/S/O.  Works on parsed
headers: pydicom itself is never imported here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import UnreadableDicomError
from ..outputs import printable
from .parse import (
    DEFLATED_SYNTAX,
    MAX_INFLATE_RATIO,
    MIN_BOMB_BYTES,
    NATIVE_SYNTAXES,
    Group,
    Instance,
)

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

MIN_ENCAPSULATED_FRAME_BYTES = 8  # an encapsulated frame holds at least one item header
_DIRECTIONAL = frozenset({"DIRECTIONAL", "BMATRIX"})


@dataclass(frozen=True)
class Frame:
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


def group_frames(group: Group, label: str) -> list[Frame]:
    """Every frame of the group's instances, in instance then frame order."""
    out = []
    for i, inst in enumerate(group.instances):
        ds = inst.ds
        n_frames = _frame_count(inst, f"{label}: {group.title}")
        if "PerFrameFunctionalGroupsSequence" in ds or n_frames > 1:
            out.extend(_enhanced_frame(ds, i, f) for f in range(1, n_frames + 1))
        else:
            out.append(_classic_frame(ds, i))
    return out


def _frame_count(inst: Instance, where: str) -> int:
    """NumberOfFrames, checked before any per-frame loop: a positive integer that the file's
    size can hold (stored pixels, or one item per compressed frame), with one per-frame
    functional group item per frame; UnreadableDicomError otherwise."""
    ds, shown = inst.ds, printable(inst.name)
    n, raw = _declared_frames(ds)
    rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if n < 1 or rows < 1 or columns < 1:
        raise UnreadableDicomError(
            f"{where}: {shown} declares NumberOfFrames {printable(str(raw))}, Rows {rows}, "
            f"Columns {columns}: not an image (each must be a positive integer); re-export it"
        )
    _check_frames_fit(inst, n, rows, columns, where)
    items = ds.get("PerFrameFunctionalGroupsSequence")
    if items is not None and len(items) != n:
        raise UnreadableDicomError(
            f"{where}: {shown} has {len(items)} per-frame functional group items for {n} "
            "frames: an inconsistent enhanced instance (frames would be dropped); re-export it"
        )
    return n


def _declared_frames(ds: Dataset) -> tuple[int, Any]:
    """(NumberOfFrames as an int, 0 when not one; the value as written, for messages)."""
    try:
        raw = ds.get("NumberOfFrames", 1)
        n = int(str(raw if raw not in (None, "") else 1).strip())
    except (ValueError, TypeError):  # pydicom converts IS lazily: "abc" raises here
        item = ds.get_item(0x00280008)
        value = getattr(item, "value", b"")
        raw = value.decode("ascii", "replace").strip() if isinstance(value, bytes) else value
        n = 0
    return n, raw


def _check_frames_fit(inst: Instance, n: int, rows: int, columns: int, where: str) -> None:
    """UnreadableDicomError when ``n`` frames of rows x columns cannot fit in the file."""
    ds = inst.ds
    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    deflated = syntax == DEFLATED_SYNTAX.decode()
    native = deflated or syntax in ("", *NATIVE_SYNTAXES)
    bits = int(ds.get("BitsAllocated", 16) or 16)
    per_frame = max(1, rows * columns * int(ds.get("SamplesPerPixel", 1) or 1) * bits // 8) \
        if native else MIN_ENCAPSULATED_FRAME_BYTES
    room = max(inst.size * MAX_INFLATE_RATIO, MIN_BOMB_BYTES) if deflated else inst.size
    if inst.size and n * per_frame > room:
        raise UnreadableDicomError(
            f"{where}: {printable(inst.name)} declares {n:,} frames of {rows} x {columns}, "
            f"more than its {inst.size:,} bytes can hold: the file is damaged or truncated; "
            "re-export it"
        )


def _classic_frame(ds: Dataset, index: int) -> Frame:
    b, directional = _classic_diffusion(ds)
    return Frame(
        instance=index,
        number=1,
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        position=_floats(ds.get("ImagePositionPatient"), 3),
        orientation=_floats(ds.get("ImageOrientationPatient"), 6),
        spacing=_floats(ds.get("PixelSpacing"), 2),
        b_value=b,
        directional=directional,
        slope=as_number(ds.get("RescaleSlope"), 1.0),
        intercept=as_number(ds.get("RescaleIntercept"), 0.0),
    )


def _enhanced_frame(ds: Dataset, index: int, number: int) -> Frame:
    def group(keyword: str) -> Dataset | None:
        return functional_group(ds, number, keyword)

    position = group("PlanePositionSequence")
    orientation = group("PlaneOrientationSequence")
    measures = group("PixelMeasuresSequence")
    values = group("PixelValueTransformationSequence")
    diffusion = group("MRDiffusionSequence")
    b = None if diffusion is None else as_number(diffusion.get("DiffusionBValue"), None)
    directional = False
    if diffusion is not None:
        kind = str(diffusion.get("DiffusionDirectionality", "") or "").upper()
        directional = kind in _DIRECTIONAL
    return Frame(
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
        slope=as_number(None if values is None else values.get("RescaleSlope"), 1.0),
        intercept=as_number(None if values is None else values.get("RescaleIntercept"), 0.0),
    )


def functional_group(ds: Dataset, number: int, keyword: str) -> Dataset | None:
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
    b = as_number(ds.get("DiffusionBValue"), None)
    kind = str(ds.get("DiffusionDirectionality", "") or "").upper()
    directional = kind in _DIRECTIONAL or _nonzero(ds.get("DiffusionGradientOrientation"))
    if b is None:
        b = as_number(_private(ds, 0x0019, "SIEMENS MR HEADER", 0x0C), None)
        if b is not None:
            kind = str(_private(ds, 0x0019, "SIEMENS MR HEADER", 0x0D) or "").strip().upper()
            directional = directional or kind in _DIRECTIONAL
            directional = directional or _nonzero(_private(ds, 0x0019, "SIEMENS MR HEADER", 0x0E))
    if b is None:
        first = as_number(_private(ds, 0x0043, "GEMS_PARM_01", 0x39), None)  # first value
        if first is not None:
            b = float(first % 1e9)  # GE adds multiples of 1e9 as flags
    if b is None:
        b = as_number(_private(ds, 0x2001, "Philips Imaging DD 001", 0x03), None)
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


def as_number(value: Any, default: float | None) -> float | None:
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
