"""DICOM input (aspects_client.dicom.read): synthetic series written from a labelled phantom
(aspects_synth.dicom_series) read back voxel for voxel in world space, the selection rules,
every bad-input error, and DICOM files that ship in packages (pydicom, nibabel)."""

from __future__ import annotations

import copy
import gzip
import io
import logging
import os
import re
import struct
import warnings
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from pydicom.uid import generate_uid

from aspects_client import errors
from aspects_client.dicom.read import read_dicom, read_dicom_adc, read_dicom_files
from aspects_client.outputs import source_stem
from aspects_client.sources import dicom_source_name, is_dicom_source
from aspects_client.volume_io import Limits
from aspects_synth import reorder
from aspects_synth.dicom_series import (
    StudyIds,
    gantry_tilted,
    series_from_image,
    to_bytes,
    write_series,
    zip_series,
)

PATIENT = ("ASPECTS^PHANTOM", "PHANTOM-7")  # must never appear in a message or a log line


@pytest.fixture(scope="module")
def head(phantom_small) -> nib.Nifti1Image:
    """The small labelled phantom (160 x 192 x 9, RAS) with integer values (stored exactly)."""
    data = np.round(phantom_small.image.get_fdata()).astype(np.float32)
    return nib.Nifti1Image(data, phantom_small.image.affine)


@pytest.fixture(scope="module")
def study() -> StudyIds:
    return StudyIds(generate_uid(), generate_uid(), patient_id=PATIENT[1])


def files_of(datasets, prefix: str = "IM") -> list[tuple[str, bytes]]:
    return [(f"{prefix}{n:04d}.dcm", to_bytes(ds)) for n, ds in enumerate(datasets, 1)]


def oblique(image: nib.Nifti1Image) -> nib.Nifti1Image:
    """The same voxels with the world rotated by 20° about x and 10° about z."""
    from aspects_synth.phantom import euler_rotation

    rotation = np.eye(4)
    rotation[:3, :3] = euler_rotation((20.0, 0.0, 10.0))
    return nib.Nifti1Image(np.asanyarray(image.dataobj), rotation @ image.affine)


def assert_same_world(source: nib.Nifti1Image, read: nib.Nifti1Image, atol: float = 0.0) -> None:
    """Every voxel of ``read`` sits where a voxel of ``source`` sits (to 1e-4 mm) and holds its
    value (to ``atol``); the grids are the same up to a permutation and flips of the axes."""
    mapping = np.linalg.inv(source.affine) @ read.affine  # read voxel -> source voxel
    integral = np.round(mapping)
    assert np.allclose(mapping, integral, atol=1e-5), mapping
    read_data = np.asanyarray(read.dataobj)
    src_data = np.asanyarray(source.dataobj)
    assert read_data.size == src_data.size and read_data.dtype == np.float32
    idx = np.indices(read_data.shape).reshape(3, -1).astype(np.float64)
    world_read = read.affine[:3, :3] @ idx + read.affine[:3, 3:]
    src_idx = (integral[:3, :3] @ idx + integral[:3, 3:]).astype(np.int64)
    world_src = source.affine[:3, :3] @ src_idx + source.affine[:3, 3:]
    assert np.max(np.abs(world_read - world_src)) < 1e-4  # every voxel, in mm
    values = src_data[tuple(src_idx)]
    np.testing.assert_allclose(read_data.reshape(-1), values, rtol=0, atol=atol)


# --- 1. geometry and values: every voxel in world space ------------------------------------

ORIENTATIONS = {
    "axial": lambda img: img,
    "axial_lps": lambda img: reorder_image(img, "LPS"),
    "sagittal": lambda img: reorder_image(img, "PIR"),
    "coronal": lambda img: reorder_image(img, "RIA"),
    "oblique": oblique,
}


def reorder_image(image: nib.Nifti1Image, axcodes: str) -> nib.Nifti1Image:
    from aspects_synth.phantom import Phantom

    zeros = np.zeros(image.shape, np.uint8)
    return reorder(Phantom(image, zeros, zeros, 0, zeros, np.eye(4)), axcodes).image


