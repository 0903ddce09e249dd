"""Small real-looking dataset stores written through ``storage.DatasetWriter``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

import storage
from storage.layout import QC_COLUMNS
from tests.conftest import FACES


S = 64


def manifest_file(store) -> Path:
    """The file holding a (schema-3) store's manifest: the zarr metadata of its ``manifest`` group."""
    return Path(store) / "manifest" / "zarr.json"


def read_manifest(store) -> dict:
    """A store's manifest as it lies on disk (the attributes of ``manifest/``), unvalidated."""
    return json.loads(manifest_file(store).read_text())["attributes"]


def write_manifest(store, manifest: dict) -> None:
    """Overwrite a store's manifest in place (as a hostile or damaging edit would)."""
    manifest_file(store).write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": manifest}))


def staging_dir(store) -> Path:
    """A store's housekeeping folder (the zarr array ``staging``: locks, parts being written)."""
    return Path(store) / "staging"


def staged(store) -> list[str]:
    """What a store's staging folder holds besides its own ``zarr.json`` and the commit lock."""
    return sorted(p.name for p in staging_dir(store).iterdir() if p.name not in ("zarr.json", "commit.lock"))


CONFIG = {"crop": {"size": S, "margin": 0.25}, "depth": {"levels": 256}, "detector": "blazeface"}


def face_frames(name: str, n: int, seed: int) -> np.ndarray:
    """(n, S, S, 3) uint8: a real face photo resized to S, jittered per frame (shift, brightness)."""
    base = np.asarray(Image.open(FACES / name).convert("RGB").resize((S, S), Image.BILINEAR), dtype=np.float32)
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        dy, dx = rng.integers(-3, 4, size=2)
        img = np.roll(base, (int(dy), int(dx)), axis=(0, 1)) * rng.uniform(0.8, 1.2)
        frames.append(np.clip(img + rng.normal(0, 2, img.shape), 0, 255).astype(np.uint8))
    return np.stack(frames) if frames else np.zeros((0, S, S, 3), np.uint8)


def make_part(n: int, *, seed: int, label: str = "live", video_id: str = "vid", face: str = "obama.jpg",
              splits: tuple[str, ...] = ("train",)) -> storage.PartData:
    """A part of n frames with realistic arrays: real face crops, an elliptic depth map, ..."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:S, 0:S]
    r2 = ((yy - S / 2) / (0.45 * S)) ** 2 + ((xx - S / 2) / (0.35 * S)) ** 2
    face_depth = (255 * np.sqrt(np.clip(1 - r2, 0, 1))).astype(np.uint8)
    depth = np.repeat(face_depth[None], n, axis=0) if label != "spoof" else np.zeros((n, S, S), np.uint8)
    x0 = rng.uniform(100, 200, n)
    y0 = rng.uniform(80, 160, n)
    side = rng.uniform(250, 350, n)
    bbox = np.stack([x0, y0, x0 + side, y0 + side], axis=1)
    landmarks = bbox[:, None, :2] + rng.uniform(0.1, 0.9, (n, 68, 2)) * side[:, None, None]
    scale = S / side
    affine = np.zeros((n, 2, 3))
    affine[:, 0, 0] = affine[:, 1, 1] = scale
    affine[:, 0, 2], affine[:, 1, 2] = -x0 * scale, -y0 * scale
    residual = rng.uniform(0.5, 3.0, n) if label != "spoof" else np.full(n, np.nan)
    qc = {name: rng.uniform(0, 1, n) for name in QC_COLUMNS if name != "qc_flags"}
    rng.integers(0, 4, n)  # (the draw stays, so the frames of every fixture written from these parts stay too)
    qc["qc_flags"] = np.zeros(n, np.uint8)  # unflagged: training leaves flagged frames out by default
    meta = {
        "video_id": [video_id] * n,
        "frame_index": np.arange(n) * 2,
        "timestamp": np.arange(n) * 2 / 30.0,
        "label": [label] * n,
        "attack_type": ["none" if label == "live" else "print"] * n,
        "subject": [f"subj{seed % 3}"] * n,
        "session": ["s1"] * n,
        "device": ["phone-ü"] * n,  # non-ASCII on purpose
        "split": [splits[i % len(splits)] for i in range(n)],
        "source": [f"{video_id}.mp4"] * n,
    }
    return storage.PartData(image=face_frames(face, n, seed), depth=depth, landmarks=landmarks, bbox=bbox,
                            affine=affine, fit_residual=residual, qc=qc, meta=meta)


#: (part id, frames, label, splits, face) of the standard test store; written out of order
PARTS = [
    ("vid-b", 7, "spoof", ("test",), "biden.jpg"),
    ("vid-a", 5, "live", ("train", "dev"), "obama.jpg"),
    ("vid-c", 4, "live", ("train",), "obama2.jpg"),
]


def write_store(path, parts=PARTS, config=CONFIG) -> dict[str, storage.PartData]:
    w = storage.DatasetWriter.open(path, config)
    written = {}
    for i, (pid, n, label, splits, face) in enumerate(parts):
        data = make_part(n, seed=i, label=label, video_id=pid, face=face, splits=splits)
        w.write_part(pid, data, input_checksum=f"sha-{pid}", extra={"source": f"{pid}.mp4"})
        written[pid] = data
    return written


def expected_rows(written: dict[str, storage.PartData]) -> list[tuple[str, int]]:
    """(part id, row) of every frame in reader order: parts sorted by id, rows in order."""
    return [(pid, j) for pid in sorted(written) for j in range(written[pid].frames)]
