"""DICOM outputs of one segmented DICOM series (highdicom): a SEG of the 20 region x
hemisphere labels, the ASPECTS result as a structured report, the overlay as a secondary
capture.

**SEG** (``segmentation_dataset``): Segmentation Storage, BINARY, one segment per region x
hemisphere with segment number = the 20-label value (``viewer_labels``: 1..10 = m1..ic
patient right, 11..20 patient left), all 20 always described (a region outside the slab is
a segment without frames, so numbers never shift); empty frames are omitted. Geometry rule
(docs: dicom_interface): ``labels20[i, j, k]`` in the ``DicomSeries`` grid becomes the SEG
frame that references source frame ``series.frames[k]``, pixel ``[row j, column i]``, so the
SEG holds the NIfTI label map voxel for voxel; plane positions and orientation are the
source frames' own (highdicom copies them from ``source_images``). Single-frame sources (any
number of instances) and one enhanced multi-frame instance are supported. Coded anatomy:
category SCT 91723000 "Anatomical structure"; type SCT insula 36169008, caudate nucleus
11000004, internal capsule 85637007, and codes of the private scheme ``99ASPECTS`` for
M1-M6 and the lentiform nucleus (no SNOMED CT concept in pydicom's dictionary); laterality
(SCT right 24028007 / left 7771000) as the type modifier. Recommended display colour: the
contract's colour in CIELab. Algorithm: AUTOMATIC, "Artificial Intelligence", version =
served model version + the unet's sha256 (first 12 hex), the full checkpoint id in the
parameters.

**SR** (``report_dataset``, scored results only): Comprehensive 3D SR holding a TID 1500
Measurement Report: per region x hemisphere a volumetric measurement group (TID 1411) that
references its SEG segment, with the region volume (SCT 118565006, mL), the lesion volume
in it (mL), the lesion fraction (%), "affected" and "uncertain" (SCT yes/no); and one image
measurement group (TID 1501) with the ASPECTS score of each hemisphere (finding site:
cerebral hemisphere + laterality), the score of the affected side, the affected hemisphere,
the total lesion volume and whether the score is uncertain. Private concepts (``99ASPECTS``):
ASPECTS (the score, on the affected hemisphere), HEMISPHERE-SCORE (10 - affected regions of
one side), AFFECTED-HEMISPHERE, LESION-VOLUME, LESION-FRACTION, AFFECTED, UNCERTAIN.

**SC** (``capture_dataset``): the overlay PNG as Secondary Capture Image Storage, RGB.

**Identity**: every output gets new Series/SOP Instance UIDs (``pydicom.uid.generate_uid``)
and joins the source's study. Of the source's Patient and Study information it carries only
what the IODs make mandatory (Type 1/2): ``COPIED_PATIENT_ATTRIBUTES`` and
``COPIED_STUDY_ATTRIBUTES``; everything else of the patient, patient-study, clinical-trial
and visit modules that highdicom would copy (age, weight, other IDs, comments, study
description, physicians of record, ...) is removed (``strip_identity``). Nothing of the
patient module is logged.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

import nibabel as nib
import numpy as np
from pydicom import Dataset
from pydicom.uid import generate_uid

from .. import contract
from ..errors import DicomOutputError, UsageError
from ..outputs import CAPTURE_SUFFIX, REPORT_SUFFIX, SEG_SUFFIX
from ..viewer_files import check_region_image
from ..viewer_labels import LABELS, RegionHemisphereLabel

log = logging.getLogger(__name__)

MANUFACTURER = "aspects-triton"
CODING_SCHEME = "99ASPECTS"  # private coding scheme ("99" prefix: PS3.16 section 8)
SEG_SERIES_NUMBER = 901
SR_SERIES_NUMBER = 902
SC_SERIES_NUMBER = 903
SEG_SERIES_DESCRIPTION = "ASPECTS regions (SEG)"
SR_SERIES_DESCRIPTION = "ASPECTS report"
SC_SERIES_DESCRIPTION = "ASPECTS overlay"
NOT_FOR_CLINICAL_USE = "research use only: not validated for clinical use"

# What the outputs keep of the source's Patient and General Study modules: their Type 1/2
# attributes, which a derived object in the same study must carry.
COPIED_PATIENT_ATTRIBUTES: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
)
COPIED_STUDY_ATTRIBUTES: tuple[str, ...] = (
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)
# Where the source was acquired: never carried into an output's ContributingEquipmentSequence
# items, which name the source's scanner (docs/dicom.md).
EQUIPMENT_IDENTITY: tuple[str, ...] = (
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "InstitutionCodeSequence",
    "InstitutionalDepartmentTypeCodeSequence",
    "StationName",
    "DeviceSerialNumber",
    "OperatorsName",
)
# Root attributes of the study-level modules outside groups 0010/0012/0032/0038 that
# highdicom copies and a derived object does not need.
_STUDY_EXTRAS: tuple[str, ...] = (
    "StudyDescription",
    "PhysiciansOfRecord",
    "PhysiciansOfRecordIdentificationSequence",
    "NameOfPhysiciansReadingStudy",
    "PhysiciansReadingStudyIdentificationSequence",
    "ReferringPhysicianIdentificationSequence",
    "ConsultingPhysicianName",
    "ConsultingPhysicianIdentificationSequence",
    "IssuerOfAccessionNumberSequence",
    "ProcedureCodeSequence",
    "ReasonForPerformedProcedureCodeSequence",
    "ReferencedStudySequence",
    "AdmittingDiagnosesDescription",
    "AdmittingDiagnosesCodeSequence",
    "StudyIDIssuer",
    "RequestingService",
    "RequestingServiceCodeSequence",
)
_IDENTITY_GROUPS = (0x0010, 0x0012, 0x0032, 0x0038)  # patient, clinical trial, study, visit


# --- codes -------------------------------------------------------------------------------


def _code(value: str, scheme: str, meaning: str):
    from highdicom.sr import CodedConcept

    return CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def _private(value: str, meaning: str):
    return _code(value, CODING_SCHEME, meaning)


_SCT_TYPES: dict[str, tuple[str, str]] = {
    "i": ("36169008", "Insula"),
    "c": ("11000004", "Caudate nucleus"),
    "ic": ("85637007", "Internal capsule"),
}


def region_type_code(region: contract.Region):
    """The segmented property type of a region: SNOMED CT where pydicom knows the structure,
    else the private ``99ASPECTS`` code (M1..M6, L)."""
    if region.key in _SCT_TYPES:
        value, meaning = _SCT_TYPES[region.key]
        return _code(value, "SCT", meaning)
    return _private(region.key.upper(), f"ASPECTS {region.key.upper()}: {region.name}")


def laterality_code(hemisphere: str):
    """SCT right 24028007 / left 7771000 (the patient's side)."""
    if hemisphere == contract.HEMISPHERE_RIGHT:
        return _code("24028007", "SCT", "Right")
    return _code("7771000", "SCT", "Left")


def _coding_schemes():
    from highdicom.coding_schemes import CodingSchemeIdentificationItem

    return [
        CodingSchemeIdentificationItem(
            designator=CODING_SCHEME,
            name="ASPECTS regions and findings (aspects-triton)",
            version="1",
            responsible_organization=MANUFACTURER,
        )
    ]


# --- provenance ----------------------------------------------------------------------------


def _algorithm(provenance: Mapping[str, Any]) -> tuple[str, str, dict[str, str]]:
    """(name, version <= 64 chars, parameters) from the result's provenance."""
    model = str(provenance.get("model") or "aspects")
    version = str(provenance.get("model_version") or "unknown")
    checkpoint = str(
        (provenance.get("steps") or {}).get(contract.UNET_MODEL, {}).get("checkpoint") or ""
    )
    sha = re.search(r"sha256:([0-9a-f]{12})", checkpoint)
    label = f"{model} v{version}" + (f" unet sha256:{sha.group(1)}" if sha else "")
    params = {"model": model, "model_version": version}
    if checkpoint:
        params["unet_checkpoint"] = checkpoint[:4000]
    return "ASPECTS regions", _lo(label), params


def _software_versions(provenance: Mapping[str, Any]) -> str:
    return _lo(str(provenance.get("client") or "aspects_client"))


def _serial(provenance: Mapping[str, Any]) -> str:
    """Device serial number (Type 1 in the SEG): the unet's sha256 prefix, else the model."""
    _, label, _ = _algorithm(provenance)
    sha = re.search(r"sha256:([0-9a-f]{12})", label)
    return sha.group(1) if sha else hashlib.sha256(label.encode()).hexdigest()[:12]


def _lo(text: str) -> str:
    """A Long String value: printable, at most 64 characters, no backslash."""
    clean = "".join(ch if 32 <= ord(ch) < 127 and ch != "\\" else "_" for ch in text)
    return clean[:64]


# --- SEG -----------------------------------------------------------------------------------


def segment_description(label: RegionHemisphereLabel, algorithm):
    """The highdicom SegmentDescription of one region x hemisphere label."""
    from highdicom.color import CIELabColor
    from highdicom.seg import SegmentAlgorithmTypeValues, SegmentDescription
    from highdicom.sr import CodedConcept

    desc = SegmentDescription(
        segment_number=label.value,
        segment_label=_lo(label.name),
        segmented_property_category=_code("91723000", "SCT", "Anatomical Structure"),
        segmented_property_type=region_type_code(label.region),
        algorithm_type=SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        tracking_uid=generate_uid(),
        tracking_id=label.key,
        display_color=CIELabColor.from_rgb(*label.colour_rgb),
    )
    side = laterality_code(label.hemisphere)
    desc.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
        CodedConcept(side.value, side.scheme_designator, side.meaning)
    ]
    return desc


