"""The preprocessing core: one work item (video, image, image folder) → one store part.

``preprocess_unit`` is what both the CLI and the Prefect flow call for each item; ``run_preprocess``
loops it over a list of items under the store's run lock and writes the run report. Per item:

    decode (sampled) → detect → pick one face → 68 landmarks → S×S crop → QC measures
    → batched 3D fit + z-buffer render of the live / unknown frames (spoof: zeros, no fit)
    → one atomic part in the zarr store.

Frames without a face (or dropped by QC) are counted with their reason, not stored.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import os
import re
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.base.errors import ConfigError, NoFaceDetected, PipelineError, RunInterrupted
from pipeline.face.qc import QCConfig, blur_measure, qc_flags
from pipeline.io.items import WorkItem
from pipeline.reconstruct import LABEL_VERSION
from pipeline.run.timing import StageTimer

log = logging.getLogger(__name__)

DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class PreprocessConfig:
    """Everything that decides what the preprocessing writes (plus where/how it runs).

    ``output_config()`` is the part that affects the stored arrays; its hash keys resume
    and guards a store against mixing configurations. It carries ``label_version``
    (:data:`pipeline.reconstruct.LABEL_VERSION`), so a store of older labels is refused by the
    resume check and the flow's cache key changes with it.
    """

    detector: str = "blazeface"
    landmarks: str = "dlib68"
    every_n: int = 1
    fps: float | None = None
    max_frames: int | None = None
    size: int = 256
    crop_scale: float = 1.3
    score_threshold: float | None = None  # None: the detector's own default
    min_face_size: float = 32.0
    fit_iterations: int = 5
    depth_far_value: float = 0.1
    qc: QCConfig = field(default_factory=QCConfig)
    # --- execution only (not part of the output config) ---
    device: str = "cpu"
    model_dir: str | None = None
    batch_size: int = 64
    workers: int = 0  # > 0: run_preprocess runs pipeline.run.parallel.run_parallel with this many workers
    max_pixels: int | None = 100_000_000  # larger images / video frames fail (pipeline.io.frames.FrameConfig)

    EXECUTION_ONLY = ("device", "model_dir", "batch_size", "workers", "max_pixels")

    def __post_init__(self) -> None:
        def bad(name: str, problem: str) -> None:
            raise ConfigError(f"parameter {name!r}: {problem}")

        for name in ("fps", "crop_scale", "score_threshold", "min_face_size", "depth_far_value"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
                bad(name, f"must be a finite number, got {value!r}")
        if self.every_n < 1:
            bad("every_n", f"must be >= 1, got {self.every_n}")
        if self.fps is not None and self.fps <= 0:
            bad("fps", f"must be > 0, got {self.fps}")
        if self.max_frames is not None and self.max_frames < 1:
            bad("max_frames", f"must be >= 1, got {self.max_frames}")
        if self.max_pixels is not None and self.max_pixels < 1:
            bad("max_pixels", f"must be >= 1, got {self.max_pixels}")
        if not 16 <= self.size <= 1024:
            bad("size", f"must be in [16, 1024], got {self.size}")
        if not 0.5 <= self.crop_scale <= 4.0:
            bad("crop_scale", f"must be in [0.5, 4], got {self.crop_scale}")
        if self.batch_size < 1:
            bad("batch_size", f"must be >= 1, got {self.batch_size}")
        if self.workers < 0:
            bad("workers", f"must be >= 0, got {self.workers}")
        if not (self.device in DEVICES or self.device.startswith("cuda:")):
            bad("device", f"must be one of {DEVICES} (or cuda:N), got {self.device!r}")
        if self.fit_iterations < 1:
            bad("fit_iterations", f"must be >= 1, got {self.fit_iterations}")
        from pipeline.face.detect import DETECTORS
        from pipeline.face.landmarks import LANDMARKERS

        if self.detector not in DETECTORS:
            bad("detector", f"unknown name {self.detector!r}; valid: {DETECTORS.names()}")
        if self.landmarks not in LANDMARKERS:
            bad("landmarks", f"unknown name {self.landmarks!r}; valid: {LANDMARKERS.names()}")
        try:
            self.qc.drop_mask()
        except ValueError as exc:
            bad("qc.drop", str(exc))

    def frame_config(self, item: WorkItem):
        """Frame sampling for ``item``: this config's, capped by the item's own ``max_frames``."""
        from pipeline.io.frames import FrameConfig

        caps = [c for c in (self.max_frames, item.max_frames) if c]
        return FrameConfig(every_n=self.every_n, fps=self.fps, max_frames=min(caps) if caps else None,
                           max_pixels=self.max_pixels)

    def crop_config(self):
        from pipeline.face.crop import CropConfig

        return CropConfig(size=self.size, crop_scale=self.crop_scale)

    def output_config(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in self.EXECUTION_ONLY}
        out["qc"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.qc).items()}
        out["kind"] = "depthseg-fas/preprocess"
        out["label_version"] = LABEL_VERSION
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "PreprocessConfig":
        data = dict(data)
        data.pop("kind", None)
        version = data.pop("label_version", LABEL_VERSION)
        if version != LABEL_VERSION:
            raise ConfigError(f"config of label version {version!r}: this code writes labels of version "
                              f"{LABEL_VERSION} (see pipeline.reconstruct.depth); use a new store")
        if isinstance(data.get("qc"), dict):
            qc = dict(data["qc"])
            if "drop" in qc:
                qc["drop"] = tuple(qc["drop"])
            data["qc"] = QCConfig(**qc)
        return cls(**data)


@dataclass
class Engines:
    """The loaded backends of one process (created once, reused for every item)."""

    detector: object
    landmarker: object
    sfm: object  # torch tensors of the Surrey Face Model on the device


_ENGINE_CACHE: dict[tuple, Engines] = {}


def get_engines(cfg: PreprocessConfig) -> Engines:
    """Backends for ``cfg``, loaded on first use and cached per process."""
    key = (cfg.detector, cfg.landmarks, cfg.device, cfg.model_dir, cfg.score_threshold, cfg.min_face_size)
    eng = _ENGINE_CACHE.get(key)
    if eng is None:
        import torch

        from pipeline.face.detect import create_detector
        from pipeline.face.landmarks import create_landmarker
        from pipeline.reconstruct.sfm import load_sfm

        if cfg.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"parameter 'device': {cfg.device!r} asked for but CUDA is not available")
        det = create_detector(
            cfg.detector,
            device=cfg.device,
            model_dir=cfg.model_dir,
            score_threshold=cfg.score_threshold,
            min_face_size=cfg.min_face_size,
        )
        lmk = create_landmarker(cfg.landmarks, device=cfg.device, model_dir=cfg.model_dir)
        sfm = load_sfm(cfg.model_dir).to_torch(cfg.device, torch.float32)
        eng = _ENGINE_CACHE[key] = Engines(det, lmk, sfm)
    return eng


@dataclass
class UnitResult:
    """Small summary of one work item (what a Prefect task returns)."""

    path: str
    part_id: str
    status: str  # written | skipped | failed
    frames_decoded: int = 0
    frames_stored: int = 0
    frames_no_face: int = 0
    frames_dropped_qc: int = 0
    frames_flagged_qc: int = 0
    reason: str = ""
    message: str = ""
    seconds: dict = field(default_factory=dict)
    input_checksum: str = ""  # of the input, when it could be read (what the part is committed with)

    def to_dict(self) -> dict:
        return asdict(self)


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


def part_id_for(item: WorkItem, root: str | Path | None = None) -> str:
    """Stable, filesystem-safe part id, unique per input of a run: readable name + short hash.

    The hash covers the item's path relative to the input ``root`` (its whole path, also where
    the readable name is shortened or sanitised), so two items of one input never share an id,
    and the id is the same on every re-run (and after the input root moves), which is what lets
    resume skip committed parts. The root itself as an item (a folder of loose images given as
    ``--input``) is named by the folder's own name, so two such folders get two ids. Two inputs
    that map to one relative path from different roots (``A/face.jpg``, then ``B/face.jpg``)
    do get one id: the writer tells them apart by their input checksum and refuses the second
    (:class:`storage.PartConflict`) unless replacing is asked for.
    """
    rel = relative_source(item.path, root)
    if rel == ".":
        rel = Path(os.path.abspath(item.path)).name or "root"
        base = rel
    else:
        base = item.video_id or rel
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", base.replace("/", "__").replace("\\", "__"))[-80:]
    digest = hashlib.sha1(rel.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{readable.strip('._') or 'item'}-{digest}"


FACE_FIELDS = ("image", "landmarks", "bbox", "affine", "det_score", "face_size", "frame_index", "timestamp",
               "source", "frame_hw")


def add_face(out: dict, frame, box, eng: Engines, ccfg, timer: StageTimer) -> None:
    """Landmarks + crop of the face ``box`` of ``frame``, appended to the per-frame lists ``out``."""
    from pipeline.face.crop import crop_face, landmark_box

    with timer.stage("landmarks"):
        lm = eng.landmarker.landmarks(frame.image, box)
        # the crop is placed by a second pass from the box the landmarks imply (it depends on the
        # face only); the fit keeps the first pass, better on turned faces (bench_labels)
        placed = eng.landmarker.landmarks(frame.image, landmark_box(lm.points, box.score)).points
    with timer.stage("crop"):
        crop = crop_face(frame.image, box, ccfg, landmarks=placed)
    out["image"].append(crop.image)
    out["landmarks"].append(lm.points.astype(np.float32))
    out["bbox"].append(box.as_array())
    out["affine"].append(crop.affine.astype(np.float32))
    out["det_score"].append(box.score)
    out["face_size"].append(box.size)
    out["frame_index"].append(frame.index)
    out["timestamp"].append(frame.timestamp)
    out["source"].append(frame.source)
    out["frame_hw"].append(frame.image.shape[:2])


def iter_face_chunks(item: WorkItem, cfg: PreprocessConfig, eng: Engines, timer: StageTimer, counts: dict,
                     chunk_size: int | None = None, detect_frames: int = 1):
    """Decode, detect, landmark and crop the sampled frames of ``item``, ``chunk_size`` faces at a time.

    Yields dicts of per-frame lists (keys ``FACE_FIELDS``); ``counts["decoded"]`` and
    ``counts["no_face"]`` are updated as frames go by. Only one chunk is held in memory.
    ``detect_frames`` frames go through the detector per call (its batched path gives each frame
    the boxes it gives it alone). Raises a PipelineError for an unreadable input.
    """
    from pipeline.face.detect import detect_batch, pick_face
    from pipeline.io.frames import iter_frames

    fcfg, ccfg = cfg.frame_config(item), cfg.crop_config()
    chunk_size = chunk_size or cfg.batch_size
    counts.setdefault("decoded", 0)
    counts.setdefault("no_face", 0)
    out: dict[str, list] = {k: [] for k in FACE_FIELDS}
    frames = iter_frames(item.path, fcfg)
    while True:
        with timer.stage("decode"):
            batch = list(itertools.islice(frames, max(1, detect_frames)))
        if not batch:
            break
        counts["decoded"] += len(batch)
        with timer.stage("detect"):
            found = detect_batch(eng.detector, [f.image for f in batch])
        for frame, boxes in zip(batch, found):
            try:
                box = pick_face(boxes, eng.detector.cfg)
            except NoFaceDetected:
                counts["no_face"] += 1
                continue
            add_face(out, frame, box, eng, ccfg, timer)
            if len(out["image"]) >= chunk_size:
                yield out
                out = {k: [] for k in FACE_FIELDS}
    if out["image"]:
        yield out
    if counts["decoded"] == 0:
        raise PipelineError("no frame could be read", source=item.path)


def extract_faces(item: WorkItem, cfg: PreprocessConfig, eng: Engines, timer: StageTimer) -> dict:
    """All faces of ``item`` at once (for short inputs, e.g. ``predict``); see ``iter_face_chunks``."""
    counts: dict = {}
    out: dict[str, list] = {k: [] for k in FACE_FIELDS}
    for chunk in iter_face_chunks(item, cfg, eng, timer, counts):
        for k in FACE_FIELDS:
            out[k].extend(chunk[k])
    if not out["image"]:
        raise NoFaceDetected(f"no face found in any of {counts['decoded']} sampled frames", source=item.path)
    return {**out, **counts}


def fit_and_render(
    landmarks_crop: np.ndarray, cfg: PreprocessConfig, eng: Engines, timer: StageTimer
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Batched 3D fit + depth render of ``(N, 68, 2)`` crop-pixel landmarks.

    Returns uint8 depth ``(N, S, S)`` and per-frame fit measures (residual, yaw, pitch, roll).
    """
    import torch

    from pipeline.reconstruct.depth import DepthConfig, render_depth, to_uint8
    from pipeline.reconstruct.fit import FitConfig

    fit_cfg = FitConfig(iterations=cfg.fit_iterations)
    depth_cfg = DepthConfig(size=cfg.size, far_value=cfg.depth_far_value)
    n = len(landmarks_crop)
    depth = np.zeros((n, cfg.size, cfg.size), dtype=np.uint8)
    meas = {k: np.full(n, np.nan, dtype=np.float32) for k in ("fit_residual", "yaw", "pitch", "roll")}
    with timer.stage("fit+render"), torch.inference_mode():
        for s in range(0, n, cfg.batch_size):
            sl = slice(s, s + cfg.batch_size)
            lm = torch.as_tensor(landmarks_crop[sl], dtype=torch.float32, device=cfg.device)
            res = render_depth(eng.sfm, lm, fit_cfg=fit_cfg, depth_cfg=depth_cfg)
            depth[sl] = to_uint8(res.depth).cpu().numpy()
            meas["fit_residual"][sl] = res.fit.residual.float().cpu().numpy()
            meas["yaw"][sl] = res.fit.yaw.float().cpu().numpy()
            meas["pitch"][sl] = res.fit.pitch.float().cpu().numpy()
            meas["roll"][sl] = res.fit.roll.float().cpu().numpy()
    return depth, meas


