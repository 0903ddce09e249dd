"""The loaded backends of one process: detector, landmarker and the face model on the device."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pipeline.base.errors import ConfigError
from pipeline.face.detect import create_detector
from pipeline.face.landmarks import create_landmarker
from pipeline.reconstruct.sfm import load_sfm
from pipeline.run.config import PreprocessConfig


@dataclass
class Engines:
    """The loaded backends of one process (created once, reused for every item)."""

    detector: object  # None in the pipelined runner's main process (it only fits and renders)
    landmarker: object
    sfm: object  # torch tensors of the Surrey Face Model on the device


_ENGINE_CACHE: dict[tuple, Engines] = {}


def _check_device(cfg: PreprocessConfig) -> None:
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"parameter 'device': {cfg.device!r} asked for but CUDA is not available")


def _face_model(cfg: PreprocessConfig):
    return load_sfm(cfg.model_dir).to_torch(cfg.device, torch.float32)


def get_engines(cfg: PreprocessConfig) -> Engines:
    """Backends for ``cfg``, loaded on first use and cached per process."""
    d = cfg.detect
    key = (d, cfg.device, cfg.model_dir)
    eng = _ENGINE_CACHE.get(key)
    if eng is None:
        _check_device(cfg)
        det = create_detector(d.detector, device=cfg.device, model_dir=cfg.model_dir,
                              score_threshold=d.score_threshold, min_face_size=d.min_face_size)
        lmk = create_landmarker(d.landmarks, device=cfg.device, model_dir=cfg.model_dir)
        sfm = _face_model(cfg)
        eng = _ENGINE_CACHE[key] = Engines(det, lmk, sfm)
    return eng


def fit_engines(cfg: PreprocessConfig) -> Engines:
    """Only the face model on the device (no detector / landmarker): what the pipelined
    runner's main process needs to fit and render."""
    _check_device(cfg)
    return Engines(detector=None, landmarker=None, sfm=_face_model(cfg))
