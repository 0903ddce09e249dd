"""The train and evaluate options of the CLI and the flows, declared once.

Training's options are :class:`~depthseg.trainer.TrainConfig`'s own fields; :class:`TrainRun`
adds what a run decides beside them (resume, data-parallel processes, the split evaluated after
training). The CLI flags and the flat flow parameters are generated from these classes
(:mod:`pipeline.base.options`). ``nproc`` is not a TrainConfig field: it is not saved in the
checkpoint's config (a resume checks the world size itself, see :mod:`depthseg.distributed`).

:class:`BenchmarkRun` is the ``benchmark`` command's and flow's: the datasets, the protocol and
the preprocessing and training settings a benchmark varies, each declared as the field of
:class:`~pipeline.run.config.PreprocessConfig` / :class:`TrainConfig` it sets (same default,
check and description), so the benchmark's flags cannot drift from preprocess's and train's.

``resume`` is off by default everywhere: a rerun of the same command starts afresh (a finished
run resumed would have nothing to train), and continuing an interrupted run is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.base.errors import ConfigError
from pipeline.base.options import check_device, check_fields, flat_fields, group, opt
from pipeline.datasets import list_adapters
from pipeline.run.config import PreprocessConfig

from .benchmark import BenchmarkConfig
from .trainer import TrainConfig


@dataclass(frozen=True)
class TrainRun:
    """A training run: :class:`TrainConfig` plus resume and the split tested afterwards (flow)."""

    resume: bool = opt(False, help="continue from out_dir/last.pt when it exists")
    nproc: int = opt(1, help="data-parallel processes on this machine (runs torchrun; one per GPU on CUDA)", ge=1)
    test_split: str | None = opt("test", help="split evaluated with the best checkpoint after training "
                                               "(none to skip)", cli=False)
    config: TrainConfig = group(TrainConfig, "")

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class EvaluateConfig:
    """ISO/IEC 30107-3 metrics of a checkpoint on one split of a store (:func:`depthseg.evaluate.evaluate`)."""

    checkpoint: str = opt(help="checkpoint written by train (best.pt)")
    store: str = opt(help="store holding the split to evaluate")
    split: str = opt("test", help="split to evaluate")
    dev_split: str | None = opt("dev", help="split whose EER sets the threshold (none: the checkpoint's)")
    dev_store: str | None = opt(None, help="store of the development split (cross-dataset HTER; default: store)")
    out_dir: str = opt("eval", help="metrics.json, score CSVs and plots go here")
    device: str = opt("auto", help="torch device: auto (CUDA when available) | cpu | cuda | cuda:N")
    batch_size: int = opt(64, help="evaluation batch size", ge=1)
    protocol: str | None = opt(None, help="a protocol fold (oulu-npu-p3:fold=2): split/dev_split name its roles")
    include_flagged: bool = opt(False, help="score QC-flagged frames too (default: they count as non-responses)")

    def __post_init__(self) -> None:
        check_fields(self)
        check_device(self.device, auto=True)

    def kwargs(self) -> dict:
        """Keyword arguments of :func:`depthseg.evaluate.evaluate`."""
        return {"split": self.split, "dev_split": self.dev_split or None, "out_dir": self.out_dir,
                "dev_store": self.dev_store, "device": self.device, "batch_size": self.batch_size, "protocol": self.protocol,
                "include_flagged": self.include_flagged}


def _as_in(cls: type, name: str) -> Any:
    """The option of flat name ``name`` declared as ``cls`` (or its groups) declares it (default,
    bounds, choices, help)."""
    return next(fl for fl in flat_fields(cls) if fl.name == name).as_field()


#: the settings a benchmark passes on (the rest keep the core's defaults)
BENCH_PREPROCESS = ("size", "detector", "landmarks", "every_n", "max_frames", "model_dir")
BENCH_TRAIN = ("arch", "encoder", "input_size", "label_size", "epochs", "batch_size", "lr", "seed",
               "max_steps_per_epoch", "device", "include_flagged")


@dataclass(frozen=True)
class BenchmarkRun:
    """Every fold of a protocol (:mod:`depthseg.benchmark`): CLI ``benchmark`` and the flow."""

    datasets: tuple[str, ...] = opt(help="dataset adapters, one per root (four for cross-dataset: O C I M)",
                                    choices=list_adapters)
    roots: tuple[str, ...] = opt(help="dataset roots, one per dataset")
    protocol: str = opt(help="oulu-npu-p3 (all folds), oulu-npu-p3:fold=2, cross-dataset, ...")
    out_dir: str | None = opt(None, help="shared store, fold folders and the table (default runs/benchmark/<protocol>)")
    threads: int | None = opt(None, help="torch threads per fold (default: CPU count / folds run at once)", ge=1)
    size: int = _as_in(PreprocessConfig, "size")
    detector: str = _as_in(PreprocessConfig, "detector")
    landmarks: str = _as_in(PreprocessConfig, "landmarks")
    every_n: int = _as_in(PreprocessConfig, "every_n")
    max_frames: int | None = _as_in(PreprocessConfig, "max_frames")
    model_dir: str | None = _as_in(PreprocessConfig, "model_dir")
    arch: str = _as_in(TrainConfig, "arch")
    encoder: str = _as_in(TrainConfig, "encoder")
    input_size: int = _as_in(TrainConfig, "input_size")
    label_size: int = _as_in(TrainConfig, "label_size")
    epochs: int = _as_in(TrainConfig, "epochs")
    batch_size: int = _as_in(TrainConfig, "batch_size")
    lr: float = _as_in(TrainConfig, "lr")
    seed: int = _as_in(TrainConfig, "seed")
    max_steps_per_epoch: int | None = _as_in(TrainConfig, "max_steps_per_epoch")
    device: str = _as_in(TrainConfig, "device")
    include_flagged: bool = _as_in(TrainConfig, "include_flagged")

    def __post_init__(self) -> None:
        check_fields(self)
        check_device(self.device, auto=True)
        if len(self.datasets) != len(self.roots):
            raise ConfigError(f"parameter 'roots': give one per dataset ({len(self.datasets)} datasets, "
                              f"{len(self.roots)} roots)")

    def benchmark_config(self, parallel: int = 1) -> BenchmarkConfig:
        """The core's config; ``parallel``: folds run at once (sizes the default ``threads``)."""
        out = self.out_dir or str(Path("runs/benchmark") / self.protocol.replace(":", "_").replace("=", ""))
        return BenchmarkConfig(self.protocol, list(zip(self.datasets, self.roots)), out,
                               preprocess={k: getattr(self, k) for k in BENCH_PREPROCESS},
                               train={k: getattr(self, k) for k in BENCH_TRAIN}, threads=self.threads,
                               parallel=parallel)
