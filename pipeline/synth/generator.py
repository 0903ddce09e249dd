"""Synthetic face anti-spoofing sample set built from real face photographs.

What it makes
-------------
For each *identity* five short clips (``(T, H, W, 3)`` uint8 RGB frames; the CLI writes them as
H.264 mp4 plus a ``manifest.csv``):

* ``live`` - the face **re-rendered from its textured 3D fit**: the Surrey Face Model (SFM) is
  fitted to the photo's 68 landmarks, every mesh vertex takes the photo position it projects to
  as texture coordinate, and each output pixel samples the photo through the barycentric
  interpolation of those coordinates (a per-pixel textured rasterisation). Over time the head
  turns (yaw within +-20 deg, pitch within +-10 deg, small roll, all smooth), the expression
  blendshapes vary smoothly, a Lambertian shading factor computed from the interpolated mesh
  normals follows a moving light, and the head moves against the background (the photo's own
  surroundings with the original face blurred away, drifting slightly like a hand-held camera).
  Depth and parallax therefore come from real 3D geometry.
* ``print1`` / ``print2`` - the identity's picture printed on a sheet of paper: colour loss
  (desaturation, paper white, lifted blacks), CMY halftone, paper texture, a bent sheet
  (cylindrical bend of a triangulated sheet, rasterised in perspective), hand-held motion
  (smooth 3D sheet rotation/translation plus tremor = per-frame homographies of the flat sheet),
  the paper border visible in some clips, over a synthetic room. ``print1`` is a glossy print
  (specular highlight moving with the sheet, slight bend), ``print2`` a matte one (stronger paper
  texture, lower contrast, stronger bend).
* ``replay1`` / ``replay2`` - the identity's *live* video played on a screen: gamma and
  white-balance shift, lifted blacks, moire (the screen's pixel grid evaluated at the screen
  position of every camera pixel, so it aliases into moving fringes as a filmed screen does), glare, rolling
  refresh banding, the device bezel, hand-held motion, over a synthetic room. ``replay1`` is a
  4:3 tablet, ``replay2`` a 16:9 phone (pillar-boxed video, cooler white point, more tremor).

Every clip then goes through one camera model: exposure drift, signal-dependent sensor noise,
8-bit quantisation (batched torch), slight blur and a JPEG round trip (OpenCV, frame by frame).

Rendering is batched torch over a clip's frames (one z-buffer rasterisation of all frames with
per-pixel triangle ids and barycentrics, :func:`rasterize`; the planar attacks are rasterised at
a quarter resolution and their smooth texture-coordinate maps upsampled), device-agnostic.

Sources and identities (be aware)
---------------------------------
Real photographs only (no generative model): ``obama.jpg`` and ``obama2.jpg`` (one person),
``biden.jpg`` from ``<shared>/data/faces`` (``obama-240p``/``-1080p`` are the same photo as
``obama.jpg`` and are skipped), scikit-image's ``astronaut``, the live face of
``<shared>/data/pad-samples/image_T1.jpg`` (turned upright by its EXIF orientation) and every
frontal face dlib finds in insightface's bundled group photo ``t1.jpg`` (six; each cropped
generously, the other faces of the photo blurred out). That is at most 10 distinct people.
(insightface's ``Tom_Hanks_54745.png`` is not used: a tight 112 px crop without forehead or
surroundings re-renders poorly.)

An *identity* here is a rendering subject. The first identities are distinct people. When more
identities are asked for than there are people, the extra ones are **derived from a person
already used** (another photo of that person where there is one, mirrored every other time,
with a hue/saturation shift of the head region - skin and hair - and a random offset of the SFM
shape coefficients, so that face shape differs visibly). A derived identity is *not* a new
person: its subject name is ``<person>-d<k>`` and **every identity of one person is placed in
the same split**, so train/dev/test stay disjoint in people, not only in subject names. With 12
identities (the default) there are 10 people and two derivatives (``obama-d1`` from
``obama2.jpg``, ``biden-d1`` mirrored), each in its person's split. Sixty clips of ten people
are a smoke-test / tutorial data set, not a benchmark: nothing measured on it says anything
about real attacks.

Splits are drawn per person, seeded: about half of the identities in ``train``, a quarter in
``dev`` and ``test`` (12 -> 6/3/3; at least one each from 3 identities on).

Determinism: every random choice comes from ``numpy.random.default_rng`` streams keyed by
``(seed, identity index, clip kind)``, so one clip can be regenerated alone and is byte-identical
(before video encoding) on the same machine, torch build and torch thread count; different
seeds give different compositions, motion and effects.

Conventions: images are ``(H, W, 3)`` uint8 RGB (``pipeline.base.types``: x right, y down, pixel
centres at integer coordinates); internal float images are ``(..., 3, H, W)`` in ``[0, 1]``. Mesh
vertices passed to the rasteriser are ``(B, V, 3)`` frame pixels with **larger z = closer**.

Functions here do no file output; :func:`generate` (used by the ``synth`` CLI) writes the videos
and the manifest. :func:`load_sources` reads the source photographs.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from pipeline.base.errors import ConfigError, InputNotFound, NoFaceDetected

logger = logging.getLogger(__name__)

__all__ = [
    "SynthConfig",
    "SourcePhoto",
    "IdentityPlan",
    "ClipSpec",
    "PreparedIdentity",
    "Raster",
    "SynthResult",
    "CLIP_NAMES",
    "MANIFEST_COLUMNS",
    "load_sources",
    "plan_identities",
    "assign_splits",
    "plan_clips",
    "prepare_identity",
    "render_clip",
    "rasterize",
    "interpolate",
    "SynthGenerator",
    "generate",
    "write_manifest",
]

#: clip names of one identity, in generation order
CLIP_NAMES = ("live", "print1", "print2", "replay1", "replay2")
#: columns of ``manifest.csv`` (the generic CSV adapter's)
MANIFEST_COLUMNS = ("path", "label", "attack_type", "subject", "session", "device", "split")
SPLITS = ("train", "dev", "test")

#: landmark extent (eyebrows to chin) of a source photo after normalisation, pixels
SOURCE_FACE_PX = 200.0
#: extra canvas border around the frame (pixels) so the camera can drift
MARGIN = 24

#: iBUG-68 left/right permutation (index i of a mirrored face is point FLIP[i] of the original)
IBUG_FLIP = (
    16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 26, 25, 24, 23, 22, 21, 20, 19, 18,
    17, 27, 28, 29, 30, 35, 34, 33, 32, 31, 45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40, 54, 53,
    52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65,
)


# =============================================================================== configuration


@dataclass(frozen=True)
class SynthConfig:
    """Settings of the synthetic sample set.

    ``identities``: number of identities (5 clips each); ``seed``: master seed; ``seconds`` /
    ``fps``: clip length (``round(seconds * fps)`` frames); ``width`` x ``height``: frame size
    (even numbers, >= 96); ``device``: torch device of the rendering; ``model_dir``: model
    directory (SFM, see :mod:`pipeline.base.assets`); ``shared_dir``: folder holding
    ``data/faces`` and ``data/pad-samples`` (default ``<repo>/../shared``); ``crf``: H.264
    quality of the written videos; ``extra_sources``: also use the insightface photos and the
    pad-sample live image (else only the portraits and the astronaut).
    """

    identities: int = 12
    seed: int = 0
    seconds: float = 3.0
    fps: float = 15.0
    width: int = 320
    height: int = 240
    device: str = "cpu"
    model_dir: str | None = None
    shared_dir: str | None = None
    crf: int = 23
    extra_sources: bool = True

    def __post_init__(self) -> None:
        if int(self.identities) != self.identities or self.identities < 1:
            raise ConfigError(f"parameter 'identities' must be an integer >= 1, got {self.identities!r}")
        if not (self.seconds > 0 and math.isfinite(self.seconds)):
            raise ConfigError(f"parameter 'seconds' must be > 0, got {self.seconds!r}")
        if not (self.fps > 0 and math.isfinite(self.fps)):
            raise ConfigError(f"parameter 'fps' must be > 0, got {self.fps!r}")
        for name in ("width", "height"):
            v = getattr(self, name)
            if int(v) != v or v < 96 or v % 2:
                raise ConfigError(f"parameter '{name}' must be an even integer >= 96, got {v!r}")
        if self.width < self.height:
            raise ConfigError(
                f"parameter 'size': landscape frames only (width >= height), got {self.width}x{self.height}"
            )
        if not any(k in str(self.device) for k in ("cpu", "cuda", "mps")):
            raise ConfigError(f"parameter 'device' must be cpu, cuda[:N] or mps, got {self.device!r}")
        if not 0 <= int(self.crf) <= 51:
            raise ConfigError(f"parameter 'crf' must be in 0..51, got {self.crf!r}")

    @property
    def num_frames(self) -> int:
        return max(1, int(round(self.seconds * self.fps)))


def default_shared_dir() -> Path:
    """``<repo>/../shared`` (``$DEPTHSEG_SHARED`` overrides it)."""
    env = os.environ.get("DEPTHSEG_SHARED")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parent.parent.parent / "shared"


# =============================================================================== sources


@dataclass(frozen=True)
class SourcePhoto:
    """One face of one photograph, ready to compose.

    ``image`` ``(H, W, 3)`` uint8 RGB, turned upright and scaled so that the landmark extent
    (eyebrows to chin) is about :data:`SOURCE_FACE_PX` pixels (never enlarged); in group photos
    the other faces are blurred out. ``landmarks`` ``(68, 2)`` float32 iBUG points in ``image``
    pixels. ``origin``: the file (or ``skimage:astronaut``) it comes from.
    """

    name: str
    person: str
    origin: str
    image: np.ndarray
    landmarks: np.ndarray


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
        import skimage.data

        return np.ascontiguousarray(getattr(skimage.data, origin.split(":", 1)[1])()[..., :3])
    if not Path(origin).is_file():
        raise InputNotFound("source photo not found", source=origin)
    from pipeline.io.frames import read_image

    return read_image(origin)


@functools.lru_cache(maxsize=1)
def _dlib_engines():
    from pipeline.face.detect import create_detector
    from pipeline.face.landmarks import create_landmarker

    return (
        create_detector("dlib-hog", upsample=0, min_face_size=30.0),
        create_detector("dlib-hog", upsample=1, min_face_size=20.0),
        create_landmarker("dlib68"),
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


# =============================================================================== identities


@dataclass(frozen=True)
class IdentityPlan:
    """One identity: which source, which visible variation, which split.

    ``subject`` is the manifest subject (``<person>`` or ``<person>-d<k>`` for a derivative);
    ``mirrored``, ``hue_shift`` (degrees), ``sat_scale`` and ``shape_offset`` (added to the
    fitted SFM shape coefficients, N(0, 1) units) make a derivative look different; all are
    neutral for a first identity. ``session`` / ``device`` are the synthetic capture condition
    and camera profile written to the manifest.
    """

    index: int
    subject: str
    person: str
    source: str
    derived: int = 0
    mirrored: bool = False
    hue_shift: float = 0.0
    sat_scale: float = 1.0
    shape_offset: tuple[float, ...] = ()
    split: str = "train"
    session: str = "1"
    device: str = "cam1"


def assign_splits(group_sizes: dict[str, int], seed: int) -> dict[str, str]:
    """Split of each group (person) so identity counts come close to 1/2, 1/4, 1/4.

    ``group_sizes`` maps a person to its number of identities. From 3 identities on, dev and
    test get at least ``floor(N / 4)`` (>= 1) identities. Deterministic in ``seed``.
    """
    n = sum(group_sizes.values())
    if n >= 3:
        n_dev = n_test = max(1, n // 4)
    elif n == 2:
        n_dev, n_test = 0, 1
    else:
        n_dev = n_test = 0
    target = {"train": n - n_dev - n_test, "dev": n_dev, "test": n_test}
    rng = np.random.default_rng([int(seed) % 2**64, 7])
    people = list(group_sizes)
    order = rng.permutation(len(people))
    # biggest groups first, random order among equal sizes
    people = sorted((people[i] for i in order), key=lambda p: -group_sizes[p])
    filled = dict.fromkeys(SPLITS, 0)
    out: dict[str, str] = {}
    for p in people:
        g = group_sizes[p]
        # the split with the largest remaining deficit that the group fits; else the largest deficit
        fits = [s for s in SPLITS if target[s] - filled[s] >= g]
        pool = fits or list(SPLITS)
        best = max(pool, key=lambda s: (target[s] - filled[s], -SPLITS.index(s)))
        out[p] = best
        filled[best] += g
    return out


def plan_identities(sources: Sequence[SourcePhoto], n: int, seed: int) -> list[IdentityPlan]:
    """``n`` identities from ``sources``: distinct people first, then derivatives (module doc)."""
    if not sources:
        raise ConfigError("parameter 'sources': no source photo to build identities from")
    people: dict[str, list[SourcePhoto]] = {}
    for s in sources:
        people.setdefault(s.person, []).append(s)
    names = list(people)
    rng = np.random.default_rng([int(seed) % 2**64, 1])
    plans: list[dict] = []
    for i in range(n):
        p = names[i % len(names)]
        d = i // len(names)
        photos = people[p]
        src = photos[d % len(photos)]
        if d == 0:
            plans.append(dict(subject=p, person=p, source=src.name))
        else:
            plans.append(
                dict(
                    subject=f"{p}-d{d}",
                    person=p,
                    source=src.name,
                    derived=d,
                    mirrored=bool(d % 2 == 1),
                    hue_shift=float(rng.choice([-1, 1]) * rng.uniform(6, 14)),
                    sat_scale=float(rng.uniform(0.8, 1.2)),
                    shape_offset=tuple(float(x) for x in rng.normal(0.0, 1.2, 12)),
                )
            )
    sizes: dict[str, int] = {}
    for pl in plans:
        sizes[pl["person"]] = sizes.get(pl["person"], 0) + 1
    split_of = assign_splits(sizes, seed)
    out = []
    for i, pl in enumerate(plans):
        out.append(
            IdentityPlan(
                index=i,
                split=split_of[pl["person"]],
                session=str(1 + int(rng.integers(3))),
                device=f"cam{1 + int(rng.integers(3))}",
                **pl,
            )
        )
    return out


@dataclass(frozen=True)
class ClipSpec:
    """One clip to render: an identity and a clip name from :data:`CLIP_NAMES`."""

    identity: IdentityPlan
    name: str

    def __post_init__(self) -> None:
        if self.name not in CLIP_NAMES:
            raise ConfigError(f"clip name must be one of {CLIP_NAMES}, got {self.name!r}")

    @property
    def kind(self) -> str:
        """``live``, ``print`` or ``replay``."""
        return self.name.rstrip("12")

    @property
    def label(self) -> str:
        return "live" if self.kind == "live" else "spoof"

    @property
    def attack_type(self) -> str:
        return "none" if self.kind == "live" else self.kind

    @property
    def relpath(self) -> str:
        """Path of the video relative to the manifest's folder."""
        s = self.identity.subject
        return f"{self.identity.split}/{s}/{s}_{self.name}.mp4"

    def manifest_row(self) -> dict[str, str]:
        ident = self.identity
        return {
            "path": self.relpath,
            "label": self.label,
            "attack_type": self.attack_type,
            "subject": ident.subject,
            "session": ident.session,
            "device": ident.device,
            "split": ident.split,
        }