def finish_chunk(faces: dict, item: WorkItem, cfg: PreprocessConfig, eng: Engines, timer: StageTimer,
                 counts: dict, rendered: tuple[np.ndarray, dict[str, np.ndarray]] | None = None,
                 root: str | None = None):
    """Fit + render (live / unknown items), QC and metadata of one chunk of faces → ``PartData``.

    Frames whose QC flags are in ``cfg.qc.drop`` are left out (counted in ``counts``).
    ``rendered``: the ``fit_and_render`` output for this chunk's faces when the caller already
    computed it (the pipelined runner renders faces of several chunks in one batch); ignored for
    spoof items. ``root``: the input root the ``source`` column is relative to (None: the
    item's own folder).
    """
    from storage import PartData

    from pipeline.face.crop import inside_source, transform_points

    images = np.stack(faces["image"])
    landmarks = np.stack(faces["landmarks"])
    affine = np.stack(faces["affine"])
    n = len(images)
    if item.is_spoof:  # spoof faces: all-zero depth, no fit
        depth = np.zeros((n, cfg.size, cfg.size), dtype=np.uint8)
        meas = {k: np.full(n, np.nan, dtype=np.float32) for k in ("fit_residual", "yaw", "pitch", "roll")}
    else:
        lm_crop = transform_points(affine, landmarks).astype(np.float32)
        depth, meas = rendered if rendered is not None else fit_and_render(lm_crop, cfg, eng, timer)
        # no depth where the crop shows the black padding beyond the source image
        outside = [~inside_source(a, hw, cfg.size) for a, hw in zip(affine, faces["frame_hw"])]
        depth = np.where(np.stack(outside), np.uint8(0), depth)
    with timer.stage("qc"):
        face_size = np.asarray(faces["face_size"], dtype=np.float32)
        det_score = np.asarray(faces["det_score"], dtype=np.float32)
        blur = blur_measure(images)
        flags = qc_flags(
            cfg.qc, face_size=face_size, residual=meas["fit_residual"], yaw=meas["yaw"],
            pitch=meas["pitch"], blur=blur, det_score=det_score,
        )
    keep = (flags & cfg.qc.drop_mask()) == 0
    counts["dropped_qc"] = counts.get("dropped_qc", 0) + int((~keep).sum())
    counts["flagged_qc"] = counts.get("flagged_qc", 0) + int((flags[keep] != 0).sum())

    def col(value: str) -> np.ndarray:
        return np.array([value] * n, dtype=object)

    meta = {
        "video_id": col(item.video_id or Path(item.path).stem),
        "frame_index": np.asarray(faces["frame_index"], dtype=np.int64),
        "timestamp": np.asarray(faces["timestamp"], dtype=np.float64),
        "label": col(item.label),
        "attack_type": col(item.attack_type),
        "subject": col(item.subject),
        "session": col(item.session),
        "device": col(item.device),
        "split": col(item.split),
        "dataset": col(str(item.extra.get("dataset", ""))),
        "source": np.array([relative_source(src, root if root is not None else os.path.dirname(
            os.path.abspath(item.path))) for src in faces["source"]], dtype=object),
    }
    qc = {
        "det_score": det_score, "face_size": face_size, "yaw": meas["yaw"], "pitch": meas["pitch"],
        "roll": meas["roll"], "blur": blur, "qc_flags": flags,
    }
    return PartData(
        image=images[keep], depth=depth[keep], landmarks=landmarks[keep], bbox=np.stack(faces["bbox"])[keep],
        affine=affine[keep], fit_residual=meas["fit_residual"][keep],
        qc={k: v[keep] for k, v in qc.items()},
        meta={k: np.asarray(v)[keep] for k, v in meta.items()},
    )