def segmentation_dataset(
    region_image: nib.Nifti1Image | np.ndarray,
    series: Any,
    *,
    provenance: Mapping[str, Any],
    series_number: int = SEG_SERIES_NUMBER,
    series_description: str = SEG_SERIES_DESCRIPTION,
):
    """The DICOM SEG of the 20-label map, referencing ``series`` (a ``DicomSeries``).

    region_image: uint8 [X, Y, K] (NIfTI or array) in ``series.image``'s grid, values 0..20
    (``SegmentationResult.region_image``); provenance: ``SegmentationResult.provenance``.
    Returns a ``highdicom.seg.Segmentation`` (write it with ``dataset_bytes``).
    Raises UsageError when the map is not in the series' grid, DicomOutputError when the
    series' frames cannot be referenced.
    """
    import highdicom as hd

    labels = _labels_on_series_grid(region_image, series)
    sources, pixels, positions = _frames_for_seg(labels, series)
    name, version, params = _algorithm(provenance)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=name,
        family=_code("123110", "DCM", "Artificial Intelligence"),
        version=version,
        parameters=params,
    )
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment_description(label, algorithm) for label in LABELS],
        series_instance_uid=generate_uid(),
        series_number=int(series_number),
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=_lo(str(provenance.get("model") or "aspects")),
        software_versions=_software_versions(provenance),
        device_serial_number=_serial(provenance),
        content_label="ASPECTS",
        content_description=_lo(f"ASPECTS regions x hemisphere; {NOT_FOR_CLINICAL_USE}"),
        series_description=_lo(series_description),
        coding_schemes=_coding_schemes(),
        plane_positions=positions,
        omit_empty_frames=True,
    )
    strip_identity(seg)
    log.info("built DICOM SEG: %d frames, %d segments", int(seg.NumberOfFrames), len(LABELS))
    return seg


