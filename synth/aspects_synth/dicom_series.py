"""Write a 3D NIfTI volume as a synthetic DICOM MR series (tests, demos; never patient data).

``series_from_image`` turns any 3D image whose first two affine columns are orthogonal
(axial, sagittal, coronal, oblique; a third column off the slice normal is a gantry tilt,
see ``gantry_tilted``) into a valid MR series: classic single-frame MR Image Storage (one
instance per slice and b-value) or one Enhanced MR Image Storage instance (per-frame
functional groups: Frame Content, Plane Position, MR Diffusion; shared: Pixel Measures,
Plane Orientation, Pixel Value Transformation, MR Image Frame Type).  DWI series hold one
trace (ISOTROPIC) image per slice and b-value (b = 0 is written as the volume itself);
an ADC series is ``ImageType DERIVED\\PRIMARY\\DIFFUSION\\ADC`` with the volume's values
(e.g. 10^-6 mm²/s) through Rescale Slope/Intercept.

The DICOM grid is the NIfTI grid: voxel (i, j, k) = pixel (column i, row j) of slice k,
so the instance of slice k has ImagePositionPatient = LPS(affine @ (0, 0, k)),
ImageOrientationPatient = the LPS directions of the first two affine columns, PixelSpacing
= (row spacing, column spacing) = (|column 1|, |column 0|).  Reading the series back
(``aspects_client.dicom.read``) reproduces the voxels' world positions exactly.

Values: integral data within 0..65535 is stored as is (slope 1, intercept 0, exact); other
data as uint16 with slope = range / 65535 and intercept = minimum (error ≤ slope / 2).

Patient data are obviously fake: PatientName ``ASPECTS^PHANTOM``, PatientID
``PHANTOM-<n>``; DWI and ADC of one ``StudyIds`` share the study and frame of reference.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    EnhancedMRImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS (its own inverse)
ROLES = ("dwi", "adc", "t1")
B_VALUE_TAGS = ("standard", "siemens")
_UINT16_MAX = 65535
_ORTHOGONAL_TOL = 1e-6


@dataclass(frozen=True)
class StudyIds:
    """The identifiers a DWI and its ADC share (fake patient, one study, one frame of
    reference)."""

    study_instance_uid: str
    frame_of_reference_uid: str
    patient_id: str = "PHANTOM-1"
    patient_name: str = "ASPECTS^PHANTOM"
    study_date: str = "20000101"
    study_time: str = "120000"
    accession_number: str = "PHANTOM"

    @classmethod
    def new(cls, n: int = 1) -> StudyIds:
        """Fresh UIDs for phantom number ``n``."""
        return cls(generate_uid(), generate_uid(), patient_id=f"PHANTOM-{int(n)}")


def gantry_tilted(image: nib.Nifti1Image, degrees: float) -> nib.Nifti1Image:
    """The same voxels with each slice shifted along the image's column direction (rows
    axis j) by tan(degrees) × the slice step: a gantry-tilted (sheared) stack, whose slice
    positions no longer lie on the normal of the image plane."""
    affine = np.asarray(image.affine, dtype=np.float64).copy()
    normal = np.cross(affine[:3, 0], affine[:3, 1])
    normal /= np.linalg.norm(normal)
    step = float(abs(affine[:3, 2] @ normal))
    column_dir = affine[:3, 1] / np.linalg.norm(affine[:3, 1])
    affine[:3, 2] = affine[:3, 2] + np.tan(np.radians(degrees)) * step * column_dir
    out = nib.Nifti1Image(np.asanyarray(image.dataobj), affine)
    out.set_sform(affine, code="scanner")
    out.set_qform(None, code=0)  # a quaternion cannot hold a shear
    return out


def series_from_image(
    image: nib.Nifti1Image,
    *,
    role: str = "dwi",
    b_values: Sequence[float] = (1000.0,),
    multiframe: bool = False,
    study: StudyIds | None = None,
    series_number: int = 1,
    series_description: str | None = None,
    b_value_tag: str = "standard",
) -> list[Dataset]:
    """The image as one MR series (a list of datasets with file meta, ready to save).

    role: "dwi" (one trace image per slice for each of ``b_values``; b = 0 included if
    listed), "adc" (the values as an ADC map, no b-value) or "t1" (a plain T1 series, for
    "not a DWI" tests).  multiframe: one Enhanced MR instance instead of one classic MR
    instance per image.  b_value_tag: where a classic DWI image carries its b-value:
    "standard" (0018,9087 Diffusion b-value) or "siemens" ((0019,100C) in the
    "SIEMENS MR HEADER" private block).
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    if b_value_tag not in B_VALUE_TAGS:
        raise ValueError(f"b_value_tag must be one of {B_VALUE_TAGS}, got {b_value_tag!r}")
    data = np.asanyarray(image.dataobj)
    if data.ndim != 3:
        raise ValueError(f"a 3D image is needed, got shape {data.shape}")
    study = study or StudyIds.new()
    geometry = _plane_geometry(np.asarray(image.affine, dtype=np.float64), data.shape[2])
    stored, slope, intercept = _quantise(np.asarray(data))
    bs = tuple(float(b) for b in b_values) if role == "dwi" else (None,)
    series = _series_attributes(study, role, series_number, series_description)
    if multiframe:
        return [_enhanced(series, geometry, stored, slope, intercept, role, bs)]
    out = []
    number = 0
    for b in bs:
        for k in range(stored.shape[2]):
            number += 1
            out.append(
                _classic(
                    series,
                    geometry,
                    stored[:, :, k],
                    k,
                    number,
                    slope,
                    intercept,
                    role,
                    b,
                    b_value_tag,
                )
            )
    return out


