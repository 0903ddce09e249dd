"""Prediction on raw media: the public inference API.

:class:`Predictor` runs what preprocessing does to a video (decode, sample, detect the face,
landmarks, crop at the model's input size) and then the model, and returns a
:class:`MediaPrediction`::

    from depthseg import Predictor
    predictor = Predictor.from_checkpoint("runs/sample/train/best.pt", device="cpu")
    result = predictor.predict_image("face.jpg")      # or an (H, W, 3) uint8 RGB array
    result = predictor.predict_video("clip.mp4")      # a video or a folder of frames
    result.score, result.decision, result.frame_scores, result.depth   # what it holds

The decision rule is the checkpoint's: score >= dev threshold -> live (bona fide); the frame
threshold for a single face frame, the video threshold for the mean of several frames (the
video score). A checkpoint trained without a dev set has no threshold: decision "undecided".
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

import storage
from pipeline.base.errors import ConfigError, NoFaceDetected, UnsupportedInput
from pipeline.base.types import Frame
from pipeline.face.batch import FaceBatch
from pipeline.face.detect import detect_batch
from pipeline.io.frames import is_image_path
from pipeline.io.items import WorkItem
from pipeline.run.config import PreprocessConfig
from pipeline.run.engines import get_engines
from pipeline.run.stages import FrameCounts, extract_faces, frame_face
from pipeline.run.timing import StageTimer

from .predict import predict_crops
from .trainer import load_checkpoint, store_face_settings

log = logging.getLogger(__name__)


def _training_face_settings(meta: dict) -> dict:
    """The face settings of the store a checkpoint was trained on (``{}``: unknown)."""
    data = meta.get("data_store") or {}
    if "preprocess" in data:
        return dict(data["preprocess"])
    path = data.get("path")
    if not path or not os.path.exists(path):
        return {}
    try:
        reader = storage.open_dataset(path)
    except storage.StoreError:
        return {}
    return store_face_settings(reader.config) if reader.config_hash == data.get("config_hash") else {}


@dataclass
class MediaPrediction:
    """The prediction for one image, image folder or video."""

    path: str  # the input ("<array>" for an in-memory image)
    score: float  # mean frame score (the video score); high = live
    threshold: float  # the checkpoint's dev threshold used for the decision (NaN: none)
    decision: str  # "live" | "spoof" | "undecided" (no threshold in the checkpoint)
    frame_scores: np.ndarray  # (N,) one per frame with a face
    frame_index: np.ndarray  # (N,) source frame indices
    depth: np.ndarray  # (N, L, L) predicted expected depth in [0, 1]
    crops: np.ndarray  # (N, S, S, 3) uint8 face crops fed to the model
    frames_no_face: int


def decide(meta: dict, score: float, n_frames: int) -> tuple[float, str]:
    """(threshold, decision) for a score over ``n_frames`` face frames, by the checkpoint ``meta``."""
    thresholds = meta.get("thresholds") or {}
    thr = thresholds.get("video" if n_frames > 1 else "frame", meta.get("threshold", math.nan))
    thr = float(thr) if thr is not None else math.nan
    return thr, "undecided" if not math.isfinite(thr) else ("live" if score >= thr else "spoof")


class Predictor:
    """A checkpoint's model plus the face detection and crop of preprocessing.

    Build it with :meth:`from_checkpoint`; the crop size is the model's input size (at least
    64, as the ``predict`` command has always done), the other preprocessing settings are the
    arguments of :meth:`from_checkpoint`.
    """

    def __init__(self, model, meta: dict, preprocess: PreprocessConfig, *, batch_size: int = 32):
        self.model, self.meta, self.preprocess, self.batch_size = model, meta, preprocess, batch_size

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str = "cpu", *, detector: str | None = None,
                        landmarks: str | None = None, every_n: int = 1, max_frames: int | None = 64,
                        model_dir: str | os.PathLike | None = None, batch_size: int = 32) -> Predictor:
        """Load ``path`` (a training checkpoint) on ``device`` with the given frame sampling
        (``every_n``, ``max_frames``: which video frames are scored).

        Faces are cropped as the training store's were: its detector, landmarks and crop scale,
        recorded in the checkpoint (``data_store["preprocess"]``; for older checkpoints read from
        the store when it is still there with the same config hash). ``detector`` /
        ``landmarks`` override them, with a warning when they differ (the crops then differ
        from those the model learnt on); nothing recorded and no override: the preprocessing
        defaults, with a warning."""
        model, meta = load_checkpoint(path, device=device)
        size = int(meta.get("config", {}).get("input_size", 256))
        recorded = _training_face_settings(meta)
        defaults = PreprocessConfig().flat_values()
        chosen: dict = {}
        for key, given in (("detector", detector), ("landmarks", landmarks), ("crop_scale", None)):
            rec = recorded.get(key)
            if given is None:
                chosen[key] = rec if rec is not None else defaults[key]
                if rec is None:
                    log.warning("%s: the checkpoint does not say which %s its training crops were made "
                                "with; using %s", path, key, chosen[key])
            else:
                chosen[key] = given
                if rec is not None and rec != given:
                    log.warning("%s: the model was trained on crops made with %s %s; scoring with %s %s "
                                "makes other crops", path, key, rec, key, given)
        pcfg = PreprocessConfig.flat(**chosen, every_n=every_n, max_frames=max_frames,
                                     size=max(size, 64), device=str(device),
                                     model_dir=os.fspath(model_dir) if model_dir is not None else None)
        return cls(model, meta, pcfg, batch_size=batch_size)

    def predict(self, path: str | os.PathLike) -> MediaPrediction:
        """Any input ``predict`` accepts: an image, a folder of images or a video."""
        faces, counts = extract_faces(WorkItem(path=os.fspath(path)), self.preprocess,
                                      get_engines(self.preprocess), StageTimer())
        return self._score(os.fspath(path), faces, counts)

    def predict_image(self, image: np.ndarray | str | os.PathLike) -> MediaPrediction:
        """One still image: a file, or an ``(H, W, 3)`` uint8 RGB array (a full frame, not a crop,
        taken as upright: a file's EXIF orientation is applied when it is read, an array's is not)."""
        if not isinstance(image, np.ndarray):
            if Path(image).is_dir() or not is_image_path(image):
                raise ConfigError(f"predict_image: {os.fspath(image)} is not an image file "
                                  f"(use predict_video for videos and frame folders)")
            return self.predict(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise UnsupportedInput(f"image array must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}",
                                   source="<array>")
        eng = get_engines(self.preprocess)
        frame = Frame(image=np.ascontiguousarray(image), index=0, timestamp=0.0, source="<array>")
        counts = FrameCounts(decoded=1)  # the same face stage as files (ranking, confirmation, crop placement)
        face, _ = frame_face(frame, detect_batch(eng.detector, [frame.image])[0], self.preprocess, eng,
                             StageTimer(), counts)
        if face is None:
            raise NoFaceDetected("no face found in the image", source="<array>")
        return self._score("<array>", face, counts)

    def predict_video(self, path: str | os.PathLike) -> MediaPrediction:
        """A video file or a folder of frames (sampled by ``every_n`` / ``max_frames``)."""
        if Path(path).is_file() and is_image_path(path):
            raise ConfigError(f"predict_video: {os.fspath(path)} is an image (use predict_image)")
        return self.predict(path)

    def _score(self, path: str, faces: FaceBatch, counts: FrameCounts) -> MediaPrediction:
        crops = faces.image
        pred = predict_crops(self.model, crops, batch_size=self.batch_size)
        score = float(np.mean(pred.scores))
        thr, decision = decide(self.meta, score, len(crops))
        return MediaPrediction(path, score, thr, decision, pred.scores, faces.frame_index,
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
