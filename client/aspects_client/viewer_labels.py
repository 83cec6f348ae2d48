"""The 20 region x hemisphere labels, as viewers and DICOM SEG name and colour them.

Pure data derived from ``contract`` (no numpy): label value ``contract.region_hemisphere_label``
(1..10 = m1..ic in the patient's RIGHT hemisphere, 11..20 = m1..ic in the LEFT, 0 background).
Both sides of a region carry the region's contract colour (the overlay's colour): the side is
in the name, and the two sides never touch in the image.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import contract

HEMISPHERE_WORDS: dict[str, str] = {
    contract.HEMISPHERE_RIGHT: "right",
    contract.HEMISPHERE_LEFT: "left",
}
BACKGROUND_VALUE = 0
BACKGROUND_NAME = "Background"


@dataclass(frozen=True)
class RegionHemisphereLabel:
    """One value of the 20-label map: ``region`` on the patient's ``hemisphere`` side."""

    value: int  # 1..20
    region: contract.Region
    hemisphere: str  # contract.HEMISPHERE_RIGHT / HEMISPHERE_LEFT

    @property
    def key(self) -> str:
        """``"m1_r"``: region key and hemisphere key."""
        return f"{self.region.key}_{self.hemisphere}"

    @property
    def short_name(self) -> str:
        """``"M1 right"``."""
        return f"{self.region.key.upper()} {HEMISPHERE_WORDS[self.hemisphere]}"

    @property
    def name(self) -> str:
        """``"M1 right (anterior MCA cortex)"``."""
        return f"{self.short_name} ({self.region.name})"

    @property
    def colour_rgb(self) -> tuple[int, int, int]:
        """The region's contract colour, 0..255 sRGB (both sides alike)."""
        return self.region.colour_rgb


LABELS: tuple[RegionHemisphereLabel, ...] = tuple(
    sorted(
        (
            RegionHemisphereLabel(
                contract.region_hemisphere_label(region.index, hemisphere), region, hemisphere
            )
            for hemisphere in contract.HEMISPHERES
            for region in contract.REGIONS
        ),
        key=lambda label: label.value,
    )
)
LABEL_BY_VALUE: dict[int, RegionHemisphereLabel] = {label.value: label for label in LABELS}
assert tuple(LABEL_BY_VALUE) == tuple(range(1, contract.NUM_REGION_HEMISPHERE_LABELS + 1))