def _labels_on_series_grid(region_image: nib.Nifti1Image | np.ndarray, series: Any) -> np.ndarray:
    """uint8 [X, Y, K] 20-label data; UsageError unless it lies on ``series.image``'s grid."""
    grid = series.image
    if isinstance(region_image, nib.Nifti1Image):
        data = check_region_image(region_image)
        if not np.allclose(region_image.affine, grid.affine, rtol=0.0, atol=1e-3):
            raise UsageError(
                "the region map's affine differs from the DICOM series' grid; pass the "
                "region_image of the result segmented from this series"
            )
    else:
        data = np.asarray(region_image)
        if data.dtype != np.uint8 or data.ndim != 3 or (data.size and data.max() > 20):
            raise UsageError("expected a uint8 [X, Y, K] region x hemisphere map, values 0..20")
    if tuple(data.shape) != tuple(grid.shape[:3]):
        raise UsageError(
            f"the region map's shape {tuple(data.shape)} differs from the DICOM series' "
            f"grid {tuple(grid.shape[:3])}; pass the region_image segmented from this series"
        )
    if len(series.frames) != data.shape[2]:
        raise UsageError(f"the series lists {len(series.frames)} frames for {data.shape[2]} slices")
    return np.asarray(data, np.uint8)


def _frames_for_seg(labels: np.ndarray, series: Any) -> tuple[list[Dataset], np.ndarray, Any]:
    """(source images, label frames uint8 [K, rows, columns], plane positions or None).

    Single-frame sources: one SEG plane per source instance, in slice order (highdicom takes
    the planes' positions from the instances). One multi-frame source: the planes' positions
    are those of the referenced frames (a DWI instance may also hold b = 0 frames at the
    same positions; highdicom then references every source frame at a plane's position)."""
    import highdicom as hd

    used = sorted({index for index, _ in series.frames})
    datasets = [series.datasets[i] for i in used]
    multi = [ds for ds in datasets if int(ds.get("NumberOfFrames", 1) or 1) > 1]
    pixels = np.ascontiguousarray(labels.transpose(2, 1, 0))
    if not multi:
        return [series.datasets[index] for index, _ in series.frames], pixels, None
    if len(datasets) > 1:
        raise DicomOutputError(
            f"the series spreads its slices over {len(datasets)} instances of which "
            f"{len(multi)} are multi-frame; a SEG can reference one multi-frame instance or "
            "single-frame instances only: export the series as one enhanced instance or "
            "as classic single-frame images"
        )
    (source,) = datasets
    positions = [
        hd.PlanePositionSequence(
            coordinate_system=hd.CoordinateSystemNames.PATIENT,
            image_position=_frame_position(source, int(number)),
        )
        for _, number in series.frames
    ]
    return [source], pixels, positions


