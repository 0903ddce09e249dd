"""The face stage's options: which detector and landmarker a run uses, and the detector's thresholds.

One group of :class:`~pipeline.run.config.PreprocessConfig` (flat names ``detector``,
``landmarks``, ``score_threshold``, ``min_face_size``). The backends' own settings
(:class:`~pipeline.face.detect.DetectorConfig`, :class:`~pipeline.face.landmarks.LandmarkConfig`)
hold more (pick rule, batch sizes, backend options); their defaults are these options' defaults,
and the choices are the registries' names, read when asked (no backend is imported for them).
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.base.options import check_fields, opt
from pipeline.face.detect import DETECTORS, DetectorConfig
from pipeline.face.landmarks import LANDMARKERS, LandmarkConfig


@dataclass(frozen=True)
class DetectConfig:
    """Detection and landmark backends of a preprocess run."""

    detector: str = opt(DetectorConfig.name, help="face detector", choices=DETECTORS.names)
    landmarks: str = opt(LandmarkConfig.name, help="68-point landmark detector", choices=LANDMARKERS.names)
    score_threshold: float | None = opt(DetectorConfig.score_threshold,
                                        help="detector score threshold (none: the detector's own)")
    min_face_size: float = opt(DetectorConfig.min_face_size, ge=0,
                               help="smallest face box side the detector keeps, pixels "
                                    "(faces under qc_min_face_size are stored flagged)")

    def __post_init__(self) -> None:
        check_fields(self)
