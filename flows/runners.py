"""Task runner chosen by a flow parameter: threads, processes, or a Dask cluster."""

from __future__ import annotations

from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

from flows.params import RunnerOptions


def make_task_runner(p: RunnerOptions):
    if p.task_runner == "thread":
        return ThreadPoolTaskRunner(max_workers=p.max_workers)
    if p.task_runner == "process":
        return ProcessPoolTaskRunner(max_workers=p.max_workers)
    from prefect_dask import DaskTaskRunner  # on use: it loads dask.distributed (~0.5 s), only this runner needs it

    if p.dask_address:
        return DaskTaskRunner(address=p.dask_address)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": p.max_workers,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": None,
        }
    )
