"""Is it a face? Fit-independent checks of a detection and its landmarks, and a pose estimate.

A detector alone stores faces in frames that have none: BlazeFace finds a "face" with score
>= 0.5 in about one smoothed-noise texture frame in seven (bench/bench_detect.py), and dlib's
shape predictor then draws a perfectly plausible 68-point face into the box (it regresses from
the mean shape, so landmark plausibility alone says nothing). Two independent checks decide
(:func:`confirm_faces`), before a face is fitted and stored:

* **Re-detection.** The detector is run again on square crops around the box at three context
  margins (:data:`CONFIRM_MARGINS`, at :data:`CONFIRM_SIZE` px, where the face is large and
  sharp). A face is found again, confidently, at the same place in each: IoU >=
  :data:`CONFIRM_MIN_IOU` with the box, score >= the detector's ``confirm_score`` (BlazeFace:
  0.75; other backends: their threshold) and keypoints within :data:`CONFIRM_MAX_DRIFT` of the
  face size of the original ones. Measured (bench/bench_detect.py frames): faces re-detected at
  0.81-0.98 (frontal to 45 deg, 40-60 px faces, beside a hand), keypoint drift <= 0.14; texture
  detections that pass the IoU test score 0.5-0.89 at one margin but rarely >= 0.75 at all, and
  their keypoints drift (0.14-0.8); the third, tight margin (1.3) removed half of the textures
  that passed two (bench: 2 -> 1 stored frame in 500 textures). Heads turned past about 60 deg re-detect at 0.55-0.75 and
  may be rejected: their labels are wrong anyway (dlib's landmarks leave the face).
* **Keypoints against landmarks.** Detectors that give keypoints (BlazeFace: eyes, nose, mouth,
  ears) must agree with the same points taken from the 68 landmarks: mean distance over eyes,
  nose and mouth below :data:`CONFIRM_MAX_MISMATCH` of the face size. Texture detections
  disagree (median 0.17), faces agree (|yaw| <= 30: <= 0.09). Heads turned 45 deg and more
  disagree too (0.23-0.46: dlib's semi-frontal landmarks slide off the face): they are faces
  with bad labels, so the *confirmation* threshold is loose (a gross disagreement only) and the
  QC flag ``landmark-mismatch`` (:mod:`pipeline.face.qc`, 0.15) is the tight one: such frames
  are stored flagged, not counted as no face.

:func:`keypoint_mismatch` and :func:`pose_yaw` are the per-frame QC measures; they use only the
detector and the landmarks, never the 3D fit, so live and spoof frames get the same ones.
``pose_yaw`` is the head yaw from the detector keypoints (nose offset from the eye midpoint over
the inter-ocular distance, ``atan2(offset, 0.5 * iod)``; measured on rendered heads it follows
the true yaw to 30 deg and saturates at about +-50 deg at profile) or, without keypoints, the
same formula on the landmarks (which saturates earlier: dlib stays semi-frontal).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from pipeline.base.types import FaceBox
from pipeline.face.crop import invert_affine, square_affine, transform_points
from pipeline.face.detect import detect_batch

#: context margins (crop side / box side) of the two re-detections
CONFIRM_MARGINS = (1.3, 1.6, 2.2)
#: side of the re-detection crops, pixels
CONFIRM_SIZE = 160
#: a re-detected box must overlap the original by this IoU (in frame pixels)
CONFIRM_MIN_IOU = 0.4
#: re-detected keypoints may move by at most this fraction of the face size
CONFIRM_MAX_DRIFT = 0.2
#: keypoint / landmark mean distance (fraction of the face size) above which a detection is no face
CONFIRM_MAX_MISMATCH = 0.4


def landmark_keypoints(landmarks: np.ndarray) -> np.ndarray:
    """``(..., 68, 2)`` iBUG landmarks -> ``(..., 4, 2)`` right eye, left eye, nose tip, mouth centre
    (BlazeFace's first four keypoints, :data:`pipeline.base.types.KEYPOINT_NAMES`)."""
    lm = np.asarray(landmarks, dtype=np.float64)
    return np.stack([lm[..., 36:42, :].mean(-2), lm[..., 42:48, :].mean(-2), lm[..., 30, :],
                     lm[..., 48:68, :].mean(-2)], -2)


def keypoint_mismatch(landmarks: np.ndarray, keypoints: np.ndarray, face_size: np.ndarray) -> np.ndarray:
    """Mean distance of the detector's eyes / nose / mouth keypoints ``(N, >=4, 2)`` to the same
    points of the landmarks ``(N, 68, 2)``, over the face size ``(N,)`` -> ``(N,)`` float32
    (NaN where the keypoints are NaN: a detector without keypoints)."""
    kp = np.asarray(keypoints, dtype=np.float64)[..., :4, :]
    d = np.linalg.norm(landmark_keypoints(landmarks) - kp, axis=-1).mean(-1)
    return (d / np.maximum(np.asarray(face_size, np.float64), 1e-6)).astype(np.float32)


def _yaw(right_eye: np.ndarray, left_eye: np.ndarray, nose: np.ndarray) -> np.ndarray:
    mid = (right_eye + left_eye) / 2
    iod = np.linalg.norm(left_eye - right_eye, axis=-1)
    return np.degrees(np.arctan2(nose[..., 0] - mid[..., 0], 0.5 * iod))


def pose_yaw(landmarks: np.ndarray, keypoints: np.ndarray | None = None) -> np.ndarray:
    """Fit-independent head yaw in degrees ``(N,)`` float32 (positive: nose towards image right),
    from the keypoints where they are finite, else from the landmarks (module docstring)."""
    from_lm = _yaw(*np.moveaxis(landmark_keypoints(landmarks)[..., :3, :], -2, 0))
    if keypoints is None:
        return from_lm.astype(np.float32)
    kp = np.asarray(keypoints, dtype=np.float64)
    from_kp = _yaw(kp[..., 0, :], kp[..., 1, :], kp[..., 2, :])
    return np.where(np.isfinite(from_kp), from_kp, from_lm).astype(np.float32)


def fit_free_measures(landmarks: np.ndarray, keypoints: np.ndarray, face_size: np.ndarray) -> dict[str, np.ndarray]:
    """The per-frame QC measures that do not use the fit: ``pose_yaw`` (degrees) and
    ``landmark_mismatch`` (NaN without keypoints), ``(N,)`` float32 each, from ``(N, 68, 2)``
    landmarks, ``(N, K, 2)`` keypoints (NaN rows: none) and ``(N,)`` face sizes."""
    return {"pose_yaw": pose_yaw(landmarks, keypoints),
            "landmark_mismatch": keypoint_mismatch(landmarks, keypoints, face_size)}


def keypoints_array(boxes: Sequence[FaceBox], k: int = 6) -> np.ndarray:
    """``(N, k, 2)`` float32 keypoints of ``boxes``, NaN for boxes without them."""
    out = np.full((len(boxes), k, 2), np.nan, np.float32)
    for i, b in enumerate(boxes):
        if b.keypoints is not None:
            n = min(k, len(b.keypoints))
            out[i, :n] = b.keypoints[:n]
    return out


def redetected(detector, image: np.ndarray, box: FaceBox) -> bool:
    """True when ``detector`` finds ``box`` again in crops around it at every margin of
    :data:`CONFIRM_MARGINS`: IoU >= :data:`CONFIRM_MIN_IOU`, score >= the detector's
    ``confirm_score`` (else its threshold) and, with keypoints, keypoints within
    :data:`CONFIRM_MAX_DRIFT` of the face size of the box's own."""
    min_score = float(getattr(detector, "confirm_score", getattr(detector, "threshold", -np.inf)))
    cx, cy = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
    affines = [square_affine(cx, cy, m * max(box.width, box.height), CONFIRM_SIZE) for m in CONFIRM_MARGINS]
    crops = [cv2.warpAffine(image, a, (CONFIRM_SIZE, CONFIRM_SIZE), flags=cv2.INTER_AREA, borderValue=0)
             for a in affines]
    for a, boxes in zip(affines, detect_batch(detector, crops)):
        inv = invert_affine(a)
        if not any(_same_face(b, inv, box) for b in boxes if b.score >= min_score):
            return False
    return True


def _same_face(found: FaceBox, inv: np.ndarray, box: FaceBox) -> bool:
    """``found`` (crop pixels; ``inv`` maps them to the frame) is ``box`` again."""
    p = transform_points(inv, np.array([[found.x0, found.y0], [found.x1, found.y1]], np.float32))
    if FaceBox(p[0, 0], p[0, 1], p[1, 0], p[1, 1]).iou(box) < CONFIRM_MIN_IOU:
        return False
    if found.keypoints is None or box.keypoints is None:
        return True
    kp = transform_points(inv, found.keypoints[:4].astype(np.float32))
    return float(np.linalg.norm(kp - box.keypoints[:4], axis=1).mean()) <= CONFIRM_MAX_DRIFT * box.size


def confirm_face(detector, image: np.ndarray, box: FaceBox, landmarks: np.ndarray) -> str | None:
    """None when the face ``box`` (with its ``(68, 2)`` landmarks) of ``image`` is confirmed, else
    the reason it is not: ``"keypoints"`` (detector keypoints far from the landmarks) or
    ``"redetect"`` (not found again around itself). Compute only (runs the detector)."""
    if box.keypoints is not None:
        kp = keypoints_array([box])
        if float(keypoint_mismatch(landmarks[None], kp, np.array([box.size]))[0]) > CONFIRM_MAX_MISMATCH:
            return "keypoints"
    if not redetected(detector, image, box):
        return "redetect"
    return None


__all__ = [
    "CONFIRM_MARGINS",
    "CONFIRM_MAX_DRIFT",
    "CONFIRM_MAX_MISMATCH",
    "CONFIRM_MIN_IOU",
    "CONFIRM_SIZE",
    "confirm_face",
    "fit_free_measures",
    "keypoint_mismatch",
    "keypoints_array",
    "landmark_keypoints",
    "pose_yaw",
    "redetected",
]
