"""Flat flow parameters, generated from the configs the CLI uses (:mod:`pipeline.base.options`).

Each flow takes every option as a top-level parameter: Prefect merges a run's parameters into
the deployment's one level deep, so ``prefect deployment run train/sample -p epochs=1`` changes
that field and keeps every other default only when nothing is nested. Defaults, descriptions,
bounds and choices (dropdowns in the UI) come from :class:`pipeline.run.config.PreprocessRun`,
:class:`depthseg.config.TrainRun` / :class:`~depthseg.config.EvaluateConfig` /
:class:`~depthseg.config.BenchmarkRun` and
:class:`RunnerOptions`; the values are checked by those configs, so a bad value fails the flow run
before any work with the message the CLI prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from depthseg.config import BenchmarkRun, EvaluateConfig, TrainRun
from pipeline.base.errors import ConfigError
from pipeline.base.options import check_fields, flat_signature, flow_parameters, opt
from pipeline.run.config import PreprocessRun


@dataclass(frozen=True)
class RunnerOptions:
    """How the preprocess flow runs its units: threads (I/O), processes (CPU-bound) or Dask."""

    task_runner: str = opt("thread", help="thread: I/O bound; process: CPU-bound units; dask: a Dask cluster",
                           choices=("thread", "process", "dask"))
    max_workers: int = opt(2, help="parallel units (threads/processes/dask workers)", ge=1)
    dask_address: str | None = opt(None, help="address of an existing Dask scheduler (tcp://host:8786); "
                                              "none: a local cluster")
    items_per_task: int | None = opt(None, help="videos per task (larger: fewer API calls); none: the videos split "
                                                "evenly into a multiple of max_workers tasks of at most 8 videos",
                                     ge=1)
    result_storage: str | None = opt(None, help="folder or fsspec URL for task results (the cache that lets a rerun "
                                                "skip units); every worker must reach it (none: beside the store, "
                                                "OUTPUT.prefect-results)")

    def __post_init__(self) -> None:
        check_fields(self)


def check_paths(**paths: str | None) -> None:
    """Local paths that must exist before a flow starts work (URLs are left to the store)."""
    for name, value in paths.items():
        if value is not None and "://" not in value and not Path(value).expanduser().exists():
            raise ConfigError(f"parameter {name!r}: path {value!r} does not exist")


#: decorators giving each flow function its flat signature
preprocess_parameters = flat_signature(flow_parameters(PreprocessRun), flow_parameters(RunnerOptions))
train_parameters = flat_signature(flow_parameters(TrainRun))
evaluate_parameters = flat_signature(flow_parameters(EvaluateConfig))
benchmark_parameters = flat_signature(flow_parameters(BenchmarkRun),
                                      flow_parameters(RunnerOptions, exclude=("items_per_task",)))
