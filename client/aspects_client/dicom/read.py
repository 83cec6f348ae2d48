"""DICOM input: the DWI series (and the ADC series, when present) as volumes.

    study = read_dicom("/data/case12/")            # a folder (recursive)
    study = read_dicom("case12.zip")                # a zip archive (read in memory)
    study = read_dicom(["a.dcm", "b.dcm", ...])     # a list of files
    study = read_dicom("s3://bucket/case12/", s3_client=client)   # an S3 prefix
    study.dwi.image       # float32 NIfTI [columns, rows, slices], affine voxel -> RAS+ mm
    study.adc             # the ADC series as a DicomSeries, or None

The stages, one module each: ``gather`` (the files' bytes, bounded), ``parse`` (headers,
grouped by series), ``vendor`` (frames and b-values, standard and private tags),
``select`` (which series is the DWI, which the ADC), ``volume`` (geometry checks, pixels,
the affine); the result types are in ``series``, what a source is in ``sources``.

Privacy: nothing from the patient module is logged or used to name anything; logs and
messages name series by number and description only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import NotDiffusionError
from ..sources import dicom_source_name
from ..volume_io import Limits
from .gather import gather_files
from .parse import group_series, parse_all
from .select import listing, select_adc, select_dwi
from .series import DicomSeries, DicomStudy
from .volume import series_volume

log = logging.getLogger("aspects_client")


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
    groups = group_series(parse_all(files, label, cancel), label)
    dwi_group, b_value = select_dwi(groups, series, label)
    dwi = series_volume(dwi_group, "dwi", b_value, files, label, limits, cancel)
    log.info("DICOM: DWI %s, b=%g s/mm², %d slices", dwi_group.title, b_value, len(dwi.frames))
    adc_volume = None
    if adc:
        adc_group = select_adc(groups, adc_series, dwi_group, label)
        if adc_group is not None:
            adc_volume = series_volume(adc_group, "adc", None, files, label, limits, cancel)
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
    groups = group_series(parse_all(files, label, cancel), label)
    group = select_adc(groups, adc_series, None, label)
    if group is None:
        raise NotDiffusionError(
            f"{label}: no ADC series (ImageType ADC or a description naming ADC) among "
            f"{listing(groups)}; send the scanner's ADC map series"
        )
    return series_volume(group, "adc", None, files, label, limits, cancel)


def _default_label(source: str | Path | Sequence[str | Path]) -> str:
    return dicom_source_name(source) if isinstance(source, (list, tuple)) else str(source)


__all__ = ["read_dicom", "read_dicom_adc", "read_dicom_files"]
