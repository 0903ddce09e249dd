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
    protocol: Optional[str] = Field(None, description="only the items this protocol uses (oulu-npu-p3, siw-p1, ...)")
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
    train_split: str = "train"
    dev_split: str = "dev"
    test_split: Optional[str] = Field("test", description="evaluated after training (None to skip)")
    protocol: Optional[str] = Field(None, description="a protocol fold (oulu-npu-p3:fold=2): splits name its roles")

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
    protocol: Optional[str] = Field(None, description="a protocol fold (oulu-npu-p3:fold=2): splits name its roles")

    @model_validator(mode="after")
    def _paths_exist(self):
        _existing_path("checkpoint", self.checkpoint)
        _existing_path("store", self.store)
        return self


class BenchmarkParams(RunnerParams):
    """Every fold of a protocol: preprocess once, train and evaluate each fold (one task each)."""

    datasets: list[str] = Field(..., min_length=1, description="dataset adapters (oulu-npu; four for cross-dataset)")
    roots: list[str] = Field(..., min_length=1, description="dataset roots, one per dataset")
    protocol: str = Field(..., description="oulu-npu-p3 (all folds), oulu-npu-p3:fold=2, cross-dataset, ...")
    out_dir: str = Field(..., description="shared store, fold folders and the table go here")
    epochs: PositiveInt = 30
    arch: Literal["pspnet", "deeplabv3plus", "unet"] = "pspnet"
    encoder: str = "resnet18"
    input_size: int = Field(256, ge=32, le=512)
    label_size: int = Field(32, ge=8, le=256)
    batch_size: PositiveInt = 32
    lr: float = Field(1e-3, gt=0)
    seed: int = 0
    max_steps_per_epoch: Optional[PositiveInt] = None
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?)$")
    size: int = Field(256, ge=16, le=1024, description="preprocessing crop size")
    detector: str = "blazeface"
    landmarks: str = "dlib68"
    every_n: PositiveInt = 1
    max_frames: Optional[PositiveInt] = None
    model_dir: Optional[str] = None
    threads: Optional[PositiveInt] = Field(None, description="torch threads per fold (default: cores / max_workers)")

    @model_validator(mode="after")
    def _roots(self):
        if len(self.roots) != len(self.datasets):
            raise ValueError(f"roots: give one per dataset ({len(self.datasets)} datasets, {len(self.roots)} roots)")
        for r in self.roots:
            _existing_path("roots", r)
        return self

    def benchmark_config(self):
        from depthseg.benchmark import BenchmarkConfig

        train = dict(arch=self.arch, encoder=self.encoder, input_size=self.input_size, label_size=self.label_size,
                     epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, seed=self.seed,
                     max_steps_per_epoch=self.max_steps_per_epoch, device=self.device)
        pre = dict(size=self.size, detector=self.detector, landmarks=self.landmarks, every_n=self.every_n,
                   max_frames=self.max_frames, model_dir=self.model_dir)
        return BenchmarkConfig(self.protocol, list(zip(self.datasets, self.roots)), self.out_dir, preprocess=pre,
                               train=train, threads=self.threads, parallel=self.max_workers)
