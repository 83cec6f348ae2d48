"""Viewer files for the 20-label region x hemisphere map: every format parses back, and every
label 1..20 has its region's name, the patient side and the contract's colour."""

from __future__ import annotations

import csv
import gzip
import io
import re
import shlex

import nibabel as nib
import numpy as np
import pytest

from aspects_client import contract
from aspects_client.errors import UsageError
from aspects_client.viewer_files import (
    ITKSNAP_SUFFIX,
    NIFTI_SUFFIX,
    SLICER_SUFFIX,
    TSV_SUFFIX,
    itksnap_label_description,
    label_table_tsv,
    slicer_color_table,
    viewer_files,
)

SIDE_WORDS = {contract.HEMISPHERE_RIGHT: "right", contract.HEMISPHERE_LEFT: "left"}


def expected() -> dict[int, tuple[str, str, tuple[int, int, int]]]:
    """value -> (region key, side word, colour), from the contract alone."""
    out = {}
    for hemi in contract.HEMISPHERES:
        for region in contract.REGIONS:
            value = contract.region_hemisphere_label(region.index, hemi)
            out[value] = (region.key, SIDE_WORDS[hemi], region.colour_rgb)
    return out


def check_name(name: str, value: int) -> None:
    key, side, _ = expected()[value]
    words = name.replace("_", " ")
    assert words.startswith(f"{key.upper()} {side} ("), (value, name)


def test_slicer_color_table_parses_back():
    text = slicer_color_table().decode("ascii")
    lines = text.splitlines()
    assert lines[0].startswith("# Color table file")
    rows = [line.split() for line in lines if not line.startswith("#")]
    assert all(len(r) == 6 for r in rows), "index name R G B A, names without spaces"
    table = {int(r[0]): (r[1], tuple(int(v) for v in r[2:5]), int(r[5])) for r in rows}
    assert table[0][2] == 0  # background transparent
    assert sorted(table) == list(range(21))
    for value, (_, _, colour) in expected().items():
        name, rgb, alpha = table[value]
        check_name(name, value)
        assert rgb == colour and alpha == 255
    assert re.search(r"# 21 values", text)


def test_itksnap_label_description_parses_back():
    rows = [
        shlex.split(line)
        for line in itksnap_label_description().decode("ascii").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert all(len(r) == 8 for r in rows)  # IDX R G B A VIS MSH "LABEL"
    table = {int(r[0]): r for r in rows}
    assert sorted(table) == list(range(21))
    assert float(table[0][4]) == 0.0
    for value, (_, _, colour) in expected().items():
        r = table[value]
        assert tuple(int(v) for v in r[1:4]) == colour
        assert float(r[4]) == 1.0 and r[5:7] == ["1", "1"]
        check_name(r[7], value)
        assert " " in r[7]  # the readable name, spaces kept


def test_tsv_parses_back():
    rows = list(csv.DictReader(io.StringIO(label_table_tsv().decode()), delimiter="\t"))
    assert [int(r["value"]) for r in rows] == list(range(1, 21))
    for r in rows:
        key, side, colour = expected()[int(r["value"])]
        assert (r["region"], r["hemisphere"]) == (key, side)
        assert (int(r["R"]), int(r["G"]), int(r["B"])) == colour
        check_name(r["name"], int(r["value"]))


def test_viewer_files_bundle_holds_the_label_map_unchanged():
    data = np.zeros((6, 5, 4), np.uint8)
    data.flat[:21] = np.arange(21)
    affine = np.diag([0.9, 1.1, 5.0, 1.0])
    affine[:3, 3] = (-3.0, 4.0, 7.0)
    img = nib.Nifti1Image(data, affine)
    files = viewer_files(img, "case")
    assert set(files) == {
        "case" + s for s in (NIFTI_SUFFIX, SLICER_SUFFIX, ITKSNAP_SUFFIX, TSV_SUFFIX)
    }
    back = nib.Nifti1Image.from_bytes(gzip.decompress(files["case" + NIFTI_SUFFIX]))
    assert np.array_equal(np.asanyarray(back.dataobj), data)
    assert np.allclose(back.affine, affine)


@pytest.mark.parametrize(
    "data", [np.full((2, 2, 2), 21, np.uint8), np.zeros((2, 2, 2), np.int16), np.zeros((2, 2))]
)
def test_not_a_region_map_is_refused(data):
    with pytest.raises(UsageError, match="region"):
        viewer_files(nib.Nifti1Image(data, np.eye(4)), "case")


def test_stem_with_a_directory_is_refused():
    img = nib.Nifti1Image(np.zeros((2, 2, 2), np.uint8), np.eye(4))
    with pytest.raises(UsageError, match="stem"):
        viewer_files(img, "a/b")
