"""The per-item stages, free of any store: faces of an item → fit + render → QC + metadata.

    decode (sampled) → detect → rank faces → 68 landmarks → confirm → S×S crop   (``iter_faces``)
      (the crop is placed by a second landmark pass on the box the first one implies)
    → batched 3D fit + z-buffer render of live / unknown faces            (``fit_and_render``)
      (spoof: zeros, no fit; no depth outside the source image)
    → QC measures and flags, metadata columns → ``storage.PartData``      (``finish_chunk``)

Faces travel as :class:`pipeline.face.batch.FaceBatch`; frame outcomes are tallied in one
:class:`FrameCounts` per item. Frames without a face (or dropped by QC) are counted with their
reason, not stored. Device batches are cut by :func:`pipeline.face.batch.rebatch` only.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.base.errors import NoFaceDetected, InputError
from pipeline.base.types import FaceBox, Frame
from pipeline.face.batch import FaceBatch, rebatch
from pipeline.face.confirm import confirm_face, fit_free_measures
from pipeline.face.crop import crop_face, inside_source, landmark_box
from pipeline.face.detect import detect_batch, rank_faces
from pipeline.face.qc import blur_measure, face_outside, qc_flags
from pipeline.io.frames import iter_frames
from pipeline.io.items import WorkItem
from pipeline.reconstruct.depth import render_depth, to_uint8
from pipeline.run.engines import Engines
from pipeline.run.config import PreprocessConfig
from pipeline.run.timing import StageTimer
from storage import PartData

MEASURES = ("fit_residual", "yaw", "pitch", "roll")

#: faces of one frame tried, in the pick rule's order, until one is confirmed
MAX_CANDIDATES = 3


@dataclass
class FrameCounts:
    """What became of an item's sampled frames (stored in its part's manifest entry, in this
    field order). ``decoded`` and ``no_face`` come from the face stage (``unconfirmed``: the
    frames of ``no_face`` with detections, none confirmed), ``dropped_qc`` and ``flagged_qc``
    from QC; the pipelined runner adds the two halves with :meth:`add`."""

    decoded: int = 0
    no_face: int = 0
    unconfirmed: int = 0
    dropped_qc: int = 0
    flagged_qc: int = 0

    def add(self, other: FrameCounts) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)

    def as_dict(self) -> dict:
        return asdict(self)

    def no_frame_error(self, path: str) -> NoFaceDetected:
        """The error of an item none of whose frames was kept."""
        reason = "dropped by QC" if self.dropped_qc else "found"
        return NoFaceDetected(f"no face {reason} in any of {self.decoded} sampled frames", source=path)


def relative_source(path: str | Path, root: str | Path | None) -> str:
    """``path`` relative to the input ``root`` (``/``-separated, lexical: links are not resolved).

    ``root`` None means the path's own folder. A path outside ``root`` (a CSV entry accepted with
    ``allow_outside_root``) stays absolute. The item that is the root itself gives ``"."``.
    """
    p = os.path.abspath(os.fspath(path))
    base = os.path.abspath(os.fspath(root)) if root is not None else os.path.dirname(p)
    rel = os.path.relpath(p, base)
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        return Path(p).as_posix()
    return Path(rel).as_posix()


def face_of(frame: Frame, box: FaceBox, cfg: PreprocessConfig, eng: Engines, timer: StageTimer) -> FaceBatch | None:
    """Landmarks + crop of the face ``box`` of ``frame`` as a one-face batch; with ``cfg.qc.confirm``
    first checked to be a face (:func:`pipeline.face.confirm.confirm_face`): None when it is not."""
    with timer.stage("landmarks"):
        lm = eng.landmarker.landmarks(frame.image, box)
    if cfg.qc.confirm:
        with timer.stage("confirm"):
            if confirm_face(eng.detector, frame.image, box, lm.points) is not None:
                return None
    with timer.stage("landmarks"):
        # the crop is placed by a second pass from the box the landmarks imply (it depends on the
        # face only); the fit keeps the first pass, better on turned faces (bench_labels)
        placed = eng.landmarker.landmarks(frame.image, landmark_box(lm.points, box.score)).points
    with timer.stage("crop"):
        crop = crop_face(frame.image, box, cfg.crop, landmarks=placed)
    return FaceBatch.single(frame, box, lm, crop)


def frame_face(frame: Frame, boxes: list[FaceBox], cfg: PreprocessConfig, eng: Engines, timer: StageTimer,
               counts: FrameCounts, previous: FaceBox | None = None) -> tuple[FaceBatch | None, FaceBox | None]:
    """The face of one frame among the detector's ``boxes``: ranked by the pick rule (``track``
    follows ``previous``, :func:`pipeline.face.detect.rank_faces`), the first
    :data:`MAX_CANDIDATES` tried in order until one is confirmed (:func:`face_of`). Returns the
    one-face batch and its box, or ``(None, None)`` (``counts.no_face``, ``unconfirmed`` updated).
    Every path to a face crop goes through here (the runners via :func:`iter_faces`, ``predict``)."""
    ranked = rank_faces(boxes, eng.detector.cfg, previous=previous)[:MAX_CANDIDATES]
    for box in ranked:
        face = face_of(frame, box, cfg, eng, timer)
        if face is not None:
            return face, box
    counts.no_face += 1
    counts.unconfirmed += bool(ranked)
    return None, None


def iter_faces(item: WorkItem, cfg: PreprocessConfig, eng: Engines, timer: StageTimer, counts: FrameCounts,
               detect_frames: int = 1) -> Iterator[FaceBatch]:
    """Decode, detect, landmark, confirm and crop the sampled frames of ``item``: one face per
    frame with a confirmed face, as a one-face batch (chunk them with ``rebatch``).

    Each frame's faces are ranked by the pick rule (``track`` follows the face picked last,
    :func:`pipeline.face.detect.rank_faces`) and the first :data:`MAX_CANDIDATES` tried in
    order until one is confirmed. ``counts.decoded``, ``no_face`` and ``unconfirmed`` are
    updated as frames go by. ``detect_frames`` frames go through the detector per call (its
    batched path gives each frame the boxes it gives it alone). Every runner (sequential,
    pipelined workers) gets its faces here. Raises a InputError for an unreadable input.
    """
    frames = iter_frames(item.path, cfg.frames.capped(item.max_frames))
    previous = None  # the face picked last: "track" follows it
    while True:
        with timer.stage("decode"):
            batch = list(itertools.islice(frames, max(1, detect_frames)))
        if not batch:
            break
        counts.decoded += len(batch)
        with timer.stage("detect"):
            found = detect_batch(eng.detector, [f.image for f in batch])
        for frame, boxes in zip(batch, found):
            face, box = frame_face(frame, boxes, cfg, eng, timer, counts, previous=previous)
            if face is not None:
                previous = box
                yield face
    if counts.decoded == 0:
        raise InputError("no frame could be read", source=item.path)


def extract_faces(item: WorkItem, cfg: PreprocessConfig, eng: Engines,
                  timer: StageTimer) -> tuple[FaceBatch, FrameCounts]:
    """All faces of ``item`` at once (short inputs, e.g. ``predict``); see ``iter_faces``."""
    counts = FrameCounts()
    faces = list(iter_faces(item, cfg, eng, timer, counts))
    if not faces:
        raise NoFaceDetected(f"no face found in any of {counts.decoded} sampled frames", source=item.path)
    return FaceBatch.concat(faces), counts


def _blank(n: int, cfg: PreprocessConfig) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Zero depth and NaN fit measures for ``n`` faces (spoof faces: no fit)."""
    return (np.zeros((n, cfg.crop.size, cfg.crop.size), dtype=np.uint8),
            {k: np.full(n, np.nan, dtype=np.float32) for k in MEASURES})


