"""Face detection backends behind one small interface.

A detector takes ``(H, W, 3)`` uint8 RGB frames and returns :class:`~pipeline.base.types.FaceBox`
records in frame pixels (pixel centres at integer coordinates, see :mod:`pipeline.base.types`),
filtered by score and size and sorted by decreasing score. :func:`pick_face` then chooses the
face to keep.

Backends (``create_detector(name, ...)``; unknown names raise UnknownName (a ConfigError) listing these):

``blazeface`` / ``blazeface-back``
    MediaPipe BlazeFace front (128 px input) / back-camera (256 px input) models run through
    face-alignment's network code with weights from the model directory
    (``blazeface/blazeface.pth`` + ``anchors.npy``, ``blazefaceback.pth`` + ``anchorsback.npy``).
    face-alignment's own wrapper centre-crops the frame to a square, which loses faces away from
    the centre of tall or wide frames; here each frame is letterboxed (padded to a square with
    black) instead, so the whole frame is searched. Scores are probabilities (default threshold
    0.5).
``dlib-hog``
    dlib's HOG + linear SVM frontal detector; option ``upsample`` (default 1). Scores are SVM
    margins (default threshold 0.0).
``dlib-cnn``
    dlib's MMOD CNN detector, ``mmod_human_face_detector.dat`` from the
    face-recognition-models package's data folder; option ``upsample`` (default 0).
``sfd``
    face-alignment's S3FD with the user-supplied weights ``sfd/s3fd-619a316812.pth`` from the
    model directory (loaded with ``torch.load(weights_only=True)``, never downloaded).
``insightface``
    insightface's SCRFD, ``insightface/<pack>/det_10g.onnx`` from the model directory (option
    ``pack``, default ``buffalo_l``; ``input_size`` default ``(640, 640)``), on onnxruntime's
    CPU or CUDA provider.

``DetectorConfig.max_side`` downscales frames whose longer side exceeds it before detection
(boxes are mapped back to the full frame): useful for the full-resolution backends (dlib, S3FD)
on HD video. Each backend imports its library (face_alignment, dlib, insightface - an optional
extra) when built or run, so a run loads only the one it selected. Nothing here downloads
anything; a missing model file raises :class:`~pipeline.base.errors.ModelAssetMissing` naming
the file and where to get it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np
import torch

from pipeline.base.assets import asset_path
from pipeline.base.errors import ConfigError, ModelAssetMissing, NoFaceDetected
from pipeline.base.registry import Registry
from pipeline.base.types import FaceBox

logger = logging.getLogger(__name__)

PICK_RULES = ("track", "largest", "best")


@dataclass(frozen=True)
class DetectorConfig:
    """Settings of the face detection stage.

    ``score_threshold`` is in the backend's own score units (None: the backend's default, see
    the module docstring). ``min_face_size`` drops boxes whose :attr:`FaceBox.size` (geometric
    mean of width and height, frame pixels) is smaller. ``pick`` is how :func:`pick_face`
    chooses among several faces: ``"track"`` (follow the previous face, else score then size),
    ``"largest"`` area or ``"best"`` score. ``options`` holds
    backend-specific keyword arguments (e.g. ``{"upsample": 0}`` for ``dlib-hog``).
    """

    name: str = "blazeface"
    device: str = "cpu"
    score_threshold: float | None = None
    min_face_size: float = 20.0
    pick: str = "track"
    model_dir: str | None = None
    max_side: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.pick not in PICK_RULES:
            raise ConfigError(f"pick must be one of {PICK_RULES}, got {self.pick!r}")
        if self.min_face_size < 0:
            raise ConfigError(f"min_face_size must be >= 0, got {self.min_face_size!r}")
        if self.max_side is not None and self.max_side < 16:
            raise ConfigError(f"max_side must be >= 16 or None, got {self.max_side!r}")
        if not any(k in str(self.device) for k in ("cpu", "cuda", "mps")):
            raise ConfigError(f"device must be cpu, cuda[:N] or mps, got {self.device!r}")


@runtime_checkable
class FaceDetector(Protocol):
    """What every detection backend offers (``detect_batch`` is optional in general; every
    backend here has it, and :func:`detect_batch` falls back to a loop for others)."""

    name: str

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        """Faces in one ``(H, W, 3)`` uint8 RGB image, best score first."""
        ...


def detect_batch(detector: FaceDetector, images: Sequence[np.ndarray]) -> list[list[FaceBox]]:
    """Faces in each image, through the detector's batched path when it has one."""
    batched = getattr(detector, "detect_batch", None)
    if callable(batched):
        return batched(images)
    return [detector.detect(im) for im in images]