def iter_part_chunks(item: WorkItem, cfg: PreprocessConfig, eng: Engines, timer: StageTimer, counts: dict,
                     root: str | None = None):
    """The part of ``item`` as a stream of ``PartData`` chunks of at most ``cfg.batch_size`` frames."""
    for faces in iter_face_chunks(item, cfg, eng, timer, counts):
        data = finish_chunk(faces, item, cfg, eng, timer, counts, root=root)
        if data.frames:
            yield data


def process_item(item: WorkItem, cfg: PreprocessConfig, eng: Engines, timer: StageTimer | None = None):
    """The whole part of ``item`` in memory (tests, short inputs): ``(PartData, counts)``."""
    from storage import PartData

    timer = timer or StageTimer()
    counts: dict = {}
    chunks = list(iter_part_chunks(item, cfg, eng, timer, counts))
    if not chunks:
        raise NoFaceDetected(f"no face kept in any of {counts.get('decoded', 0)} sampled frames", source=item.path)
    return PartData.concat(chunks) if len(chunks) > 1 else chunks[0], counts


def preprocess_unit(
    item: WorkItem,
    output: str,
    cfg: PreprocessConfig,
    *,
    input_root: str | None = None,
    engines: Engines | None = None,
    replace: bool = False,
) -> UnitResult:
    """Process one item into ``output`` unless already committed; never raises for bad input.

    Bad input (unreadable, corrupt, no face) is returned as ``status="failed"`` with its reason;
    so is a part id already committed from another input (``part-conflict``, unless ``replace``).
    Other errors of the store itself (``StoreError``) propagate, since they concern the whole run.
    """
    from storage import DatasetWriter, PartConflict, file_checksum

    timer = StageTimer()
    pid = part_id_for(item, input_root)
    res = UnitResult(path=item.path, part_id=pid, status="failed")
    try:
        with timer.stage("checksum"):
            if not Path(item.path).exists():
                from pipeline.base.errors import InputNotFound

                raise InputNotFound("input path does not exist", source=item.path)
            checksum = res.input_checksum = file_checksum(item.path)
        writer = DatasetWriter.open(output, cfg.output_config())
        if writer.has_part(pid, checksum):
            res.status = "skipped"
            res.frames_stored = writer.parts[pid].frames
            log.info("%s: already committed as part %s, skipped", item.path, pid)
            return res
        eng = engines or get_engines(cfg)
        counts: dict = {}
        extra = {"source": item.path, "item": {k: v for k, v in item.to_dict().items() if k != "extra"}}
        with writer.begin_part(pid, input_checksum=checksum, extra=extra, overwrite=True, replace=replace) as part:
            for chunk in iter_part_chunks(item, cfg, eng, timer, counts, root=input_root):
                with timer.stage("write"):
                    part.append(chunk)
            if part.frames == 0:
                reason = "dropped by QC" if counts.get("dropped_qc") else "found"
                raise NoFaceDetected(f"no face {reason} in any of {counts['decoded']} sampled frames",
                                     source=item.path)
            part.update_extra(counts)
            with timer.stage("write"):
                info = part.commit()
        res.status = "written"
        res.frames_stored = info.frames
        res.frames_decoded = counts["decoded"]
        res.frames_no_face = counts["no_face"]
        res.frames_dropped_qc = counts.get("dropped_qc", 0)
        res.frames_flagged_qc = counts.get("flagged_qc", 0)
    except PipelineError as exc:
        res.reason, res.message = exc.reason, str(exc)
        log.warning("%s failed: %s", item.path, exc)
    except PartConflict as exc:  # this item's id is another input's part: the item fails, the run goes on
        res.reason, res.message = exc.reason, f"{item.path}: {exc}"
        log.warning("%s failed: %s", item.path, exc)
    except (OSError, ValueError, RuntimeError) as exc:
        from storage import StoreError

        if isinstance(exc, StoreError):
            raise
        res.reason, res.message = "error", f"{item.path}: {type(exc).__name__}: {exc}"
        log.warning("%s failed: %s: %s", item.path, type(exc).__name__, exc)  # one line; the run goes on
        log.debug("%s failed", item.path, exc_info=True)
    finally:
        res.seconds = timer.as_dict()
    return res


