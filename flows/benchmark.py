"""Prefect ``benchmark`` flow: every fold of a protocol as its own task, then the paper table.

A thin wrapper over :mod:`depthseg.benchmark`: one task preprocesses the shared store (skipped
when every fold finished earlier), one task per fold trains and evaluates it (a finished fold
returns its ``metrics.json`` at once), submitted together so the task runner runs them in
parallel (``task_runner``/``max_workers``; ``gpu``-tagged on CUDA, so the ``gpu`` concurrency
limit applies), each pinned to ``threads`` torch threads. The table is written as CSV and
Markdown and published as a table artifact.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact

from depthseg import benchmark as core
from depthseg.config import BenchmarkRun
from depthseg.trainer import json_safe
from flows.params import RunnerOptions, benchmark_parameters, check_paths
from flows.runners import make_task_runner
from pipeline.base.options import build


@task(name="benchmark-preprocess")
def preprocess_store(config: dict) -> dict:
    return core.prepare_store(core.BenchmarkConfig.from_dict(config))


@task(name="benchmark-fold")
def run_fold(config: dict, fold: str) -> dict:
    return core.run_fold(core.BenchmarkConfig.from_dict(config), fold)


@flow(name="benchmark-folds")
def _run_folds(config: dict, folds: list[str], gpu: bool) -> list[dict]:
    task_fn = run_fold.with_options(tags=["gpu"]) if gpu else run_fold
    futures = [task_fn.submit(config, fold) for fold in folds]
    return [f.result() for f in futures]


@flow(name="benchmark")
@benchmark_parameters
def benchmark(**params) -> dict:
    """Every fold of ``protocol`` trained and evaluated; the table as papers print it (flat
    parameters, :mod:`flows.params`; a bad one fails the run before any work)."""
    run, runner_opts = build(BenchmarkRun, params), build(RunnerOptions, params)
    check_paths(**{f"roots[{i}]": r for i, r in enumerate(run.roots)}, model_dir=run.model_dir)
    cfg = run.benchmark_config(parallel=runner_opts.max_workers)
    logger = get_run_logger()
    config = cfg.to_dict()
    pending = core.pending_folds(cfg)
    logger.info("%d fold(s), %d to run: %s", len(cfg.folds), len(pending), ", ".join(pending) or "none")
    core.check_folders(cfg, pending)
    counts = preprocess_store(config) if pending else {}
    results = _run_folds.with_options(task_runner=make_task_runner(runner_opts))(
        config, cfg.folds, run.device.startswith("cuda"))
    rows = core.table_rows(cfg, list(zip(cfg.folds, results)))
    files = core.write_table(cfg, rows)
    create_table_artifact(json_safe(rows), key="benchmark-table",  # NaN (std of one fold) -> null
                          description=f"{cfg.protocol}: fractions; {core.STD_NOTE}; {files['markdown']}")
    skipped = [f for f in cfg.folds if f not in pending]
    return {"files": files, "skipped": skipped, "rows": json_safe(rows), "preprocess": counts}
