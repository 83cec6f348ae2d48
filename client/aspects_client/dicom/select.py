"""Classification and selection: which series is the DWI (and at which b-value), which the
ADC.  Series are grouped by SeriesInstanceUID; only MR images qualify.

* ADC: ImageType contains ``ADC``, or the series description names it ("ADC", "apparent
  diffusion") on a DERIVED series or one without b-values.
* DWI: images with a diffusion b-value > 0 (standard or private tags: ``vendor``).  Derived
  maps (FA, exponential ADC, tensor) and Siemens mosaics (``UnsupportedDicomError``:
  re-export the un-mosaicked trace series) do not qualify.
* b-value: the trace (ISOTROPIC, or any image that is the only one at its position) images
  at b = 1000 when present, else at the highest b ≤ ``MAX_B_VALUE``.  Directional images
  are not combined into a trace: a series with only directional images is refused
  (``NotDiffusionError``: send the scanner's trace series).
* Several DWI series: ``MixedSeriesError`` lists them (number, description — never patient
  data); choose with ``series=`` (SeriesNumber or SeriesInstanceUID).  The ADC must be in
  the DWI's study; several: ``adc_series=``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..errors import MixedSeriesError, NotDiffusionError, UnsupportedDicomError
from ..outputs import printable
from .parse import Group
from .vendor import Frame, group_frames

MAX_B_VALUE = 1500.0  # s/mm²: the highest b-value taken as "the DWI" when 1000 is absent
PREFERRED_B_VALUE = 1000.0
B_VALUE_TOLERANCE = 1.0  # s/mm²: b-values closer than this are one b-value ...
B_VALUE_RTOL = 0.02  # ... or within 2 % of each other (999 and 1000.9: one shell, rounding)
_ADC_DESCRIPTION = re.compile(r"(?<![a-z])adc(?![a-z])|apparent\s*diffusion", re.IGNORECASE)
_DERIVED_MAP_TYPES = frozenset(
    {"FA", "EXP", "EADC", "TENSOR", "DIFFUSION_ANISO", "DIFFUSION_ATTNTD", "TRACE_TENSOR"}
)


def _image_type(group: Group) -> set[str]:
    values = group.first.get("ImageType") or ()
    if isinstance(values, str):
        values = values.split("\\")
    return {str(v).strip().upper() for v in values}


def _is_adc(group: Group, frames: list[Frame]) -> bool:
    if str(group.first.get("Modality", "")).upper() != "MR":
        return False
    types = _image_type(group)
    if "ADC" in types:
        return True
    described = bool(_ADC_DESCRIPTION.search(str(group.first.get("SeriesDescription", ""))))
    has_b = any(f.b_value is not None and f.b_value > 0 for f in frames)
    return described and ("DERIVED" in types or not has_b)


def _dwi_rejection(group: Group, frames: list[Frame]) -> tuple[type[Exception], str] | None:
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


def _trace_b_values(frames: list[Frame]) -> list[float]:
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


def _choose_b(frames: list[Frame]) -> float:
    candidates = _trace_b_values(frames)
    near = [b for b in candidates if same_b(b, PREFERRED_B_VALUE)]
    return near[0] if near else candidates[-1]


def _matches(group: Group, selector: str | int) -> bool:
    text = str(selector).strip()
    return text == group.uid or (group.number != "" and text == group.number)


def listing(groups: Iterable[Group]) -> str:
    """The series by number and description (never patient data), for messages."""
    return "; ".join(g.title for g in groups) or "no image series"


def select_dwi(
    groups: list[Group], selector: str | int | None, label: str
) -> tuple[Group, float]:
    """The DWI series (``selector``: its SeriesNumber or SeriesInstanceUID; None: the only
    one) and its b-value."""
    frames = {g.uid: group_frames(g, label) for g in groups}
    if selector is not None:
        return _selected_dwi(groups, frames, selector, label)
    return _only_dwi(groups, frames, label)


def _selected_dwi(
    groups: list[Group], frames: dict[str, list[Frame]], selector: str | int, label: str
) -> tuple[Group, float]:
    chosen = [g for g in groups if _matches(g, selector)]
    if not chosen:
        raise MixedSeriesError(
            f"{label}: no series {printable(str(selector))!s} in the input; it holds "
            f"{listing(groups)}; give one of these numbers or a SeriesInstanceUID"
        )
    if len(chosen) > 1:
        raise MixedSeriesError(
            f"{label}: several series have the number {printable(str(selector))}: "
            f"{listing(chosen)}; choose by SeriesInstanceUID "
            f"({', '.join(g.uid for g in chosen)})"
        )
    group = chosen[0]
    rejection = _dwi_rejection(group, frames[group.uid])
    if rejection is not None or _is_adc(group, frames[group.uid]):
        kind, reason = rejection or (NotDiffusionError, "an ADC map")
        raise kind(f"{label}: {group.title} is not a DWI series: {reason}")
    return group, _choose_b(frames[group.uid])


def _only_dwi(
    groups: list[Group], frames: dict[str, list[Frame]], label: str
) -> tuple[Group, float]:
    candidates = []
    rejections: list[tuple[Group, type[Exception], str]] = []
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
            f"{label}: {len(candidates)} DWI series: {listing(candidates)}; choose one with "
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


def select_adc(
    groups: list[Group], selector: str | int | None, dwi: Group | None, label: str
) -> Group | None:
    """The ADC series: the one ``selector`` names, else the only one of the DWI's study
    (preferring the DWI's frame of reference); None when there is none."""
    if selector is not None:
        chosen = [g for g in groups if _matches(g, selector)]
        if len(chosen) != 1:
            raise MixedSeriesError(
                f"{label}: {'no' if not chosen else 'several'} series "
                f"{printable(str(selector))} for the ADC; the input holds {listing(groups)}"
            )
        return chosen[0]
    candidates = [g for g in groups if g is not dwi and _is_adc(g, group_frames(g, label))]
    if dwi is not None:
        study = dwi.first.get("StudyInstanceUID")
        others = [g for g in candidates if g.first.get("StudyInstanceUID") != study]
        candidates = [g for g in candidates if g.first.get("StudyInstanceUID") == study]
        if others and not candidates:  # never scored DWI-only in silence
            raise MixedSeriesError(
                f"{label}: the ADC series {listing(others)} belongs to another study than the "
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
            f"{label}: {len(candidates)} ADC series: {listing(candidates)}; choose one with "
            "adc_series= (API), or give that series' files as --adc (CLI) and leave the "
            "other out of the input"
        )
    return candidates[0] if candidates else None