def to_bytes(ds: Dataset) -> bytes:
    """A dataset as DICOM Part 10 bytes (preamble, file meta, explicit VR little endian)."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_series(datasets: Sequence[Dataset], folder: str | Path, prefix: str = "IM") -> list[Path]:
    """Save the datasets as ``<folder>/<prefix>0001.dcm`` ... (the folder is created)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, ds in enumerate(datasets, start=1):
        path = folder / f"{prefix}{n:04d}.dcm"
        path.write_bytes(to_bytes(ds))
        paths.append(path)
    return paths


def zip_series(datasets: Sequence[Dataset], prefix: str = "IM") -> bytes:
    """The datasets as a zip archive (members ``<prefix>0001.dcm`` ...)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for n, ds in enumerate(datasets, start=1):
            archive.writestr(f"{prefix}{n:04d}.dcm", to_bytes(ds))
    return buffer.getvalue()


# --- geometry and values -----------------------------------------------------------------


@dataclass(frozen=True)
class _Geometry:
    orientation: list[float]  # ImageOrientationPatient (row direction, column direction)
    spacing: list[float]  # PixelSpacing (between rows, between columns), mm
    positions: np.ndarray  # [K, 3] ImagePositionPatient (LPS mm) of each slice
    slice_step_mm: float  # distance between slices along the normal


def _plane_geometry(affine: np.ndarray, n_slices: int) -> _Geometry:
    lps = LPS @ affine
    col_step, row_step = lps[:3, 0], lps[:3, 1]  # along i (columns), along j (rows)
    cos = abs(col_step @ row_step) / (np.linalg.norm(col_step) * np.linalg.norm(row_step))
    if cos > _ORTHOGONAL_TOL:
        raise ValueError("the first two affine columns must be orthogonal (DICOM pixel axes)")
    row_dir = col_step / np.linalg.norm(col_step)  # IOP first triplet: along a row
    col_dir = row_step / np.linalg.norm(row_step)
    normal = np.cross(row_dir, col_dir)
    positions = (
        lps
        @ np.stack([np.zeros(n_slices), np.zeros(n_slices), np.arange(n_slices), np.ones(n_slices)])
    )[:3].T
    return _Geometry(
        orientation=[float(v) for v in (*row_dir, *col_dir)],
        spacing=[float(np.linalg.norm(row_step)), float(np.linalg.norm(col_step))],
        positions=positions,
        slice_step_mm=float(abs(lps[:3, 2] @ normal)),
    )


def _quantise(data: np.ndarray) -> tuple[np.ndarray, float, float]:
    """uint16 stored values and (slope, intercept) with data ≈ stored * slope + intercept."""
    values = data.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError("the image holds NaN or infinite values")
    lo, hi = float(values.min()), float(values.max())
    if np.array_equal(values, np.round(values)) and lo >= 0 and hi <= _UINT16_MAX:
        return values.astype(np.uint16), 1.0, 0.0
    slope = (hi - lo) / _UINT16_MAX if hi > lo else 1.0
    stored = np.clip(np.round((values - lo) / slope), 0, _UINT16_MAX).astype(np.uint16)
    return stored, float(format_number_as_ds(slope)), float(format_number_as_ds(lo))


def _ds(values) -> list[str]:
    """Decimal strings (≤ 16 characters each)."""
    return [format_number_as_ds(float(v)) for v in np.atleast_1d(values)]


# --- datasets ----------------------------------------------------------------------------


def _series_attributes(
    study: StudyIds, role: str, number: int, description: str | None
) -> dict[str, object]:
    default = {
        "dwi": "ep2d_diff_trace PHANTOM",
        "adc": "ep2d_diff_ADC PHANTOM",
        "t1": "t1_se PHANTOM",
    }[role]
    return {
        "study": study,
        "SeriesInstanceUID": generate_uid(),
        "SeriesNumber": int(number),
        "SeriesDescription": description if description is not None else default,
    }


def _common(ds: Dataset, series: dict[str, object], role: str) -> None:
    study: StudyIds = series["study"]  # type: ignore[assignment]
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study.study_instance_uid
    ds.StudyDate = study.study_date
    ds.StudyTime = study.study_time
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = study.accession_number
    ds.StudyDescription = "ASPECTS synthetic phantom"
    ds.Modality = "MR"
    ds.SeriesInstanceUID = series["SeriesInstanceUID"]
    ds.SeriesNumber = series["SeriesNumber"]
    ds.SeriesDescription = series["SeriesDescription"]
    ds.FrameOfReferenceUID = study.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "aspects_synth"
    ds.ManufacturerModelName = "phantom"
    ds.SoftwareVersions = "aspects_synth"
    ds.ContentDate = study.study_date
    ds.ContentTime = study.study_time
    ds.BodyPartExamined = "HEAD"
    ds.PatientPosition = "HFS"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.MagneticFieldStrength = "1.5"
    ds.ImagedNucleus = "1H"
    if role in ("dwi", "adc"):
        ds.ScanningSequence = "EP"
        ds.SequenceVariant = "SK"
        ds.ScanOptions = ""
        ds.RepetitionTime = "5000"
        ds.EchoTime = "90"
    else:
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.RepetitionTime = "500"
        ds.EchoTime = "15"
    ds.MRAcquisitionType = "2D"
    ds.EchoTrainLength = 1


def _file_meta(sop_class: str, sop_instance: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    return meta


def _image_type(role: str, b: float | None, enhanced: bool) -> list[str]:
    if role == "adc":
        return ["DERIVED", "PRIMARY", "DIFFUSION", "ADC"]
    if role == "t1":
        return (
            ["ORIGINAL", "PRIMARY", "T1", "NONE"] if enhanced else ["ORIGINAL", "PRIMARY", "OTHER"]
        )
    return (
        ["ORIGINAL", "PRIMARY", "DIFFUSION", "NONE"]
        if enhanced
        else ["ORIGINAL", "PRIMARY", "DIFFUSION", "TRACEW"]
    )


def _classic(
    series: dict[str, object],
    geometry: _Geometry,
    pixels: np.ndarray,
    k: int,
    number: int,
    slope: float,
    intercept: float,
    role: str,
    b: float | None,
    b_value_tag: str,
) -> Dataset:
    """One MR Image Storage instance: slice k (pixels [columns, rows]) at b-value b."""
    uid = generate_uid()
    ds = Dataset()
    ds.file_meta = _file_meta(MRImageStorage, uid)
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = uid
    _common(ds, series, role)
    ds.ImageType = _image_type(role, b, enhanced=False)
    ds.InstanceNumber = number
    ds.AcquisitionNumber = 1
    ds.ImagePositionPatient = _ds(geometry.positions[k])
    ds.ImageOrientationPatient = _ds(geometry.orientation)
    ds.PixelSpacing = _ds(geometry.spacing)
    ds.SliceThickness = _ds(geometry.slice_step_mm)[0]
    ds.SpacingBetweenSlices = _ds(geometry.slice_step_mm)[0]
    normal = np.cross(geometry.orientation[:3], geometry.orientation[3:])
    ds.SliceLocation = _ds(geometry.positions[k] @ normal)[0]
    ds.Rows, ds.Columns = int(pixels.shape[1]), int(pixels.shape[0])
    if slope != 1.0 or intercept != 0.0:
        ds.RescaleIntercept = _ds(intercept)[0]
        ds.RescaleSlope = _ds(slope)[0]
        ds.RescaleType = "US"
    if b is not None:
        if b_value_tag == "standard":
            ds.DiffusionBValue = float(b)
            ds.DiffusionDirectionality = "ISOTROPIC" if b > 0 else "NONE"
        else:
            block = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
            block.add_new(0x0C, "IS", round(b))
            block.add_new(0x0D, "CS", "NONE" if b == 0 else "ISOTROPIC")
    ds.PixelData = np.ascontiguousarray(pixels.T).astype("<u2").tobytes()
    return ds


def _enhanced(
    series: dict[str, object],
    geometry: _Geometry,
    stored: np.ndarray,
    slope: float,
    intercept: float,
    role: str,
    bs: tuple[float | None, ...],
) -> Dataset:
    """One Enhanced MR Image Storage instance holding every slice (× b-value) as frames,
    b-value-major (all slices of the first b-value, then the next)."""
    uid = generate_uid()
    ds = Dataset()
    ds.file_meta = _file_meta(EnhancedMRImageStorage, uid)
    ds.SOPClassUID = EnhancedMRImageStorage
    ds.SOPInstanceUID = uid
    _common(ds, series, role)
    for keyword in (
        "ScanningSequence",
        "SequenceVariant",
        "ScanOptions",
        "RepetitionTime",
        "EchoTime",
        "EchoTrainLength",
        "MagneticFieldStrength",
        "ImagedNucleus",
    ):
        delattr(ds, keyword)  # classic MR attributes; the enhanced IOD has its own
    ds.MagneticFieldStrength = "1.5"
    ds.ResonantNucleus = "1H"
    ds.ImageType = _image_type(role, None, enhanced=True)
    ds.InstanceNumber = 1
    ds.AcquisitionNumber = 1
    ds.AcquisitionDateTime = f"{series['study'].study_date}{series['study'].study_time}"  # type: ignore[union-attr]
    ds.ContentQualification = "RESEARCH"
    ds.PixelPresentation = "MONOCHROME"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "NONE"
    ds.ComplexImageComponent = "MAGNITUDE"
    ds.AcquisitionContrast = "DIFFUSION" if role in ("dwi", "adc") else "T1"
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.PresentationLUTShape = "IDENTITY"
    ds.KSpaceFiltering = "NONE"
    ds.ApplicableSafetyStandardAgency = "IEC"
    ds.ImageComments = "synthetic phantom"
    ds.DeviceSerialNumber = "0000"
    ds.AcquisitionContextSequence = DicomSequence()
    ds.AcquisitionDuration = 60.0
    if role == "adc":
        ds.ImageComments = "apparent diffusion coefficient map, 10^-6 mm2/s (synthetic)"
        del ds.MRAcquisitionType  # only for ORIGINAL images
    else:
        for keyword, value in _PULSE_SEQUENCE.items():
            setattr(ds, keyword, value)
        ds.PulseSequenceName = "EPI_DIFF" if role == "dwi" else "SE"
        ds.EchoPlanarPulseSequence = "YES" if role == "dwi" else "NO"
    n_slices = stored.shape[2]
    frames = [(b, k) for b in bs for k in range(n_slices)]
    ds.NumberOfFrames = len(frames)
    ds.Rows, ds.Columns = int(stored.shape[1]), int(stored.shape[0])

    # dimensions: stack position (and b-value)
    dim_uid = generate_uid()
    ds.DimensionOrganizationSequence = DicomSequence([_item(DimensionOrganizationUID=dim_uid)])
    pointers = [("InStackPositionNumber", 0x00209057, 0x00209111)]
    if role == "dwi":
        pointers.append(("DiffusionBValue", 0x00189087, 0x00189117))
    ds.DimensionIndexSequence = DicomSequence(
        [
            _item(
                DimensionOrganizationUID=dim_uid,
                DimensionIndexPointer=pointer,
                FunctionalGroupPointer=group,
                DimensionDescriptionLabel=label,
            )
            for label, pointer, group in pointers
        ]
    )

    shared = Dataset()
    shared.PixelMeasuresSequence = DicomSequence(
        [
            _item(
                PixelSpacing=_ds(geometry.spacing),
                SliceThickness=_ds(geometry.slice_step_mm)[0],
                SpacingBetweenSlices=_ds(geometry.slice_step_mm)[0],
            )
        ]
    )
    shared.PlaneOrientationSequence = DicomSequence(
        [_item(ImageOrientationPatient=_ds(geometry.orientation))]
    )
    shared.PixelValueTransformationSequence = DicomSequence(
        [_item(RescaleIntercept=_ds(intercept)[0], RescaleSlope=_ds(slope)[0], RescaleType="US")]
    )
    shared.MRImageFrameTypeSequence = DicomSequence(
        [
            _item(
                FrameType=list(ds.ImageType),
                PixelPresentation="MONOCHROME",
                VolumetricProperties="VOLUME",
                VolumeBasedCalculationTechnique="NONE",
                ComplexImageComponent="MAGNITUDE",
                AcquisitionContrast=ds.AcquisitionContrast,
            )
        ]
    )
    shared.MRTimingAndRelatedParametersSequence = DicomSequence(
        [
            _item(
                RepetitionTime=5000.0 if role != "t1" else 500.0,
                EchoTrainLength=1,
                RFEchoTrainLength=1,
                GradientEchoTrainLength=0,
                FlipAngle=90.0,
                SpecificAbsorptionRateSequence=DicomSequence(
                    [
                        _item(
                            SpecificAbsorptionRateDefinition="IEC_WHOLE_BODY",
                            SpecificAbsorptionRateValue=0.5,
                        )
                    ]
                ),
                OperatingModeSequence=DicomSequence(
                    [_item(OperatingModeType="STATIC FIELD", OperatingMode="IEC_NORMAL")]
                ),
            )
        ]
    )
    shared.FrameAnatomySequence = DicomSequence(
        [
            _item(
                AnatomicRegionSequence=DicomSequence(
                    [_item(CodeValue="12738006", CodingSchemeDesignator="SCT", CodeMeaning="Brain")]
                ),
                FrameLaterality="B",
            )
        ]
    )
    shared.MRModifierSequence = DicomSequence(
        [
            _item(
                InversionRecovery="NO",
                FlowCompensation="NONE",
                T2Preparation="NO",
                SpectrallySelectedExcitation="NONE",
                SpatialPresaturation="NONE",
                PartialFourier="NO",
                ParallelAcquisition="NO",
            )
        ]
    )
    shared.MRImagingModifierSequence = DicomSequence(
        [
            _item(
                MagnetizationTransfer="NONE",
                BloodSignalNulling="NO",
                Tagging="NONE",
                TransmitterFrequency=63.9,
                PixelBandwidth=1500.0,
            )
        ]
    )
    shared.MRReceiveCoilSequence = DicomSequence(
        [
            _item(
                ReceiveCoilName="HEAD",
                ReceiveCoilManufacturerName="",
                ReceiveCoilType="VOLUME",
                QuadratureReceiveCoil="NO",
            )
        ]
    )
    shared.MRTransmitCoilSequence = DicomSequence(
        [_item(TransmitCoilName="BODY", TransmitCoilManufacturerName="", TransmitCoilType="BODY")]
    )
    shared.MRAveragesSequence = DicomSequence([_item(NumberOfAverages=1.0)])
    if role != "adc":  # ORIGINAL images
        shared.MRFOVGeometrySequence = DicomSequence(
            [
                _item(
                    InPlanePhaseEncodingDirection="COLUMN",
                    MRAcquisitionFrequencyEncodingSteps=int(stored.shape[0]),
                    MRAcquisitionPhaseEncodingStepsInPlane=int(stored.shape[1]),
                    PercentSampling=100.0,
                    PercentPhaseFieldOfView=100.0,
                )
            ]
        )
    shared.MREchoSequence = DicomSequence([_item(EffectiveEchoTime=90.0 if role != "t1" else 15.0)])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])

    per_frame = []
    pixels = np.empty((len(frames), stored.shape[1], stored.shape[0]), dtype="<u2")
    for n, (b, k) in enumerate(frames):
        item = Dataset()
        index = [k + 1] + ([bs.index(b) + 1] if role == "dwi" else [])
        item.FrameContentSequence = DicomSequence(
            [
                _item(
                    StackID="1",
                    InStackPositionNumber=k + 1,
                    FrameAcquisitionNumber=1,
                    DimensionIndexValues=index,
                    FrameAcquisitionDateTime=ds.AcquisitionDateTime,
                    FrameReferenceDateTime=ds.AcquisitionDateTime,
                    FrameAcquisitionDuration=100.0,
                )
            ]
        )
        item.PlanePositionSequence = DicomSequence(
            [_item(ImagePositionPatient=_ds(geometry.positions[k]))]
        )
        if b is not None:
            item.MRDiffusionSequence = DicomSequence(
                [
                    _item(
                        DiffusionBValue=float(b),
                        DiffusionDirectionality="ISOTROPIC" if b > 0 else "NONE",
                    )
                ]
            )
        per_frame.append(item)
        pixels[n] = stored[:, :, k].T
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    ds.PixelData = pixels.tobytes()
    return ds


_PULSE_SEQUENCE = {  # MR Pulse Sequence module (ORIGINAL images)
    "EchoPulseSequence": "SPIN",
    "MultipleSpinEcho": "NO",
    "MultiPlanarExcitation": "NO",
    "PhaseContrast": "NO",
    "TimeOfFlightContrast": "NO",
    "SteadyStatePulseSequence": "NONE",
    "SaturationRecovery": "NO",
    "SpectrallySelectedSuppression": "FAT",
    "OversamplingPhase": "NONE",
    "GeometryOfKSpaceTraversal": "RECTILINEAR",
    "SegmentedKSpaceTraversal": "SINGLE",
    "RectilinearPhaseEncodeReordering": "LINEAR",
    "NumberOfKSpaceTrajectories": 1,
}


def _item(**attributes: object) -> Dataset:
    item = Dataset()
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return item


__all__ = [
    "StudyIds",
    "gantry_tilted",
    "series_from_image",
    "to_bytes",
    "write_series",
    "zip_series",
]