@dataclass
class RunReport:
    output: str
    config: dict
    units: list[UnitResult] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)  # inputs the adapter could not parse
    interrupted: bool = False  # Ctrl-C ended the run: ``units`` are the items finished before it

    def to_dict(self) -> dict:
        seconds = StageTimer()
        for u in self.units:
            seconds.merge(u.seconds)
        by_status: dict[str, int] = {}
        for u in self.units:
            by_status[u.status] = by_status.get(u.status, 0) + 1
        return {
            "output": self.output,
            "config": self.config,
            "interrupted": self.interrupted,
            "counts": {
                "items": len(self.units),
                "written": by_status.get("written", 0),
                "skipped": by_status.get("skipped", 0),
                "failed": by_status.get("failed", 0),
                "rejected": len(self.rejected),
                "frames_decoded": sum(u.frames_decoded for u in self.units),
                "frames_stored": sum(u.frames_stored for u in self.units if u.status == "written"),
                "frames_no_face": sum(u.frames_no_face for u in self.units),
                "frames_dropped_qc": sum(u.frames_dropped_qc for u in self.units),
                "frames_flagged_qc": sum(u.frames_flagged_qc for u in self.units),
            },
            "seconds_per_stage": seconds.as_dict(),
            "failures": [
                {"path": u.path, "reason": u.reason, "message": u.message}
                for u in self.units if u.status == "failed"
            ] + [dict(r, reason=r.get("reason", "rejected")) for r in self.rejected],
            "units": [u.to_dict() for u in self.units],
        }


