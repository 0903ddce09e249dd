"""Test media made from the shared real images: videos with moving faces and gaps."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from pipeline.io.media import write_video


def moving_face_frames(face: np.ndarray, n: int = 30, size=(640, 480), gap=(12, 18), seed: int = 0):
    """Frames with ``face`` (RGB) moving and scaling over a textured background.

    Frames with index in ``range(*gap)`` show the background only (no face).
    """
    w, h = size
    rng = np.random.default_rng(seed)
    bg = cv2.resize(rng.integers(60, 120, (h // 16, w // 16, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
    for i in range(n):
        frame = bg.copy()
        if not gap[0] <= i < gap[1]:
            t = i / max(n - 1, 1)
            side = int(h * (0.8 + 0.2 * np.sin(2 * np.pi * t)))
            fh, fw = face.shape[:2]
            scale = side / max(fh, fw)
            f = cv2.resize(face, (max(1, int(fw * scale)), max(1, int(fh * scale))), interpolation=cv2.INTER_AREA)
            x = int((w - f.shape[1]) * (0.2 + 0.6 * t))
            y = int((h - f.shape[0]) * 0.5)
            frame[y : y + f.shape[0], x : x + f.shape[1]] = f
        yield frame


def make_face_video(path: Path, face: np.ndarray, n: int = 30, gap=(12, 18), fps: float = 10.0) -> Path:
    write_video(path, moving_face_frames(face, n=n, gap=gap), fps=fps)
    return path