def _frame_position(ds: Dataset, frame_number: int) -> list[float]:
    """ImagePositionPatient of a multi-frame instance's frame (1-based), as stored."""
    groups = [ds.PerFrameFunctionalGroupsSequence[frame_number - 1]]
    groups += list(ds.get("SharedFunctionalGroupsSequence", []))
    for item in groups:
        if "PlanePositionSequence" in item:
            return [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
    raise DicomOutputError(
        f"frame {frame_number} of the source instance has no Plane Position; the series "
        "cannot be referenced by a SEG"
    )


# --- SR ------------------------------------------------------------------------------------


_ML = ("mL", "UCUM", "milliliter")
_PERCENT = ("%", "UCUM", "percent")
_SCORE_UNIT = ("{score}", "UCUM", "score")

# SR concepts as (value, scheme, meaning): the arguments of ``_code``.
_Concept = tuple[str, str, str]
_YES = ("373066001", "SCT", "Yes")
_NO = ("373067005", "SCT", "No")
_CEREBRAL_HEMISPHERE = ("372073000", "SCT", "Cerebral hemisphere")
_LESION_VOLUME = ("LESION-VOLUME", CODING_SCHEME, "Lesion volume")
_UNCERTAIN = ("UNCERTAIN", CODING_SCHEME, "ASPECTS decision uncertain")
_ASPECTS_SCORE = ("ASPECTS", CODING_SCHEME, "ASPECTS score")
_HEMISPHERE_SCORE = (
    "HEMISPHERE-SCORE",
    CODING_SCHEME,
    "10 minus the affected regions of a hemisphere",
)
_AFFECTED_HEMISPHERE = ("AFFECTED-HEMISPHERE", CODING_SCHEME, "Affected hemisphere")
# A region x hemisphere group's measurements, in order: (concept, involvement cell key,
# factor, unit); the fraction is reported in percent.
_REGION_MEASUREMENTS: tuple[tuple[_Concept, str, float, _Concept], ...] = (
    (("118565006", "SCT", "Volume"), "region_ml", 1.0, _ML),
    (_LESION_VOLUME, "lesion_ml", 1.0, _ML),
    (
        ("LESION-FRACTION", CODING_SCHEME, "Lesion fraction of region volume"),
        "fraction",
        100.0,
        _PERCENT,
    ),
)
# ... and its yes/no evaluations, in order: (concept, involvement cell key).
_REGION_EVALUATIONS: tuple[tuple[_Concept, str], ...] = (
    (("AFFECTED", CODING_SCHEME, "ASPECTS region affected"), "affected"),
    (_UNCERTAIN, "uncertain"),
)


def report_dataset(
    aspects: Mapping[str, Any],
    seg: Dataset,
    series: Any,
    *,
    provenance: Mapping[str, Any],
    series_number: int = SR_SERIES_NUMBER,
    series_description: str = SR_SERIES_DESCRIPTION,
):
    """The ASPECTS result as a Comprehensive 3D SR (TID 1500 Measurement Report).

    aspects: the document's ``aspects`` section (``SegmentationResult.score``); seg: the SEG
    from ``segmentation_dataset`` (its segments are referenced, so store it too); series:
    the source ``DicomSeries``. Returns a ``highdicom.sr.Comprehensive3DSR``.
    """
    import highdicom as hd

    if not isinstance(aspects, Mapping) or "involvement" not in aspects:
        raise UsageError(
            "report_dataset needs a scored result's 'aspects' section (segment with "
            "--score or --adc); it has no 'involvement'"
        )
    name, version, _ = _algorithm(provenance)
    algorithm = hd.sr.AlgorithmIdentification(name=name, version=version)
    groups = _region_groups(aspects["involvement"], seg, series, algorithm)
    groups.append(_summary_group(aspects, algorithm))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(
            observer_device_context=_device_observer(name, version)
        ),
        procedure_reported=_code("363679005", "SCT", "Imaging procedure"),
        imaging_measurements=groups,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=[seg, *_unique(series.datasets)],
        content=report,
        series_instance_uid=generate_uid(),
        series_number=int(series_number),
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description=_lo(series_description),
        coding_schemes=_coding_schemes(),
    )
    strip_identity(sr)
    log.info("built DICOM SR: ASPECTS report, %d measurement groups", len(groups))
    return sr