def run_preprocess(
    items: list[WorkItem],
    output: str,
    cfg: PreprocessConfig,
    *,
    input_root: str | None = None,
    rejected: list[dict] | None = None,
    on_unit: Callable[[UnitResult], None] | None = None,
    replace: bool = False,
) -> RunReport:
    """Process every item into ``output`` under the store's run lock (sequential in-process).

    With ``cfg.workers > 0`` the pipelined runner :func:`pipeline.run.parallel.run_parallel` does it
    instead (same parts, same report). ``replace``: an item whose part id is committed from
    another input replaces that part (else the item fails with reason ``part-conflict``).
    """
    from storage import DatasetWriter, run_lock

    if cfg.workers > 0:
        from pipeline.run.parallel import run_parallel

        return run_parallel(items, output, cfg, input_root=input_root, rejected=rejected, on_unit=on_unit,
                            replace=replace)

    writer = DatasetWriter.open(output, cfg.output_config())  # fail fast on a config mismatch
    report = RunReport(output=output, config=cfg.output_config(), rejected=list(rejected or []))
    with run_lock(output, owner="depthseg-fas preprocess"), interruptible(report, writer):
        eng = None
        for item in items:
            if eng is None and Path(item.path).exists():
                eng = get_engines(cfg)
            unit = preprocess_unit(item, output, cfg, input_root=input_root, engines=eng, replace=replace)
            report.units.append(unit)
            if on_unit:
                on_unit(unit)
    return report


