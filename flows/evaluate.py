"""Prefect ``evaluate`` flow: ISO/IEC 30107-3 metrics of a checkpoint on a store split."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_table_artifact

from depthseg.config import EvaluateConfig
from flows.params import check_paths, evaluate_parameters
from flows.train import evaluate_model, metrics_rows
from pipeline.base.options import build


@flow(name="evaluate")
@evaluate_parameters
def evaluate(**params) -> dict:
    """Metrics of ``checkpoint`` on ``split`` of ``store`` (flat parameters, :mod:`flows.params`)."""
    cfg = build(EvaluateConfig, params)
    check_paths(checkpoint=cfg.checkpoint, store=cfg.store, dev_store=cfg.dev_store)
    tags = ["gpu"] if cfg.device.startswith("cuda") else []
    res = evaluate_model.with_options(tags=tags)(cfg)
    create_table_artifact(metrics_rows(res), key="evaluate-metrics",
                          description=f"{cfg.checkpoint} on {cfg.store} [{cfg.split}]")
    return res
