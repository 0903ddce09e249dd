"""Settings, identities and clips of the synthetic set: what gets rendered, with which seed and
split."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.base.errors import ConfigError
from pipeline.base.options import check_fields, opt


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

    identities: int = opt(12, help="number of identities, 5 clips each", ge=1)
    seed: int = opt(0, help="master seed (same seed -> same frames)")
    seconds: float = opt(3.0, help="clip length in seconds", gt=0)
    fps: float = opt(15.0, help="frame rate", gt=0)
    #: set together by the CLI's ``--size WIDTHxHEIGHT``
    width: int = opt(320, help="frame width (even)", ge=96, cli=False)
    height: int = opt(240, help="frame height (even)", ge=96, cli=False)
    device: str = opt("cpu", help="torch device of the rendering: cpu | cuda | cuda:N")
    model_dir: str | None = opt(None, help="model directory (default $DEPTHSEG_MODEL_DIR, else ../shared/models)")
    shared_dir: str | None = opt(None, help="folder with data/faces and data/pad-samples (default ../shared)")
    crf: int = opt(23, help="H.264 quality", ge=0, le=51)
    extra_sources: bool = True

    def __post_init__(self) -> None:
        check_fields(self)  # the bounds declared above
        if int(self.identities) != self.identities:
            raise ConfigError(f"parameter 'identities': must be an integer, got {self.identities!r}")
        for name in ("width", "height"):
            v = getattr(self, name)
            if int(v) != v or v % 2:
                raise ConfigError(f"parameter '{name}': must be an even integer, got {v!r}")
        if self.width < self.height:
            raise ConfigError(
                f"parameter 'size': landscape frames only (width >= height), got {self.width}x{self.height}"
            )
        if not any(k in str(self.device) for k in ("cpu", "cuda", "mps")):
            raise ConfigError(f"parameter 'device' must be cpu, cuda[:N] or mps, got {self.device!r}")

    @property
    def num_frames(self) -> int:
        return max(1, int(round(self.seconds * self.fps)))


def default_shared_dir() -> Path:
    """``<repo>/../shared`` (``$DEPTHSEG_SHARED`` overrides it)."""
    env = os.environ.get("DEPTHSEG_SHARED")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[3] / "shared"  # pipeline/synth/plan.py -> <repo>/..




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


def clip_rng(seed: int, ident: int, stream: str) -> np.random.Generator:
    key = [int(seed) % 2**64, int(ident), *[ord(c) for c in stream]]
    return np.random.default_rng(key)
