"""Miniature official dataset trees (names and folders as the datasets ship them): one tiny
real video (a shared portrait, 4 frames, 32x32) hard-linked under every name."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from tests.conftest import FACES, SHARED, load_rgb


def make_tiny_video(path: Path) -> Path:
    """A 4-frame 32x32 H.264 video of a shared portrait, slightly shifted per frame."""
    from PIL import Image

    from pipeline.io.media import write_video

    face = np.asarray(Image.fromarray(load_rgb(FACES / "obama.jpg")).resize((40, 40)))
    frames = [np.ascontiguousarray(face[i : i + 32, i : i + 32]) for i in range(4)]
    assert write_video(path, frames, fps=25) == 4
    return path


def make_tiny_image(path: Path) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(load_rgb(FACES / "biden.jpg")).resize((32, 32)).save(path)
    return path


def place(src: Path, dst: Path) -> Path:
    """Hard-link (or copy) ``src`` to ``dst``, creating folders."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
    return dst


OULU_FOLDERS = {"train": "Train_files", "dev": "Dev_files", "test": "Test_files"}


def oulu_split_of(user: int) -> str:
    return "train" if user <= 20 else "dev" if user <= 35 else "test"


def build_oulu(root: Path, video: Path) -> Path:
    """The full OULU-NPU name set: 6 phones x 3 sessions x 55 users x 5 files (4950 videos)."""
    for user in range(1, 56):
        folder = root / OULU_FOLDERS[oulu_split_of(user)]
        for phone in range(1, 7):
            for session in range(1, 4):
                for f in range(1, 6):
                    place(video, folder / f"{phone}_{session}_{user:02d}_{f}.avi")
    return root


SIW_TRAIN = range(1, 91)  # 90 training subjects


SIW_TEST = range(91, 166)  # 75 test subjects


def siw_names(subject: int) -> list[tuple[str, str]]:
    """(live|spoof folder, name) of the videos a fixture subject has: 8 live, 2 print, 4 replay."""
    s = f"{subject:03d}"
    out = [("live", f"{s}-{sensor}-1-1-{session}.mov") for sensor in (1, 2) for session in (1, 2, 3, 4)]
    out += [("spoof", f"{s}-1-2-{medium}-1.mov") for medium in (1, 2)]
    out += [("spoof", f"{s}-1-3-{medium}-1.mov") for medium in (1, 2, 3, 4)]
    return out


def build_siw(root: Path, video: Path) -> Path:
    for folder, subjects in (("Train", SIW_TRAIN), ("Test", SIW_TEST)):
        for sub in subjects:
            for kind, name in siw_names(sub):
                place(video, root / folder / kind / f"{sub:03d}" / name)
    return root


CASIA_NAMES = ["1", "2", "HR_1", "3", "4", "HR_2", "5", "6", "HR_3", "7", "8", "HR_4"]


def build_casia(root: Path, video: Path) -> Path:
    for release, n in (("train_release", 20), ("test_release", 30)):
        for sid in range(1, n + 1):
            for name in CASIA_NAMES:
                place(video, root / release / str(sid) / f"{name}.avi")
    return root


REPLAY_SPLITS = {"train": range(1, 16), "devel": range(16, 31), "test": range(31, 51)}


REPLAY_ATTACKS = [("print", "highdef", "photo"), ("highdef", "highdef", "photo"), ("highdef", "highdef", "video"),
                  ("mobile", "mobile", "photo"), ("mobile", "mobile", "video")]


def build_replay(root: Path, video: Path) -> Path:
    """50 clients (15 train, 15 devel, 20 test): 4 real + 20 attack videos each."""
    for folder, clients in REPLAY_SPLITS.items():
        for c in clients:
            for light in ("adverse", "controlled"):
                for take in (1, 2):
                    place(video, root / folder / "real" / f"client{c:03d}_session01_webcam_authenticate_{light}_{take}.mov")
                for support in ("fixed", "hand"):
                    for pai, src, content in REPLAY_ATTACKS:
                        name = f"attack_{pai}_client{c:03d}_session01_{src}_{content}_{light}.mov"
                        place(video, root / folder / "attack" / support / name)
    return root


