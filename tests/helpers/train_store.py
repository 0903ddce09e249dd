"""The training-test store, written through ``storage.DatasetWriter`` from the real shared
images: square face crops (a few jittered crops per image = one "video"), synthetic ellipsoid
depth for live faces. Spoof frames are deliberately stored with a *non-zero* depth map, to check
that the loader gives them zero depth regardless of what is on disk."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

import storage
from tests.conftest import SHARED as _SHARED


SHARED = _SHARED / "data"


#: image -> (label, attack type, face centre x/W, centre y/H, face side / W)
SOURCES = {
    "faces/obama.jpg": ("live", "none", 0.52, 0.17, 0.30),
    "faces/obama2.jpg": ("live", "none", 0.55, 0.30, 0.42),
    "faces/biden.jpg": ("live", "none", 0.58, 0.13, 0.40),
    "faces/obama-240p.jpg": ("live", "none", 0.50, 0.17, 0.11),
    "faces/obama-1080p.jpg": ("live", "none", 0.50, 0.17, 0.11),
    "pad-samples/image_T1.jpg": ("live", "none", 0.30, 0.40, 0.40),
    "pad-samples/image_F1.jpg": ("spoof", "print", 0.40, 0.33, 0.45),
    "pad-samples/image_F2.jpg": ("spoof", "replay", 0.57, 0.45, 0.45),
}


SPLIT_FRAMES = {"train": 4, "dev": 2, "test": 2}


def ellipsoid_depth(size: int) -> np.ndarray:
    """(S, S) uint8 depth of a half-ellipsoid face (255 nearest, 0 background)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    u, v = (xx - size / 2) / (0.36 * size), (yy - size * 0.52) / (0.46 * size)
    r = 1.0 - u**2 - v**2
    return np.round(255 * np.sqrt(np.clip(r, 0, None))).astype(np.uint8)


def face_crops(path: Path, cx: float, cy: float, side_frac: float, n: int, size: int,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n jittered square crops (N, S, S, 3) uint8 RGB and their frame->crop affines."""
    img = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    h, w = img.shape[:2]
    crops, affines = [], []
    for _ in range(n):
        side = side_frac * w * rng.uniform(0.93, 1.07)
        x0 = np.clip(cx * w + rng.uniform(-0.05, 0.05) * side - side / 2, 0, w - side)
        y0 = np.clip(cy * h + rng.uniform(-0.05, 0.05) * side - side / 2, 0, h - side)
        box = img[int(y0):int(y0 + side), int(x0):int(x0 + side)]
        crops.append(cv2.resize(box, (size, size), interpolation=cv2.INTER_AREA))
        k = size / side
        affines.append([[k, 0, -k * x0], [0, k, -k * y0]])
    return np.stack(crops), np.asarray(affines, dtype=np.float32)


def make_store(root: Path, size: int = 128, seed: int = 0, flagged: dict[str, int] | None = None,
               config: dict | None = None) -> str:
    """Write the test store (one part per source image, frames of every split).

    ``flagged``: label -> how many frames of each split of each part of that label carry a QC
    flag (``qc_flags`` 32, landmark-mismatch; the first frames of the split). ``config``: the
    store config (default ``{"crop_size": size, "test": "depthseg"}``)."""
    url = str(root / "store")
    writer = storage.DatasetWriter.open(url, config or {"crop_size": size, "test": "depthseg"})
    rng = np.random.default_rng(seed)
    depth_map = ellipsoid_depth(size)
    for name, (label, attack, cx, cy, frac) in SOURCES.items():
        path = SHARED / name
        n = sum(SPLIT_FRAMES.values())
        image, affine = face_crops(path, cx, cy, frac, n, size, rng)
        splits = np.concatenate([[s] * k for s, k in SPLIT_FRAMES.items()])
        stem = Path(name).stem
        video = np.array([f"{stem}-{s}" for s in splits])
        frame_index = np.concatenate([np.arange(k) for k in SPLIT_FRAMES.values()])
        # spoof frames deliberately carry a non-zero stored depth: the loader must ignore it
        depth = np.repeat(depth_map[None], n, axis=0)
        data = storage.PartData(
            image=image,
            depth=depth,
            landmarks=np.zeros((n, 68, 2), np.float32),
            bbox=np.tile(np.array([0, 0, size, size], np.float32), (n, 1)),
            affine=affine,
            fit_residual=np.full(n, np.nan if label == "spoof" else 0.5, np.float32),
            qc={k: np.zeros(n, np.float32) for k in ("det_score", "face_size", "yaw", "pitch", "roll", "blur")}
            | {"qc_flags": np.where(frame_index < (flagged or {}).get(label, 0), 32, 0).astype(np.uint8)},
            meta={"video_id": video, "frame_index": frame_index.astype(np.int64),
                  "timestamp": frame_index / 30.0, "label": np.array([label] * n),
                  "attack_type": np.array([attack] * n), "subject": np.array([stem] * n),
                  "session": np.array(["s1"] * n), "device": np.array(["cam"] * n), "split": splits,
                  "source": np.array([name] * n)},
        )
        writer.write_part(stem.replace("_", "-"), data, input_checksum=storage.file_checksum(path))
    return url


def train_tiny(store: str, out: Path, arch: str = "pspnet", **kw) -> Path:
    """A tiny model trained by the real trainer on ``store`` (resnet18, 64 px input, 32 px labels,
    one epoch of two steps, dev split for the threshold): the path of its ``best.pt``."""
    from depthseg.trainer import TrainConfig, train

    base = dict(store=store, out_dir=str(out), arch=arch, encoder="resnet18", input_size=64, label_size=32,
                num_classes=8, batch_size=8, epochs=1, max_steps_per_epoch=2, device="cpu", progress=False,
                seed=0)
    return train(TrainConfig(**{**base, **kw})).best_checkpoint
