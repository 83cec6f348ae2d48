"""One segmentation request, validated once: what the CLI, the asyncio API and
``AspectsClient.segment()`` share.

    request = SegmentRequest.build("case/dwi.nii.gz", score=True, priority="urgent")
    result = client.segment(request=request)
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from . import rooms
from .errors import UsageError
from .inference import check_priority
from .sources import Source
from .validators import check_seconds


@dataclass(frozen=True)
class SegmentRequest:
    """What to segment and how.

    ``source`` / ``adc``: :class:`Source` (classified once); ``score``: also compute the
    lesion map, involvement and ASPECTS score (implied by ``adc``); ``adc_scale``: the ADC's
    unit factor to 10^-6 mm^2/s when it cannot be detected; ``rule``: a
    ``aspects_client.scoring.lesions.ScoringRule`` (None: the contract's); ``priority``:
    "urgent" | "batch" (None: the client's ``InferenceSettings.priority``); ``series``: the
    DICOM series (SeriesNumber or SeriesInstanceUID); ``volume_index``: the volume of a 4D
    NIfTI; ``request_id``: sent with every gRPC request; ``deadline_s``: the whole volume's
    deadline counted from the ``segment()`` call — download, DICOM reading, inference and
    everything after (None: ``InferenceSettings.deadline_s``).
    """

    source: Source
    adc: Source | None = None
    score: bool = False
    adc_scale: float | None = None
    rule: Any = None
    priority: str | None = None
    series: str | int | None = None
    volume_index: int | None = None
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    deadline_s: float | None = None

    def __post_init__(self) -> None:
        if self.priority is not None:  # refused before any work
            check_priority(self.priority, "priority")
        if not isinstance(self.source, Source):
            raise UsageError("source must be a Source; build requests with SegmentRequest.build")
        if self.source.is_dicom and self.volume_index is not None:
            raise UsageError("volume_index is for 4D NIfTI; choose a DICOM series with series=")
        if self.series is not None and not self.source.is_dicom:
            raise UsageError("series= chooses a DICOM series; the source is not DICOM")
        if not isinstance(self.request_id, str) or not self.request_id:
            raise UsageError(f"request_id must be a non-empty string, got {self.request_id!r}")
        if self.deadline_s is not None:
            check_seconds(self.deadline_s, "deadline_s (--deadline)")
        if self.source.is_dicom or (self.adc is not None and self.adc.is_dicom):
            rooms.require("dicom")
        if self.wants_score:
            rooms.require("score")

    @classmethod
    def build(
        cls, source: Any, *, name: str | None = None, adc: Any = None,
        request_id: str | None = None, **options: Any,
    ) -> SegmentRequest:
        """A request from plain values: ``source`` and ``adc`` as ``segment()`` takes them,
        ``name`` (what the result records), the other fields as keywords."""
        if options.get("priority") is not None:  # the cheapest check first, as always
            check_priority(options["priority"], "priority")
        src = Source.of(source, name)
        adc_source = None if adc is None else Source.of(adc, what="adc")
        rid = {"request_id": request_id} if request_id else {}
        return cls(source=src, adc=adc_source, **rid, **options)

    @property
    def wants_score(self) -> bool:
        """Scoring asked for (``score``, or an ADC given)."""
        return bool(self.score) or self.adc is not None