@pytest.mark.parametrize("multiframe", [False, True], ids=["single-frame", "multi-frame"])
@pytest.mark.parametrize("orientation", list(ORIENTATIONS))
def test_a_series_reads_back_voxel_for_voxel(head, study, orientation, multiframe):
    image = ORIENTATIONS[orientation](head)
    datasets = series_from_image(image, b_values=(0, 1000), multiframe=multiframe, study=study)
    got = read_dicom_files(files_of(datasets), label="case")
    assert got.dwi.role == "dwi" and got.dwi.b_value == 1000.0 and got.adc is None
    assert_same_world(image, got.dwi.image)
    assert got.dwi.image.header.get_sform(coded=True)[1] == 1  # scanner
    # frames[k] points at the instance (and frame) holding slice k, at b = 1000
    assert len(got.dwi.frames) == got.dwi.image.shape[2]
    orientation = got.dwi.datasets[0].get("ImageOrientationPatient", [0] * 6)
    normal = np.cross(*np.reshape(np.array(orientation, float), (2, 3)))
    previous = -np.inf
    for k, (index, frame) in enumerate(got.dwi.frames):
        ds = got.dwi.datasets[index]
        if multiframe:
            item = ds.PerFrameFunctionalGroupsSequence[frame - 1]
            assert item.MRDiffusionSequence[0].DiffusionBValue == 1000.0
        else:
            assert frame == 1 and ds.DiffusionBValue == 1000.0
            position = np.array(ds.ImagePositionPatient, float)
            assert position @ normal > previous, k  # slices ascend along the normal
            previous = position @ normal
    assert got.dwi.series_instance_uid == datasets[0].SeriesInstanceUID
    assert got.dwi.frame_of_reference_uid == study.frame_of_reference_uid


@pytest.mark.parametrize("multiframe", [False, True], ids=["single-frame", "multi-frame"])
def test_rescale_slope_and_intercept_are_applied(phantom_small, study, multiframe):
    image = phantom_small.image  # float values: stored as uint16 with a slope
    datasets = series_from_image(image, b_values=(1000,), multiframe=multiframe, study=study)
    ds = datasets[0]
    group = (
        ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
        if (multiframe)
        else ds
    )
    slope = float(group.RescaleSlope)
    assert slope != 1.0 and float(group.RescaleIntercept) != 0.0
    got = read_dicom_files(files_of(datasets), label="case")
    assert_same_world(image, got.dwi.image, atol=slope / 2 + 1e-3)


def test_a_gantry_tilted_stack_keeps_its_sheared_geometry(head, study):
    tilted = gantry_tilted(head, 15.0)
    got = read_dicom_files(files_of(series_from_image(tilted, study=study)), label="case")
    assert_same_world(tilted, got.dwi.image)
    assert got.dwi.image.header["qform_code"] == 0  # a quaternion cannot hold the shear
    with pytest.raises(errors.GantryTiltError, match=r"sheared by 40\.0°"):
        read_dicom_files(files_of(series_from_image(gantry_tilted(head, 40.0))), label="case")


# --- 2. selection: b-value, ADC, series -------------------------------------------------


@pytest.mark.parametrize(
    ("b_values", "chosen"),
    [((0, 500, 1000, 1500), 1000.0), ((0, 800, 1400, 2000), 1400.0), ((2000, 700), 700.0)],
)
def test_the_b_value_is_1000_else_the_highest_up_to_1500(head, study, b_values, chosen):
    got = read_dicom_files(files_of(series_from_image(head, b_values=b_values)), label="c")
    assert got.dwi.b_value == chosen
    assert {float(ds.DiffusionBValue) for ds in got.dwi.datasets} == {chosen}
    assert len(got.dwi.datasets) == head.shape[2]


