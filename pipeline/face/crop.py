"""Square face crops and the 2x3 affines that relate them to the frame.

Conventions (see :mod:`pipeline.base.types`): pixel ``(row=i, col=j)`` has its centre at
``x = j, y = i``; an affine ``A`` is ``(2, 3)`` float32 and maps a frame point to crop pixels,
``[u, v] = A @ [x, y, 1]``. This is OpenCV's ``warpAffine`` convention, so the crop pixel
``(v, u)`` holds the frame colour at ``invert_affine(A) @ [u, v, 1]``.

:func:`crop_face` takes a square and resamples it to ``size x size`` (its centre lands on the crop
centre ``((S - 1) / 2, (S - 1) / 2)``). Given the face's 68 landmarks (what the pipeline does) the
square comes from them (:func:`landmark_square`): side ``crop_scale * 1.08 * max(w, h)`` of the
landmarks' bounding box, centred 0.07 of its height above the box centre. The landmarks depend
only on the face, while the detector box moves with the canvas around it (BlazeFace sees the
frame shrunk to 128 px: the same face pixels pasted into a wider canvas gave a crop ~10 px off);
the constants make a frontal face's square the detector-box square it replaces (measured on the
shared portraits: BlazeFace box side / landmark extent 0.98-1.13, box centre 0.05-0.1 of the
extent higher). Without landmarks the square is ``crop_scale * max(w, h)`` of the box, centred
on the box centre (:func:`box_square`). Parts of the square outside the frame are filled with
constant 0 by default (black, the background value of the depth labels; replicating border
pixels would smear edge structure such as screen bezels, a spoofing cue, into the crop);
``border="replicate"`` is available.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.base.errors import ConfigError
from pipeline.base.options import check_fields, opt
from pipeline.base.types import Crop, FaceBox

_BORDERS = {"constant": cv2.BORDER_CONSTANT, "replicate": cv2.BORDER_REPLICATE}


@dataclass(frozen=True)
class CropConfig:
    """Crop geometry: output side ``size`` px, square side ``crop_scale * max(box w, h)``; ``size``
    and ``crop_scale`` are the crop stage's options (:mod:`pipeline.base.options`).

    ``border`` is ``"constant"`` (0) or ``"replicate"``. With ``antialias`` (default) a crop that
    shrinks the frame by more than 1.5x is first area-averaged down, so the final bilinear warp
    does not alias fine texture (moire, print dots) into the crop.
    """

    size: int = opt(256, help="crop side in pixels", ge=16, le=1024)
    crop_scale: float = opt(1.3, help="crop side / face box side", ge=0.5, le=4.0)
    border: str = "constant"
    antialias: bool = True

    def __post_init__(self) -> None:
        check_fields(self)
        if self.border not in _BORDERS:
            raise ConfigError(f"border must be one of {sorted(_BORDERS)}, got {self.border!r}")


def square_affine(cx: float, cy: float, side: float, size: int) -> np.ndarray:
    """Affine mapping the frame square of side ``side`` centred on ``(cx, cy)`` onto
    ``size x size`` crop pixels (edges to edges: the centre goes to ``(size - 1) / 2``).

    Returns ``(2, 3)`` float32.
    """
    if side <= 0:
        raise ValueError(f"square side must be > 0, got {side}")
    s = size / side
    half = (size - 1) / 2.0
    return np.array([[s, 0.0, half - s * cx], [0.0, s, half - s * cy]], dtype=np.float32)


def invert_affine(affine: np.ndarray) -> np.ndarray:
    """Inverse of a ``(..., 2, 3)`` affine (crop -> frame for a frame -> crop affine)."""
    a = np.asarray(affine, dtype=np.float64)
    lin = a[..., :2]
    inv = np.linalg.inv(lin)
    t = -np.einsum("...ij,...j->...i", inv, a[..., 2])
    return np.concatenate([inv, t[..., None]], axis=-1).astype(np.float32)


def transform_points(affine: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply ``(..., 2, 3)`` affine(s) to ``(..., N, 2)`` points; returns float32 ``(..., N, 2)``.

    Leading dimensions broadcast, so a batch of affines ``(B, 2, 3)`` maps a batch of point
    sets ``(B, N, 2)`` at once.
    """
    a = np.asarray(affine, dtype=np.float64)
    p = np.asarray(pts, dtype=np.float64)
    out = np.einsum("...ij,...nj->...ni", a[..., :2], p) + a[..., None, :, 2]
    return out.astype(np.float32)


def box_square(box: FaceBox, crop_scale: float) -> tuple[float, float, float]:
    """``(cx, cy, side)`` of the square crop region of ``box``: centred on the box centre, side
    ``crop_scale * max(w, h)``."""
    return (
        (box.x0 + box.x1) / 2.0,
        (box.y0 + box.y1) / 2.0,
        crop_scale * max(box.width, box.height),
    )


#: landmark square: side per landmark extent, and how far (per extent) its centre sits above
#: the landmarks' box centre (see the module docstring)
LANDMARK_SIDE = 1.08
LANDMARK_RAISE = 0.07


def landmark_square(points: np.ndarray, crop_scale: float) -> tuple[float, float, float]:
    """``(cx, cy, side)`` of the crop square of a face given its ``(68, 2)`` frame landmarks."""
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2 or not np.isfinite(p).all():
        raise ValueError(f"landmarks must be finite (N, 2) points, got shape {p.shape}")
    (x0, y0), (x1, y1) = p.min(0), p.max(0)
    extent = max(x1 - x0, y1 - y0)
    return (x0 + x1) / 2.0, (y0 + y1) / 2.0 - LANDMARK_RAISE * (y1 - y0), crop_scale * LANDMARK_SIDE * extent


