"""Synthetic DWI phantoms with exact ASPECTS labels (numpy + nibabel only).

Built from the ASPECTS atlas and the MNI152 FAST segmentation shipped in the rapidtide
wheel (Apache-2.0), downloaded once into a cache; see ``atlas``.
"""

from .atlas import Atlas, AtlasUnavailableError, ensure_atlas, load_atlas, verify_cache
from .phantom import Phantom, make_phantom
from .voxel_order import VOXEL_ORDERS, reorder

__all__ = [
    "VOXEL_ORDERS",
    "Atlas",
    "AtlasUnavailableError",
    "Phantom",
    "ensure_atlas",
    "load_atlas",
    "make_phantom",
    "reorder",
    "verify_cache",
]

# Known-answer stroke cases (issue 14; torch): imported on first use, so that importing
# aspects_synth stays numpy + nibabel only.
_LAZY = {
    "LesionCase": "lesion_cases",
    "render_lesion_case": "lesion_cases",
    "voxel_ml": "lesion_cases",
    "SCORE_SEED_START": "lesion_cases",
}
__all__ += list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
