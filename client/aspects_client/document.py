"""The contours JSON document: polygons in the ORIGINAL file's voxels and in world mm.

Schema: ``schema/contours.schema.json`` (``SCHEMA_PATH``).  Layout::

    {schema_version, source{...}, conventions{...}, midsagittal_plane{...},
     regions[...], slices[{slice_index, display_index, regions{m1{r[...], l[...]}, ...},
     areas{...}}], summary{m1{r{voxels, area_mm2, volume_ml}, l{...}}, ...}, provenance{...},
     qc{passed, flags[...], checks{asymmetry, level_consistency, outside_head}}}

``build_document`` writes everything but ``qc``, which needs the image: ``assemble`` adds it
(``aspects_client.qc.quality_control``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from . import contract
from .contours import Polygon, SliceContours
from .geometry import Geometry, apply_affine_points
from .hemisphere import MidsagittalPlane

SCHEMA_PATH = Path(__file__).with_name("schema") / "contours.schema.json"
WORLD_DECIMALS = 3

CONVENTIONS = {
    "voxel_index": "[i, j, k]: 0-based indices into the original file's data array, "
    "in nibabel (NIfTI) axis order; integer values are voxel centres",
    "world_mm": "[x, y, z]: world coordinates in mm (RAS+: x to patient right, y anterior, "
    "z superior) = source affine applied to voxel_index",
    "polygon": "closed ring of boundary-voxel centres (OpenCV CHAIN_APPROX_SIMPLE); the first "
    "point is not repeated; 'holes' are rings of the boundary voxels around each hole",
    "hemisphere": "'r' = patient right, 'l' = patient left, decided in world space by the "
    "mid-sagittal plane (never by array order)",
    "slice_index": "index along source.slice_axis of the original file",
    "display_index": "index of the slice in the canonical display stack (inferior to superior)",
}


def build_document(
    slices: list[SliceContours],
    geometry: Geometry,
    plane: MidsagittalPlane,
    *,
    source_name: str,
    provenance: dict[str, Any] | None = None,
    confidence: dict[str, dict[str, float]] | None = None,
) -> dict[str, Any]:
    """Assemble the JSON-ready document (plain dicts, lists, ints, floats, strings)."""
    to_voxel = geometry.display_to_original
    to_world = geometry.display_to_world
    pixel_mm2 = geometry.display_pixel_area_mm2
    voxel_ml = geometry.voxel_volume_mm3 / 1000.0
    totals: dict[tuple[str, str], int] = {}
    slice_entries = []
    for sc in slices:
        entry = _slice_entry(sc, geometry, to_voxel, to_world, pixel_mm2)
        for region, by_hemi in entry["areas"].items():
            for hemi, area in by_hemi.items():
                totals[(region, hemi)] = totals.get((region, hemi), 0) + area["pixels"]
        slice_entries.append(entry)
    summary = _summary_json(totals, pixel_mm2, voxel_ml, confidence)
    return {
        "schema_version": contract.SCHEMA_VERSION,
        "source": _source_json(source_name, geometry),
        "conventions": CONVENTIONS,
        "midsagittal_plane": _plane_json(plane),
        "regions": _regions_json(),
        "slices": slice_entries,
        "summary": summary,
        "provenance": provenance or {},
    }


def _slice_entry(
    sc: SliceContours,
    geometry: Geometry,
    to_voxel: np.ndarray,
    to_world: np.ndarray,
    pixel_mm2: float,
) -> dict[str, Any]:
    """One display slice: its indices, every region side's polygons and labelled areas."""
    regions: dict[str, dict[str, list]] = {
        key: {h: [] for h in contract.HEMISPHERES} for key in contract.REGION_KEYS
    }
    areas: dict[str, dict[str, dict[str, float]]] = {}
    for (region, hemi), polys in sc.polygons.items():
        regions[region][hemi] = [_polygon_json(p, sc.index, to_voxel, to_world) for p in polys]
        pixels = sc.pixels[(region, hemi)]
        areas.setdefault(region, {})[hemi] = {
            "pixels": pixels,
            "area_mm2": round(pixels * pixel_mm2, 3),
        }
    return {
        "display_index": sc.index,
        "slice_index": geometry.original_slice_index(sc.index),
        "regions": regions,
        "areas": areas,
    }


def _summary_json(
    totals: dict[tuple[str, str], int],
    pixel_mm2: float,
    voxel_ml: float,
    confidence: dict[str, dict[str, float]] | None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Every region's and hemisphere's summary entry, from the labelled voxel totals."""
    return {
        key: {
            h: _summary_entry(totals.get((key, h), 0), pixel_mm2, voxel_ml, confidence, key, h)
            for h in contract.HEMISPHERES
        }
        for key in contract.REGION_KEYS
    }


def _plane_json(plane: MidsagittalPlane) -> dict[str, Any]:
    """The mid-sagittal plane: normal, offset (mm, rounded) and how it was estimated."""
    return {
        "normal": list(plane.normal),
        "offset_mm": round(plane.offset_mm, WORLD_DECIMALS),
        "method": plane.method,
    }


def _regions_json() -> list[dict[str, Any]]:
    """The contract's regions: index, key, name and display colour."""
    return [
        {"index": r.index, "key": r.key, "name": r.name, "colour_rgb": list(r.colour_rgb)}
        for r in contract.REGIONS
    ]


def _summary_entry(
    voxels: int,
    pixel_mm2: float,
    voxel_ml: float,
    confidence: dict[str, dict[str, float]] | None,
    key: str,
    hemi: str,
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "voxels": voxels,
        "area_mm2": round(voxels * pixel_mm2, 3),
        "volume_ml": round(voxels * voxel_ml, 4),
    }
    if confidence is not None:
        entry["confidence"] = round(float(confidence.get(key, {}).get(hemi, 0.0)), 4)
    return entry


def _source_json(name: str, geometry: Geometry) -> dict[str, Any]:
    return {
        "name": name,
        "shape": list(geometry.original_shape),
        "affine": [[float(v) for v in row] for row in geometry.affine],
        "axcodes": "".join(nib.aff2axcodes(geometry.affine)),
        "voxel_sizes_mm": [
            round(float(z), 6) for z in np.linalg.norm(geometry.affine[:3, :3], axis=0)
        ],
        "slice_axis": geometry.slice_axis,
        "display_shape": list(geometry.display_shape),
    }


def _polygon_json(
    poly: Polygon, n: int, to_voxel: np.ndarray, to_world: np.ndarray
) -> dict[str, Any]:
    ring = _ring_json(poly.outer, n, to_voxel, to_world)
    ring["holes"] = [_ring_json(h, n, to_voxel, to_world) for h in poly.holes]
    return ring


def _ring_json(
    points_xy: np.ndarray, n: int, to_voxel: np.ndarray, to_world: np.ndarray
) -> dict[str, Any]:
    display = np.column_stack(
        [np.full(len(points_xy), n, dtype=np.float64), points_xy[:, 1], points_xy[:, 0]]
    )
    voxels = np.rint(apply_affine_points(to_voxel, display)).astype(np.int64)
    world = np.round(apply_affine_points(to_world, display), WORLD_DECIMALS)
    return {"voxels": voxels.tolist(), "world_mm": world.tolist()}


def dumps(document: dict[str, Any]) -> str:
    """Compact, deterministic JSON text."""
    return json.dumps(document, separators=(",", ":"), allow_nan=False)


def load_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


def validate(document: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError when the document breaks the published schema."""
    import jsonschema

    jsonschema.validate(document, load_schema(), cls=jsonschema.Draft202012Validator)
