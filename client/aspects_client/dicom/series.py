"""The result of DICOM input: a series as a volume (``DicomSeries``) and the DWI with its
ADC (``DicomStudy``).  Nothing here imports pydicom or nibabel (annotations only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import nibabel as nib
    from pydicom.dataset import Dataset


@dataclass(frozen=True)
class DicomSeries:
    """One image series read from DICOM, as a volume in the instances' own pixel grid.

    image: float32 3D NIfTI [columns, rows, K]: voxel (i, j, k) = pixel (column i, row j)
    of the k-th frame in slice order (k increasing along the normal of the image plane);
    affine voxel -> world RAS+ mm (DICOM's LPS with x, y negated); sform (and qform unless
    sheared) code 'scanner'; values after Rescale Slope/Intercept.
    datasets: the instances that hold the frames (pixel data kept), in first-use order.
    frames: frames[k] = (index into ``datasets``, 1-based frame number) of slice k.
    role: "dwi" or "adc"; b_value: the selected b-value (s/mm²) for DWI, None for ADC.
    """

    image: nib.Nifti1Image
    datasets: tuple[Dataset, ...]
    frames: tuple[tuple[int, int], ...]
    role: str
    b_value: float | None
    series_instance_uid: str
    frame_of_reference_uid: str

    @property
    def series_number(self) -> int | None:
        value = self.datasets[0].get("SeriesNumber")
        return None if value in (None, "") else int(value)

    @property
    def series_description(self) -> str:
        return str(self.datasets[0].get("SeriesDescription", "") or "")


@dataclass(frozen=True)
class DicomStudy:
    """The DWI series and, when the input holds one of the same study, the ADC series."""

    dwi: DicomSeries
    adc: DicomSeries | None


__all__ = ["DicomSeries", "DicomStudy"]