def test_siemens_private_b_values(head, study):
    datasets = series_from_image(head, b_values=(0, 1000), b_value_tag="siemens")
    assert "DiffusionBValue" not in datasets[0]
    got = read_dicom_files(files_of(datasets), label="case")
    assert got.dwi.b_value == 1000.0 and len(got.dwi.frames) == head.shape[2]


def test_the_adc_series_of_the_same_study_is_found(head, study, tmp_path):
    adc_values = nib.Nifti1Image(3000.0 - np.asanyarray(head.dataobj), head.affine)
    dwi = series_from_image(head, study=study, series_number=5)
    adc = series_from_image(adc_values, role="adc", study=study, series_number=6, multiframe=True)
    other_study = series_from_image(adc_values, role="adc", series_number=7)  # not this patient
    files = files_of(dwi) + files_of(adc, "ADC") + files_of(other_study, "OTHER")
    got = read_dicom_files(files, label="case")
    assert got.adc is not None and got.adc.role == "adc" and got.adc.b_value is None
    assert got.adc.series_instance_uid == adc[0].SeriesInstanceUID
    assert_same_world(adc_values, got.adc.image)
    assert read_dicom_files(files, label="case", adc=False).adc is None
    assert read_dicom_files(files_of(dwi), label="case").adc is None
    # an ADC series given on its own (``adc=`` as DICOM)
    write_series(adc, tmp_path / "adc")
    assert read_dicom_adc(tmp_path / "adc").series_instance_uid == adc[0].SeriesInstanceUID
    with pytest.raises(errors.NotDiffusionError, match="no ADC series"):
        read_dicom_adc(write_series(dwi, tmp_path / "dwi"))
    # only an ADC of another study: refused, never dropped in silence (issue 24)
    with pytest.raises(errors.MixedSeriesError, match="belongs to another study"):
        read_dicom_files(files_of(dwi) + files_of(other_study, "OTHER"), label="case")


def test_several_dwi_series_are_named_and_one_is_chosen(head, study, caplog):
    first = series_from_image(head, study=study, series_number=3, series_description="dwi A")
    second = series_from_image(head, study=study, series_number=4, series_description="dwi B")
    files = files_of(first, "A") + files_of(second, "B")
    caplog.set_level(logging.DEBUG, logger="aspects_client")
    with pytest.raises(errors.MixedSeriesError, match="2 DWI series") as info:
        read_dicom_files(files, label="case")
    message = str(info.value)
    assert "series 3 'dwi A'" in message and "series 4 'dwi B'" in message
    assert "--series" in message
    got = read_dicom_files(files, label="case", series=4)
    assert got.dwi.series_instance_uid == second[0].SeriesInstanceUID
    got = read_dicom_files(files, label="case", series=first[0].SeriesInstanceUID)
    assert got.dwi.series_instance_uid == first[0].SeriesInstanceUID
    with pytest.raises(errors.MixedSeriesError, match="no series 9"):
        read_dicom_files(files, label="case", series="9")
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "series 4 'dwi B'" in logged
    for secret in PATIENT:  # privacy: nothing of the patient module
        assert secret not in message and secret not in logged


# --- 3. bad input: each a specific error saying what to send --------------------------------


@pytest.fixture(scope="module")
def dwi(head, study) -> list:
    return series_from_image(head, study=study, series_number=2, series_description="trace")


def edited(datasets, index: int, **attributes):
    out = [copy.deepcopy(ds) for ds in datasets]
    for keyword, value in attributes.items():
        setattr(out[index], keyword, value)
    return out


def shifted(datasets, index: int, mm: float):
    """datasets with slice ``index`` moved ``mm`` along the normal."""
    ds = datasets[index]
    normal = np.cross(*np.reshape(np.array(ds.ImageOrientationPatient, float), (2, 3)))
    position = np.array(ds.ImagePositionPatient, float) + mm * normal
    return edited(datasets, index, ImagePositionPatient=[f"{v:.6f}" for v in position])