#: "track": a box that overlaps the previous pick by at least this IoU continues its track
TRACK_MIN_IOU = 0.3
#: "track": boxes scoring within this of the best score compete on size
SCORE_MARGIN = 0.1


def pick_face(boxes: Sequence[FaceBox], cfg: DetectorConfig | None = None, *, source: str | None = None,
              previous: FaceBox | None = None) -> FaceBox:
    """The face to keep, by the rule ``cfg.pick``:

    ``track`` (default)
        The box that overlaps ``previous`` (the face picked in the previous sampled frame of the
        same video) most, if by IoU >= :data:`TRACK_MIN_IOU`: one identity is followed through a
        video even when another face scores higher in some frames. Without such a box (first
        frame, the face left, a scene cut) it is chosen by score, then size: among the boxes
        scoring within :data:`SCORE_MARGIN` of the best, the largest. So a larger box of lower
        score (a raised hand at 0.72 beside a face at 0.90) never wins, and of two faces found
        with equal confidence the nearer (larger) one does.
    ``largest``
        The largest area (ties: best score), whatever the score: the rule before tracking.
    ``best``
        The best score (ties: largest).

    Raises :class:`NoFaceDetected` (naming ``source`` when given) for an empty list.
    """
    ranked = rank_faces(boxes, cfg, previous=previous)
    if not ranked:
        raise NoFaceDetected("no face detected", source=source)
    return ranked[0]


def rank_faces(boxes: Sequence[FaceBox], cfg: DetectorConfig | None = None, *,
               previous: FaceBox | None = None) -> list[FaceBox]:
    """``boxes`` in :func:`pick_face`'s order of preference (its choice first): the next ones are
    the candidates when the first is not confirmed as a face (:mod:`pipeline.face.confirm`)."""
    rule = (cfg or DetectorConfig()).pick
    if rule == "largest":
        return sorted(boxes, key=lambda b: (-b.area, -b.score))
    if rule == "best":
        return sorted(boxes, key=lambda b: (-b.score, -b.area))
    boxes = list(boxes)
    first = []
    if previous is not None and boxes:
        iou, box = max(((b.iou(previous), b) for b in boxes), key=lambda t: (t[0], t[1].score))
        if iou >= TRACK_MIN_IOU:
            first = [box]
            boxes = [b for b in boxes if b is not box]
    rest = []
    while boxes:
        top = max(b.score for b in boxes)
        best = max((b for b in boxes if b.score >= top - SCORE_MARGIN), key=lambda b: (b.area, b.score))
        rest.append(best)
        boxes = [b for b in boxes if b is not best]
    return first + rest


def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            "expected an (H, W, 3) uint8 RGB image, got "
            f"{getattr(image, 'shape', type(image))} {getattr(image, 'dtype', '')}"
        )
    return image