MSU_TRAIN = [2, 3, 5, 6, 7, 8, 9, 11, 12, 21, 22, 23, 24, 26, 28]  # 15


MSU_TEST = [1, 13, 14, 29, 30, 32, 33, 34, 35, 36, 37, 39, 42, 48, 49, 50, 51, 53, 54, 55]  # 20


MSU_ATTACKS = [("ipad_video", "replay"), ("iphone_video", "replay"), ("printed_photo", "print")]


def build_msu(root: Path, video: Path, lists: bool = True) -> Path:
    """35 clients x (2 real + 6 attack) with the official subject lists (ids in mixed styles)."""
    for c in MSU_TRAIN + MSU_TEST:
        place(video, root / "scene01" / "real" / f"real_client{c:03d}_android_SD_scene01.mp4")
        place(video, root / "scene01" / "real" / f"real_client{c:03d}_laptop_SD_scene01.mov")
        for cam, ext in (("android", "mp4"), ("laptop", "mov")):
            for pai, _ in MSU_ATTACKS:
                place(video, root / "scene01" / "attack" / f"attack_client{c:03d}_{cam}_SD_{pai}_scene01.{ext}")
    if lists:
        (root / "train_sub_list.txt").write_text("\n".join(f"{c:03d}" for c in MSU_TRAIN) + "\n")
        (root / "test_sub_list.txt").write_text("\n".join(str(c) if i % 2 else f"{c:02d}" for i, c in enumerate(MSU_TEST)) + "\n\n")
    return root


#: (shared image, (centre x/W, centre y/H, face side/W)) of the benchmark tree's file types
OULU_BENCH_FACES = {
    "live": ("faces/obama.jpg", (0.52, 0.17, 0.30)),
    "print": ("pad-samples/image_F1.jpg", (0.40, 0.33, 0.45)),
    "replay": ("pad-samples/image_F2.jpg", (0.57, 0.45, 0.45)),
}


def _face_clip(path: Path, source: str, box: tuple[float, float, float], seed: int, side: int = 112) -> Path:
    """A 2-frame clip of a real face crop, jittered in position and brightness by ``seed``."""
    import cv2

    from pipeline.io.media import write_video

    img = load_rgb(SHARED / "data" / source)
    h, w = img.shape[:2]
    rng = np.random.default_rng(seed)
    cx, cy, frac = box
    s = frac * w * rng.uniform(1.55, 1.65)
    x0 = int(np.clip(cx * w - s / 2 + rng.uniform(-0.03, 0.03) * s, 0, w - s))
    y0 = int(np.clip(cy * h - s / 2 + rng.uniform(-0.03, 0.03) * s, 0, h - s))
    crop = cv2.resize(img[y0 : y0 + int(s), x0 : x0 + int(s)], (side, side), interpolation=cv2.INTER_AREA)
    gain = rng.uniform(0.85, 1.15)
    frames = [np.clip(np.roll(crop, i, axis=1) * gain, 0, 255).astype(np.uint8) for i in range(2)]
    path.parent.mkdir(parents=True, exist_ok=True)
    assert write_video(path, frames, fps=10) == 2
    return path


def build_oulu_benchmark(root: Path) -> Path:
    """A small OULU-NPU tree on which every OULU-NPU P3 fold finds what it requires: session 1;
    train user 01 and dev user 21 with each file type on two phones (file f on phones f, f+1),
    so leaving any phone out keeps every type; test user 36 with every phone x file type.
    Each clip is its own real face crop (live: a portrait; print/replay: real attack photos),
    jittered per name: 50 videos, 2 frames each."""
    kinds = {1: "live", 2: "print", 3: "print", 4: "replay", 5: "replay"}
    names = [(u, p, f) for u in (1, 21) for f in range(1, 6) for p in (f, f + 1)]
    names += [(36, p, f) for p in range(1, 7) for f in range(1, 6)]
    for seed, (user, phone, f) in enumerate(names):
        source, box = OULU_BENCH_FACES[kinds[f]]
        folder = root / OULU_FOLDERS[oulu_split_of(user)]
        _face_clip(folder / f"{phone}_1_{user:02d}_{f}.avi", source, box, seed)
    return root
