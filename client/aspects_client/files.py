"""A result and an output plan -> files: the one place that turns what ``segment()`` (or
``contours_from_labels``) returned into the bytes of each planned file, and writes them all
or none (``outputs.commit``).  The CLI and the demo call it; so can an API user.

    plan = plan_outputs(["dwi.nii.gz"], "out/", labels=True, overlay=True, viewer=True)[0]
    write_result(plan, result)
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from . import rooms
from .labelmap import label_map_bytes
from .outputs import VIEWER_SUFFIXES, SourceOutputs, commit
from .viewer_files import viewer_files


def dicom_datasets(plan: SourceOutputs, result: Any, *, send: bool = False) -> dict[str, Any]:
    """The DICOM objects this plan writes (and a send sends): the SEG when written or sent,
    the report when written or when sending a scored result, the capture when written;
    ``{"seg" | "sr" | "sc": pydicom Dataset}`` (the ``dicom`` room)."""
    seg = plan.seg is not None or send
    report = plan.report is not None or (send and result.score is not None)
    capture = plan.capture is not None
    if not (seg or report or capture):
        return {}
    dicom_outputs = rooms.enter("dicom", "dicom_outputs")
    return dicom_outputs(result, seg=seg, report=report, capture=capture)


def viewer_files_of(plan: SourceOutputs, region_image: Any) -> dict[Path, bytes]:
    """``plan.viewer``'s four files (``outputs.VIEWER_SUFFIXES`` order) from the 20-label
    map (region x hemisphere, source grid)."""
    if not plan.viewer:
        return {}
    produced = viewer_files(region_image, "x")
    pairs = zip(plan.viewer, VIEWER_SUFFIXES, strict=True)
    return {path: produced["x" + suffix] for path, suffix in pairs}


def result_files(
    plan: SourceOutputs, result: Any, datasets: dict[str, Any] | None = None
) -> dict[Path, bytes]:
    """``{path: bytes}`` of every file ``plan`` asks for: contours JSON, label map, overlay,
    lesion map, viewer files and the DICOM objects in ``datasets``."""
    files = {plan.json: result.contours_json().encode()}
    if plan.labels is not None:
        files[plan.labels] = label_map_bytes(result.label_image)
    if plan.overlay is not None and result.overlay_png is not None:
        files[plan.overlay] = result.overlay_png
    if plan.lesion is not None:
        files[plan.lesion] = result.lesion_map_bytes()
    files.update(viewer_files_of(plan, result.region_image))
    if datasets:
        dataset_bytes = rooms.enter("dicom", "dataset_bytes")
        for key, path in (("seg", plan.seg), ("sr", plan.report), ("sc", plan.capture)):
            if path is not None:
                files[path] = dataset_bytes(datasets[key])
    return files


def write_result(
    plan: SourceOutputs,
    result: Any,
    *,
    overwrite: bool = False,
    cancel: threading.Event | None = None,
    send: bool = False,
) -> dict[str, Any]:
    """Write every file of ``plan`` at once (all or none; never through a link, never over
    an input); returns the DICOM datasets built (for a send, with ``send=True`` the SEG and
    report even when not written)."""
    datasets = dicom_datasets(plan, result, send=send)
    commit(result_files(plan, result, datasets), overwrite=overwrite, cancel=cancel)
    return datasets
