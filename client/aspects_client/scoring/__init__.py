"""The ASPECTS score (the ``[score]`` extra: scipy): lesions from DWI (and ADC), each
region's involvement, the score and its refusals (docs/scoring.md).

``adc``: an ADC map resampled onto the DWI grid; ``contrast``: is the image DWI-like;
``lesions``: lesion masks, involvement and the score's rules; ``score``: one volume scored.
The core reaches this room only through ``aspects_client.rooms`` (never by import); the
public names below are its door (imported on first use).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "score_volume": "score",
    "Scored": "score",
    "ScoringRule": "lesions",
    "aspects_score": "lesions",
    "involvement": "lesions",
    "adc_on_grid": "adc",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
