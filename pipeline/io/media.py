"""Writing videos (used by the synthetic sample set, tests and benchmarks)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: float = 25.0,
    *,
    codec: str = "libx264",
    crf: int = 23,
    rotation: int | None = None,
) -> int:
    """Encode RGB uint8 frames ``(H, W, 3)`` to ``path``; returns the number of frames written.

    Frames are streamed (an iterator is consumed one frame at a time). ``rotation`` (degrees)
    is written as display-matrix metadata where the container supports it, as phones do.
    Odd sizes are cropped to even for yuv420p.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with av.open(str(path), mode="w") as container:
        stream = None
        for frame in frames:
            if stream is None:
                h, w = frame.shape[:2]
                h -= h % 2
                w -= w % 2
                stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
                stream.width, stream.height = w, h
                stream.pix_fmt = "yuv420p"
                if codec == "libx264":
                    stream.options = {"crf": str(crf), "preset": "veryfast"}
                if rotation:
                    stream.metadata["rotate"] = str(int(rotation))
            img = np.ascontiguousarray(frame[: stream.height, : stream.width, :3], dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
            n += 1
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    return n