class DetectorBase:
    """Shared plumbing: input checks, optional downscale, score/size filtering, sorting.

    Subclasses implement :meth:`_detect_raw`, returning for each image an ``(N, 5)`` array of
    ``x0, y0, x1, y1, score`` in that image's pixel coordinates.
    """

    name = "base"
    default_threshold = 0.5

    def __init__(self, cfg: DetectorConfig):
        self.cfg = cfg
        self.threshold = self.default_threshold if cfg.score_threshold is None else float(cfg.score_threshold)

    def _detect_raw(self, images: list[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        """Faces in one ``(H, W, 3)`` uint8 RGB image, best score first."""
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[FaceBox]]:
        """Faces in each of ``images`` (sizes may differ), best score first."""
        images = [_check_image(im) for im in images]
        if not images:
            return []
        scales = []
        work = []
        for im in images:
            h, w = im.shape[:2]
            if self.cfg.max_side and max(h, w) > self.cfg.max_side:
                s = self.cfg.max_side / max(h, w)
                im = cv2.resize(im, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
            scales.append((im.shape[1] / w, im.shape[0] / h))
            work.append(np.ascontiguousarray(im))
        raw = self._detect_raw(work)
        out = []
        for dets, (sx, sy) in zip(raw, scales):
            dets = np.asarray(dets, dtype=np.float64)
            dets = dets.reshape(-1, dets.shape[-1] if dets.ndim == 2 and dets.shape[-1] > 5 else 5)
            if (sx, sy) != (1.0, 1.0):  # back to full-frame pixel centres (box edges and keypoints)
                xs = [0, 2, *range(5, dets.shape[1], 2)]
                dets[:, xs] = (dets[:, xs] + 0.5) / sx - 0.5
                dets[:, [1, 3, *range(6, dets.shape[1], 2)]] = (dets[:, [1, 3, *range(6, dets.shape[1], 2)]] + 0.5) / sy - 0.5
            out.append(self._finish(dets))
        return out

    def _finish(self, dets: np.ndarray) -> list[FaceBox]:
        """``(N, 5 + 2K)`` rows ``x0, y0, x1, y1, score[, keypoint x, y ...]`` -> filtered, sorted boxes."""
        keep = (
            (dets[:, 4] >= self.threshold)
            & (dets[:, 2] > dets[:, 0])
            & (dets[:, 3] > dets[:, 1])
            & np.all(np.isfinite(dets), axis=1)
        )
        dets = dets[keep]
        size = np.sqrt((dets[:, 2] - dets[:, 0]) * (dets[:, 3] - dets[:, 1]))
        dets = dets[size >= self.cfg.min_face_size]
        dets = dets[np.argsort(-dets[:, 4], kind="stable")]
        return [FaceBox(*(float(v) for v in d[:5]), keypoints=d[5:].reshape(-1, 2).astype(np.float32)
                        if len(d) > 5 else None) for d in dets]


DETECTORS: Registry[FaceDetector] = Registry("face detector")


def create_detector(name: str, cfg: DetectorConfig | None = None, **kwargs: Any) -> FaceDetector:
    """Build the detector ``name``.

    ``kwargs`` that are :class:`DetectorConfig` fields override ``cfg``; the others are backend
    options (merged over ``cfg.options``). Unknown names raise `UnknownName` (a config error)
    listing valid ones.
    """
    cfg, options = split_stage_kwargs(cfg or DetectorConfig(), name, kwargs)
    return DETECTORS.create(name, cfg=cfg, **options)


def split_stage_kwargs(base, name: str, kwargs: dict[str, Any]):
    """(config with ``name`` and the field overrides in ``kwargs``, merged backend options)."""
    fields = {f.name for f in dataclasses.fields(base)} - {"name", "options"}
    overrides = {k: v for k, v in kwargs.items() if k in fields}
    options = {**base.options, **{k: v for k, v in kwargs.items() if k not in fields}}
    return dataclasses.replace(base, name=name, options=options, **overrides), options


# --------------------------------------------------------------------------- BlazeFace


class BlazeFaceDetector(DetectorBase):
    """BlazeFace on letterboxed frames.

    ``net`` is face-alignment's ``BlazeFace`` module with weights and anchors loaded (or any
    object with ``predict_on_batch(uint8 array (B, D, D, 3)) -> list of (n, 17) tensors`` whose
    first four columns are ``ymin, xmin, ymax, xmax`` normalised to the ``D x D`` input and the
    last the score).
    """

    default_threshold = 0.5
    #: score a face must reach when re-detected around itself (pipeline.face.confirm)
    confirm_score = 0.75

    def __init__(self, net: Any, cfg: DetectorConfig, *, input_size: int = 128, name: str = "blazeface",
                 second: "BlazeFaceDetector | None" = None):
        super().__init__(cfg)
        self.net = net
        self.input_size = int(input_size)
        self.name = name
        self.second = second
        if hasattr(net, "min_score_thresh"):
            net.min_score_thresh = self.threshold

    def _letterbox(self, image: np.ndarray) -> tuple[np.ndarray, float, float]:
        d = self.input_size
        h, w = image.shape[:2]
        s = d / max(h, w)
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
        out = np.zeros((d, d, 3), np.uint8)
        out[:nh, :nw] = cv2.resize(image, (nw, nh), interpolation=interp)
        return out, nw / w, nh / h

    def _detect_raw(self, images: list[np.ndarray]) -> list[np.ndarray]:
        boxed = [self._letterbox(im) for im in images]
        preds = self.net.predict_on_batch(np.stack([b[0] for b in boxed]))
        d = self.input_size
        out = []
        for (_, rx, ry), p in zip(boxed, preds):
            p = p.detach().cpu().numpy() if hasattr(p, "detach") else np.asarray(p)
            p = p.reshape(-1, p.shape[-1]) if p.size else np.zeros((0, 17))
            # normalised edges of the D x D input -> frame pixel centres
            x0 = p[:, 1] * d / rx - 0.5
            y0 = p[:, 0] * d / ry - 0.5
            x1 = p[:, 3] * d / rx - 0.5
            y1 = p[:, 2] * d / ry - 0.5
            kp = p[:, 4:16].reshape(-1, 6, 2) * d / np.array([rx, ry]) - 0.5  # (x, y) of KEYPOINT_NAMES
            out.append(np.concatenate([np.stack([x0, y0, x1, y1, p[:, -1]], axis=1), kp.reshape(-1, 12)], axis=1))
        return out

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[FaceBox]]:
        """Faces in each of ``images``, merged with those of the ``second`` model when there is one."""
        out = super().detect_batch(images)
        if self.second is not None:
            out = [merge_boxes(a + b) for a, b in zip(out, self.second.detect_batch(images))]
        return out


def merge_boxes(boxes: Sequence[FaceBox], iou: float = 0.3) -> list[FaceBox]:
    """Greedy non-maximum suppression: the best-scored box of each group overlapping by more
    than ``iou``, best score first."""
    kept: list[FaceBox] = []
    for b in sorted(boxes, key=lambda b: -b.score):
        if all(b.iou(k) <= iou for k in kept):
            kept.append(b)
    return kept


def _blazeface_net(cfg: DetectorConfig, back: bool) -> Any:
    """face-alignment's BlazeFace module (front or back model) with weights from the model directory."""
    suffix = "back" if back else ""
    weights = asset_path(f"blazeface/blazeface{suffix}.pth", cfg.model_dir)
    anchors = asset_path(f"blazeface/anchors{suffix}.npy", cfg.model_dir)
    from face_alignment.detection.blazeface import FaceDetector as FABlazeFace  # backend library (module doc)

    thr = BlazeFaceDetector.default_threshold if cfg.score_threshold is None else cfg.score_threshold
    fa = FABlazeFace(cfg.device, back_model=back, path_to_detector=str(weights), path_to_anchor=str(anchors),
                     min_score_thresh=thr)
    return fa.face_detector


def _blazeface_factory(back: bool):
    """``blazeface``: the front model and (option ``small_faces``, default on) the back model on
    every frame, their boxes merged (:func:`merge_boxes`). The front model sees the frame at
    128 px, so a 45 px face of a 640x360 frame is 9 px there and never found; the back model
    (256 px input, trained on faces far from the camera) finds faces from about 40 px in such
    frames (bench/bench_detect.py: every face 40-60 px tall; no detection on noise frames). Both
    always run (not the back model only where the front finds nothing): a false front
    detection elsewhere in the frame must not hide a small face. The face confirmation of
    :mod:`pipeline.face.confirm` rejects what either finds on textures."""

    def make(cfg: DetectorConfig, *, small_faces: bool = True, **options: Any) -> BlazeFaceDetector:
        if options:
            raise TypeError(f"{cfg.name}: unexpected options {sorted(options)}")
        second = None
        if small_faces and not back:
            second = BlazeFaceDetector(_blazeface_net(cfg, True), cfg, input_size=256, name=f"{cfg.name}-back")
        return BlazeFaceDetector(_blazeface_net(cfg, back), cfg, input_size=256 if back else 128, name=cfg.name,
                                 second=second)

    return make


DETECTORS.register("blazeface")(_blazeface_factory(back=False))
DETECTORS.register("blazeface-back")(_blazeface_factory(back=True))


# --------------------------------------------------------------------------- dlib


def face_recognition_models_file(name: str) -> Path:
    """Path of a data file of the face-recognition-models package (``models/<name>``), found
    without importing the package (its ``__init__`` needs ``pkg_resources``)."""
    spec = importlib.util.find_spec("face_recognition_models")
    roots = list(spec.submodule_search_locations or []) if spec else []
    for root in roots:
        path = Path(root) / "models" / name
        if path.is_file():
            return path
    where = roots[0] if roots else "(package not installed)"
    raise ModelAssetMissing(
        f"dlib model file {name!r} not found in the face-recognition-models package ({where}); "
        "install it with `pip install face-recognition-models`",
        source=name,
    )


class DlibHogDetector(DetectorBase):
    """dlib's HOG frontal face detector (``upsample``: times the image is doubled first)."""

    name = "dlib-hog"
    default_threshold = 0.0

    def __init__(self, cfg: DetectorConfig, *, upsample: int = 1, detector: Any = None):
        super().__init__(cfg)
        import dlib  # backend library (module doc)

        self.upsample = int(upsample)
        self.detector = detector if detector is not None else dlib.get_frontal_face_detector()
        if "cuda" in cfg.device:
            logger.info("dlib-hog runs on the CPU whatever the device setting")

    def _detect_raw(self, images: list[np.ndarray]) -> list[np.ndarray]:
        out = []
        for im in images:
            rects, scores, _ = self.detector.run(im, self.upsample, self.threshold)
            # dlib rectangles are inclusive pixel ranges: edges half a pixel outside
            out.append(
                np.array(
                    [[r.left() - 0.5, r.top() - 0.5, r.right() + 0.5, r.bottom() + 0.5, s]
                     for r, s in zip(rects, scores)],
                    dtype=np.float64,
                ).reshape(-1, 5)
            )
        return out


class DlibCnnDetector(DetectorBase):
    """dlib's MMOD CNN face detector (``upsample``: times the image is doubled first)."""

    name = "dlib-cnn"
    default_threshold = 0.0

    def __init__(self, cfg: DetectorConfig, *, upsample: int = 0, detector: Any = None):
        super().__init__(cfg)
        self.upsample = int(upsample)
        if detector is None:
            import dlib  # backend library (module doc)

            detector = dlib.cnn_face_detection_model_v1(str(face_recognition_models_file("mmod_human_face_detector.dat")))
        self.detector = detector

    def _detect_raw(self, images: list[np.ndarray]) -> list[np.ndarray]:
        out = []
        for im in images:
            dets = self.detector(im, self.upsample)
            out.append(
                np.array(
                    [[d.rect.left() - 0.5, d.rect.top() - 0.5, d.rect.right() + 0.5, d.rect.bottom() + 0.5,
                      d.confidence] for d in dets],
                    dtype=np.float64,
                ).reshape(-1, 5)
            )
        return out


DETECTORS.register("dlib-hog")(lambda cfg, **opts: DlibHogDetector(cfg, **opts))
DETECTORS.register("dlib-cnn")(lambda cfg, **opts: DlibCnnDetector(cfg, **opts))


# --------------------------------------------------------------------------- S3FD

SFD_WEIGHTS = "sfd/s3fd-619a316812.pth"


class SFDDetector(DetectorBase):
    """face-alignment's S3FD network with its decoding and NMS.

    ``net`` is a ``face_alignment.detection.sfd.net_s3fd.s3fd`` module with weights loaded (or
    any module with the same outputs: six (class-softmax logits, box regression) pairs for
    strides 4..128), already on ``cfg.device`` and in eval mode.
    """

    name = "sfd"
    default_threshold = 0.5

    def __init__(self, net: Any, cfg: DetectorConfig, *, nms_threshold: float = 0.3):
        super().__init__(cfg)
        self.net = net
        self.nms_threshold = float(nms_threshold)

    def _detect_raw(self, images: list[np.ndarray]) -> list[np.ndarray]:
        from face_alignment.detection.sfd.bbox import nms  # backend library (module doc)
        from face_alignment.detection.sfd.detect import batch_detect  # backend library (module doc)

        out: list[np.ndarray | None] = [None] * len(images)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(im.shape, []).append(i)
        for idx in groups.values():
            batch = torch.from_numpy(np.stack([images[i] for i in idx])).permute(0, 3, 1, 2)
            benchmark = torch.backends.cudnn.benchmark  # face-alignment turns it on for CUDA
            try:
                with torch.inference_mode():
                    dets = batch_detect(self.net, batch, device=str(self.cfg.device))
            finally:
                torch.backends.cudnn.benchmark = benchmark
            for j, i in enumerate(idx):
                d = np.asarray(dets[j], dtype=np.float64).reshape(-1, 5)
                d = d[d[:, 4] >= self.threshold]
                if len(d):
                    d = d[nms(d, self.nms_threshold)]
                    d[:, :4] -= 0.5  # S3FD anchors sit on cell centres in edge coordinates
                out[i] = d.reshape(-1, 5)
        return out  # type: ignore[return-value]


def _sfd_factory(cfg: DetectorConfig, **options: Any) -> SFDDetector:
    from face_alignment.detection.sfd.net_s3fd import s3fd  # backend library (module doc)

    path = asset_path(SFD_WEIGHTS, cfg.model_dir)
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    net = s3fd()
    net.load_state_dict(state)
    net.to(torch.device(cfg.device)).eval()
    return SFDDetector(net, cfg, **options)


DETECTORS.register("sfd")(_sfd_factory)


# --------------------------------------------------------------------------- insightface SCRFD


def onnx_providers(device: str) -> list:
    """onnxruntime execution providers for a torch-style device string."""
    if "cuda" in device:
        idx = int(device.split(":", 1)[1]) if ":" in device else 0
        return [("CUDAExecutionProvider", {"device_id": idx}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def insightface_model(relative: str, cfg_model_dir: str | None, device: str, task_prefix: str):
    """Load ``insightface/<pack>/<file>.onnx`` from the model directory with insightface's
    model zoo (never downloading) and check it is a ``task_prefix`` model."""
    path = asset_path(relative, cfg_model_dir, source_key="insightface")
    from insightface.model_zoo import get_model  # backend library (module doc)

    model = get_model(str(path), providers=onnx_providers(device), download=False)
    task = getattr(model, "taskname", None)
    if model is None or not str(task).startswith(task_prefix):
        raise ConfigError(f"{path}: not an insightface {task_prefix} model (got {task!r})", source=str(path))
    return model


class InsightFaceDetector(DetectorBase):
    """insightface SCRFD.

    ``model`` is an ``insightface.model_zoo.scrfd.SCRFD`` (or any object with
    ``detect(bgr_image, input_size=(w, h), det_thresh=t) -> (dets (N, 5), kps)``). SCRFD
    letterboxes each frame into ``input_size`` itself and takes OpenCV BGR order.
    """

    name = "insightface"
    default_threshold = 0.5

    def __init__(self, model: Any, cfg: DetectorConfig, *, input_size: Sequence[int] = (640, 640), pack: str = "buffalo_l"):
        super().__init__(cfg)
        self.model = model
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.pack = pack

    def _detect_raw(self, images: list[np.ndarray]) -> list[np.ndarray]:
        out = []
        for im in images:
            bgr = np.ascontiguousarray(im[..., ::-1])
            dets, _kps = self.model.detect(bgr, input_size=self.input_size, det_thresh=self.threshold)
            out.append(np.asarray(dets, dtype=np.float64).reshape(-1, 5))
        return out


def _insightface_factory(cfg: DetectorConfig, *, pack: str = "buffalo_l", **options: Any) -> InsightFaceDetector:
    model = insightface_model(f"insightface/{pack}/det_10g.onnx", cfg.model_dir, cfg.device, "detection")
    return InsightFaceDetector(model, cfg, pack=pack, **options)


DETECTORS.register("insightface")(_insightface_factory)


__all__ = [
    "DetectorConfig",
    "FaceDetector",
    "DetectorBase",
    "DETECTORS",
    "create_detector",
    "detect_batch",
    "pick_face",
    "rank_faces",
    "merge_boxes",
    "BlazeFaceDetector",
    "DlibHogDetector",
    "DlibCnnDetector",
    "SFDDetector",
    "InsightFaceDetector",
    "face_recognition_models_file",
    "onnx_providers",
    "split_stage_kwargs",
    "insightface_model",
    "SFD_WEIGHTS",
]
