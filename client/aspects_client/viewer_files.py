"""Files that let 3D Slicer and ITK-SNAP show the 20-label region x hemisphere map with the
ASPECTS names and colours (``viewer_labels``).

* ``<stem>_regions.nii.gz``: the label map (uint8, source grid; 1..10 right, 11..20 left).
* ``<stem>_regions.ctbl``: a 3D Slicer colour table (``# Color table file`` header, then
  ``index name R G B A`` lines; names without spaces, as Slicer's reader requires). In
  Slicer: load the table (Add data), then pick it as the label map's lookup table.
* ``<stem>_regions.itksnap.txt``: an ITK-SNAP label description file (``IDX -R- -G- -B-
  -A-- VIS MSH LABEL``, quoted names). In ITK-SNAP: Segmentation > Import Label
  Descriptions.
* ``<stem>_regions.tsv``: the same table for other tools (value, key, region, hemisphere,
  name, R, G, B).

Pure functions returning bytes; writing them is ``outputs``' job.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np

from . import contract
from .errors import UsageError
from .labelmap import label_map_bytes
from .outputs import ITKSNAP_SUFFIX, SLICER_SUFFIX, TSV_SUFFIX
from .outputs import REGIONS_NIFTI_SUFFIX as NIFTI_SUFFIX
from .viewer_labels import BACKGROUND_NAME, BACKGROUND_VALUE, HEMISPHERE_WORDS, LABELS

TABLE_TITLE = "ASPECTS regions x hemisphere (1-10 patient right, 11-20 patient left)"


def slicer_color_table() -> bytes:
    """The 3D Slicer ``.ctbl`` colour table: background (transparent) and the 20 labels."""
    lines = [
        f"# Color table file {TABLE_TITLE}",
        f"# {len(LABELS) + 1} values",
        f"{BACKGROUND_VALUE} {BACKGROUND_NAME} 0 0 0 0",
    ]
    for label in LABELS:
        r, g, b = label.colour_rgb
        lines.append(f"{label.value} {_slicer_name(label.name)} {r} {g} {b} 255")
    return ("\n".join(lines) + "\n").encode("ascii")


def itksnap_label_description() -> bytes:
    """The ITK-SNAP label description file: clear label 0 and the 20 labels, visible."""
    lines = [
        "################################################",
        "# ITK-SnAP Label Description File",
        f"# {TABLE_TITLE}",
        "# File format:",
        "# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL",
        "# Fields:",
        "#    IDX:   Zero-based index",
        "#    -R-:   Red color component (0..255)",
        "#    -G-:   Green color component (0..255)",
        "#    -B-:   Blue color component (0..255)",
        "#    -A-:   Label transparency (0.00 .. 1.00)",
        "#    VIS:   Label visibility (0 or 1)",
        "#    MSH:   Label mesh visibility (0 or 1)",
        "#  LABEL:   Label description",
        "################################################",
        f'{0:5d} {0:5d} {0:4d} {0:4d} {0:8g} {0:2d} {0:2d}    "Clear Label"',
    ]
    for label in LABELS:
        r, g, b = label.colour_rgb
        lines.append(
            f'{label.value:5d} {r:5d} {g:4d} {b:4d} {1:8g} {1:2d} {1:2d}    "{label.name}"'
        )
    return ("\n".join(lines) + "\n").encode("ascii")


def label_table_tsv() -> bytes:
    """A tab-separated table with a header row: value, key, region, hemisphere, name, R, G, B."""
    rows = ["value\tkey\tregion\themisphere\tname\tR\tG\tB"]
    for label in LABELS:
        r, g, b = label.colour_rgb
        rows.append(
            f"{label.value}\t{label.key}\t{label.region.key}\t"
            f"{HEMISPHERE_WORDS[label.hemisphere]}\t{label.name}\t{r}\t{g}\t{b}"
        )
    return ("\n".join(rows) + "\n").encode("ascii")


def viewer_files(region_image: nib.Nifti1Image, stem: str) -> dict[str, bytes]:
    """``{file name: bytes}`` for the 20-label map and its Slicer, ITK-SNAP and TSV tables.

    region_image: uint8 NIfTI with values 0..20 (``SegmentationResult.region_image``);
    stem: the file-name stem (no directory), e.g. ``"case"`` -> ``case_regions.nii.gz``.
    Raises UsageError for another data type, values above 20, or an empty stem.
    """
    if not isinstance(stem, str) or not stem or "/" in stem or "\\" in stem:
        raise UsageError(f"stem must be a non-empty file-name stem without a directory: {stem!r}")
    check_region_image(region_image)
    return {
        stem + NIFTI_SUFFIX: label_map_bytes(region_image),
        stem + SLICER_SUFFIX: slicer_color_table(),
        stem + ITKSNAP_SUFFIX: itksnap_label_description(),
        stem + TSV_SUFFIX: label_table_tsv(),
    }


def check_region_image(region_image: nib.Nifti1Image) -> np.ndarray:
    """The uint8 [X, Y, Z] data of a 20-label region x hemisphere map; UsageError if it is
    not one (not 3D, not uint8, or a value above 20)."""
    if not isinstance(region_image, nib.Nifti1Image):
        raise UsageError(
            f"expected the 20-label region map (a nibabel Nifti1Image), got "
            f"{type(region_image).__name__}; pass SegmentationResult.region_image"
        )
    data = np.asanyarray(region_image.dataobj)
    top = contract.NUM_REGION_HEMISPHERE_LABELS
    if data.ndim != 3 or data.dtype != np.uint8 or (data.size and int(data.max()) > top):
        raise UsageError(
            f"expected a 3D uint8 map with values 0..{top} (region x hemisphere), got "
            f"{data.ndim}D {data.dtype}; pass SegmentationResult.region_image"
        )
    return data


def _slicer_name(name: str) -> str:
    """Slicer's .ctbl names cannot hold spaces: ``M1_right_(anterior_MCA_cortex)``."""
    return "_".join(name.replace(",", "").split())