def plan_clips(identities: Sequence[IdentityPlan]) -> list[ClipSpec]:
    """Five clips per identity, identity by identity."""
    return [ClipSpec(ident, name) for ident in identities for name in CLIP_NAMES]


def _rng(seed: int, ident: int, stream: str) -> np.random.Generator:
    key = [int(seed) % 2**64, int(ident), *[ord(c) for c in stream]]
    return np.random.default_rng(key)


# =============================================================================== rasteriser


@dataclass(frozen=True)
class Raster:
    """Covered pixels of a batched rasterisation, in packed form.

    ``pix`` ``(N,)`` int64 flat index into ``(B, H, W)``; ``face`` ``(N,)`` the batch index;
    ``tri`` ``(N,)`` the visible triangle; ``bary`` ``(N, 3)`` its barycentric coordinates at the
    pixel centre; ``z`` ``(N,)`` interpolated depth (larger = closer).
    """

    pix: torch.Tensor
    face: torch.Tensor
    tri: torch.Tensor
    bary: torch.Tensor
    z: torch.Tensor
    batch: int
    height: int
    width: int

    def mask(self) -> torch.Tensor:
        """``(B, H, W)`` bool coverage."""
        m = torch.zeros(self.batch * self.height * self.width, dtype=torch.bool, device=self.pix.device)
        m[self.pix] = True
        return m.view(self.batch, self.height, self.width)


_WINDOWS = (1, 2, 4, 8, 16)


