"""Prefect ``evaluate`` flow: ISO/IEC 30107-3 metrics of a checkpoint on a store split."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_table_artifact

from flows.params import EvaluateParams
from flows.train import evaluate_model, metrics_rows


@flow(name="evaluate")
def evaluate(params: EvaluateParams) -> dict:
    tags = ["gpu"] if params.device.startswith("cuda") else []
    res = evaluate_model.with_options(tags=tags)(
        params.checkpoint, params.store, params.split, params.dev_split, params.out_dir, params.device,
        params.protocol,
    )
    create_table_artifact(metrics_rows(res), key="evaluate-metrics",
                          description=f"{params.checkpoint} on {params.store} [{params.split}]")
    return res