@contextmanager
def interruptible(report: RunReport, writer):
    """Ctrl-C inside the block becomes :class:`RunInterrupted` carrying ``report`` (flagged
    ``interrupted``). By then the part being written was aborted by its ``with`` block, so the
    store holds exactly the parts committed before; a rerun skips them and does the rest.

    A Ctrl-C that lands between a part's commit and its entry in the report would leave a
    committed part unreported: parts whose manifest entry changed since ``writer`` was opened
    (this run's commits) and that the report lacks are added as written, so the report lists
    exactly what the run added to the store."""
    before = {pid: info.checksum for pid, info in writer.parts.items()}
    try:
        yield
    except KeyboardInterrupt as exc:
        report.interrupted = True
        writer.refresh()
        reported = {u.part_id for u in report.units if u.status == "written"}
        for pid, info in writer.parts.items():
            if before.get(pid) != info.checksum and pid not in reported:
                report.units.append(UnitResult(
                    path=str(info.extra.get("source", "")), part_id=pid, status="written",
                    frames_stored=info.frames, frames_decoded=int(info.extra.get("decoded", 0)),
                    frames_no_face=int(info.extra.get("no_face", 0)),
                    message="committed just before Ctrl-C"))
        raise RunInterrupted(str(exc), report=report) from None


def with_overrides(cfg: PreprocessConfig, **overrides) -> PreprocessConfig:
    return replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
