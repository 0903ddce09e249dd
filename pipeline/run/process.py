"""The preprocessing configuration: what decides the stored arrays, and how a run executes.

The stages are in :mod:`pipeline.run.stages`, the per-item steps in :mod:`pipeline.run.unit`,
the runners in :mod:`pipeline.run.runners` and :mod:`pipeline.run.parallel`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace

from pipeline.base.errors import ConfigError
from pipeline.face.qc import QCConfig
from pipeline.io.items import WorkItem

DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class PreprocessConfig:
    """Everything that decides what the preprocessing writes (plus where/how it runs).

    ``output_config()`` is the part that affects the stored arrays; its hash keys resume
    and guards a store against mixing configurations.
    """

    detector: str = "blazeface"
    landmarks: str = "dlib68"
    every_n: int = 1
    fps: float | None = None
    max_frames: int | None = None
    size: int = 256
    crop_scale: float = 1.3
    score_threshold: float | None = None  # None: the detector's own default
    min_face_size: float = 32.0
    fit_iterations: int = 5
    depth_far_value: float = 0.1
    qc: QCConfig = field(default_factory=QCConfig)
    # --- execution only (not part of the output config) ---
    device: str = "cpu"
    model_dir: str | None = None
    batch_size: int = 64
    workers: int = 0  # > 0: run_preprocess runs pipeline.run.parallel.run_parallel with this many workers
    max_pixels: int | None = 100_000_000  # larger images / video frames fail (pipeline.io.frames.FrameConfig)

    EXECUTION_ONLY = ("device", "model_dir", "batch_size", "workers", "max_pixels")

    def __post_init__(self) -> None:
        def bad(name: str, problem: str) -> None:
            raise ConfigError(f"parameter {name!r}: {problem}")

        for name in ("fps", "crop_scale", "score_threshold", "min_face_size", "depth_far_value"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
                bad(name, f"must be a finite number, got {value!r}")
        if self.every_n < 1:
            bad("every_n", f"must be >= 1, got {self.every_n}")
        if self.fps is not None and self.fps <= 0:
            bad("fps", f"must be > 0, got {self.fps}")
        if self.max_frames is not None and self.max_frames < 1:
            bad("max_frames", f"must be >= 1, got {self.max_frames}")
        if self.max_pixels is not None and self.max_pixels < 1:
            bad("max_pixels", f"must be >= 1, got {self.max_pixels}")
        if not 16 <= self.size <= 1024:
            bad("size", f"must be in [16, 1024], got {self.size}")
        if not 0.5 <= self.crop_scale <= 4.0:
            bad("crop_scale", f"must be in [0.5, 4], got {self.crop_scale}")
        if self.batch_size < 1:
            bad("batch_size", f"must be >= 1, got {self.batch_size}")
        if self.workers < 0:
            bad("workers", f"must be >= 0, got {self.workers}")
        if not (self.device in DEVICES or self.device.startswith("cuda:")):
            bad("device", f"must be one of {DEVICES} (or cuda:N), got {self.device!r}")
        if self.fit_iterations < 1:
            bad("fit_iterations", f"must be >= 1, got {self.fit_iterations}")
        from pipeline.face.detect import DETECTORS
        from pipeline.face.landmarks import LANDMARKERS

        if self.detector not in DETECTORS:
            bad("detector", f"unknown name {self.detector!r}; valid: {DETECTORS.names()}")
        if self.landmarks not in LANDMARKERS:
            bad("landmarks", f"unknown name {self.landmarks!r}; valid: {LANDMARKERS.names()}")
        try:
            self.qc.drop_mask()
        except ValueError as exc:
            bad("qc.drop", str(exc))

    def frame_config(self, item: WorkItem):
        """Frame sampling for ``item``: this config's, capped by the item's own ``max_frames``."""
        from pipeline.io.frames import FrameConfig

        caps = [c for c in (self.max_frames, item.max_frames) if c]
        return FrameConfig(every_n=self.every_n, fps=self.fps, max_frames=min(caps) if caps else None,
                           max_pixels=self.max_pixels)

    def crop_config(self):
        from pipeline.face.crop import CropConfig

        return CropConfig(size=self.size, crop_scale=self.crop_scale)

    def output_config(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in self.EXECUTION_ONLY}
        out["qc"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.qc).items()}
        out["kind"] = "depthseg-fas/preprocess"
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "PreprocessConfig":
        data = dict(data)
        data.pop("kind", None)
        if isinstance(data.get("qc"), dict):
            qc = dict(data["qc"])
            if "drop" in qc:
                qc["drop"] = tuple(qc["drop"])
            data["qc"] = QCConfig(**qc)
        return cls(**data)


def with_overrides(cfg: PreprocessConfig, **overrides) -> PreprocessConfig:
    return replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
