"""68-point facial landmark backends behind one small interface.

Every backend returns :class:`~pipeline.base.types.Landmarks`: ``(68, 2)`` float32 ``(x, y)`` in
frame pixels (pixel centres at integer coordinates), iBUG-68 order, for one face box.

Backends (``create_landmarker(name, ...)``; unknown names raise UnknownName (a ConfigError) listing these):

``dlib68``
    dlib's ERT shape predictor ``shape_predictor_68_face_landmarks.dat`` from the
    face-recognition-models package's data folder (integer-pixel output).
``fan2d`` / ``fan3d``
    face-alignment's FAN (4 hourglass stacks) with user-supplied weights from the model
    directory: ``fan/2DFAN4-*.pth.tar`` / ``fan/3DFAN4-*.pth.tar`` (state dicts, as
    face-alignment 1.5 downloads them) or the TorchScript ``fan/2DFAN4-*.zip`` /
    ``fan/3DFAN4-*.zip`` of face-alignment 1.3/1.4; option ``weights`` names another file.
    The face is cropped as face-alignment does (box centre moved up by 12% of the height,
    square side ``200 * (w + h) / 195``) to 256 px; heatmaps are decoded with its
    quarter-pixel rule; ``flip=True`` averages with the mirrored input. ``fan3d`` gives the
    image projection (x, y) of the 3D landmarks (its depth network is not needed for that).
``insightface68``
    insightface's ``1k3d68.onnx`` from ``insightface/<pack>/`` (option ``pack``, default
    ``buffalo_l``): 68 3D points of which x, y are kept; crop as insightface does (side
    ``1.5 * max(w, h)`` to 192 px).
``mediapipe68``
    MediaPipe's 468-point face mesh (``face_landmark.tflite`` of the mediapipe 0.10.21 wheel, run
    by ``ai-edge-litert``), reduced to iBUG-68 by :data:`MEDIAPIPE_TO_IBUG68`. Its points are
    projections of fixed mesh vertices, so they stay on the face when the head turns, where
    dlib's semi-frontal 68 points slide off (``bench/bench_labels.py``: yaw +-45 label IoU
    0.75-0.79 with dlib68, 0.89-0.94 with this). The file is looked up as
    ``mediapipe/face_landmark.tflite`` in the model directory, then in the environment's
    ``share/depthseg-fas/models/`` where ``make setup`` puts it (:mod:`pipeline.face.mediapipe_model`).
    The crop is MediaPipe's: the box enlarged 1.5x, square, rotated upright by the detector's eye
    keypoints when it gives them, to 192 px, RGB in [0, 1].

The FAN and insightface backends run many faces per call (:meth:`landmarks_batch`), batched
by ``LandmarkConfig.batch_size``. Each backend imports its library (face_alignment, dlib,
insightface - an optional extra) when built or run, so a run loads only the one it selected.
Nothing here downloads anything.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np
import torch

from pipeline.base.assets import asset_path, resolve_model_dir
from pipeline.base.errors import ConfigError, LandmarkError
from pipeline.base.registry import Registry
from pipeline.base.types import FaceBox, Landmarks
from pipeline.face.crop import invert_affine, square_affine, transform_points, warp_square
from pipeline.face.detect import create_detector, face_recognition_models_file, insightface_model, split_stage_kwargs
from pipeline.face.mediapipe_model import load_interpreter

logger = logging.getLogger(__name__)

NUM_LANDMARKS = 68


@dataclass(frozen=True)
class LandmarkConfig:
    """Settings of the landmark stage: backend ``name``, torch/onnx ``device``, ``model_dir``
    (None: the default model directory), ``batch_size`` (faces per network call) and
    backend-specific ``options`` (e.g. ``{"flip": True}`` for FAN)."""

    name: str = "mediapipe68"
    device: str = "cpu"
    model_dir: str | None = None
    batch_size: int = 16
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if int(self.batch_size) != self.batch_size or self.batch_size < 1:
            raise ConfigError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        if not any(k in str(self.device) for k in ("cpu", "cuda", "mps")):
            raise ConfigError(f"device must be cpu, cuda[:N] or mps, got {self.device!r}")


@runtime_checkable
class LandmarkDetector(Protocol):
    """What every landmark backend offers (see :func:`landmarks_batch` for the batched form)."""

    name: str

    def landmarks(self, image: np.ndarray, box: FaceBox) -> Landmarks:
        """68 landmarks of the face in ``box`` of one ``(H, W, 3)`` uint8 RGB image."""
        ...


def landmarks_batch(
    detector: LandmarkDetector, images: Sequence[np.ndarray], boxes: Sequence[FaceBox]
) -> list[Landmarks]:
    """Landmarks of ``boxes[i]`` in ``images[i]``, through the batched path when there is one."""
    if len(images) != len(boxes):
        raise ValueError(f"{len(images)} images but {len(boxes)} boxes")
    batched = getattr(detector, "landmarks_batch", None)
    if callable(batched):
        return batched(images, boxes)
    return [detector.landmarks(im, b) for im, b in zip(images, boxes)]


class LandmarkerBase:
    """Shared plumbing: ``landmarks`` is ``landmarks_batch`` of one face; batching by
    ``cfg.batch_size``; subclasses implement :meth:`_run` on one chunk."""

    name = "base"

    def __init__(self, cfg: LandmarkConfig):
        self.cfg = cfg

    def landmarks(self, image: np.ndarray, box: FaceBox) -> Landmarks:
        """68 landmarks of the face in ``box`` of one ``(H, W, 3)`` uint8 RGB image."""
        return self.landmarks_batch([image], [box])[0]

    def landmarks_batch(self, images: Sequence[np.ndarray], boxes: Sequence[FaceBox]) -> list[Landmarks]:
        """Landmarks of ``boxes[i]`` in ``images[i]`` (images may differ in size)."""
        if len(images) != len(boxes):
            raise ValueError(f"{len(images)} images but {len(boxes)} boxes")
        for im in images:
            if not isinstance(im, np.ndarray) or im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
                raise ValueError(f"expected (H, W, 3) uint8 RGB images, got {getattr(im, 'shape', type(im))}")
        for b in boxes:
            if not (b.width > 0 and b.height > 0):
                raise LandmarkError(f"empty face box {b}")
        out: list[Landmarks] = []
        n = self.cfg.batch_size
        for start in range(0, len(images), n):
            pts, scores = self._run(list(images[start : start + n]), list(boxes[start : start + n]))
            if not np.all(np.isfinite(pts)):
                raise LandmarkError(f"{self.name} produced non-finite landmarks")
            for i in range(len(pts)):
                out.append(
                    Landmarks(
                        points=np.ascontiguousarray(pts[i], dtype=np.float32),
                        scores=None if scores is None else np.asarray(scores[i], dtype=np.float32),
                    )
                )
        return out

    def _run(self, images: list[np.ndarray], boxes: list[FaceBox]) -> tuple[np.ndarray, np.ndarray | None]:
        """``(B, 68, 2)`` frame-pixel points and optional ``(B, 68)`` scores for one chunk."""
        raise NotImplementedError


LANDMARKERS: Registry[LandmarkDetector] = Registry("landmark detector")


def create_landmarker(name: str, cfg: LandmarkConfig | None = None, **kwargs: Any) -> LandmarkDetector:
    """Build the landmark backend ``name``.

    ``kwargs`` that are :class:`LandmarkConfig` fields override ``cfg``; the others are backend
    options (merged over ``cfg.options``). Unknown names raise `UnknownName` (a config error)
    listing valid ones.
    """
    cfg, options = split_stage_kwargs(cfg or LandmarkConfig(), name, kwargs)
    return LANDMARKERS.create(name, cfg=cfg, **options)


# --------------------------------------------------------------------------- dlib


#: face box side (px) that the region searched by dlib's HOG detector is scaled to (its window
#: is 80 px; the region is twice the box, so faces of 0.6-1.6 box sides are found)
DLIB_HOG_BOX_PX = 140.0
#: the HOG box replaces the given one only if they overlap at least this much (IoU)
DLIB_HOG_MIN_IOU = 0.3


class Dlib68Landmarker(LandmarkerBase):
    """dlib's 68-point shape predictor.

    The predictor starts from its mean shape placed in the box and was trained on the boxes of
    dlib's own HOG detector, so it is sensitive to where the box lies: given another detector's
    box (BlazeFace's, shifted towards the far cheek on a turned head) it slides back towards a
    frontal face (bench/bench_label_pose.py, real photos: fitted yaw on true yaw slope 0.47 from
    BlazeFace's box, 1.03 from the HOG box; a head at -45 deg fitted at +1). With ``box="hog"``
    (the default) the face is re-found by dlib's HOG detector in a region of twice the given box
    around it (scaled so the box is :data:`DLIB_HOG_BOX_PX` px), and the HOG box that overlaps the
    given one best (IoU >= :data:`DLIB_HOG_MIN_IOU`) is used; where HOG finds none (profiles,
    occluded or tiny faces) the given box is used as before. ``box="given"``: always the given
    box. The predictor runs on the full-resolution image either way.
    """

    name = "dlib68"

    def __init__(self, cfg: LandmarkConfig, *, predictor: Any = None, box: str = "hog", hog: Any = None):
        super().__init__(cfg)
        if box not in ("hog", "given"):
            raise ConfigError(f"dlib68 option box must be 'hog' or 'given', got {box!r}")
        if predictor is None:
            import dlib  # backend library (module doc)

            predictor = dlib.shape_predictor(str(face_recognition_models_file("shape_predictor_68_face_landmarks.dat")))
        self.predictor = predictor
        self.hog = (hog if hog is not None else create_detector("dlib-hog", upsample=0)) if box == "hog" else None

    def predictor_box(self, image: np.ndarray, box: FaceBox) -> tuple[float, float, float, float]:
        """``(x0, y0, x1, y1)`` frame pixels (pixel-edge convention of :class:`FaceBox`): the box
        the predictor is given for ``box`` (class docstring)."""
        given = (box.x0, box.y0, box.x1, box.y1)
        if self.hog is None:
            return given
        n = int(round(2.0 * DLIB_HOG_BOX_PX))
        # frame -> region: a square of twice the box side about its centre, the box DLIB_HOG_BOX_PX px
        a = square_affine((box.x0 + box.x1) / 2.0, (box.y0 + box.y1) / 2.0, 2.0 * max(box.width, box.height), n)
        region = warp_square(image, a, n, border="replicate", antialias=False)
        to_frame = invert_affine(a)
        best, best_iou = given, DLIB_HOG_MIN_IOU
        for found in self.hog.detect(region):
            (x0, y0), (x1, y1) = transform_points(to_frame, np.array([[found.x0, found.y0], [found.x1, found.y1]]))
            cand = FaceBox(float(x0), float(y0), float(x1), float(y1))
            iou = cand.iou(box)
            if iou >= best_iou:
                best, best_iou = (cand.x0, cand.y0, cand.x1, cand.y1), iou
        return best

    def _run(self, images, boxes):
        import dlib  # backend library (module doc)

        pts = np.empty((len(images), NUM_LANDMARKS, 2), np.float32)
        for i, (im, b) in enumerate(zip(images, boxes)):
            x0, y0, x1, y1 = self.predictor_box(im, b)
            # inverse of the detector's inclusive-pixel conversion (edges half a pixel outside)
            rect = dlib.rectangle(int(round(x0 + 0.5)), int(round(y0 + 0.5)), int(round(x1 - 0.5)), int(round(y1 - 0.5)))
            shape = self.predictor(np.ascontiguousarray(im), rect)
            if shape.num_parts != NUM_LANDMARKS:
                raise LandmarkError(f"dlib predictor gave {shape.num_parts} points, expected 68")
            pts[i] = [(p.x, p.y) for p in shape.parts()]
        return pts, None


LANDMARKERS.register("dlib68")(lambda cfg, **opts: Dlib68Landmarker(cfg, **opts))


# --------------------------------------------------------------------------- FAN

FAN_RESOLUTION = 256
FAN_HEATMAP = 64
FAN_REFERENCE_SCALE = 195.0  # face-alignment's REFERENCE_SCALE
FAN_CENTER_Y_OFFSET = 0.12  # face-alignment's CENTER_Y_OFFSET
#: face-alignment's left/right landmark permutation for the mirrored input
FAN_FLIP_PAIRS = (
    16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 26, 25, 24, 23, 22, 21, 20, 19, 18,
    17, 27, 28, 29, 30, 35, 34, 33, 32, 31, 45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40, 54, 53,
    52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65,
)
#: file names face-alignment uses (1.5: state dicts; 1.3/1.4: TorchScript zips), newest first
FAN_WEIGHTS = {
    "fan2d": ("fan/2DFAN4-11f355bf06.pth.tar", "fan/2DFAN4-cd938726ad.zip"),
    "fan3d": ("fan/3DFAN4-7835d9f11d.pth.tar", "fan/3DFAN4-4a694010b9.zip"),
}


def fan_crop_affine(box: FaceBox) -> np.ndarray:
    """Frame -> 256 px FAN input affine for ``box``, with face-alignment's centre and scale."""
    cx = (box.x0 + box.x1) / 2.0
    cy = (box.y0 + box.y1) / 2.0 - box.height * FAN_CENTER_Y_OFFSET
    side = 200.0 * (box.width + box.height) / FAN_REFERENCE_SCALE
    return square_affine(cx, cy, side, FAN_RESOLUTION)


def decode_heatmaps(heatmaps) -> tuple[np.ndarray, np.ndarray]:
    """Peak positions of ``(B, 68, h, w)`` heatmaps, batched in torch.

    Returns ``(B, 68, 2)`` float32 ``(x, y)`` in heatmap pixel-centre coordinates (argmax moved
    a quarter pixel towards the larger neighbour, face-alignment's rule, for interior peaks) and
    ``(B, 68)`` peak values.
    """
    hm = torch.as_tensor(heatmaps).float()
    b, c, h, w = hm.shape
    flat = hm.reshape(b, c, h * w)
    score, idx = flat.max(dim=-1)
    px = (idx % w).long()
    py = torch.div(idx, w, rounding_mode="floor").long()
    inner = (px > 0) & (px < w - 1) & (py > 0) & (py < h - 1)

    def at(dx: int, dy: int):
        xi = (px + dx).clamp(0, w - 1)
        yi = (py + dy).clamp(0, h - 1)
        return flat.gather(-1, (yi * w + xi).unsqueeze(-1)).squeeze(-1)

    off_x = torch.sign(at(1, 0) - at(-1, 0)) * 0.25 * inner
    off_y = torch.sign(at(0, 1) - at(0, -1)) * 0.25 * inner
    pts = torch.stack([px.float() + off_x, py.float() + off_y], dim=-1)
    return pts.cpu().numpy().astype(np.float32), score.cpu().numpy().astype(np.float32)


def load_fan(path: str | Path, device: str):
    """A FAN network from a user-given file: a TorchScript ``.zip`` (``torch.jit.load``) or a
    state dict (``torch.load(weights_only=True)``, optionally under ``"state_dict"`` with
    ``module.`` prefixes) loaded into face-alignment's ``FAN(4)``. Eval mode, on ``device``."""
    path = Path(path)
    dev = torch.device(device)
    if path.suffix == ".zip":
        net = torch.jit.load(str(path), map_location=dev)
    else:
        from face_alignment.models import FAN  # backend library (module doc)

        state = torch.load(str(path), map_location="cpu", weights_only=True)
        if isinstance(state, Mapping) and "state_dict" in state:
            state = state["state_dict"]
        state = {k.removeprefix("module."): v for k, v in state.items()}
        net = FAN(4)
        net.load_state_dict(state)
        net.to(dev)
    return net.eval()


class FanLandmarker(LandmarkerBase):
    """face-alignment's FAN on batches of face crops.

    ``net`` is a FAN module (from :func:`load_fan`) or any callable mapping a float
    ``(B, 3, 256, 256)`` RGB tensor in ``[0, 1]`` to ``(B, 68, 64, 64)`` heatmaps (or a list whose
    last item is), already on ``cfg.device``.
    """

    def __init__(self, net: Any, cfg: LandmarkConfig, *, flip: bool = False, name: str = "fan2d"):
        super().__init__(cfg)
        self.net = net
        self.flip = bool(flip)
        self.name = name

    def _forward(self, x):
        out = self.net(x)
        return out[-1] if isinstance(out, (list, tuple)) else out

    def _run(self, images, boxes):
        affines = np.stack([fan_crop_affine(b) for b in boxes])
        crops = np.stack(
            [
                cv2.warpAffine(im, a, (FAN_RESOLUTION, FAN_RESOLUTION), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)
                for im, a in zip(images, affines)
            ]
        )
        dev = torch.device(self.cfg.device)
        x = torch.from_numpy(crops).to(dev).permute(0, 3, 1, 2).float().div_(255.0)
        with torch.inference_mode():
            hm = self._forward(x).float()
            if self.flip:
                hm_f = self._forward(x.flip(-1)).float()
                hm = hm + hm_f[:, list(FAN_FLIP_PAIRS)].flip(-1)
        pts_hm, scores = decode_heatmaps(hm)
        if self.flip:
            scores = scores / 2.0
        stride = FAN_RESOLUTION / hm.shape[-1]
        pts_crop = (pts_hm + 0.5) * stride - 0.5  # heatmap pixel centre -> crop pixel centre
        return transform_points(invert_affine(affines), pts_crop), scores


def find_fan_weights(kind: str, model_dir: str | None, weights: str | None = None) -> Path:
    """The FAN weights file for ``kind`` (``fan2d``/``fan3d``): ``weights`` when given (absolute,
    or relative to the model directory), else face-alignment's file names, else any
    ``fan/2DFAN4*`` / ``fan/3DFAN4*`` file. Raises :class:`ModelAssetMissing` naming the file."""
    if weights:
        p = Path(weights).expanduser()
        return p if p.is_absolute() and p.is_file() else asset_path(str(weights), model_dir, source_key="fan")
    root = resolve_model_dir(model_dir)
    for rel in FAN_WEIGHTS[kind]:
        if (root / rel).is_file():
            return root / rel
    prefix = "2DFAN4" if kind == "fan2d" else "3DFAN4"
    found = sorted((root / "fan").glob(f"{prefix}*")) if (root / "fan").is_dir() else []
    found = [p for p in found if p.is_file()]
    if found:
        return found[0]
    return asset_path(FAN_WEIGHTS[kind][0], model_dir, source_key="fan")  # raises, naming the file


def _fan_factory(kind: str):
    def make(cfg: LandmarkConfig, *, weights: str | None = None, flip: bool = False) -> FanLandmarker:
        path = find_fan_weights(kind, cfg.model_dir, weights)
        return FanLandmarker(load_fan(path, cfg.device), cfg, flip=flip, name=kind)

    return make


LANDMARKERS.register("fan2d")(_fan_factory("fan2d"))
LANDMARKERS.register("fan3d")(_fan_factory("fan3d"))


# --------------------------------------------------------------------------- insightface


def insightface_crop_affine(box: FaceBox, size: int) -> np.ndarray:
    """Frame -> ``size`` px input affine of insightface's landmark models (its
    ``face_align.transform``: scale ``size / (1.5 max(w, h))``, box centre to ``size / 2``)."""
    cx = (box.x0 + box.x1) / 2.0
    cy = (box.y0 + box.y1) / 2.0
    s = size / (1.5 * max(box.width, box.height))
    return np.array([[s, 0.0, size / 2.0 - s * cx], [0.0, s, size / 2.0 - s * cy]], dtype=np.float32)


class InsightFace68Landmarker(LandmarkerBase):
    """insightface ``1k3d68`` on batches of 192 px crops through an onnxruntime session.

    ``session`` is an ``onnxruntime.InferenceSession`` (or any object with ``get_inputs()`` and
    ``run(None, {name: blob})``) whose output is ``(B, 3 * K)`` with the last 68 of the ``K``
    3D points the iBUG landmarks in ``[-1, 1]`` crop units. Its input is RGB float
    ``(pixel - input_mean) / input_std``, as insightface prepares it.
    """

    name = "insightface68"

    def __init__(self, session: Any, cfg: LandmarkConfig, *, input_size: int = 192,
                 input_mean: float = 127.5, input_std: float = 128.0):
        super().__init__(cfg)
        self.session = session
        self.input_size = int(input_size)
        self.input_mean = float(input_mean)
        self.input_std = float(input_std)
        inp = session.get_inputs()[0]
        self.input_name = inp.name
        batch_dim = inp.shape[0] if inp.shape else 1
        self.fixed_batch = isinstance(batch_dim, int) and batch_dim > 0

    def _run(self, images, boxes):
        size = self.input_size
        affines = np.stack([insightface_crop_affine(b, size) for b in boxes])
        crops = np.stack(
            [cv2.warpAffine(im, a, (size, size), borderValue=0) for im, a in zip(images, affines)]
        ).astype(np.float32)
        blob = np.ascontiguousarray(((crops - self.input_mean) / self.input_std).transpose(0, 3, 1, 2))
        if self.fixed_batch:
            preds = np.concatenate([self.session.run(None, {self.input_name: blob[i : i + 1]})[0] for i in range(len(blob))])
        else:
            preds = self.session.run(None, {self.input_name: blob})[0]
        preds = np.asarray(preds, dtype=np.float64).reshape(len(boxes), -1)
        dim = 3 if preds.shape[1] >= 3000 else 2
        pts = preds.reshape(len(boxes), -1, dim)[:, -NUM_LANDMARKS:, :2]
        pts_crop = (pts + 1.0) * (size // 2)
        return transform_points(invert_affine(affines), pts_crop), None


def _insightface68_factory(cfg: LandmarkConfig, *, pack: str = "buffalo_l") -> InsightFace68Landmarker:
    model = insightface_model(f"insightface/{pack}/1k3d68.onnx", cfg.model_dir, cfg.device, "landmark")
    if getattr(model, "lmk_num", NUM_LANDMARKS) != NUM_LANDMARKS:
        raise ConfigError(f"{model.model_file}: gives {model.lmk_num} landmarks, expected 68")
    return InsightFace68Landmarker(
        model.session, cfg, input_size=model.input_size[0], input_mean=model.input_mean, input_std=model.input_std
    )


LANDMARKERS.register("insightface68")(_insightface68_factory)


# --------------------------------------------------------------------------- mediapipe

#: iBUG-68 landmark k (0-based) -> the face-mesh vertices averaged for it. Jaw 0-16 on the mesh's
#: face oval, brows 17-26, nose bridge 27-30 and base 31-35, eyes 36-47 (corners 33/133, 362/263),
#: outer lips 48-59 (corners 61/291), inner lips 60-67 (MediaPipe's canonical face model indices).
MEDIAPIPE_TO_IBUG68: tuple[tuple[int, ...], ...] = (
    (127,), (234,), (93,), (132, 58), (58, 172), (136,), (150,), (176,), (152,), (400,), (379,), (365,),
    (397, 288), (361,), (323,), (454,), (356,),
    (70,), (63,), (105,), (66,), (107,), (336,), (296,), (334,), (293,), (300,),
    (168,), (197,), (5,), (4,), (75,), (97,), (2,), (326,), (305,),
    (33,), (160,), (158,), (133,), (153,), (144,), (362,), (385,), (387,), (263,), (373,), (380,),
    (61,), (40,), (37,), (0,), (267,), (270,), (291,), (321,), (314,), (17,), (84,), (91,),
    (78,), (81,), (13,), (311,), (308,), (402,), (14,), (178,),
)
MEDIAPIPE_INPUT = 192
MEDIAPIPE_MESH_POINTS = 468


#: grid of the MediaPipe crop's centre and side (frame pixels) and of its angle (radians)
MEDIAPIPE_CROP_GRID = (0.25, 1e-3)


def mediapipe_crop_affine(box: FaceBox, size: int = MEDIAPIPE_INPUT, scale: float = 1.5) -> np.ndarray:
    """Frame -> ``size`` px input affine of MediaPipe's face-landmark model: the box centre to the
    crop centre, side ``scale * max(w, h)``, rotated so the detector's eye keypoints (BlazeFace's
    ``right_eye``, ``left_eye``, the first two) lie on a horizontal line; no rotation without them.

    Centre and side are rounded to a quarter pixel and the angle to 1 mrad
    (:data:`MEDIAPIPE_CROP_GRID`), as dlib takes whole-pixel boxes: the detector's box moves by
    float noise between torch thread counts, and without the rounding that noise reached the
    landmarks, the crop placed from them and so the stored images (1 level on 0.3-0.7% of the
    pixels between runs with 1 and 2 threads)."""
    step, rad = MEDIAPIPE_CROP_GRID

    def snap(v: float, grid: float) -> float:
        return round(v / grid) * grid

    cx, cy = snap((box.x0 + box.x1) / 2.0, step), snap((box.y0 + box.y1) / 2.0, step)
    theta = 0.0
    if box.keypoints is not None and len(box.keypoints) >= 2:
        (rx, ry), (lx, ly) = np.asarray(box.keypoints[:2], dtype=np.float64)
        theta = snap(float(np.arctan2(ly - ry, lx - rx)), rad)  # the subject's right eye is on the image's left
    s = size / snap(scale * max(box.width, box.height), step)
    c, si = np.cos(-theta), np.sin(-theta)
    lin = s * np.array([[c, -si], [si, c]])
    t = np.array([size / 2.0, size / 2.0]) - lin @ np.array([cx, cy])
    return np.concatenate([lin, t[:, None]], axis=1).astype(np.float32)


def mesh_to_ibug68(mesh: np.ndarray) -> np.ndarray:
    """``(..., 468, D)`` face-mesh points -> ``(..., 68, D)`` iBUG-68 (pairs averaged)."""
    return np.stack([mesh[..., list(idx), :].mean(axis=-2) for idx in MEDIAPIPE_TO_IBUG68], axis=-2)


class MediaPipe68Landmarker(LandmarkerBase):
    """MediaPipe's face mesh on 192 px crops (one face per call: the model's batch is 1); scores
    are the model's face-presence probability, the same for the 68 points of a face.

    ``interpreter`` is an ``ai_edge_litert`` ``Interpreter`` (tensors allocated) or any object
    with its ``get_input_details`` / ``get_output_details`` / ``set_tensor`` / ``invoke`` /
    ``get_tensor``, whose outputs are the ``1404`` = 468 x (x, y, z) crop-pixel points and one
    presence logit."""

    name = "mediapipe68"

    def __init__(self, interpreter: Any, cfg: LandmarkConfig):
        super().__init__(cfg)
        self.interpreter = interpreter
        self.input_index = interpreter.get_input_details()[0]["index"]
        outs = interpreter.get_output_details()
        sizes = {int(np.prod(o["shape"])): o["index"] for o in outs}
        if MEDIAPIPE_MESH_POINTS * 3 not in sizes or 1 not in sizes:
            raise ConfigError(f"not MediaPipe's face-landmark model: outputs {[tuple(o['shape']) for o in outs]}")
        self.points_index, self.score_index = sizes[MEDIAPIPE_MESH_POINTS * 3], sizes[1]
        # one interpreter holds one input and output state: threads sharing this backend (the
        # flow's thread task runner shares a process's backends) take turns
        self._lock = threading.Lock()

    def _run(self, images, boxes):
        size = MEDIAPIPE_INPUT
        pts, scores = [], []
        for im, box in zip(images, boxes):
            affine = mediapipe_crop_affine(box, size)
            crop = cv2.warpAffine(im, affine, (size, size), flags=cv2.INTER_LINEAR, borderValue=0)
            with self._lock:
                self.interpreter.set_tensor(self.input_index, (crop.astype(np.float32) / 255.0)[None])
                self.interpreter.invoke()
                mesh = np.array(self.interpreter.get_tensor(self.points_index), dtype=np.float64).reshape(-1, 3)
                logit = float(np.asarray(self.interpreter.get_tensor(self.score_index)).reshape(-1)[0])
            p68 = mesh_to_ibug68(mesh[:, :2])
            pts.append(transform_points(invert_affine(affine), p68))
            scores.append(np.full(NUM_LANDMARKS, 1.0 / (1.0 + np.exp(-logit)), dtype=np.float32))
        return np.stack(pts), np.stack(scores)


def _mediapipe68_factory(cfg: LandmarkConfig, *, threads: int = 1) -> MediaPipe68Landmarker:
    if not str(cfg.device).startswith("cpu"):
        logger.info("mediapipe68 runs on the CPU (LiteRT); device %s is used by the other stages", cfg.device)
    return MediaPipe68Landmarker(load_interpreter(cfg.model_dir, threads=threads), cfg)


LANDMARKERS.register("mediapipe68")(_mediapipe68_factory)


__all__ = [
    "LandmarkConfig",
    "LandmarkDetector",
    "LandmarkerBase",
    "LANDMARKERS",
    "create_landmarker",
    "landmarks_batch",
    "Dlib68Landmarker",
    "FanLandmarker",
    "InsightFace68Landmarker",
    "MediaPipe68Landmarker",
    "MEDIAPIPE_TO_IBUG68",
    "mediapipe_crop_affine",
    "mesh_to_ibug68",
    "load_fan",
    "find_fan_weights",
    "decode_heatmaps",
    "fan_crop_affine",
    "insightface_crop_affine",
    "FAN_WEIGHTS",
]