def _measurement(
    concept: _Concept,
    value: Any,
    unit: _Concept,
    algorithm: Any,
    site: Any = None,
) -> Any:
    """One numeric SR measurement by ``algorithm``, at ``site`` when one is given."""
    from highdicom.sr import Measurement

    return Measurement(
        name=_code(*concept),
        value=float(value),
        unit=_code(*unit),
        algorithm_id=algorithm,
        finding_sites=[site] if site is not None else None,
    )


def _yes_no(concept: _Concept, flag: Any) -> Any:
    """A qualitative evaluation of ``concept`` answered SCT yes (``flag`` true) or no."""
    from highdicom.sr import QualitativeEvaluation

    return QualitativeEvaluation(_code(*concept), _code(*(_YES if flag else _NO)))


def _hemisphere_site(hemisphere: str) -> Any:
    """The finding site "cerebral hemisphere" with the hemisphere's laterality."""
    from highdicom.sr import FindingSite

    return FindingSite(_code(*_CEREBRAL_HEMISPHERE), laterality_code(hemisphere))


def _region_groups(
    involvement: Mapping[str, Any], seg: Dataset, series: Any, algorithm: Any
) -> list[Any]:
    """The TID 1411 groups of the 20 region x hemisphere labels, in label order."""
    groups: list[Any] = []
    for label in LABELS:
        cell = involvement[label.region.key][label.hemisphere]
        groups.append(_region_group(label, cell, seg, series, algorithm))
    return groups


