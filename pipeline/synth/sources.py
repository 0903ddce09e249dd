"""The real source photographs: faces found with dlib, normalised, other faces blurred out."""

from __future__ import annotations

import functools
import importlib.util
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import skimage.data

from pipeline.base.errors import InputNotFound, NoFaceDetected
from pipeline.face.detect import create_detector
from pipeline.face.landmarks import create_landmarker
from pipeline.io.frames import read_image
from pipeline.synth.plan import SOURCE_FACE_PX, SourcePhoto, SynthConfig, default_shared_dir

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _SourceRef:
    name: str
    person: str
    origin: str  # file path or "skimage:astronaut"
    group: bool = False  # group photo: one SourcePhoto per detected face


def _source_refs(cfg: SynthConfig) -> list[_SourceRef]:
    """Candidate photos, best first (distinct people first, then second photos)."""
    shared = Path(cfg.shared_dir).expanduser() if cfg.shared_dir else default_shared_dir()
    faces = shared / "data" / "faces"
    refs = [
        _SourceRef("obama", "obama", str(faces / "obama.jpg")),
        _SourceRef("biden", "biden", str(faces / "biden.jpg")),
        _SourceRef("astronaut", "astronaut", "skimage:astronaut"),
    ]
    if cfg.extra_sources:
        refs.append(_SourceRef("padlive", "padlive", str(shared / "data" / "pad-samples" / "image_T1.jpg")))
        spec = importlib.util.find_spec("insightface")  # locates the package without importing it
        if spec and spec.submodule_search_locations:
            images = Path(list(spec.submodule_search_locations)[0]) / "data" / "images"
            refs.append(_SourceRef("t1", "t1", str(images / "t1.jpg"), group=True))
        else:
            logger.info("insightface not installed: its bundled photos are not used")
    refs.append(_SourceRef("obama2", "obama", str(faces / "obama2.jpg")))
    return refs


def _read_rgb(origin: str) -> np.ndarray:
    if origin.startswith("skimage:"):
        return np.ascontiguousarray(getattr(skimage.data, origin.split(":", 1)[1])()[..., :3])
    if not Path(origin).is_file():
        raise InputNotFound("source photo not found", source=origin)
    return read_image(origin)


@functools.lru_cache(maxsize=1)
def _dlib_engines():
    return (
        create_detector("dlib-hog", upsample=0, min_face_size=30.0),
        create_detector("dlib-hog", upsample=1, min_face_size=20.0),
        create_landmarker("dlib68", box="given"),  # the boxes are dlib HOG's already
    )


def _find_faces(image: np.ndarray, source: str, max_side: int = 800) -> tuple[int, list, float]:
    """(rotation k for ``np.rot90``, boxes, scale) of the upright orientation with a face.

    Detection runs on a copy whose longer side is at most ``max_side`` px; boxes are in that copy.
    """
    det0, det1, _ = _dlib_engines()
    best: tuple[float, int, list, float] | None = None
    for k in (0, 3, 1):  # upright, then turned clockwise / counter-clockwise
        im = np.ascontiguousarray(np.rot90(image, k))
        s = min(1.0, max_side / max(im.shape[:2]))
        small = cv2.resize(im, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1 else im
        boxes = det0.detect(small) or det1.detect(small)
        if boxes:
            score = boxes[0].score
            if best is None or score > best[0]:
                best = (score, k, boxes, s)
            if score > 0.5:
                break
    if best is None:
        raise NoFaceDetected("no frontal face found in the source photo", source=source)
    return best[1], best[2], best[3]


def load_sources(cfg: SynthConfig) -> list[SourcePhoto]:
    """Read the source photos, find their faces and 68 landmarks (dlib HOG + dlib68).

    Returns one :class:`SourcePhoto` per usable face, distinct people first (see the module
    docstring for the list). A missing optional source is skipped with a log line; a missing
    portrait (obama / biden) raises :class:`InputNotFound`. Results are cached per process
    (keyed by the source list); treat the arrays as read-only.
    """
    return list(_load_sources_cached(tuple(_source_refs(cfg))))


@functools.lru_cache(maxsize=2)
def _load_sources_cached(refs: tuple[_SourceRef, ...]) -> tuple[SourcePhoto, ...]:
    _, _, lmk = _dlib_engines()
    out: list[SourcePhoto] = []
    for ref in refs:
        try:
            raw = _read_rgb(ref.origin)
        except InputNotFound:
            if ref.person in ("obama", "biden"):
                raise
            logger.warning("synthetic set: source %s not found, skipped", ref.origin)
            continue
        try:
            k, boxes, s = _find_faces(raw, ref.origin, 1280 if ref.group else 800)
        except NoFaceDetected:
            logger.warning("synthetic set: no face found in %s, skipped", ref.origin)
            continue
        image = np.ascontiguousarray(np.rot90(raw, k))
        work = cv2.resize(image, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1 else image
        if ref.group:
            boxes = sorted([b for b in boxes if b.score > 0.2], key=lambda b: b.x0)
        else:
            boxes = boxes[:1]
        lms = [lmk.landmarks(work, b).points / s for b in boxes]
        for i, pts in enumerate(lms):
            img = image
            if len(lms) > 1:  # group photo: blur every other face
                img = _blur_regions(image, [q for j, q in enumerate(lms) if j != i])
            name = f"{ref.name}-{i + 1}" if ref.group else ref.name
            person = name if ref.group else ref.person
            img2, pts2 = _normalise_scale(img, pts)
            out.append(SourcePhoto(name, person, ref.origin, img2, pts2))
    if not out:
        raise NoFaceDetected("no usable face in any source photo", source=refs[0].origin if refs else "")
    logger.info("synthetic set: %d source faces of %d people", len(out), len({s.person for s in out}))
    return tuple(out)


def _blur_regions(image: np.ndarray, landmark_sets: Sequence[np.ndarray]) -> np.ndarray:
    """``image`` with a strong feathered blur over each face (given by its landmarks)."""
    h, w = image.shape[:2]
    mask = np.zeros((h, w), np.float32)
    size = 0.0
    for pts in landmark_sets:
        c = pts.mean(0)
        r = float(np.ptp(pts, axis=0).max())
        size = max(size, r)
        cv2.ellipse(mask, (int(c[0]), int(c[1] - 0.15 * r)), (int(0.95 * r), int(1.25 * r)), 0, 0, 360, 1.0, -1)
    sigma = max(3.0, size / 5)
    mask = cv2.GaussianBlur(mask, (0, 0), sigma / 2)[..., None]
    blurred = cv2.GaussianBlur(image, (0, 0), sigma)
    return (image * (1 - mask) + blurred * mask).astype(np.uint8)


def _normalise_scale(image: np.ndarray, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Downscale so the landmark extent is ~SOURCE_FACE_PX (never upscale); crop far surroundings."""
    fh = float(np.ptp(pts[:, 1]))
    s = min(1.0, SOURCE_FACE_PX / max(fh, 1.0))
    if s < 1:
        image = cv2.resize(image, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        pts = pts * s
        fh *= s
    # keep at most +-2.5 face heights around the face: more than any composition shows
    c = pts.mean(0)
    x0 = int(max(0, c[0] - 2.5 * fh))
    y0 = int(max(0, c[1] - 2.5 * fh))
    x1 = int(min(image.shape[1], c[0] + 2.5 * fh))
    y1 = int(min(image.shape[0], c[1] + 2.5 * fh))
    return np.ascontiguousarray(image[y0:y1, x0:x1]), (pts - [x0, y0]).astype(np.float32)