def bad_cases(dwi, head):
    step = float(dwi[0].SpacingBetweenSlices)
    duplicate = copy.deepcopy(dwi[4])
    duplicate.SOPInstanceUID = generate_uid()
    truncated = copy.deepcopy(dwi[3])
    truncated.PixelData = truncated.PixelData[:100]
    t1 = series_from_image(head, role="t1", series_number=9)
    directional = [copy.deepcopy(ds) for ds in dwi]
    for ds in directional:
        ds.DiffusionDirectionality = "DIRECTIONAL"
    return {
        "missing slice": (dwi[:4] + dwi[5:], errors.MissingSlicesError, "1 slice.* missing"),
        "duplicate slice": ([*dwi, duplicate], errors.DuplicateSlicesError, "share a slice"),
        "same instance twice": ([*dwi, dwi[2]], errors.DuplicateSlicesError, "same instance"),
        "uneven spacing": (
            shifted(dwi, 8, 0.4 * step),
            errors.InconsistentGeometryError,
            "spacing varies",
        ),
        "off the line": (
            edited(
                dwi,
                8,
                ImagePositionPatient=[
                    f"{float(v) + d:.6f}"
                    for v, d in zip(dwi[8].ImagePositionPatient, (3, 0, 0), strict=True)
                ],
            ),
            errors.InconsistentGeometryError,
            "not on one line",
        ),
        "two sizes": (edited(dwi, 1, Rows=64), errors.InconsistentGeometryError, "2 sizes"),
        "two orientations": (
            edited(dwi, 1, ImageOrientationPatient=["0", "1", "0", "0", "0", "-1"]),
            errors.InconsistentGeometryError,
            "different orientations",
        ),
        "a T1 series": (t1, errors.NotDiffusionError, "no diffusion b-value"),
        "b = 0 only": (
            series_from_image(head, b_values=(0,)),
            errors.NotDiffusionError,
            "only b = 0",
        ),
        "directional only": (directional, errors.NotDiffusionError, "only directional"),
        "too few slices": (dwi[:2], errors.MissingSlicesError, "only 2 image"),
        "unreadable pixels": (
            [*dwi[:3], truncated, *dwi[4:]],
            errors.UnreadableDicomError,
            "damaged or truncated; re-export it",  # not "re-export uncompressed" (issue 24)
        ),
    }


BAD = [
    "missing slice", "duplicate slice", "same instance twice", "uneven spacing", "off the line",
    "two sizes", "two orientations", "a T1 series", "b = 0 only", "directional only",
    "too few slices", "unreadable pixels",
]  # fmt: skip


@pytest.mark.parametrize("case", BAD)
def test_bad_series_raise_specific_errors(dwi, head, case):
    datasets, kind, pattern = bad_cases(copy.deepcopy(dwi), head)[case]
    with pytest.raises(kind, match=pattern) as info:
        read_dicom_files(files_of(datasets), label="case")
    message = str(info.value)
    assert message.startswith("case: ") and "\n" not in message
    assert "send" in message or "remove" in message or "re-export" in message
    assert not any(secret in message for secret in PATIENT)


