"""Prefect ``train`` flow: DepthSeg training on a store, then evaluation on its test split."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact

from depthseg.evaluate import evaluate
from depthseg import trainer  # module import: this module's flow is also named `train`
from flows.params import TrainParams


@task(name="train-model")
def train_model(params: dict) -> dict:
    """Train (resuming from out_dir/last.pt when asked); returns checkpoint paths and metrics."""
    fields = {k: v for k, v in params.items() if k not in ("test_split", "resume", "nproc")}
    cfg = trainer.TrainConfig(progress=False, **fields)
    if params.get("nproc", 1) > 1:  # torch DDP: torchrun with nproc processes (depthseg.distributed)
        from depthseg.ddp_run import train_distributed

        res = train_distributed(cfg, params["nproc"], resume=params["resume"])
    else:
        res = trainer.train(cfg, resume=params["resume"])
    return {
        "best_checkpoint": str(res.best_checkpoint),
        "last_checkpoint": str(res.last_checkpoint),
        "metrics": res.metrics,
    }


@task(name="evaluate-model")
def evaluate_model(checkpoint: str, store: str, split: str, dev_split: str | None, out_dir: str, device: str) -> dict:
    return evaluate(checkpoint, store, split=split, dev_split=dev_split, out_dir=out_dir, device=device)


def metrics_rows(metrics: dict, prefix: str = "") -> list[dict]:
    rows = []
    for k, v in metrics.items():
        if isinstance(v, dict):
            rows += metrics_rows(v, f"{prefix}{k}.")
        elif isinstance(v, (int, float, str)) or v is None:
            rows.append({"metric": f"{prefix}{k}", "value": v})
    return rows


@flow(name="train")
def train(params: TrainParams) -> dict:
    """Train DepthSeg on ``params.store`` and evaluate the best checkpoint on the test split."""
    logger = get_run_logger()
    tags = ["gpu"] if params.device.startswith("cuda") else []
    res = train_model.with_options(tags=tags)(params.model_dump())
    logger.info("best checkpoint %s; dev metrics %s", res["best_checkpoint"], res["metrics"])
    out = {"store": params.store, **res}
    if params.test_split:
        ev = evaluate_model.with_options(tags=tags)(
            res["best_checkpoint"], params.store, params.test_split, params.dev_split,
            f"{params.out_dir}/eval-{params.test_split}", params.device,
        )
        out["test_metrics"] = ev
    create_table_artifact(metrics_rows({"train": res["metrics"], "test": out.get("test_metrics", {})}),
                          key="train-metrics", description=f"checkpoint {res['best_checkpoint']}")
    return out