def rasterize(vertices: torch.Tensor, triangles: torch.Tensor, height: int, width: int,
              *, front: int = 0, chunk: int = 2**20) -> Raster:
    """Z-buffer rasterisation with triangle ids and barycentrics (for attribute interpolation).

    ``vertices`` ``(B, V, 3)`` float: ``x, y`` in pixels of the ``height x width`` output (pixel
    centres at integer coordinates), ``z`` larger = closer. ``triangles`` ``(T, 3)`` int vertex
    indices shared by the batch. A pixel is covered when its centre is inside or on a triangle;
    the nearest triangle wins (ties: the larger triangle index). ``front`` = +1 / -1 keeps only
    triangles whose projected signed area ``(v1 - v0) x (v2 - v0)`` (image x, y) has that sign
    (back-face culling for closed or face-like meshes); 0 keeps all.

    Same scheme as :func:`pipeline.reconstruct.raster.rasterize_depth` (which gives depth only, square
    outputs): each (mesh, triangle) pair enumerates the candidate pixels of its bounding box,
    boxes grouped by window size (here powers of two; larger ones tiled), candidates scattered into a z-buffer
    with ``scatter_reduce(amax)``; a second pass keeps the winning triangle per pixel. Python
    loops run over the size classes and chunks only.
    """
    if vertices.ndim != 3 or vertices.shape[-1] != 3:
        raise ConfigError(f"rasterize: vertices must be (B, V, 3), got {tuple(vertices.shape)}")
    if triangles.ndim != 2 or triangles.shape[-1] != 3:
        raise ConfigError(f"rasterize: triangles must be (T, 3), got {tuple(triangles.shape)}")
    dev, dtype = vertices.device, vertices.dtype
    bsz, n_tri = vertices.shape[0], triangles.shape[0]
    tris = triangles.to(device=dev, dtype=torch.long)
    mw = _WINDOWS[-1]
    hp, wp = height + mw, width + mw  # padded buffer: windows never leave it
    tv = vertices[:, tris].reshape(bsz * n_tri, 3, 3)
    x, y, z = tv[..., 0], tv[..., 1], tv[..., 2]
    big = float(4 * max(height, width) + 8)
    xmin = torch.ceil(x.amin(1).nan_to_num(big).clamp(-big, big)).clamp(min=0)
    xmax = torch.floor(x.amax(1).nan_to_num(-big).clamp(-big, big)).clamp(max=width - 1)
    ymin = torch.ceil(y.amin(1).nan_to_num(big).clamp(-big, big)).clamp(min=0)
    ymax = torch.floor(y.amax(1).nan_to_num(-big).clamp(-big, big)).clamp(max=height - 1)
    e1x, e1y = x[:, 1] - x[:, 0], y[:, 1] - y[:, 0]
    e2x, e2y = x[:, 2] - x[:, 0], y[:, 2] - y[:, 0]
    denom = e1x * e2y - e1y * e2x
    keep = torch.isfinite(tv).all(dim=(1, 2)) & (xmax >= xmin) & (ymax >= ymin) & (denom.abs() > 1e-9)
    if front:
        keep &= denom * front > 0
    ent = keep.nonzero().squeeze(1)
    inv = 1.0 / torch.where(denom == 0, torch.ones_like(denom), denom)
    a1, c1, a2, c2 = e2y * inv, -e2x * inv, -e1y * inv, e1x * inv
    dz1, dz2 = z[:, 1] - z[:, 0], z[:, 2] - z[:, 0]
    x0, x1 = xmin[ent].long(), xmax[ent].long()
    y0, y1 = ymin[ent].long(), ymax[ent].long()
    w, h = x1 - x0 + 1, y1 - y0 + 1
    large = (w > mw) | (h > mw)
    if bool(large.any()):
        li = large.nonzero().squeeze(1)
        ntx = (w[li] + mw - 1) // mw
        nty = (h[li] + mw - 1) // mw
        reps = ntx * nty
        src = torch.repeat_interleave(li, reps)
        start = torch.cumsum(reps, 0) - reps
        local = torch.arange(src.numel(), device=dev) - torch.repeat_interleave(start, reps)
        ntx_r = torch.repeat_interleave(ntx, reps)
        tx0 = x0[src] + (local % ntx_r) * mw
        ty0 = y0[src] + torch.div(local, ntx_r, rounding_mode="floor") * mw
        small = (~large).nonzero().squeeze(1)
        ent = torch.cat([ent[small], ent[src]])
        x1 = torch.cat([x1[small], torch.minimum(tx0 + mw - 1, x1[src])])
        y1 = torch.cat([y1[small], torch.minimum(ty0 + mw - 1, y1[src])])
        x0, y0 = torch.cat([x0[small], tx0]), torch.cat([y0[small], ty0])
        w, h = x1 - x0 + 1, y1 - y0 + 1
    # per-window planes in window offsets (i, j): b1 = B1 + a1 i + c1 j, b2 = ..., z = Z + zx i + zy j
    ox = x0.to(dtype) - x[ent, 0]
    oy = y0.to(dtype) - y[ent, 0]
    ea1, ec1, ea2, ec2 = a1[ent], c1[ent], a2[ent], c2[ent]
    bb1 = ea1 * ox + ec1 * oy
    bb2 = ea2 * ox + ec2 * oy
    edz1, edz2 = dz1[ent], dz2[ent]
    zz0 = z[ent, 0] + edz1 * bb1 + edz2 * bb2
    zx = edz1 * ea1 + edz2 * ea2
    zy = edz1 * ec1 + edz2 * ec2
    base = (torch.div(ent, n_tri, rounding_mode="floor") * hp + y0) * wp + x0
    nw = len(_WINDOWS)
    cw = torch.zeros_like(w)
    ch = torch.zeros_like(h)
    for s in _WINDOWS[:-1]:
        cw += (w > s).long()
        ch += (h > s).long()
    cls = ch * nw + cw
    counts = torch.bincount(cls, minlength=nw * nw).tolist()
    order = torch.argsort(cls, stable=True)
    zbuf = torch.full((bsz * hp * wp,), float("-inf"), dtype=dtype, device=dev)
    found = []
    pos = 0
    ninf = torch.tensor(float("-inf"), dtype=dtype, device=dev)
    for c_idx, cnt in enumerate(counts):
        if cnt == 0:
            continue
        kh, kw = _WINDOWS[c_idx // nw], _WINDOWS[c_idx % nw]
        sel_all = order[pos : pos + cnt]
        pos += cnt
        per = max(1, chunk // (kh * kw))
        ii = torch.arange(kw, device=dev, dtype=dtype).view(1, 1, kw)
        jj = torch.arange(kh, device=dev, dtype=dtype).view(1, kh, 1)
        off = (torch.arange(kh, device=dev).view(1, kh, 1) * wp + torch.arange(kw, device=dev).view(1, 1, kw))
        for c0 in range(0, cnt, per):
            sel = sel_all[c0 : c0 + per]
            b1 = bb1[sel].view(-1, 1, 1) + ea1[sel].view(-1, 1, 1) * ii + ec1[sel].view(-1, 1, 1) * jj
            b2 = bb2[sel].view(-1, 1, 1) + ea2[sel].view(-1, 1, 1) * ii + ec2[sel].view(-1, 1, 1) * jj
            inside = (b1 >= 0) & (b2 >= 0) & ((b1 + b2) <= 1)
            zc = zz0[sel].view(-1, 1, 1) + zx[sel].view(-1, 1, 1) * ii + zy[sel].view(-1, 1, 1) * jj
            zc = torch.where(inside, zc, ninf).reshape(-1)
            lin = (base[sel].view(-1, 1, 1) + off).reshape(-1)
            zbuf.scatter_reduce_(0, lin, zc, reduce="amax")
            found.append((lin, zc, ent[sel], kh * kw))
    idbuf = torch.full((bsz * hp * wp,), -1, dtype=torch.long, device=dev)
    for lin, zc, ee, k in found:
        win = (zc >= zbuf[lin]) & (zc > ninf)
        ids = torch.where(win, ee.view(-1, 1).expand(-1, k).reshape(-1), -1)
        idbuf.scatter_reduce_(0, lin, ids, reduce="amax")
    idv = idbuf.view(bsz, hp, wp)[:, :height, :width].reshape(-1)
    hw = height * width
    pix = (idv >= 0).nonzero().squeeze(1)
    e = idv[pix]
    px = (pix % width).to(dtype)
    py = torch.div(pix % hw, width, rounding_mode="floor").to(dtype)
    dx, dy = px - x[e, 0], py - y[e, 0]
    b1 = a1[e] * dx + c1[e] * dy
    b2 = a2[e] * dx + c2[e] * dy
    bary = torch.stack([1 - b1 - b2, b1, b2], 1)
    zv = z[e, 0] + dz1[e] * b1 + dz2[e] * b2
    return Raster(pix, torch.div(pix, hw, rounding_mode="floor"), e % n_tri, bary, zv, bsz, height, width)


def interpolate(raster: Raster, triangles: torch.Tensor, attrs: torch.Tensor) -> torch.Tensor:
    """Per-pixel attributes ``(N, C)`` from per-vertex ``attrs`` ``(V, C)`` or ``(B, V, C)``."""
    tri = triangles.to(attrs.device, torch.long)[raster.tri]  # (N, 3)
    if attrs.ndim == 2:
        a = attrs[tri]  # (N, 3, C)
    else:
        a = attrs[raster.face[:, None], tri]
    return (a * raster.bary[..., None].to(a.dtype)).sum(1)


# =============================================================================== small helpers


def _smooth(rng: np.random.Generator, n: int, fps: float, amp: float,
            f_lo: float = 0.18, f_hi: float = 0.4) -> np.ndarray:
    """``(n,)`` smooth random signal within ``[-amp, amp]`` (three sinusoids, dominant slow one)."""
    t = np.arange(n) / fps
    f = rng.uniform(f_lo, f_hi) * np.array([1.0, 1.9, 3.1])
    ph = rng.uniform(0, 2 * np.pi, 3)
    wts = np.array([1.0, 0.35, 0.15])
    s = (wts[:, None] * np.sin(2 * np.pi * f[:, None] * t[None] + ph[:, None])).sum(0)
    return amp * s / wts.sum()


def _tremor(rng: np.random.Generator, n: int, fps: float, amp: float) -> np.ndarray:
    """Hand tremor: a few 1.5-4 Hz sinusoids, ``(n,)`` within ``[-amp, amp]``."""
    t = np.arange(n) / fps
    f = rng.uniform(1.5, 4.0, 3)
    ph = rng.uniform(0, 2 * np.pi, 3)
    return amp * np.sin(2 * np.pi * f[:, None] * t[None] + ph[:, None]).sum(0) / 3


def _rot(yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """``(T, 3, 3)`` rotations ``Rz(roll) @ Ry(yaw) @ Rx(pitch)`` (radians)."""
    cy, sy = torch.cos(yaw), torch.sin(yaw)
    cp, sp = torch.cos(pitch), torch.sin(pitch)
    cr, sr = torch.cos(roll), torch.sin(roll)
    o, z = torch.ones_like(yaw), torch.zeros_like(yaw)
    ry = torch.stack([cy, z, sy, z, o, z, -sy, z, cy], -1).view(-1, 3, 3)
    rx = torch.stack([o, z, z, z, cp, -sp, z, sp, cp], -1).view(-1, 3, 3)
    rz = torch.stack([cr, -sr, z, sr, cr, z, z, z, o], -1).view(-1, 3, 3)
    return rz @ ry @ rx


def _gauss_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(N, C, H, W)`` (replicate border)."""
    if sigma <= 0.05:
        return img
    r = max(1, int(math.ceil(2.5 * sigma)))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, device=img.device, dtype=img.dtype) / sigma) ** 2)
    k = k / k.sum()
    c = img.shape[1]
    x = F.pad(img, (r, r, r, r), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _noise_field(gen: torch.Generator, h: int, w: int, cell: int, device) -> torch.Tensor:
    """``(1, 1, h, w)`` smooth noise (~N(0,1)): random grid every ``cell`` px, bicubic-upsampled."""
    g = torch.randn(1, 1, h // cell + 3, w // cell + 3, generator=gen)
    up = F.interpolate(g, scale_factor=cell, mode="bicubic", align_corners=False)
    return up[..., cell : cell + h, cell : cell + w].to(device)


def _sample(img: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of ``img`` ``(C, H, W)`` at pixel coordinates ``xy`` ``(N, 2)`` -> ``(N, C)``
    (border pixels repeat outside)."""
    c, h, w = img.shape
    g = torch.stack([xy[:, 0] * (2.0 / max(w - 1, 1)) - 1, xy[:, 1] * (2.0 / max(h - 1, 1)) - 1], -1)
    out = F.grid_sample(img[None], g.view(1, 1, -1, 2).to(img.dtype), mode="bilinear",
                        padding_mode="border", align_corners=True)
    return out[0, :, 0].T


# =============================================================================== rooms


def synthetic_room(rng: np.random.Generator, height: int, width: int, device="cpu") -> torch.Tensor:
    """A plausible out-of-focus indoor background, ``(3, H, W)`` float in ``[0, 1]``.

    Wall with a lighting gradient, floor, doors / frames / windows / shelves as rectangles, a
    lamp glow, slight texture; drawn at a quarter of the resolution and upsampled, which blurs it
    as a background behind the subject would be.
    """
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    full_h, full_w = height, width
    height, width = (height + 3) // 4, (width + 3) // 4
    yy = torch.linspace(0, 1, height).view(-1, 1).expand(height, width)
    xx = torch.linspace(0, 1, width).view(1, -1).expand(height, width)
    palette = np.array([[0.78, 0.72, 0.62], [0.62, 0.66, 0.70], [0.70, 0.74, 0.66], [0.80, 0.78, 0.75],
                        [0.58, 0.52, 0.48], [0.72, 0.64, 0.70], [0.45, 0.50, 0.55]])
    wall = palette[rng.integers(len(palette))] * rng.uniform(0.8, 1.1, 3)
    img = torch.tensor(wall, dtype=torch.float32).view(3, 1, 1).expand(3, height, width).clone()
    ang = rng.uniform(0, 2 * np.pi)
    grad = (math.cos(ang) * (xx - 0.5) + math.sin(ang) * (yy - 0.5))
    img = img * (1.0 + rng.uniform(0.2, 0.5) * grad)
    floor_y = rng.uniform(0.7, 0.95)
    floor_col = torch.tensor(np.array([0.45, 0.33, 0.22]) * rng.uniform(0.6, 1.3, 3), dtype=torch.float32)
    planks = 0.06 * torch.sin(xx * rng.uniform(30, 80) + 3 * yy)
    fmask = (yy > floor_y).float()
    img = img * (1 - fmask) + (floor_col.view(3, 1, 1) * (1 + planks)) * fmask
    for _ in range(int(rng.integers(3, 7))):
        kind = rng.choice(["door", "frame", "window", "shelf"])
        if kind == "door":
            w_, h_ = rng.uniform(0.12, 0.22), rng.uniform(0.5, 0.8)
            x0, y0 = rng.uniform(0, 1 - w_), floor_y - h_
        elif kind == "shelf":
            w_, h_ = rng.uniform(0.2, 0.5), rng.uniform(0.02, 0.05)
            x0, y0 = rng.uniform(0, 1 - w_), rng.uniform(0.1, 0.7)
        else:
            w_, h_ = rng.uniform(0.08, 0.3), rng.uniform(0.08, 0.3)
            x0, y0 = rng.uniform(0, 1 - w_), rng.uniform(0.02, 0.6)
        m = ((xx >= x0) & (xx < x0 + w_) & (yy >= y0) & (yy < y0 + h_)).float()
        if kind == "window":
            col = torch.tensor(rng.uniform(0.85, 1.0, 3) * [0.95, 0.98, 1.0], dtype=torch.float32)
            bars = (((xx - x0 - w_ / 2).abs() < 0.006) | ((yy - y0 - h_ / 2).abs() < 0.008)).float()
            fill = col.view(3, 1, 1) * (1 - 0.6 * bars)
        elif kind == "frame":
            col = torch.tensor(rng.uniform(0.05, 0.9, 3), dtype=torch.float32)
            col2 = torch.tensor(rng.uniform(0.1, 0.9, 3), dtype=torch.float32)
            inner = ((xx >= x0 + 0.012) & (xx < x0 + w_ - 0.012) & (yy >= y0 + 0.015) & (yy < y0 + h_ - 0.015)).float()
            t = ((xx - x0) / w_).clamp(0, 1)
            fill = col.view(3, 1, 1) * (1 - inner) + inner * (col2.view(3, 1, 1) * (0.6 + 0.4 * t))
        else:
            col = torch.tensor(rng.uniform(0.15, 0.8, 3), dtype=torch.float32)
            fill = col.view(3, 1, 1).expand(3, height, width)
        img = img * (1 - m) + fill * m
    lx, ly = rng.uniform(0.1, 0.9), rng.uniform(0.05, 0.4)
    glow = torch.exp(-((xx - lx) ** 2 + (yy - ly) ** 2) / (2 * rng.uniform(0.01, 0.04)))
    img = img + rng.uniform(0.1, 0.35) * glow
    img = img * (1 + 0.03 * _noise_field(gen, height, width, 2, "cpu")[0])
    img = _gauss_blur(img[None], float(rng.uniform(0.3, 0.6)))
    img = F.interpolate(img, size=(full_h, full_w), mode="bilinear", align_corners=False)[0]
    return img.clamp(0, 1).to(device)


# =============================================================================== 3D fit


@dataclass(frozen=True)
class _Fit:
    """SFM fit in canvas pixels: ``x = s (R X)_x + tx``, ``y = -s (R X)_y + ty``, ``z = s (R X)_z``
    (:mod:`pipeline.reconstruct.fit`'s camera)."""

    shape_coeffs: torch.Tensor  # (K,)
    expr_coeffs: torch.Tensor  # (E,)
    rotation: torch.Tensor  # (3, 3) model -> camera (x right, y up, z towards the viewer)
    scale: float
    t: torch.Tensor  # (2,)


def _fit_landmarks(sfm, landmarks: torch.Tensor) -> _Fit:
    """Fit the SFM to one face's 68 canvas-pixel landmarks with :func:`pipeline.reconstruct.fit.fit_landmarks`."""
    from pipeline.reconstruct.fit import FitConfig, fit_landmarks

    res = fit_landmarks(sfm, landmarks[None], FitConfig())
    return _Fit(res.shape_coeffs[0], res.expr_coeffs[0], res.rotation[0], float(res.scale[0]),
                res.translation[0])


# =============================================================================== identity preparation


@dataclass
class PreparedIdentity:
    """Everything rendering needs for one identity (compute only; built by :func:`prepare_identity`).

    ``canvas`` / ``background`` ``(3, Hc, Wc)`` float: the scene at frame scale with a
    :data:`MARGIN` border, with and without (blurred away) the original face; ``uv`` ``(V, 2)``
    canvas-pixel texture coordinate of every vertex (hole centres included, see ``topo``);
    ``shape`` ``(V, 3)`` neutral model-space shape
    (derivative offset included), ``expr0`` ``(E,)`` fitted expression; ``fit`` the pose;
    ``face_px`` the landmark extent (eyebrows to chin) in frame pixels; ``front`` the projected
    triangle orientation of the visible side (for back-face culling, see :func:`rasterize`).
    """

    plan: IdentityPlan
    cfg: SynthConfig
    canvas: torch.Tensor
    background: torch.Tensor
    uv: torch.Tensor
    topo: "_Topology"
    shape: torch.Tensor
    expr0: torch.Tensor
    fit: _Fit
    face_px: float
    front: int
    _clean_live: torch.Tensor | None = field(default=None, repr=False)

    def clean_live(self, sfm) -> torch.Tensor:
        """The live clip before the camera model, ``(T, 3, H, W)`` float (computed once)."""
        if self._clean_live is None:
            self._clean_live = _render_live(self, sfm)
        return self._clean_live


def _hue_shift(img: np.ndarray, degrees: float, sat: float) -> np.ndarray:
    hsv = cv2.cvtColor(img.astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0] + degrees) % 360.0
    hsv[..., 1] = np.clip(hsv[..., 1] * sat, 0, 1)
    return np.clip(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0, 0, 255)


def _boundary_loops(triangles: np.ndarray) -> list[np.ndarray]:
    """Boundary loops of a triangle mesh (vertex indices in the border edges' direction), longest first."""
    t = np.asarray(triangles, dtype=np.int64)
    d = np.concatenate([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]], 0)
    n = int(t.max()) + 1
    fwd = set((d[:, 0] * n + d[:, 1]).tolist())
    border = d[~np.isin(d[:, 1] * n + d[:, 0], list(fwd))]  # directed edges without a twin
    nxt = dict(zip(border[:, 0].tolist(), border[:, 1].tolist()))
    loops, seen = [], set()
    for start in nxt:  # walk each loop once (a few hundred border edges)
        if start in seen:
            continue
        loop, v = [], start
        while v not in seen:
            seen.add(v)
            loop.append(v)
            v = nxt[v]
        loops.append(np.asarray(loop, dtype=np.int64))
    return sorted(loops, key=len, reverse=True)


@dataclass(frozen=True)
class _Topology:
    """The face mesh with its inner holes (the SFM's open mouth) closed by a fan to one extra
    vertex per hole (the mean of the hole's border, set back by ``HOLE_DEPTH`` model units).

    ``triangles`` ``(T', 3)`` over ``V + len(holes)`` vertices; ``holes`` the border vertex
    lists; ``edge_alpha`` ``(V + len(holes), 1)``: 0 on the outer border, 0.35 / 0.7 one / two
    rings in, 1 elsewhere (a soft composite edge).
    """

    triangles: torch.Tensor
    holes: tuple[torch.Tensor, ...]
    edge_alpha: torch.Tensor

    def extend(self, x: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
        """Append the hole-centre vertices to ``(..., V, C)`` per-vertex values (their mean over
        each hole border, plus ``offset`` ``(C,)`` if given)."""
        extra = [x[..., h, :].mean(-2, keepdim=True) for h in self.holes]
        if offset is not None:
            extra = [e + offset for e in extra]
        return torch.cat([x, *extra], -2)


HOLE_DEPTH = 4.0


def _topology(triangles: torch.Tensor, num_vertices: int) -> _Topology:
    dev = triangles.device
    t = triangles.cpu().numpy()
    loops = _boundary_loops(t)
    outer, holes = loops[0], loops[1:]
    fans = []
    for j, h in enumerate(holes):  # border edge a -> b gets the twin triangle (b, a, centre)
        c = np.full(len(h), num_vertices + j)
        fans.append(np.stack([np.roll(h, -1), h, c], 1))
    tri = np.concatenate([t, *fans], 0) if fans else t
    nv = num_vertices + len(holes)
    a = np.ones(nv, np.float32)
    marked = np.zeros(nv, bool)
    marked[outer] = True
    for level in (0.0, 0.35, 0.7):  # the border, then two rings of neighbours inwards
        ring = marked.copy()
        if level > 0:
            ring[t[marked[t].any(1)].reshape(-1)] = True
        a[ring & ~marked] = level
        a[outer] = 0.0
        marked = ring
    return _Topology(torch.as_tensor(tri, device=dev), tuple(torch.as_tensor(h, device=dev) for h in holes),
                     torch.as_tensor(a, device=dev)[:, None])


def prepare_identity(plan: IdentityPlan, source: SourcePhoto, sfm, cfg: SynthConfig) -> PreparedIdentity:
    """Compose the identity's scene and fit the SFM to its face (no I/O).

    ``sfm`` is :class:`pipeline.reconstruct.sfm.SFMTensors` on ``cfg.device``.
    """
    rng = _rng(cfg.seed, plan.index, "scene")
    dev = torch.device(cfg.device)
    H, W = cfg.height, cfg.width
    hc, wc = H + 2 * MARGIN, W + 2 * MARGIN
    img = source.image
    pts = source.landmarks.astype(np.float64)
    if plan.mirrored:
        img = np.ascontiguousarray(img[:, ::-1])
        pts = pts[list(IBUG_FLIP)].copy()
        pts[:, 0] = img.shape[1] - 1 - pts[:, 0]
    # similarity photo -> canvas: landmark extent to 42-48% of the frame height, face centred
    face_px = float(rng.uniform(0.42, 0.48) * H)
    s = face_px / float(np.ptp(pts[:, 1]))
    if s < 1:  # area-downscale first (a bilinear warp would alias), then warp at scale 1
        img = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        pts = (pts + 0.5) * s - 0.5
        s = 1.0
    ang = math.radians(rng.uniform(-3, 3))
    c_src = np.array([pts[:, 0].mean(), (pts[:, 1].min() + pts[:, 1].max()) / 2])
    c_dst = np.array([wc / 2 + rng.uniform(-0.05, 0.05) * W, hc / 2 + rng.uniform(0.0, 0.06) * H])
    rmat = s * np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
    aff = np.concatenate([rmat, (c_dst - rmat @ c_src)[:, None]], 1)
    canvas_np = cv2.warpAffine(img, aff, (wc, hc), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    canvas_np = canvas_np.astype(np.float32)
    lm = (pts @ aff[:, :2].T + aff[:, 2]).astype(np.float32)
    if plan.hue_shift or plan.sat_scale != 1.0:  # derivative: recolour skin and hair
        c = lm.mean(0)
        m = np.zeros((hc, wc), np.float32)
        cv2.ellipse(m, (int(c[0]), int(c[1] - 0.25 * face_px)), (int(0.85 * face_px), int(1.15 * face_px)),
                    0, 0, 360, 1.0, -1)
        m = cv2.GaussianBlur(m, (0, 0), face_px / 10)[..., None]
        canvas_np = canvas_np * (1 - m) + _hue_shift(canvas_np, plan.hue_shift, plan.sat_scale) * m
    canvas_u8 = np.clip(canvas_np, 0, 255).astype(np.uint8)

    fit = _fit_landmarks(sfm, torch.as_tensor(lm, device=dev))
    topo = _topology(sfm.triangles, sfm.num_vertices)
    shape_fit = sfm.mean + sfm.basis_rescaled @ fit.shape_coeffs
    verts_fit = _project(topo.extend((shape_fit + sfm.blendshapes @ fit.expr_coeffs)[None]), fit)
    uv = verts_fit[0, :, :2]  # (V + holes, 2) canvas px: the texture coordinates
    tv = verts_fit[0, topo.triangles, :2]
    area = (tv[:, 1, 0] - tv[:, 0, 0]) * (tv[:, 2, 1] - tv[:, 0, 1]) - (tv[:, 1, 1] - tv[:, 0, 1]) * (tv[:, 2, 0] - tv[:, 0, 0])
    front = 1 if float(area.sum()) > 0 else -1  # the fitted face shows its front
    coeffs = fit.shape_coeffs.clone()
    if plan.shape_offset:
        off = torch.as_tensor(plan.shape_offset, dtype=coeffs.dtype, device=dev)
        coeffs[: off.numel()] += off
    shape = sfm.mean + sfm.basis_rescaled @ coeffs

    # background: the scene with the original face region smoothed away (what shows when the
    # re-rendered head turns is blurred skin / hair, not a second set of features)
    mask = rasterize(verts_fit, topo.triangles, hc, wc).mask()[0].cpu().numpy().astype(np.float32)
    mask = cv2.GaussianBlur(cv2.dilate(mask, np.ones((9, 9), np.uint8)), (0, 0), 3)[..., None]
    blurred = cv2.GaussianBlur(canvas_u8, (0, 0), face_px / 8).astype(np.float32)
    bg_u8 = np.clip(canvas_u8 * (1 - mask) + blurred * mask, 0, 255).astype(np.uint8)

    def to_t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).to(dev).permute(2, 0, 1).float().div_(255.0).contiguous()

    return PreparedIdentity(plan, cfg, to_t(canvas_u8), to_t(bg_u8), uv, topo, shape,
                            fit.expr_coeffs.clone(), fit, face_px, front)


def _project(verts: torch.Tensor, fit: _Fit) -> torch.Tensor:
    """Model-space ``(B, V, 3)`` -> canvas pixels (x right, y down, z larger = closer)."""
    cam = fit.scale * verts @ fit.rotation.T
    return torch.stack([cam[..., 0] + fit.t[0], -cam[..., 1] + fit.t[1], cam[..., 2]], -1)


def _vertex_normals(verts: torch.Tensor, tris: torch.Tensor) -> torch.Tensor:
    """``(B, V, 3)`` unit vertex normals (area-weighted) in the frame of ``verts``."""
    v0, v1, v2 = verts[:, tris[:, 0]], verts[:, tris[:, 1]], verts[:, tris[:, 2]]
    fn = torch.linalg.cross(v1 - v0, v2 - v0)
    vn = torch.zeros_like(verts)
    for k in range(3):
        vn.index_add_(1, tris[:, k], fn)
    return F.normalize(vn, dim=-1)


def _pixel_grid(h: int, w: int, dev) -> tuple[torch.Tensor, torch.Tensor]:
    ys, xs = torch.meshgrid(torch.arange(h, device=dev, dtype=torch.float32),
                            torch.arange(w, device=dev, dtype=torch.float32), indexing="ij")
    return xs, ys


def _upsample(low: torch.Tensor, down: int, height: int, width: int) -> torch.Tensor:
    """``(T, C, Hl, Wl)`` maps sampled at full-res pixels ``(i * down, j * down)`` -> ``(T, C, H, W)``."""
    hl, wl = low.shape[-2:]
    up = F.interpolate(low, size=((hl - 1) * down + 1, (wl - 1) * down + 1), mode="bilinear", align_corners=True)
    return up[..., :height, :width]


# =============================================================================== live


#: head rotation pivot in model space (mm): behind the face, at the upper neck
_PIVOT = (0.0, -30.0, -95.0)
#: blendshape amplitude limits (SFM order: anger, disgust, fear, happiness, sadness, surprise)
_EXPR_MAX = (0.5, 0.4, 0.3, 0.45, 0.5, 0.2)


def _render_live(prep: PreparedIdentity, sfm) -> torch.Tensor:
    """The identity's live clip before the camera model: ``(T, 3, H, W)`` float in [0, 1]."""
    cfg = prep.cfg
    dev = prep.canvas.device
    T, H, W, fps = cfg.num_frames, cfg.height, cfg.width, cfg.fps
    rng = _rng(cfg.seed, prep.plan.index, "live")
    deg = math.pi / 180

    def sig(amp, lo=0.18, hi=0.4):
        return torch.as_tensor(_smooth(rng, T, fps, amp, lo, hi), dtype=torch.float32, device=dev)

    yaw = sig(rng.uniform(14, 20) * deg, 0.2, 0.4)
    pitch = sig(rng.uniform(6, 10) * deg)
    roll = sig(rng.uniform(2, 4) * deg)
    e = sfm.num_blendshapes
    t = np.arange(T) / fps
    expr = np.zeros((T, e))
    lim = np.resize(np.array(_EXPR_MAX), e)
    for j in rng.choice(e, size=min(2, e), replace=False):  # two expressions rise and fall
        f = rng.uniform(0.2, 0.5)
        expr[:, j] = lim[j] * rng.uniform(0.6, 1.0) * (0.5 - 0.5 * np.cos(2 * np.pi * f * t + rng.uniform(0, np.pi)))
    expr_t = (prep.expr0[None] + torch.as_tensor(expr, dtype=torch.float32, device=dev)).clamp(max=1.0)
    # sway of the head against the background and camera drift (canvas px / radians / scale)
    sway = torch.stack([sig(rng.uniform(2, 5)), sig(rng.uniform(1, 3))], -1)
    cam_t = torch.stack([sig(rng.uniform(2, 4)), sig(rng.uniform(1.5, 3))], -1)
    cam_r = sig(rng.uniform(0.3, 1.0) * deg)
    cam_s = 1.0 + sig(rng.uniform(0.01, 0.03))
    light_az = sig(rng.uniform(25, 45) * deg)
    light_el = float(rng.uniform(10, 30)) * deg
    ka = float(rng.uniform(0.5, 0.65))

    fit = prep.fit
    verts = prep.shape[None] + torch.einsum("vce,te->tvc", sfm.blendshapes, expr_t)  # (T, V, 3)
    r_d = _rot(yaw, pitch, roll)  # camera-space head rotation (x right, y up, z to viewer)
    pivot = fit.rotation @ torch.tensor(_PIVOT, device=dev)
    back = torch.tensor([0.0, 0.0, -HOLE_DEPTH], device=dev)
    verts = prep.topo.extend(verts, back)  # (T, V + holes, 3): the mouth closed, set back
    tris = prep.topo.triangles
    cam = (verts @ fit.rotation.T - pivot) @ r_d.transpose(1, 2) + pivot  # (T, V', 3) model units
    canvas_xyz = torch.stack([fit.scale * cam[..., 0] + fit.t[0] + sway[:, None, 0],
                              -fit.scale * cam[..., 1] + fit.t[1] + sway[:, None, 1],
                              fit.scale * cam[..., 2]], -1)
    # canvas -> frame: rotate/scale about the canvas centre, shift, drop the margin
    cc = torch.tensor([(W + 2 * MARGIN) / 2, (H + 2 * MARGIN) / 2], device=dev)
    cs, sn = torch.cos(cam_r), torch.sin(cam_r)
    a = torch.stack([cs, -sn, sn, cs], -1).view(T, 2, 2) * cam_s.view(T, 1, 1)
    xy = (canvas_xyz[..., :2] - cc) @ a.transpose(1, 2) + cc + cam_t[:, None] - MARGIN
    frame_xyz = torch.cat([xy, canvas_xyz[..., 2:] * cam_s.view(T, 1, 1)], -1)
    ras = rasterize(frame_xyz, tris, H, W, front=prep.front)

    # the face: per-pixel texture coordinate (barycentric), colour, Lambertian relighting
    st = interpolate(ras, tris, torch.cat([prep.uv, prep.topo.edge_alpha], 1))
    col = _sample(prep.canvas, st[:, :2])  # (N, 3)
    normals = _vertex_normals(cam, tris) * _normal_sign(sfm)
    n_pix = F.normalize(interpolate(ras, tris, normals), dim=-1)
    light = torch.stack([torch.sin(light_az) * math.cos(light_el), torch.full_like(light_az, math.sin(light_el)),
                         torch.cos(light_az) * math.cos(light_el)], -1)  # (T, 3)
    lam = (n_pix * light[ras.face]).sum(-1).clamp(min=0)
    lam_ref = n_pix[:, 2].clamp(min=0)  # frontal light, roughly the photo's
    shade = (1 + (1 - ka) * (lam - lam_ref)).clamp(0.75, 1.15)

    # background: inverse camera transform on a coarse grid (upsampled), the area around the
    # head following the head's motion
    down = 8
    hl, wl = (H - 1) // down + 2, (W - 1) // down + 2
    xs, ys = _pixel_grid(hl, wl, dev)
    q = torch.stack([xs, ys], -1).view(1, -1, 2) * down + MARGIN - cc - cam_t[:, None]
    p = q @ torch.linalg.inv(a).transpose(1, 2) + cc  # (T, hl*wl, 2) canvas px
    rest = _project(prep.shape[None], fit)[0, :, :2].mean(0)
    follow = canvas_xyz[..., : prep.shape.shape[0], :2].mean(1) - rest  # (T, 2) head centroid displacement
    wgt = torch.exp(-((p - rest) ** 2).sum(-1, keepdim=True) / (2 * (0.9 * prep.face_px) ** 2))
    p = p - wgt * follow[:, None]
    hc, wc = prep.background.shape[1:]
    g = torch.stack([p[..., 0] * (2.0 / (wc - 1)) - 1, p[..., 1] * (2.0 / (hc - 1)) - 1], 1).view(T, 2, hl, wl)
    grid = _upsample(g, down, H, W).permute(0, 2, 3, 1)
    out = F.grid_sample(prep.background[None].expand(T, -1, -1, -1), grid, mode="bilinear",
                        padding_mode="border", align_corners=True)  # (T, 3, H, W)
    # composite the face at the covered pixels only
    ov = out.view(T, 3, H * W)
    f, pix = ras.face, ras.pix % (H * W)
    cur = ov[f, :, pix]
    ov[f, :, pix] = cur + st[:, 2:3] * ((col * shade[:, None]).clamp(0, 1) - cur)
    return out


def _normal_sign(sfm) -> float:
    """+1 when the triangle winding gives normals towards the viewer for a frontal face."""
    n = _vertex_normals(sfm.mean[None], sfm.triangles)[0]
    return 1.0 if float(n[:, 2].sum()) >= 0 else -1.0


# =============================================================================== planar attacks


def _sheet_mesh(width: float, height: float, nx: int, ny: int, bend: float, ext: float, dev
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A vertex grid over a ``width x height`` sheet (extended by ``ext`` of its size on every
    side), bent about its vertical axis.

    Returns ``(local (V, 3) positions: X right, Y down, Z away from the camera; normals (V, 3)
    towards the camera; uv (V, 2) sheet pixel coordinates; triangles (T, 3))``. ``bend`` is the
    curvature in 1/px (0: flat; > 0: edges bent away from the camera).
    """
    u = torch.linspace(-ext * width, (1 + ext) * width - 1, nx, device=dev)
    v = torch.linspace(-ext * height, (1 + ext) * height - 1, ny, device=dev)
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    uc = uu - (width - 1) / 2
    if abs(bend) < 1e-7:
        x, zz = uc, torch.zeros_like(uc)
        n = torch.stack([torch.zeros_like(uc), torch.zeros_like(uc), -torch.ones_like(uc)], -1)
    else:
        phi = uc * bend
        x = torch.sin(phi) / bend
        zz = (1 - torch.cos(phi)) / bend
        n = torch.stack([torch.sin(phi), torch.zeros_like(phi), -torch.cos(phi)], -1)
    pos = torch.stack([x, vv - (height - 1) / 2, zz], -1).reshape(-1, 3)
    uv = torch.stack([uu, vv], -1).reshape(-1, 2)
    i = torch.arange(ny - 1, device=dev).view(-1, 1) * nx + torch.arange(nx - 1, device=dev).view(1, -1)
    i = i.reshape(-1)
    tris = torch.cat([torch.stack([i, i + 1, i + nx], 1), torch.stack([i + 1, i + nx + 1, i + nx], 1)], 0)
    return pos, n.reshape(-1, 3), uv, tris


def _handheld_pose(rng: np.random.Generator, T: int, fps: float, rot_deg: float, shift_px: float,
                   tremor: float, dev) -> tuple[torch.Tensor, torch.Tensor]:
    """``(T, 3, 3)`` rotations and ``(T, 2)`` image-plane shifts of a hand-held flat object."""
    deg = math.pi / 180

    def sig(amp):
        return _smooth(rng, T, fps, amp, 0.15, 0.45) + _tremor(rng, T, fps, amp * tremor)

    base = rng.uniform(-0.5, 0.5, 3) * rot_deg * deg
    yaw = base[0] + sig(rot_deg * deg)
    pitch = base[1] + sig(rot_deg * deg)
    roll = base[2] * 0.5 + sig(0.4 * rot_deg * deg)
    r = _rot(*(torch.as_tensor(x, dtype=torch.float32, device=dev) for x in (yaw, pitch, roll)))
    shift = np.stack([sig(shift_px), sig(shift_px * 0.7)], -1)
    return r, torch.as_tensor(shift, dtype=torch.float32, device=dev)


def _light_dirs(rng: np.random.Generator, T: int, fps: float, dev) -> torch.Tensor:
    """``(T, 3)`` unit directions towards a light in front of the object (OpenCV camera axes)."""
    az = math.radians(rng.uniform(-35, 35)) + _smooth(rng, T, fps, math.radians(8))
    el = math.radians(rng.uniform(-35, -10))
    v = np.stack([np.sin(az) * math.cos(el), np.full(T, math.sin(el)), -np.cos(az) * math.cos(el)], -1)
    return torch.as_tensor(v, dtype=torch.float32, device=dev)


def _rect_distance(uv: torch.Tensor, x0: float, y0: float, x1: float, y1: float) -> torch.Tensor:
    """Signed distance (object px, > 0 inside) of points ``(..., 2)`` to a rectangle's border."""
    return torch.minimum(torch.minimum(uv[..., 0] - x0, x1 - uv[..., 0]),
                         torch.minimum(uv[..., 1] - y0, y1 - uv[..., 1]))


@dataclass
class _PlanarMaps:
    """Full-resolution maps of a rendered flat/bent object (all ``(T, ., H, W)``)."""

    grid: torch.Tensor  # (T, H, W, 2) grid_sample coordinates into the object's texture
    alpha: torch.Tensor  # (T, 1, H, W) coverage with a 1 px anti-aliased edge
    diffuse: torch.Tensor  # (T, 1, H, W) Lambertian factor
    specular: torch.Tensor  # (T, 1, H, W) additive highlight
    extra: torch.Tensor  # (T, k, H, W) further interpolated channels


def _planar_maps(obj_w: int, obj_h: int, bend: float, rot: torch.Tensor, shift: torch.Tensor,
                 px_scale: float, cfg: SynthConfig, light: torch.Tensor, ka: float, spec: float,
                 shininess: float, extra_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                 down: int = 4) -> _PlanarMaps:
    """Perspective rendering of a ``obj_w x obj_h`` sheet / screen, hand-held.

    The object (extended by a quarter of its size on every side, so that maps stay defined
    beyond its border) is rasterised at ``1/down`` resolution - its texture coordinates, shading
    and ``extra_fn(uv (T, Nl, 2) object px, frame index (Nl,)) -> (Nl, k)`` channels are smooth -
    and bilinearly upsampled; the border's anti-aliasing comes from the upsampled signed
    distance. Camera: pinhole, focal ``1.6 W``, the object at the distance where one object pixel
    is ``px_scale`` frame pixels; ``rot`` ``(T, 3, 3)`` / ``shift`` ``(T, 2)`` its motion.
    """
    T, H, W = cfg.num_frames, cfg.height, cfg.width
    dev = rot.device
    pos, nrm, uv, tris = _sheet_mesh(obj_w, obj_h, 15, 11, bend, 0.25, dev)
    f = 1.6 * W
    d = f / px_scale
    cam = pos[None] @ rot.transpose(1, 2)  # (T, V, 3), OpenCV camera axes
    zc = cam[..., 2] + d
    x = (f * cam[..., 0] / zc + W / 2 + shift[:, None, 0]) / down
    y = (f * cam[..., 1] / zc + H / 2 + shift[:, None, 1]) / down
    hl, wl = (H - 1) // down + 2, (W - 1) // down + 2
    ras = rasterize(torch.stack([x, y, -zc], -1), tris, hl, wl)
    n_c = nrm[None] @ rot.transpose(1, 2)
    view = -F.normalize(torch.stack([cam[..., 0], cam[..., 1], zc], -1), dim=-1)
    half = F.normalize(light[:, None] + view, dim=-1)
    lam = ka + (1 - ka) * (n_c * light[:, None]).sum(-1).clamp(min=0)
    spc = spec * (n_c * half).sum(-1).clamp(min=0) ** shininess
    vals = interpolate(ras, tris, torch.cat([uv[None].expand(T, -1, -1), lam[..., None], spc[..., None]], -1))
    uvp = vals[:, :2]
    chans = [uvp[:, 0:1] * (2.0 / (obj_w - 1)) - 1, uvp[:, 1:2] * (2.0 / (obj_h - 1)) - 1,
             _rect_distance(uvp, -0.5, -0.5, obj_w - 0.5, obj_h - 0.5)[:, None] * px_scale, vals[:, 2:4]]
    if extra_fn is not None:
        chans.append(extra_fn(uvp, ras.face))
    vals = torch.cat(chans, 1)
    c = vals.shape[1]
    low = torch.zeros(T * hl * wl, c, device=dev)
    low[:, 2] = -1e3  # uncovered: far outside
    low[ras.pix] = vals
    up = _upsample(low.view(T, hl, wl, c).permute(0, 3, 1, 2), down, H, W)
    return _PlanarMaps(up[:, :2].permute(0, 2, 3, 1), (up[:, 2:3] + 0.5).clamp(0, 1), up[:, 3:4], up[:, 4:5],
                       up[:, 5:])


def _room_frames(rng: np.random.Generator, cfg: SynthConfig, dev) -> torch.Tensor:
    """A static synthetic room seen by the camera: ``(1, 3, H, W)``."""
    room = synthetic_room(rng, cfg.height + 2 * MARGIN, cfg.width + 2 * MARGIN, dev)
    dx, dy = (int(v) for v in rng.integers(0, 2 * MARGIN, 2))
    return room[None, :, dy : dy + cfg.height, dx : dx + cfg.width]


def _render_print(prep: PreparedIdentity, sfm, variant: int) -> torch.Tensor:
    """A printed photo of the identity, hand-held over a room: ``(T, 3, H, W)``."""
    cfg = prep.cfg
    rng = _rng(cfg.seed, prep.plan.index, f"print{variant}")
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    dev = prep.canvas.device
    T, H, W, fps = cfg.num_frames, cfg.height, cfg.width, cfg.fps
    content = prep.clean_live(sfm)[int(rng.integers(T))]  # (3, H, W): a still of the identity
    glossy = variant == 1
    # ---- the printed sheet texture: colour loss, halftone, paper
    border = rng.random() < 0.6
    mx = int(round(W * rng.uniform(0.04, 0.08))) if border else 0
    my = int(round(H * rng.uniform(0.04, 0.08))) if border else 0
    paper = torch.tensor([1.0, 0.985, 0.95] if glossy else [0.97, 0.96, 0.9], device=dev)
    paper = paper * float(rng.uniform(0.92, 1.0))
    gray = (content * torch.tensor([0.299, 0.587, 0.114], device=dev).view(3, 1, 1)).sum(0, keepdim=True)
    c = gray + float(rng.uniform(0.65, 0.85) if glossy else rng.uniform(0.5, 0.75)) * (content - gray)
    black = float(rng.uniform(0.04, 0.09) if glossy else rng.uniform(0.08, 0.14))
    c = black + (paper.view(3, 1, 1) - black) * c.clamp(0, 1) ** float(rng.uniform(1.05, 1.25))
    xs, ys = _pixel_grid(H, W, dev)
    period = float(rng.uniform(1.6, 2.6))
    ht = []
    for ch, ang in enumerate((15.0, 75.0, 45.0)):  # C, M, Y screens
        a = math.radians(ang + rng.uniform(-3, 3))
        u = (xs * math.cos(a) + ys * math.sin(a)) / period
        v = (-xs * math.sin(a) + ys * math.cos(a)) / period
        dots = 0.5 + 0.25 * (torch.cos(2 * math.pi * u) + torch.cos(2 * math.pi * v))
        ink = torch.sigmoid(((1 - c[ch]) - dots) * 10)
        ht.append(paper[ch] * (1 - ink) + black * ink)
    c = torch.lerp(c, torch.stack(ht), float(rng.uniform(0.25, 0.5)))
    sheet = paper.view(3, 1, 1).expand(3, H + 2 * my, W + 2 * mx).clone()
    sheet[:, my : my + H, mx : mx + W] = c
    hs, ws = sheet.shape[1:]
    amp = 0.012 if glossy else 0.025
    grain = amp * _noise_field(gen, hs, ws, 5, dev)[0] + 0.4 * amp * torch.randn(1, hs, ws, generator=gen).to(dev)
    sheet = (sheet * (1 + grain)).clamp(0, 1)
    # ---- geometry, motion, light
    bend = float(rng.uniform(0.0, 0.001) if glossy else rng.uniform(0.001, 0.0025)) * float(rng.choice([-1, 1]))
    fill = float(rng.uniform(1.0, 1.12)) if not border else float(rng.uniform(0.88, 0.95))
    rot, shift = _handheld_pose(rng, T, fps, float(rng.uniform(4, 8)), float(rng.uniform(3, 8)), 0.25, dev)
    light = _light_dirs(rng, T, fps, dev)
    spec, shin = (float(rng.uniform(0.25, 0.5)), float(rng.uniform(20, 60))) if glossy else (0.03, 4.0)
    maps = _planar_maps(ws, hs, bend, rot, shift, fill, cfg, light, float(rng.uniform(0.7, 0.85)), spec, shin)
    room = _room_frames(rng, cfg, dev)
    obj = F.grid_sample(sheet[None].expand(T, -1, -1, -1), maps.grid, mode="bilinear", padding_mode="border",
                        align_corners=True)
    obj = torch.addcmul(maps.specular, obj, maps.diffuse)
    return torch.lerp(room.expand(T, -1, -1, -1), obj, maps.alpha)


def _render_replay(prep: PreparedIdentity, sfm, variant: int) -> torch.Tensor:
    """The identity's live video played on a tablet (1) / phone (2), hand-held: ``(T, 3, H, W)``."""
    cfg = prep.cfg
    rng = _rng(cfg.seed, prep.plan.index, f"replay{variant}")
    dev = prep.canvas.device
    T, H, W, fps = cfg.num_frames, cfg.height, cfg.width, cfg.fps
    phone = variant == 2
    # playback order: ping-pong from a random offset (reversed on the phone)
    k = (np.arange(T) + int(rng.integers(T))) % max(1, 2 * T - 2)
    k = np.where(k >= T, 2 * T - 2 - k, k)
    if phone:
        k = k[::-1].copy()
    video = prep.clean_live(sfm)[torch.as_tensor(k, device=dev)]
    # display: gamma, white balance, lifted blacks, rolling refresh bands
    wb = np.array([0.92, 0.98, 1.1]) if phone else np.array([1.05, 1.0, 0.92])
    wb = torch.as_tensor(wb * rng.uniform(0.95, 1.05, 3), dtype=torch.float32, device=dev).view(1, 3, 1, 1)
    lift = float(rng.uniform(0.03, 0.08))
    period = float(rng.uniform(40, 120))
    rows = torch.arange(H, device=dev, dtype=torch.float32).view(1, 1, -1, 1)
    ph = torch.arange(T, device=dev, dtype=torch.float32).view(-1, 1, 1, 1) * float(rng.uniform(-0.4, 0.4)) * period
    band = 1 - float(rng.uniform(0.03, 0.08)) * (0.5 + 0.5 * torch.cos(2 * math.pi * (rows + ph) / period))
    gain = (1 - lift) * wb * band  # (T, 3, H, 1)
    screen = torch.addcmul(torch.full((1,), lift, device=dev), video.clamp(min=1e-4).pow(float(rng.uniform(0.8, 1.25))),
                           gain)
    sw = int(round(H * 16 / 9)) if phone else W  # the phone's 16:9 screen pillar-boxes the video
    padx = (sw - W) // 2
    bez = int(round(H * (rng.uniform(0.04, 0.07) if phone else rng.uniform(0.06, 0.1))))
    bezel_col = float(rng.uniform(0.03, 0.12))
    dev_tex = torch.full((T, 3, H + 2 * bez, sw + 2 * bez), bezel_col, device=dev)
    if sw > W:
        dev_tex[:, :, bez : bez + H, bez : bez + sw] = lift * 0.6
    dev_tex[:, :, bez : bez + H, bez + padx : bez + padx + W] = screen
    hd, wd = dev_tex.shape[2:]
    pitch = float(rng.uniform(0.45, 0.8))  # screen pixel pitch in video pixels
    moire = float(rng.uniform(0.05, 0.11) if phone else rng.uniform(0.03, 0.08))
    g_amp = float(rng.uniform(0.12, 0.3))
    g_r = float(rng.uniform(0.12, 0.3)) * hd
    g_c = np.stack([_smooth(rng, T, fps, 0.05 * wd), _smooth(rng, T, fps, 0.03 * hd)], -1)
    g_c = torch.as_tensor(g_c + rng.uniform([0.15, 0.1], [0.85, 0.6]) * [wd, hd], dtype=torch.float32, device=dev)

    def extra(uvp: torch.Tensor, fr: torch.Tensor) -> torch.Tensor:
        on = _rect_distance(uvp, bez - 0.5, bez - 0.5, wd - bez - 0.5, hd - bez - 0.5)
        glare = g_amp * torch.exp(-((uvp - g_c[fr]) ** 2).sum(-1) / (2 * g_r**2))
        return torch.stack([on, glare], 1)

    fill = float(rng.uniform(0.92, 1.05))  # video pixels -> frame pixels
    rot, shift = _handheld_pose(rng, T, fps, float(rng.uniform(3, 7) if phone else rng.uniform(2, 5)),
                                float(rng.uniform(3, 8)), 0.5 if phone else 0.2, dev)
    light = _light_dirs(rng, T, fps, dev)
    # a screen emits its light: little shading; its glass gives a weak sheen
    maps = _planar_maps(wd, hd, 0.0, rot, shift, fill, cfg, light, 0.92, 0.06, 30.0, extra_fn=extra)
    room = _room_frames(rng, cfg, dev)
    obj = F.grid_sample(dev_tex, maps.grid, mode="bilinear", padding_mode="border", align_corners=True)
    # moire: the screen's pixel grid evaluated at every camera pixel's screen position (it
    # aliases into moving fringes, as a filmed screen does); only on the lit screen area
    g = maps.grid
    k = 2 * math.pi / (2 * pitch)
    cu = torch.cos((g[..., 0] + 1) * (k * (wd - 1)))
    cv_ = torch.cos((g[..., 1] + 1) * (k * (hd - 1)))
    on = (maps.extra[:, 0] * fill + 0.5).clamp_(0, 1)
    factor = cv_.mul_(0.25).add_(0.75).mul_(cu).mul_(on).mul_(moire).add_(1)[:, None] * maps.diffuse
    obj = torch.addcmul(maps.specular + maps.extra[:, 1:2], obj, factor)
    return torch.lerp(room.expand(T, -1, -1, -1), obj, maps.alpha)


# =============================================================================== camera model


def _camera(frames: torch.Tensor, rng: np.random.Generator, fps: float) -> np.ndarray:
    """The capturing camera: auto-exposure drift, signal-dependent sensor noise, 8-bit
    quantisation (batched torch), then slight lens blur and a JPEG round trip per frame (OpenCV:
    JPEG is per picture anyway). ``(T, 3, H, W)`` float in [0, 1] -> ``(T, H, W, 3)`` uint8."""
    T = frames.shape[0]
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    gain = float(rng.uniform(0.95, 1.05)) * (1 + _smooth(rng, T, fps, float(rng.uniform(0.01, 0.04))))
    gain = torch.as_tensor(gain * 255.0, dtype=frames.dtype, device=frames.device).view(T, 1, 1, 1)
    s0, s1 = float(rng.uniform(1.0, 2.5)), float(rng.uniform(0.01, 0.03))  # noise std: s0 + s1 * level (8-bit)
    x = torch.addcmul(torch.full((1,), 0.5, dtype=frames.dtype, device=frames.device), frames, gain)  # +0.5: rounding
    noise = torch.randn(x.shape, generator=gen).to(x.device)
    x.addcmul_(noise, x * s1 + s0)
    u8 = x.clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()
    sigma = float(rng.uniform(0.4, 0.8))
    params = [int(cv2.IMWRITE_JPEG_QUALITY), int(rng.integers(60, 88))]
    out = np.empty_like(u8)
    for i in range(T):
        im = cv2.GaussianBlur(u8[i], (0, 0), sigma)
        ok, buf = cv2.imencode(".jpg", im, params)  # channel order is irrelevant to the round trip
        out[i] = cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else im
    return out


_KIND_RENDER = {"print": _render_print, "replay": _render_replay}


def render_clip(prep: PreparedIdentity, sfm, name: str) -> np.ndarray:
    """Frames of one clip of an identity: ``(T, H, W, 3)`` uint8 RGB. Deterministic (module doc)."""
    if name not in CLIP_NAMES:
        raise ConfigError(f"clip name must be one of {CLIP_NAMES}, got {name!r}")
    with torch.inference_mode():
        if name == "live":
            clean = prep.clean_live(sfm)
        else:
            clean = _KIND_RENDER[name[:-1]](prep, sfm, int(name[-1]))
        return _camera(clean, _rng(prep.cfg.seed, prep.plan.index, f"camera-{name}"), prep.cfg.fps)


# =============================================================================== generation


class SynthGenerator:
    """Plans identities and clips and renders them (caches the current identity's preparation).

    ``sources`` come from :func:`load_sources`, ``sfm`` is :class:`pipeline.reconstruct.sfm.SFMTensors`.
    """

    def __init__(self, cfg: SynthConfig, sources: Sequence[SourcePhoto], sfm=None):
        self.cfg = cfg
        self.sources = {s.name: s for s in sources}
        self._sfm = sfm
        self.identities = plan_identities(list(sources), cfg.identities, cfg.seed)
        self._prep: PreparedIdentity | None = None

    @classmethod
    def from_config(cls, cfg: SynthConfig) -> "SynthGenerator":
        """Load the sources for ``cfg`` (reads files; the SFM is loaded on first use)."""
        return cls(cfg, load_sources(cfg))

    @property
    def sfm(self):
        """:class:`pipeline.reconstruct.sfm.SFMTensors` on ``cfg.device`` (read from the model directory on first use)."""
        if self._sfm is None:
            from pipeline.reconstruct.sfm import load_sfm

            self._sfm = load_sfm(self.cfg.model_dir).to_torch(self.cfg.device, torch.float32)
        return self._sfm

    def clips(self) -> list[ClipSpec]:
        return plan_clips(self.identities)

    def prepare(self, ident: IdentityPlan) -> PreparedIdentity:
        if self._prep is None or self._prep.plan != ident:
            with torch.inference_mode():
                self._prep = prepare_identity(ident, self.sources[ident.source], self.sfm, self.cfg)
        return self._prep

    def render(self, clip: ClipSpec) -> np.ndarray:
        """``(T, H, W, 3)`` uint8 frames of ``clip``."""
        return render_clip(self.prepare(clip.identity), self.sfm, clip.name)

    def release(self) -> None:
        """Drop the cached identity preparation (and its rendered live frames)."""
        self._prep = None


@dataclass
class SynthResult:
    """What :func:`generate` wrote: the manifest, its rows, timing."""

    out_dir: Path
    manifest: Path
    rows: list[dict[str, str]]
    identities: list[IdentityPlan]
    seconds: float


def write_manifest(rows: Sequence[dict[str, str]], path: str | os.PathLike) -> Path:
    """Write ``manifest.csv`` with :data:`MANIFEST_COLUMNS`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(MANIFEST_COLUMNS))
        w.writeheader()
        for r in rows:
            w.writerow({k: r[k] for k in MANIFEST_COLUMNS})
    return path


def _write_identity(gen: SynthGenerator, index: int, out: Path) -> list[tuple[ClipSpec, float]]:
    """Render and write the five clips of identity ``index``; (clip, seconds) of each."""
    from pipeline.io.media import write_video

    done = []
    for clip in plan_clips([gen.identities[index]]):
        t1 = time.perf_counter()
        frames = gen.render(clip)
        write_video(out / clip.relpath, iter(frames), gen.cfg.fps, crf=gen.cfg.crf)
        done.append((clip, time.perf_counter() - t1))
    gen.release()  # free the identity's frames
    return done


_WORKER: SynthGenerator | None = None


def _worker_init(cfg: SynthConfig, sources: list[SourcePhoto]) -> None:  # pragma: no cover - subprocess
    global _WORKER
    torch.set_num_threads(1)  # one core per worker process
    _keep_freed_memory()
    _WORKER = SynthGenerator(cfg, sources)


def _keep_freed_memory() -> None:  # pragma: no cover - subprocess, glibc only
    """In a worker process: let glibc keep freed large blocks on the heap instead of unmapping
    them, so each clip's ~40 MB tensors are not page-faulted in again (saves ~15% CPU)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def _worker_identity(args: tuple[int, str]) -> list[tuple[ClipSpec, float]]:  # pragma: no cover - subprocess
    assert _WORKER is not None
    return _write_identity(_WORKER, args[0], Path(args[1]))


def generate(cfg: SynthConfig, out_dir: str | os.PathLike, *, workers: int = 1,
             on_clip: Callable[[ClipSpec, float], None] | None = None,
             generator: SynthGenerator | None = None) -> SynthResult:
    """Render every clip of ``cfg`` into ``out_dir`` (mp4, H.264) and write ``manifest.csv``.

    ``workers > 1`` renders identities in that many spawned processes (one torch thread each);
    the frames do not depend on the worker an identity lands on beyond torch's own float
    reduction order. ``on_clip(clip, seconds)`` is called after each clip is written (in the
    calling process; progress bars). Returns the manifest rows in identity order.
    """
    if int(workers) != workers or workers < 1:
        raise ConfigError(f"parameter 'workers' must be an integer >= 1, got {workers!r}")
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    gen = generator or SynthGenerator.from_config(cfg)
    n = len(gen.identities)
    done: list[tuple[ClipSpec, float]] = []
    workers = min(int(workers), n)
    if workers <= 1:
        for i in range(n):
            for item in _write_identity(gen, i, out):
                done.append(item)
                if on_clip is not None:
                    on_clip(*item)
    else:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(workers, initializer=_worker_init, initargs=(cfg, list(gen.sources.values()))) as pool:
            for items in pool.imap_unordered(_worker_identity, [(i, str(out)) for i in range(n)]):
                for item in items:
                    done.append(item)
                    if on_clip is not None:
                        on_clip(*item)
    order = {(c.identity.index, c.name): k for k, c in enumerate(gen.clips())}
    done.sort(key=lambda it: order[(it[0].identity.index, it[0].name)])
    rows = [clip.manifest_row() for clip, _ in done]
    manifest = write_manifest(rows, out / "manifest.csv")
    dt = time.perf_counter() - t0
    logger.info("synthetic set: %d clips of %d identities in %s (%.1f s)", len(rows), n, out, dt)
    return SynthResult(out, manifest, rows, gen.identities, dt)
