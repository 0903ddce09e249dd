"""Prefect ``train`` flow: DepthSeg training on a store, then evaluation on its test split."""

from __future__ import annotations

import dataclasses

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact

from depthseg.evaluate import evaluate
from depthseg import trainer  # module import: this module's flow is also named `train`
from depthseg.config import EvaluateConfig, TrainRun
from depthseg.ddp_run import train_distributed
from flows.params import check_paths, train_parameters
from pipeline.base.options import build


@task(name="train-model")
def train_model(config: dict, resume: bool, nproc: int = 1) -> dict:
    """Train (resuming from out_dir/last.pt when asked; ``nproc`` > 1: DDP) and return checkpoint
    paths and metrics."""
    cfg = trainer.TrainConfig(**{**config, "progress": False})
    if nproc > 1:  # torch DDP: torchrun with nproc processes (depthseg.distributed)
        res = train_distributed(cfg, nproc, resume=resume)
    else:
        res = trainer.train(cfg, resume=resume)
    return {
        "best_checkpoint": str(res.best_checkpoint),
        "last_checkpoint": str(res.last_checkpoint),
        "metrics": res.metrics,
    }


@task(name="evaluate-model")
def evaluate_model(cfg: EvaluateConfig) -> dict:
    return evaluate(cfg.checkpoint, cfg.store, **cfg.kwargs())


def metrics_rows(metrics: dict, prefix: str = "") -> list[dict]:
    rows = []
    for k, v in metrics.items():
        if isinstance(v, dict):
            rows += metrics_rows(v, f"{prefix}{k}.")
        elif isinstance(v, (int, float, str)) or v is None:
            rows.append({"metric": f"{prefix}{k}", "value": v})
    return rows


@flow(name="train")
@train_parameters
def train(**params) -> dict:
    """Train DepthSeg on ``store`` and evaluate the best checkpoint on ``test_split``.

    Flat parameters (:mod:`flows.params`); a bad one fails the run before any work."""
    run = build(TrainRun, params)
    cfg = run.config
    check_paths(store=cfg.store)
    logger = get_run_logger()
    tags = ["gpu"] if cfg.device.startswith("cuda") else []
    res = train_model.with_options(tags=tags)(dataclasses.asdict(cfg), run.resume, run.nproc)
    logger.info("best checkpoint %s; dev metrics %s", res["best_checkpoint"], res["metrics"])
    out = {"store": cfg.store, **res}
    if run.test_split:
        ev = EvaluateConfig(checkpoint=res["best_checkpoint"], store=cfg.store, split=run.test_split,
                            dev_split=cfg.dev_split, out_dir=f"{cfg.out_dir}/eval-{run.test_split}", device=cfg.device,
                            protocol=cfg.protocol, include_flagged=cfg.include_flagged)
        out["test_metrics"] = evaluate_model.with_options(tags=tags)(ev)
    create_table_artifact(metrics_rows({"train": res["metrics"], "test": out.get("test_metrics", {})}),
                          key="train-metrics", description=f"checkpoint {res['best_checkpoint']}")
    return out
