"""The ASPECTS score (the ``[score]`` extra: scipy): lesions from DWI (and ADC), each
region's involvement, the score and its refusals (docs/scoring.md).

``adc``: an ADC map resampled onto the DWI grid; ``contrast``: is the image DWI-like;
``lesions``: lesion masks, involvement and the score's rules; ``score``: one volume scored.
The core reaches this room only through ``aspects_client.rooms`` (never by import); the
public names below are its door (imported on first use).
"""

from __future__ import annotations

from aspects_client.lazy import lazy_exports

_EXPORTS = {
    "score_volume": "score",
    "Scored": "score",
    "ScoringRule": "lesions",
    "aspects_score": "lesions",
    "involvement": "lesions",
    "adc_on_grid": "adc",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
