"""Label quality control: per-frame measures, flags and the keep / flag / drop decision.

Each frame gets the measures below and a ``qc_flags`` bitmask. Flags listed in
``QCConfig.drop`` remove the frame (reported, not stored); the others are stored with it so
training code can filter on them.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.base.options import check_fields, opt

SMALL_FACE = 1  # face smaller than min_face_size pixels (in the frame)
HIGH_RESIDUAL = 2  # landmark / fit residual above max_residual
EXTREME_POSE = 4  # |yaw| or |pitch| above the limits
BLURRY = 8  # variance of the Laplacian below min_blur
LOW_SCORE = 16  # detector score below min_det_score

FLAG_NAMES = {
    SMALL_FACE: "small-face",
    HIGH_RESIDUAL: "high-residual",
    EXTREME_POSE: "extreme-pose",
    BLURRY: "blurry",
    LOW_SCORE: "low-score",
}


@dataclass(frozen=True)
class QCConfig:
    """Thresholds of the label QC. Residuals are RMS landmark error / face size."""

    min_face_size: float = opt(64.0, help="QC: flag faces smaller than this, pixels")
    max_residual: float = opt(0.06, help="QC: flag fits with a larger RMS landmark residual / face size")
    max_yaw: float = opt(45.0, help="QC: flag faces turned further (degrees)")
    max_pitch: float = opt(35.0, help="QC: flag faces tilted further (degrees)")
    min_blur: float = opt(20.0, help="QC: flag crops with a lower variance of the Laplacian")
    min_det_score: float = opt(0.6, help="QC: flag detections with a lower score")
    #: flag names that drop the frame instead of only flagging it
    drop: tuple[str, ...] = opt((), help="QC flags that drop the frame instead of only flagging it",
                                choices=lambda: sorted(FLAG_NAMES.values()))

    def __post_init__(self) -> None:
        check_fields(self)

    def drop_mask(self) -> int:
        by_name = {v: k for k, v in FLAG_NAMES.items()}
        unknown = [d for d in self.drop if d not in by_name]
        if unknown:
            raise ValueError(f"QCConfig.drop: unknown flag(s) {unknown}; valid: {sorted(by_name)}")
        mask = 0
        for d in self.drop:
            mask |= by_name[d]
        return mask


def blur_measure(crops: np.ndarray) -> np.ndarray:
    """Variance of the Laplacian of each grey crop ``(N, S, S, 3)`` uint8 → ``(N,)`` float32."""
    out = np.empty(len(crops), dtype=np.float32)
    for i, crop in enumerate(crops):
        grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
        out[i] = cv2.Laplacian(grey, cv2.CV_32F).var()
    return out


def qc_flags(
    cfg: QCConfig,
    *,
    face_size: np.ndarray,
    residual: np.ndarray,
    yaw: np.ndarray,
    pitch: np.ndarray,
    blur: np.ndarray,
    det_score: np.ndarray,
) -> np.ndarray:
    """``(N,)`` uint8 bitmask of the flags above. NaN measures (spoof frames: no fit) never flag."""
    with np.errstate(invalid="ignore"):
        flags = np.zeros(len(face_size), dtype=np.uint8)
        flags |= np.where(face_size < cfg.min_face_size, SMALL_FACE, 0).astype(np.uint8)
        flags |= np.where(residual > cfg.max_residual, HIGH_RESIDUAL, 0).astype(np.uint8)
        pose = (np.abs(yaw) > cfg.max_yaw) | (np.abs(pitch) > cfg.max_pitch)
        flags |= np.where(pose, EXTREME_POSE, 0).astype(np.uint8)
        flags |= np.where(blur < cfg.min_blur, BLURRY, 0).astype(np.uint8)
        flags |= np.where(det_score < cfg.min_det_score, LOW_SCORE, 0).astype(np.uint8)
    return flags


def describe_flags(flags: int) -> list[str]:
    return [name for bit, name in FLAG_NAMES.items() if flags & bit]