def fit_and_render(landmarks_crop: np.ndarray, cfg: PreprocessConfig, eng: Engines, timer: StageTimer
                   ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One device call: batched 3D fit + depth render of ``(N, 68, 2)`` crop-pixel landmarks
    (``FaceBatch.crop_landmarks``; ``N <= cfg.batch_size``, cut by ``rebatch``).

    Returns uint8 depth ``(N, S, S)`` and per-face fit measures (``MEASURES``), float32.
    """
    if len(landmarks_crop) > cfg.batch_size:
        raise ValueError(f"{len(landmarks_crop)} faces in one device batch (batch_size {cfg.batch_size})")
    depth, meas = _blank(len(landmarks_crop), cfg)
    with timer.stage("fit+render"), torch.inference_mode():
        lm = torch.as_tensor(landmarks_crop, dtype=torch.float32, device=cfg.device)
        res = render_depth(eng.sfm, lm, fit_cfg=cfg.fit, depth_cfg=cfg.depth)
        depth[:] = to_uint8(res.depth).cpu().numpy()
        for k, v in (("fit_residual", res.fit.residual), ("yaw", res.fit.yaw), ("pitch", res.fit.pitch),
                     ("roll", res.fit.roll)):
            meas[k][:] = v.float().cpu().numpy()
    return depth, meas


def render_faces(batches: list[FaceBatch], cfg: PreprocessConfig, eng: Engines, timer: StageTimer
                 ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Fit + render the faces of ``batches`` (in order) in device batches of ``cfg.batch_size``."""
    parts = [fit_and_render(b.crop_landmarks(), cfg, eng, timer) for b in rebatch(batches, cfg.batch_size)]
    if len(parts) == 1:
        return parts[0]
    return (np.concatenate([d for d, _ in parts]),
            {k: np.concatenate([m[k] for _, m in parts]) for k in MEASURES})


def _meta_columns(faces: FaceBatch, item: WorkItem, root: str | None) -> dict[str, np.ndarray]:
    n = len(faces)

    def col(value: str) -> np.ndarray:
        return np.array([value] * n, dtype=object)

    base = root if root is not None else os.path.dirname(os.path.abspath(item.path))
    return {
        "video_id": col(item.video_id or Path(item.path).stem),
        "frame_index": faces.frame_index,
        "timestamp": faces.timestamp,
        "label": col(item.label),
        "attack_type": col(item.attack_type),
        "subject": col(item.subject),
        "session": col(item.session),
        "device": col(item.device),
        "split": col(item.split),
        "dataset": col(str(item.extra.get("dataset", ""))),
        "source": np.array([relative_source(src, base) for src in faces.source], dtype=object),
    }


def finish_chunk(faces: FaceBatch, item: WorkItem, cfg: PreprocessConfig, eng: Engines, timer: StageTimer,
                 counts: FrameCounts, rendered: tuple[np.ndarray, dict[str, np.ndarray]] | None = None,
                 root: str | None = None) -> PartData:
    """Fit + render (live / unknown items), QC and metadata of a chunk of faces → ``PartData``.

    Frames whose QC flags are in ``cfg.qc.drop`` are left out (counted in ``counts``).
    ``rendered``: the ``fit_and_render`` output for these faces when the caller already
    computed it (the pipelined runner may render faces of several items in one batch); ignored
    for spoof items. ``root``: the input root the ``source`` column is relative to (None: the
    item's own folder).
    """
    if item.is_spoof:  # spoof faces: all-zero depth, no fit
        depth, meas = _blank(len(faces), cfg)
    else:
        depth, meas = rendered if rendered is not None else render_faces([faces], cfg, eng, timer)
        # no depth where the crop shows the black padding beyond the source image
        outside = np.stack([~inside_source(a, hw, cfg.crop.size) for a, hw in zip(faces.affine, faces.frame_hw)])
        depth = np.where(outside, np.uint8(0), depth)
    with timer.stage("qc"):
        blur = blur_measure(faces.image)
        free = fit_free_measures(faces.landmarks, faces.keypoints, faces.face_size)
        free["face_outside"] = face_outside(faces.landmarks, faces.bbox, faces.frame_hw)
        flags = qc_flags(
            cfg.qc, face_size=faces.face_size, residual=meas["fit_residual"], yaw=meas["yaw"],
            pitch=meas["pitch"], blur=blur, det_score=faces.det_score, **free,
        )
    keep = (flags & cfg.qc.drop_mask()) == 0
    counts.dropped_qc += int((~keep).sum())
    counts.flagged_qc += int((flags[keep] != 0).sum())
    meta = _meta_columns(faces, item, root)
    qc = {
        "det_score": faces.det_score, "face_size": faces.face_size, "yaw": meas["yaw"], "pitch": meas["pitch"],
        "roll": meas["roll"], "blur": blur, "qc_flags": flags, **free,
    }
    return PartData(
        image=faces.image[keep], depth=depth[keep], landmarks=faces.landmarks[keep], bbox=faces.bbox[keep],
        affine=faces.affine[keep], fit_residual=meas["fit_residual"][keep],
        qc={k: v[keep] for k, v in qc.items()},
        meta={k: np.asarray(v)[keep] for k, v in meta.items()},
    )


def iter_part_chunks(item: WorkItem, cfg: PreprocessConfig, eng: Engines, timer: StageTimer, counts: FrameCounts,
                     root: str | None = None, detect_frames: int = 1) -> Iterator[PartData]:
    """The part of ``item`` as a stream of ``PartData`` chunks of at most ``cfg.batch_size`` frames
    (``detect_frames``: frames per detector call, see ``iter_faces``)."""
    for faces in rebatch(iter_faces(item, cfg, eng, timer, counts, detect_frames=detect_frames), cfg.batch_size):
        data = finish_chunk(faces, item, cfg, eng, timer, counts, root=root)
        if data.frames:
            yield data


def process_item(item: WorkItem, cfg: PreprocessConfig, eng: Engines,
                 timer: StageTimer | None = None) -> tuple[PartData, FrameCounts]:
    """The whole part of ``item`` in memory (tests, short inputs): ``(PartData, counts)``."""
    counts = FrameCounts()
    chunks = list(iter_part_chunks(item, cfg, eng, timer or StageTimer(), counts))
    if not chunks:
        raise NoFaceDetected(f"no face kept in any of {counts.decoded} sampled frames", source=item.path)
    return PartData.concat(chunks) if len(chunks) > 1 else chunks[0], counts
