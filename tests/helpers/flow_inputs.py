"""Inputs the flow tests share: three short face clips and the preprocess flow's flat parameters."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import load_rgb
from tests.helpers.media import make_face_video


def write_clips(root: Path, portraits) -> Path:
    """Three 8-frame clips of one real portrait (a gap of no-face frames in each) under ``root``."""
    face = load_rgb(next(p for p in portraits if p.name == "obama.jpg"))
    for i in range(3):
        make_face_video(root / f"clip{i}.mp4", face, n=8, gap=(8, 8))
    return root


def flow_params(clips: Path, out: Path, **kw) -> dict:
    """Flat parameters of the ``preprocess`` flow for ``clips`` -> ``out`` (small and quick)."""
    return {"input": str(clips), "output": str(out), "size": 64, "max_frames": 4, **kw}
