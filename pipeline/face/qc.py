"""Label quality control: per-frame measures, flags and the keep / flag / drop decision.

Each frame gets the measures below and a ``qc_flags`` bitmask. Flags listed in
``QCConfig.drop`` remove the frame (reported, not stored); the others are stored with it, and
training leaves flagged frames out unless asked to keep them (``depthseg.data.FrameDataset``,
``--include-flagged``).

Live and spoof frames must pass the same gates, or pose and image quality become a shortcut for
"spoof" (spoof frames are never fitted). So the pose and landmark checks that decide most bad
labels use only the detector and the landmarks (:mod:`pipeline.face.confirm`), never the fit:

* ``extreme-pose``: the fit-independent yaw (``qc/pose_yaw``, from the detector keypoints) beyond
  ``max_pose_yaw``. It follows the true yaw to about 40 deg and saturates near 50 deg, so the
  default 40 flags heads turned more than about 50 deg (where dlib's semi-frontal landmarks, and
  so the labels, go wrong: bench/bench_detect.py).
* ``landmark-mismatch``: the landmarks' eyes / nose / mouth far from the detector's keypoints
  (``qc/landmark_mismatch`` > ``max_landmark_mismatch`` of the face size): the landmark
  backend lost the face (profiles, occlusion), whatever the fit residual says.

* ``border-cut``: more than ``max_face_outside`` of the face lies beyond the frame
  (``qc/face_outside``: the larger of the fractions of the landmarks' box and of the detector's
  box outside the image). The hidden part has no pixels and no depth label, and its landmarks
  are guesses that steer the fit of the part that shows (bench/bench_labels.py: border cuts had
  a median |depth difference| of 0.12, and 71% of the bad ones raised no other flag).

``high-residual`` and ``fit-pose`` (the fitted yaw / pitch beyond ``max_yaw`` / ``max_pitch``, or
the fitted yaw more than ``max_pose_disagreement`` from ``pose_yaw``) exist for fitted (live /
unknown) frames only: they catch bad fits the other gates miss, at the price of a live-only
removal that the per-class drop rates of the training log make visible.
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
LANDMARK_MISMATCH = 32  # landmarks disagree with the detector's keypoints
FIT_POSE = 64  # fitted pose extreme, or far from the fit-independent yaw (fitted frames only)
BORDER_CUT = 128  # a part of the face beyond the frame

FLAG_NAMES = {
    SMALL_FACE: "small-face",
    HIGH_RESIDUAL: "high-residual",
    EXTREME_POSE: "extreme-pose",
    BLURRY: "blurry",
    LOW_SCORE: "low-score",
    LANDMARK_MISMATCH: "landmark-mismatch",
    FIT_POSE: "fit-pose",
    BORDER_CUT: "border-cut",
}


@dataclass(frozen=True)
class QCConfig:
    """Thresholds of the label QC (module docstring). Residuals are RMS landmark error / face
    size. ``confirm``: faces must pass :func:`pipeline.face.confirm.confirm_face` before they are
    fitted and stored (else they count as no face)."""

    min_face_size: float = opt(64.0, help="QC: flag faces smaller than this, pixels")
    max_residual: float = opt(0.06, help="QC: flag fits with a larger RMS landmark residual / face size")
    max_yaw: float = opt(45.0, help="QC: flag faces turned further (degrees)")
    max_pitch: float = opt(35.0, help="QC: flag faces tilted further (degrees)")
    min_blur: float = opt(20.0, help="QC: flag crops with a lower variance of the Laplacian")
    min_det_score: float = opt(0.6, help="QC: flag detections with a lower score")
    max_pose_yaw: float = opt(40.0, help="QC: flag faces whose fit-free yaw (detector keypoints) is larger (degrees)")
    max_landmark_mismatch: float = opt(0.15, help="QC: flag faces whose landmarks and detector keypoints "
                                                   "disagree by more (mean distance / face size)")
    max_pose_disagreement: float = opt(25.0, help="QC: flag fits whose yaw differs more from the fit-free yaw (degrees)")
    max_face_outside: float = opt(0.1, help="QC: flag faces with a larger fraction of their box beyond the frame")
    confirm: bool = opt(True, help="re-detect each face on its crop before fitting; unconfirmed faces count as no face")
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


def face_outside(landmarks: np.ndarray, bbox: np.ndarray, frame_hw: np.ndarray) -> np.ndarray:
    """``(N,)`` float32: the larger of the fractions of the landmarks' box and of the detector
    box ``(x0, y0, x1, y1)`` that lie beyond their ``(H, W)`` frame (frame pixels; the image
    covers ``[-0.5, W - 0.5] x [-0.5, H - 0.5]``). Both boxes, because the landmarks of a cut
    face may lie beyond the edge or be pulled onto it, and the detector's box may show the cut
    where they do not; a degenerate box counts as inside."""
    lm = np.asarray(landmarks, dtype=np.float64)
    boxes = np.stack([np.concatenate([lm.min(axis=1), lm.max(axis=1)], axis=1),
                      np.asarray(bbox, dtype=np.float64)])  # (2, N, 4)
    hw = np.asarray(frame_hw, dtype=np.float64)
    lo, hi = np.full(2, -0.5), np.stack([hw[:, 1], hw[:, 0]], axis=1) - 0.5  # (2,), (N, 2)
    size = boxes[..., 2:] - boxes[..., :2]
    kept = np.clip(np.minimum(boxes[..., 2:], hi) - np.maximum(boxes[..., :2], lo), 0.0, None)
    area = size.prod(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        outside = np.where(area > 0, 1.0 - kept.prod(axis=-1) / area, 0.0)
    return np.nan_to_num(outside.max(axis=0), nan=0.0).astype(np.float32)


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
    pose_yaw: np.ndarray | None = None,
    landmark_mismatch: np.ndarray | None = None,
    face_outside: np.ndarray | None = None,
) -> np.ndarray:
    """``(N,)`` uint8 bitmask of the flags above. NaN measures (spoof frames: no fit; detectors
    without keypoints: no mismatch) never flag. ``yaw`` / ``pitch`` are the fitted pose,
    ``pose_yaw`` the fit-independent yaw (module docstring)."""
    n = len(face_size)
    pose_yaw = np.full(n, np.nan) if pose_yaw is None else np.asarray(pose_yaw)
    landmark_mismatch = np.full(n, np.nan) if landmark_mismatch is None else np.asarray(landmark_mismatch)
    face_outside = np.full(n, np.nan) if face_outside is None else np.asarray(face_outside)

    def bit(cond: np.ndarray, flag: int) -> np.ndarray:
        return np.where(cond, flag, 0).astype(np.uint8)

    with np.errstate(invalid="ignore"):
        flags = np.zeros(n, dtype=np.uint8)
        flags |= bit(face_size < cfg.min_face_size, SMALL_FACE)
        flags |= bit(residual > cfg.max_residual, HIGH_RESIDUAL)
        flags |= bit(np.abs(pose_yaw) > cfg.max_pose_yaw, EXTREME_POSE)
        fit_pose = (np.abs(yaw) > cfg.max_yaw) | (np.abs(pitch) > cfg.max_pitch)
        fit_pose |= np.abs(yaw - pose_yaw) > cfg.max_pose_disagreement
        flags |= bit(fit_pose, FIT_POSE)
        flags |= bit(blur < cfg.min_blur, BLURRY)
        flags |= bit(det_score < cfg.min_det_score, LOW_SCORE)
        flags |= bit(landmark_mismatch > cfg.max_landmark_mismatch, LANDMARK_MISMATCH)
        flags |= bit(face_outside > cfg.max_face_outside, BORDER_CUT)
    return flags


def describe_flags(flags: int) -> list[str]:
    return [name for bit, name in FLAG_NAMES.items() if flags & bit]
