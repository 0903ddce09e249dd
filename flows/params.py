"""Flow parameters as pydantic models: they become the deployment's form in the Prefect UI.

Validation happens before any work starts, and every message names the parameter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator


def _is_url(path: str) -> bool:
    return "://" in path


def _existing_path(name: str, value: Optional[str]) -> Optional[str]:
    if value is None or _is_url(value):
        return value
    if not Path(value).expanduser().exists():
        raise ValueError(f"{name}: path {value!r} does not exist")
    return value


class RunnerParams(BaseModel):
    """How units run: threads (I/O), processes (CPU-bound) or Dask (many machines)."""

    model_config = ConfigDict(extra="forbid")

    task_runner: Literal["thread", "process", "dask"] = Field(
        "thread", description="thread: I/O bound; process: CPU-bound units; dask: a Dask cluster"
    )
    max_workers: PositiveInt = Field(2, description="parallel units (threads/processes/dask workers)")
    dask_address: Optional[str] = Field(
        None, description="address of an existing Dask scheduler (tcp://host:8786); none = local cluster"
    )


class PreprocessParams(RunnerParams):
    input: str = Field(..., description="video/image folder, CSV manifest, or dataset root")
    output: str = Field(..., description="store path or fsspec URL (s3://...)")
    manifest: Optional[str] = Field(None, description="CSV manifest (path,label,attack_type,...)")
    dataset: Optional[str] = Field(None, description="dataset adapter name for `input`")
    detector: str = "blazeface"
    landmarks: str = "dlib68"
    every_n: PositiveInt = 1
    fps: Optional[float] = Field(None, gt=0, allow_inf_nan=False)
    max_frames: Optional[PositiveInt] = None
    size: int = Field(256, ge=16, le=1024)
    crop_scale: float = Field(1.3, ge=0.5, le=4.0, allow_inf_nan=False)
    batch_size: PositiveInt = Field(64, description="faces per batched fit+render")
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?)$")
    model_dir: Optional[str] = None
    max_pixels: Optional[PositiveInt] = Field(
        100_000_000, description="images / video frames with more pixels fail (None: no limit)")
    replace: bool = Field(False, description="replace a part committed from another input under the same id")
    items_per_task: PositiveInt = Field(1, description="videos per task (larger = fewer API calls)")
    report: Optional[str] = Field(None, description="run report JSON path (default beside the store)")
    result_storage: Optional[str] = Field(
        None, description="folder or fsspec URL for task results (the cache that lets a rerun skip units); "
                          "every worker must reach it (default beside the store: OUTPUT.prefect-results)")

    @field_validator("input")
    @classmethod
    def _input_exists(cls, v: str) -> str:
        return _existing_path("input", v)

    @field_validator("manifest")
    @classmethod
    def _manifest_exists(cls, v: Optional[str]) -> Optional[str]:
        return _existing_path("manifest", v)

    @field_validator("model_dir")
    @classmethod
    def _model_dir_exists(cls, v: Optional[str]) -> Optional[str]:
        return _existing_path("model_dir", v)

    @field_validator("detector")
    @classmethod
    def _known_detector(cls, v: str) -> str:
        from pipeline.face.detect import DETECTORS

        if v not in DETECTORS:
            raise ValueError(f"detector: unknown name {v!r}; valid: {DETECTORS.names()}")
        return v

    @field_validator("landmarks")
    @classmethod
    def _known_landmarker(cls, v: str) -> str:
        from pipeline.face.landmarks import LANDMARKERS

        if v not in LANDMARKERS:
            raise ValueError(f"landmarks: unknown name {v!r}; valid: {LANDMARKERS.names()}")
        return v

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, v: Optional[str]) -> Optional[str]:
        if v is None:
            return v
        from pipeline.datasets import list_adapters

        if v not in list_adapters():
            raise ValueError(f"dataset: unknown adapter {v!r}; valid: {list_adapters()}")
        return v

    def preprocess_config(self):
        from pipeline.run.process import PreprocessConfig

        return PreprocessConfig(
            detector=self.detector, landmarks=self.landmarks, every_n=self.every_n, fps=self.fps,
            max_frames=self.max_frames, size=self.size, crop_scale=self.crop_scale,
            device=self.device, model_dir=self.model_dir, batch_size=self.batch_size, max_pixels=self.max_pixels,
        )


class TrainParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    store: str = Field(..., description="store written by the preprocess flow")
    out_dir: str = Field(..., description="checkpoints, logs and metrics go here")
    arch: Literal["pspnet", "deeplabv3plus", "unet"] = "pspnet"
    encoder: str = "resnet18"
    num_classes: int = Field(8, ge=2, le=64)
    label_size: int = Field(32, ge=8, le=256)
    input_size: int = Field(256, ge=32, le=512)
    epochs: PositiveInt = 10
    batch_size: PositiveInt = 32
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    loss: str = "ce"
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?)$")
    seed: int = 0
    num_workers: int = Field(0, ge=0)
    max_steps_per_epoch: Optional[PositiveInt] = None
    resume: bool = Field(True, description="continue from out_dir/last.pt when it exists")
    nproc: PositiveInt = Field(1, description="data-parallel training processes (torchrun; one per GPU on CUDA)")
    train_split: str = "train"
    dev_split: str = "dev"
    test_split: Optional[str] = Field("test", description="evaluated after training (None to skip)")

    @field_validator("store")
    @classmethod
    def _store_exists(cls, v: str) -> str:
        return _existing_path("store", v)


class EvaluateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    checkpoint: str
    store: str
    out_dir: str
    split: str = "test"
    dev_split: Optional[str] = "dev"
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?)$")
    batch_size: PositiveInt = 32

    @model_validator(mode="after")
    def _paths_exist(self):
        _existing_path("checkpoint", self.checkpoint)
        _existing_path("store", self.store)
        return self