def test_non_dicom_files_are_skipped_only_when_obviously_not_dicom(tmp_path, dwi):
    folder = tmp_path / "case12"
    write_series(dwi, folder / "sub" / "deeper")
    (folder / "README.txt").write_text("not an image")
    (folder / "DICOMDIR").write_bytes(b"\0" * 200)
    (folder / ".DS_Store").write_bytes(b"\0\1")
    got = read_dicom(folder)
    assert len(got.dwi.frames) == len(dwi)
    (folder / "notes.bin").write_bytes(os.urandom(400))
    with pytest.raises(errors.NotDicomError, match=r"notes\.bin is not a DICOM Part 10 file"):
        read_dicom(folder)
    # a list of files is taken literally: a text file in it is an error
    files = sorted(str(p) for p in (folder / "sub" / "deeper").iterdir())
    assert len(read_dicom(files).dwi.frames) == len(dwi)
    with pytest.raises(errors.NotDicomError, match=r"README\.txt"):
        read_dicom([*files, str(folder / "README.txt")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(errors.NotDicomError, match="holds no DICOM files"):
        read_dicom(tmp_path / "empty")


def test_zip_archives(tmp_path, dwi):
    path = tmp_path / "case12.zip"
    path.write_bytes(zip_series(dwi))
    assert len(read_dicom(path).dwi.frames) == len(dwi)
    for name in ("../evil.dcm", "/abs/evil.dcm", "a/../../evil.dcm"):
        bad = tmp_path / "bad.zip"
        with zipfile.ZipFile(bad, "w") as archive:
            archive.writestr("IM0001.dcm", to_bytes(dwi[0]))
            archive.writestr(name, b"x")
        with pytest.raises(errors.UnsafeArchiveError, match=r"'\.\.' segment"):
            read_dicom(bad)
    # a zip bomb: 50 MB of zeros declared as 1000 bytes is inflated no further than that
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("IM0001.dcm", bytes(50_000_000))
    bomb = bytearray(buffer.getvalue())
    struct.pack_into("<I", bomb, bomb.find(b"PK\x03\x04") + 22, 1000)  # local header
    struct.pack_into("<I", bomb, bomb.find(b"PK\x01\x02") + 24, 1000)  # central directory
    (tmp_path / "bomb.zip").write_bytes(bomb)
    with pytest.raises(errors.UnreadableDicomError, match="Bad CRC-32"):
        read_dicom(tmp_path / "bomb.zip", limits=Limits(max_decompressed_bytes=1_000_000))
    (tmp_path / "fake.zip").write_bytes(b"PK not really")
    with pytest.raises(errors.NotDicomError, match="not a zip archive"):
        read_dicom(tmp_path / "fake.zip")
    size = path.stat().st_size
    with pytest.raises(errors.VolumeTooLargeError, match="the zip is larger"):
        read_dicom(path, limits=Limits(max_decompressed_bytes=size - 1))
    assert sum(len(to_bytes(ds)) for ds in dwi) > size + 1  # premise: the members inflate
    with pytest.raises(errors.VolumeTooLargeError, match="bytes of files"):  # declared sizes
        read_dicom(path, limits=Limits(max_decompressed_bytes=size + 1))


def test_dicom_sources_and_their_names(tmp_path):
    (tmp_path / "case12").mkdir()
    assert is_dicom_source(tmp_path / "case12") and is_dicom_source(str(tmp_path / "case12"))
    assert is_dicom_source("x/case.ZIP") and is_dicom_source(["a.dcm", Path("b.dcm")])
    assert is_dicom_source("s3://bucket/cases/case12/")
    assert not is_dicom_source("s3://bucket/cases/dwi.nii.gz")
    assert not is_dicom_source(str(tmp_path / "dwi.nii.gz")) and not is_dicom_source([])
    assert dicom_source_name(str(tmp_path / "case12") + "/") == "case12"
    assert dicom_source_name("s3://bucket/cases/case12/") == "case12"
    assert dicom_source_name([str(tmp_path / "case12" / "a.dcm")]) == "case12"
    assert source_stem("s3://bucket/cases/case12/") == "case12"
    assert source_stem("data/case12/") == source_stem("data/case12.zip") == "case12"


# --- 4. DICOM files that ship in packages --------------------------------------------------


def shipped(path: str) -> tuple[str, bytes]:
    data = Path(path).read_bytes()
    return os.path.basename(path), gzip.decompress(data) if path.endswith(".gz") else data


NIBABEL_DATA = Path(nib.__file__).parent / "nicom" / "tests" / "data"


@pytest.mark.parametrize(
    ("files", "kind", "pattern"),
    [
        (["MR_small.dcm"], errors.NotDiffusionError, "series 1: no diffusion b-value"),
        (["CT_small.dcm"], errors.NotDiffusionError, "modality CT, not MR"),
        (["no_meta.dcm"], errors.NotDicomError, "no 'DICM' preamble"),
        (["test-SR.dcm"], errors.NotDicomError, "no DICOM images"),
        (["nibabel:siemens_dwi_1000.dcm.gz", "nibabel:siemens_dwi_0.dcm.gz"],
         errors.UnsupportedDicomError, "Siemens mosaic"),
        (["nibabel:philips_mprage.dcm.gz"], errors.NotDiffusionError,
         "series 301 'MPRAGE_S2': no diffusion b-value"),
    ],
)  # fmt: skip
def test_shipped_files_are_refused_with_the_right_error(files, kind, pattern):
    from pydicom.data import get_testdata_file

    paths = [
        str(NIBABEL_DATA / f.split(":", 1)[1]) if f.startswith("nibabel:") else get_testdata_file(f)
        for f in files
    ]
    with pytest.raises(kind, match=pattern):
        read_dicom_files([shipped(p) for p in paths], label="shipped")


def test_a_shipped_enhanced_mr_file_has_nibabels_geometry(tmp_path):
    """Philips' Enhanced MR test file (nibabel): our frame geometry equals nibabel's
    multi-frame wrapper's (an independent reader), voxel for voxel."""
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from nibabel.nicom.dicomwrappers import wrapper_from_data

    name, data = shipped(str(NIBABEL_DATA / "philips_mprage.dcm.gz"))
    (tmp_path / name).write_bytes(data)
    series = read_dicom_adc([str(tmp_path / name)], adc_series="301")  # read as a plain volume
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nibabel: "the DICOM readers are highly experimental"
        wrapper = wrapper_from_data(pydicom.dcmread(io.BytesIO(data)))
        reference = nib.Nifti1Image(
            np.zeros(wrapper.image_shape, np.float32), np.diag([-1, -1, 1, 1]) @ wrapper.affine
        )
    assert series.image.shape == (256, 256, 176)
    mapping = np.linalg.inv(reference.affine) @ series.image.affine
    assert np.allclose(mapping, np.round(mapping), atol=1e-4), mapping
    assert sorted(np.abs(np.round(mapping[:3, :3])).argmax(axis=0)) == [0, 1, 2]


@pytest.mark.parametrize(
    ("argv", "pattern"),
    [
        (["x.nii.gz", "--series", "3"], "no SOURCE is DICOM"),
        ([], "no SOURCE given"),
        (["{folder}", "--volume-index", "0"], "choose a DICOM series with --series"),
        (["s3://bucket/case12/../"], r"'\.' or '\.\.' path segment"),
    ],
)
def test_cli_refuses_dicom_misuse_before_any_work(tmp_path, capsys, argv, pattern):
    from aspects_client.cli import main

    (tmp_path / "case12").mkdir()
    argv = [a.replace("{folder}", str(tmp_path / "case12")) for a in argv]
    assert main(["segment", *argv, "-o", str(tmp_path / "out.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(pattern, err[0]), err


def test_the_synthetic_series_are_valid_dicom(head, study, tmp_path):
    """dciodvfy (dicom3tools) finds no error in the classic and enhanced series written by
    aspects_synth.dicom_series (warnings: vendor-style attributes such as Rescale Slope in
    classic MR, the defined term ADC)."""
    import shutil
    import subprocess
    import sys

    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    exe = shutil.which("dciodvfy", path=search)
    if exe is None:
        pytest.skip("dciodvfy (dicom3tools, in the dev extra) is not installed")
    cases = {
        "MRImage": series_from_image(head, b_values=(0, 1000), study=study)[-1],
        "EnhancedMRImage": series_from_image(head, b_values=(0, 1000), multiframe=True)[0],
        "EnhancedMRImage ADC": series_from_image(head, role="adc", multiframe=True)[0],
        "MRImage T1": series_from_image(head, role="t1")[0],
    }
    for name, ds in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.dcm"
        path.write_bytes(to_bytes(ds))
        run = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=120)
        lines = (run.stdout + run.stderr).splitlines()
        assert lines and lines[0] == name.split()[0], lines[:3]
        assert not [line for line in lines if line.startswith("Error")], (name, lines)


# --- the attack corpus (issue 24): inputs built here that hung, exploded or were read
# wrong on the previous main ------------------------------------------------------------------


def _enhanced(head, study, **edit):
    """One enhanced multi-frame DWI instance (b = 1000) with ``edit`` applied to it."""
    datasets = series_from_image(head, b_values=(1000,), multiframe=True, study=study)
    ds = copy.deepcopy(datasets[0])
    for keyword, value in edit.items():
        if keyword == "per_frame_items":
            ds.PerFrameFunctionalGroupsSequence = ds.PerFrameFunctionalGroupsSequence[:value]
        else:
            setattr(ds, keyword, value)
    return [ds]


def _with_frames_text(ds, text: bytes) -> bytes:
    """``ds`` written with NumberOfFrames replaced by ``text`` (pydicom refuses to set it)."""
    marker = b"\x28\x00\x08\x00IS"  # (0028,0008) explicit VR little endian
    data = to_bytes(ds)
    at = data.index(marker)
    length = int.from_bytes(data[at + 6 : at + 8], "little")
    value = text.ljust(length)[:length]
    return data[: at + 8] + value + data[at + 8 + length :]


ENHANCED_ATTACKS = {
    "NumberOfFrames 2147483647 (hung the client)": (
        {"NumberOfFrames": 2147483647}, r"declares 2,147,483,647 frames .* more than its"),
    "NumberOfFrames -5 ('no diffusion b-value')": (
        {"NumberOfFrames": -5}, r"NumberOfFrames -5.*positive integer"),
    "Rows 0 ('re-export uncompressed')": ({"Rows": 0}, r"Rows 0.*positive integer"),
    "fewer per-frame items than frames (frames dropped)": (
        {"per_frame_items": 3}, r"3 per-frame functional group items for 9 frames"),
}


@pytest.mark.parametrize("attack", list(ENHANCED_ATTACKS), ids=list(ENHANCED_ATTACKS))
def test_a_lying_enhanced_instance_is_refused_before_any_frame_loop(head, study, attack):
    edit, pattern = ENHANCED_ATTACKS[attack]
    datasets = _enhanced(head, study, **edit)
    with pytest.raises(errors.UnreadableDicomError, match=pattern) as info:
        read_dicom_files(files_of(datasets), label="case")
    assert str(info.value).startswith("case: ")


def test_a_non_numeric_frame_count_is_refused_not_raised(head, study):
    """A NumberOfFrames that is no number went through the API as a raw ValueError."""
    data = _with_frames_text(_enhanced(head, study)[0], b"ab")
    with pytest.raises(errors.UnreadableDicomError, match=r"NumberOfFrames ab,.*positive"):
        read_dicom_files([("IM0001.dcm", data)], label="case")


def test_every_other_slice_missing_is_refused(dwi):
    """Evenly spaced, so the gap rule saw nothing: half the slices were segmented."""
    half = [copy.deepcopy(ds) for ds in dwi[::2]]
    for ds in half:
        ds.SliceThickness = float(dwi[0].SliceThickness) if "SliceThickness" in dwi[0] else 5.0
        if "SpacingBetweenSlices" in ds:
            del ds.SpacingBetweenSlices
    with pytest.raises(errors.MissingSlicesError, match=r"SliceThickness .* of every 2 slices"):
        read_dicom_files(files_of(half), label="case")
    with_spacing = [copy.deepcopy(ds) for ds in half]
    for ds in with_spacing:
        ds.SpacingBetweenSlices = ds.SliceThickness
    with pytest.raises(errors.MissingSlicesError, match="SpacingBetweenSlices"):
        read_dicom_files(files_of(with_spacing), label="case")


def test_alternating_b_values_of_one_shell_give_the_whole_volume(dwi):
    """999 and 1000.9 on alternating slices: one shell (scanner rounding), every slice read
    (half of them were dropped before)."""
    alternating = [copy.deepcopy(ds) for ds in dwi]
    for k, ds in enumerate(alternating):
        ds.DiffusionBValue = 999.0 if k % 2 else 1000.9
    got = read_dicom_files(files_of(alternating), label="case")
    assert len(got.dwi.frames) == len(dwi)


def _deflated(ds) -> bytes:
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    out = copy.deepcopy(ds)
    out.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buffer = io.BytesIO()
    out.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_a_deflate_bomb_is_refused_before_pydicom_inflates_it(dwi):
    """A Deflated Explicit VR file whose dataset inflates ~1000x (zeros): pydicom inflates
    without a bound (6.3 GB RSS for a 3 MB file); refused here from a bounded stream."""
    bomb = copy.deepcopy(dwi[0])
    bomb.ImageComments = "0" * 80_000_000  # 80 MB that compress ~1000x
    data = _deflated(bomb)
    assert len(data) < 400_000  # premise: small on disk
    with pytest.raises(errors.DecompressionBombError, match="inflates more than 200x"):
        read_dicom_files([("IM0001.dcm", data)], label="case")
    normal = [(f"IM{n:04d}.dcm", _deflated(ds)) for n, ds in enumerate(dwi, 1)]
    assert len(read_dicom_files(normal, label="case").dwi.frames) == len(dwi)  # still read


def test_a_zip_member_inflating_past_the_ratio_is_refused_before_inflating(tmp_path, dwi):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("IM0001.dcm", to_bytes(dwi[0]))
        archive.writestr("IM0002.dcm", bytes(100_000_000))  # honest sizes, 1000:1
        archive.writestr("IM0003.dcm", bytes(600_000))  # a blank slice (~550:1) is fine
    (tmp_path / "bomb.zip").write_bytes(buffer.getvalue())
    with pytest.raises(errors.DecompressionBombError, match="more than 200x"):
        read_dicom(tmp_path / "bomb.zip")


def test_a_link_out_of_the_folder_is_not_followed(tmp_path, dwi):
    folder = tmp_path / "series"
    write_series(dwi, folder)
    outside = tmp_path / "secret.dcm"
    outside.write_bytes(to_bytes(dwi[0]))
    os.symlink(outside, folder / "link.dcm")
    with pytest.raises(errors.UnsafeArchiveError, match="link to a file outside the folder"):
        read_dicom(folder)


def test_an_absurd_b_value_is_named_not_called_directional(dwi):
    absurd = [copy.deepcopy(ds) for ds in dwi]
    for ds in absurd:
        ds.DiffusionBValue = 1e12
    with pytest.raises(errors.NotDiffusionError, match=r"trace b-values up to 1e\+12") as info:
        read_dicom_files(files_of(absurd), label="case")
    assert "only directional" not in str(info.value)


def test_viewer_files_written_into_the_input_folder_do_not_break_the_next_run(tmp_path, dwi):
    """``--viewer`` outputs in a DICOM input folder made the next run fail (issue 24)."""
    from aspects_client.outputs import JSON_SUFFIX, LABELS_SUFFIX, VIEWER_SUFFIXES

    folder = tmp_path / "series"
    write_series(dwi, folder)
    for suffix in (*VIEWER_SUFFIXES, JSON_SUFFIX, LABELS_SUFFIX):
        (folder / f"series{suffix}").write_bytes(b"written by a previous run")
    assert len(read_dicom(folder).dwi.frames) == len(dwi)


def test_reading_stops_when_cancelled(tmp_path, dwi):
    """SIGTERM was honoured only when reading ended (215 s with 2,000,000 frames); the
    cancel event (set by the CLI's signal handler) now stops gathering and reading."""
    import threading

    folder = tmp_path / "series"
    write_series(dwi, folder)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(errors.CancelledError, match="cancelled"):
        read_dicom(folder, cancel=cancel)
    with pytest.raises(errors.CancelledError, match="cancelled"):
        read_dicom_files(files_of(dwi), label="case", cancel=cancel)
