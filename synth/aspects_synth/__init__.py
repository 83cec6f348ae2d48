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
