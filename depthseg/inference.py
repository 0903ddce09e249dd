"""Prediction on raw media: run the preprocessing stages on an image or video, then the model.

The decision rule is the checkpoint's: score >= dev threshold -> live (bona fide).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.io.items import WorkItem
from pipeline.run.engines import get_engines
from pipeline.run.stages import extract_faces
from pipeline.run.timing import StageTimer

from .predict import predict_crops

log = logging.getLogger(__name__)


@dataclass
class MediaPrediction:
    path: str
    score: float  # mean frame score (the video score); high = live
    threshold: float  # the checkpoint's dev threshold used for the decision
    decision: str  # "live" | "spoof" | "undecided" (no threshold in the checkpoint)
    frame_scores: np.ndarray  # (N,)
    frame_index: np.ndarray  # (N,) source frame indices
    depth: np.ndarray  # (N, L, L) predicted expected depth in [0, 1]
    crops: np.ndarray  # (N, S, S, 3) uint8 face crops fed to the model
    frames_no_face: int


def predict_media(model, meta: dict, path: str, preprocess_cfg, *, batch_size: int = 32) -> MediaPrediction:
    """Detect, crop and score every sampled frame of ``path`` (an image, image folder or video)."""
    faces, counts = extract_faces(WorkItem(path=str(path)), preprocess_cfg, get_engines(preprocess_cfg), StageTimer())
    crops = faces.image
    pred = predict_crops(model, crops, batch_size=batch_size)
    score = float(np.mean(pred.scores))
    thresholds = meta.get("thresholds") or {}
    n = len(crops)
    thr = thresholds.get("video" if n > 1 else "frame", meta.get("threshold", math.nan))
    thr = float(thr) if thr is not None else math.nan
    decision = "undecided" if not math.isfinite(thr) else ("live" if score >= thr else "spoof")
    return MediaPrediction(str(path), score, thr, decision, pred.scores, faces.frame_index,
                           pred.depth, crops, counts.no_face)


def depth_panel(pred: MediaPrediction, max_frames: int = 8) -> np.ndarray:
    """An RGB uint8 panel: face crops (top row) over their predicted depth maps (bottom row)."""
    n = min(len(pred.crops), max_frames)
    s = pred.crops.shape[1]
    cols = []
    for i in range(n):
        d = (np.clip(pred.depth[i], 0, 1) * 255).astype(np.uint8)
        d = cv2.resize(d, (s, s), interpolation=cv2.INTER_NEAREST)
        cols.append(np.concatenate([pred.crops[i], np.repeat(d[..., None], 3, axis=2)], axis=0))
    return np.concatenate(cols, axis=1)