def _region_group(
    label: RegionHemisphereLabel,
    cell: Mapping[str, Any],
    seg: Dataset,
    series: Any,
    algorithm: Any,
) -> Any:
    """One region x hemisphere's volumetric group (TID 1411), referencing its SEG segment."""
    from highdicom.sr import (
        FindingSite,
        ReferencedSegment,
        SourceSeriesForSegmentation,
        TrackingIdentifier,
        VolumetricROIMeasurementsAndQualitativeEvaluations,
    )

    site = FindingSite(
        anatomic_location=region_type_code(label.region),
        laterality=laterality_code(label.hemisphere),
    )
    return VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=generate_uid(), identifier=label.key),
        referenced_segment=ReferencedSegment(
            sop_class_uid=seg.SOPClassUID,
            sop_instance_uid=seg.SOPInstanceUID,
            segment_number=label.value,
            source_series=SourceSeriesForSegmentation(series.series_instance_uid),
        ),
        finding_type=region_type_code(label.region),
        algorithm_id=algorithm,
        finding_sites=[site],
        measurements=[
            _measurement(concept, factor * float(cell[key]), unit, algorithm)
            for concept, key, factor, unit in _REGION_MEASUREMENTS
        ],
        qualitative_evaluations=[
            _yes_no(concept, cell[key]) for concept, key in _REGION_EVALUATIONS
        ],
    )


def _summary_group(aspects: Mapping[str, Any], algorithm: Any) -> Any:
    """The TID 1501 group: the scores, the affected side, the lesion total, the uncertainty."""
    from highdicom.sr import (
        MeasurementsAndQualitativeEvaluations,
        QualitativeEvaluation,
        TrackingIdentifier,
    )

    side = aspects.get("affected_hemisphere")
    scores = aspects["scores"]
    measurements = [
        _measurement(_HEMISPHERE_SCORE, scores[h], _SCORE_UNIT, algorithm, _hemisphere_site(h))
        for h in contract.HEMISPHERES
    ]
    qualitative = [_yes_no(_UNCERTAIN, aspects["uncertain"])]
    site = _hemisphere_site(side) if side is not None else None  # no lesion: ASPECTS 10, no side
    measurements.insert(
        0, _measurement(_ASPECTS_SCORE, aspects["score"], _SCORE_UNIT, algorithm, site)
    )
    if side is not None:
        side_code = laterality_code(side)
        qualitative.insert(0, QualitativeEvaluation(_code(*_AFFECTED_HEMISPHERE), side_code))
    total = aspects.get("lesion_ml_total")
    if total is not None:
        measurements.append(_measurement(_LESION_VOLUME, total, _ML, algorithm))
    return MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=generate_uid(), identifier="ASPECTS"),
        algorithm_id=algorithm,
        measurements=measurements,
        qualitative_evaluations=qualitative,
    )


def _device_observer(name: str, version: str) -> Any:
    """The SR's observer context: this software as the observing device."""
    import highdicom as hd

    return hd.sr.ObserverContext(
        observer_type=_code("121007", "DCM", "Device"),
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=[MANUFACTURER, name, version]),
            name=_lo(name),
            manufacturer_name=MANUFACTURER,
            model_name=_lo(version),
        ),
    )


def _unique(datasets: Sequence[Dataset]) -> list[Dataset]:
    seen: set[str] = set()
    out = []
    for ds in datasets:
        if str(ds.SOPInstanceUID) not in seen:
            seen.add(str(ds.SOPInstanceUID))
            out.append(ds)
    return out


# --- secondary capture -------------------------------------------------------------------