def landmark_box(points: np.ndarray, score: float = 1.0) -> FaceBox:
    """The square face box ``points`` imply (side 1.1 x their extent, centred as
    :func:`landmark_square`; about dlib's own detector box on frontal faces): given to the
    landmarker once more, it gives landmarks that no longer depend on the detector box, which
    moves with the canvas (a 133 vs 173 px box for the same face pixels in two canvases; crops
    placed from the second pass agree within ~1 px, from the first within ~5 px). The pipeline
    places the crop from the second pass but fits the first: on turned faces the second pass,
    started from a box centred on the first pass's jaw contour, was worse (bench_labels, 10
    frames at yaw -30..45: mean mask IoU 0.83 vs 0.87)."""
    cx, cy, side = landmark_square(points, 1.1 / LANDMARK_SIDE)
    return FaceBox(cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2, score)


def inside_source(affine: np.ndarray, frame_hw: tuple[int, int], size: int) -> np.ndarray:
    """``(size, size)`` bool: the crop pixels whose frame position lies inside the ``(H, W)``
    source image (pixel centres within ``[-0.5, W - 0.5] x [-0.5, H - 0.5]``)."""
    inv = invert_affine(affine).astype(np.float64)
    v, u = np.mgrid[0:size, 0:size].astype(np.float64)
    x = inv[0, 0] * u + inv[0, 1] * v + inv[0, 2]
    y = inv[1, 0] * u + inv[1, 1] * v + inv[1, 2]
    h, w = frame_hw
    return (x >= -0.5) & (x <= w - 0.5) & (y >= -0.5) & (y <= h - 0.5)


def warp_square(
    image: np.ndarray,
    affine: np.ndarray,
    size: int,
    *,
    border: str = "constant",
    antialias: bool = True,
) -> np.ndarray:
    """Resample ``image`` through a similarity ``affine`` (no shear) into ``size x size``.

    Bilinear (``cv2.INTER_LINEAR``) with the given border. With ``antialias``, when the affine
    shrinks by more than 1.5x the needed frame region is area-averaged first; the result is
    still exactly the image of ``affine`` (only the sampling differs).
    """
    border_mode = _BORDERS[border]
    a = np.asarray(affine, dtype=np.float64)
    scale = math.sqrt(abs(np.linalg.det(a[:, :2])))
    if antialias and scale < 1.0 / 1.5:
        inv = invert_affine(a).astype(np.float64)
        corners = np.array([[-0.5, -0.5], [size - 0.5, -0.5], [-0.5, size - 0.5], [size - 0.5, size - 0.5]])
        src = corners @ inv[:, :2].T + inv[:, 2]
        h, w = image.shape[:2]
        x0 = max(int(math.floor(src[:, 0].min())) - 2, 0)
        y0 = max(int(math.floor(src[:, 1].min())) - 2, 0)
        x1 = min(int(math.ceil(src[:, 0].max())) + 3, w)
        y1 = min(int(math.ceil(src[:, 1].max())) + 3, h)
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            roi = image[y0:y1, x0:x1]
            nw = max(2, int(round((x1 - x0) * scale)))
            nh = max(2, int(round((y1 - y0) * scale)))
            small = cv2.resize(roi, (nw, nh), interpolation=cv2.INTER_AREA)
            rx, ry = nw / (x1 - x0), nh / (y1 - y0)
            # frame -> small pixels (pixel-centre convention of cv2.resize)
            to_small = np.array(
                [[rx, 0.0, (0.5 - x0) * rx - 0.5], [0.0, ry, (0.5 - y0) * ry - 0.5]]
            )
            small_to_frame = invert_affine(to_small).astype(np.float64)
            combined = a[:, :2] @ small_to_frame[:, :2]
            combined_t = a[:, :2] @ small_to_frame[:, 2] + a[:, 2]
            m = np.concatenate([combined, combined_t[:, None]], axis=1)
            # the ROI keeps a margin round the sampled region and is clamped only at the frame's
            # own edges, so either border mode behaves as on the full frame
            return cv2.warpAffine(
                small, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=border_mode, borderValue=0
            )
    return cv2.warpAffine(
        image, a, (size, size), flags=cv2.INTER_LINEAR, borderMode=border_mode, borderValue=0
    )


def crop_face(image: np.ndarray, box: FaceBox, cfg: CropConfig | None = None,
              landmarks: np.ndarray | None = None) -> Crop:
    """Square ``(S, S, 3)`` uint8 crop of the face, with the ``(2, 3)`` float32 frame -> crop
    affine: the :func:`landmark_square` of ``landmarks`` when given, else ``box`` enlarged by
    ``cfg.crop_scale`` about its centre."""
    cfg = cfg or CropConfig()
    if landmarks is not None:
        cx, cy, side = landmark_square(landmarks, cfg.crop_scale)
    else:
        cx, cy, side = box_square(box, cfg.crop_scale)
    if not side > 0:
        raise ValueError(f"cannot crop an empty box {box}")
    affine = square_affine(cx, cy, side, cfg.size)
    out = warp_square(image, affine, cfg.size, border=cfg.border, antialias=cfg.antialias)
    return Crop(image=out, affine=affine)


__all__ = [
    "CropConfig",
    "crop_face",
    "square_affine",
    "box_square",
    "landmark_square",
    "landmark_box",
    "inside_source",
    "warp_square",
    "invert_affine",
    "transform_points",
]