def capture_dataset(
    overlay_png: bytes,
    series: Any,
    *,
    provenance: Mapping[str, Any],
    series_number: int = SC_SERIES_NUMBER,
    series_description: str = SC_SERIES_DESCRIPTION,
):
    """The overlay PNG as a Secondary Capture image (RGB, 8 bits) in the source's study.

    Tiles are displayed with row 0 anterior and column 0 patient left (contract), so the
    Patient Orientation is ``R\\P``. Returns a ``highdicom.sc.SCImage``.
    """
    import cv2
    import highdicom as hd

    if not isinstance(overlay_png, bytes | bytearray) or not overlay_png:
        raise UsageError("capture_dataset needs the overlay PNG bytes (segment with overlay)")
    bgr = cv2.imdecode(np.frombuffer(overlay_png, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise UsageError("the overlay bytes are not a PNG image")
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=series.datasets[0],
        pixel_array=rgb,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=generate_uid(),
        series_number=int(series_number),
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        patient_orientation=("R", "P"),
        series_description=_lo(series_description),
    )
    sc.BurnedInAnnotation = "YES"  # the overlay carries text (no patient data)
    sc.ImageLaterality = "B"  # both hemispheres (General Series Laterality is then not needed)
    strip_identity(sc)
    log.info("built DICOM secondary capture: %dx%d RGB", rgb.shape[1], rgb.shape[0])
    return sc


# --- one result's outputs ------------------------------------------------------------------

OUTPUT_SUFFIXES: dict[str, str] = {"seg": SEG_SUFFIX, "sr": REPORT_SUFFIX, "sc": CAPTURE_SUFFIX}


def dicom_outputs(
    result: Any, *, seg: bool = True, report: bool = False, capture: bool = False
) -> dict[str, Dataset]:
    """The DICOM outputs asked for, of a result segmented from a DICOM series.

    result: a ``SegmentationResult`` with ``dicom`` (the source ``DicomStudy``),
    ``region_image``, ``provenance``, ``document`` (``aspects`` when scored) and
    ``overlay_png``. Returns ``{"seg": ..., "sr": ..., "sc": ...}`` (those asked for, in
    that order: send them in this order). The report references the SEG's segments, so it
    needs ``seg``. Raises UsageError when the result cannot give what is asked for.
    """
    study = getattr(result, "dicom", None)
    if study is None:
        raise UsageError(
            "DICOM outputs (SEG, report, capture) need a DICOM source: segment a DICOM "
            "series (folder, zip, files or s3:// prefix), not a NIfTI file"
        )
    if report and not seg:
        raise UsageError("the DICOM report references the SEG's segments: ask for the SEG too")
    aspects = (getattr(result, "document", None) or {}).get("aspects")
    if report and aspects is None:
        raise UsageError("the DICOM report holds the ASPECTS score: segment with --score/--adc")
    png = getattr(result, "overlay_png", None)
    if capture and not png:
        raise UsageError("the DICOM capture is the overlay: segment with the overlay enabled")
    if seg and getattr(result, "region_image", None) is None:
        raise UsageError("the result has no region x hemisphere map for the SEG")
    provenance = getattr(result, "provenance", None) or {}
    out: dict[str, Dataset] = {}
    if seg:
        out["seg"] = segmentation_dataset(result.region_image, study.dwi, provenance=provenance)
    if report:
        out["sr"] = report_dataset(aspects, out["seg"], study.dwi, provenance=provenance)
    if capture:
        out["sc"] = capture_dataset(png, study.dwi, provenance=provenance)
    return out


def dicom_output_files(datasets: Mapping[str, Dataset], stem: str) -> dict[str, bytes]:
    """``{file name: Part 10 bytes}`` of ``dicom_outputs``' datasets: ``<stem>_seg.dcm``,
    ``<stem>_report.dcm``, ``<stem>_overlay.dcm`` (names from the output stem only, never
    from the source's attributes)."""
    if not isinstance(stem, str) or not stem or "/" in stem or "\\" in stem:
        raise UsageError(f"stem must be a non-empty file-name stem without a directory: {stem!r}")
    return {stem + OUTPUT_SUFFIXES[key]: dataset_bytes(ds) for key, ds in datasets.items()}


# --- identity and bytes ------------------------------------------------------------------


def strip_identity(ds: Dataset) -> Dataset:
    """Remove every root attribute of the patient, patient-study, clinical-trial, visit and
    study modules except ``COPIED_PATIENT_ATTRIBUTES`` and ``COPIED_STUDY_ATTRIBUTES``, and
    the source's ``EQUIPMENT_IDENTITY`` in the ContributingEquipmentSequence items."""
    keep = set(COPIED_PATIENT_ATTRIBUTES) | set(COPIED_STUDY_ATTRIBUTES)
    drop = [
        elem.tag
        for elem in ds
        if elem.keyword not in keep
        and (elem.tag.group in _IDENTITY_GROUPS or elem.keyword in _STUDY_EXTRAS)
    ]
    for tag in drop:
        del ds[tag]
    for item in ds.get("ContributingEquipmentSequence", []):  # the root's are this software's
        for keyword in EQUIPMENT_IDENTITY:
            if keyword in item:
                delattr(item, keyword)
    return ds


def dataset_bytes(ds: Dataset) -> bytes:
    """The DICOM Part 10 file (preamble, file meta, dataset) as bytes, written in memory."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
