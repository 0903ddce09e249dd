"""Prefect ``preprocess`` flow: plan units → process them in parallel → commit parts → report.

A thin wrapper over :mod:`pipeline.run.runners`; tasks pass paths, ids and small summaries.

The task cache (input checksums + config + store identity) only says what an earlier run did;
the store's manifest says what is there now. Every result that claims a part (``written`` or
``skipped``) is checked against the manifest after the tasks ran: a part missing from it, or
committed with another input checksum (dropped or replaced since the cached run), has its unit
recomputed with the cache refreshed, so the report never calls a part written that the store
does not hold.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from pathlib import Path

import cv2
import torch
import zarr
from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.context import TaskRunContext
from prefect.filesystems import RemoteFileSystem
from prefect.futures import as_completed
from prefect.runtime import flow_run
from prefect.settings import PREFECT_API_URL

from flows.params import RunnerOptions, check_paths, preprocess_parameters
from pipeline.base.errors import ConfigError
from pipeline.base.options import build
from pipeline.io.inputs import collect_items
from pipeline.run.config import PreprocessRun
from pipeline.run.html_report import write_html_report
from pipeline.run.parallel import ParallelConfig
from pipeline.run.report import RunReport, version_mix
from pipeline.run.unit import UnitResult
from flows.runners import make_task_runner
from flows.workerenv import (fingerprint, is_local_address, require_project_packages, skip_collection_at_exit,
                             unseen_paths)
from storage import DatasetWriter, StoreError, file_checksum, refuse_if_locked, run_lock

#: exceptions worth retrying (the disk or network hiccuped); bad input never is
TRANSIENT = (TimeoutError, ConnectionError, BlockingIOError, InterruptedError)


def _transient_only(task, task_run, state) -> bool:
    try:
        state.result()
    except TRANSIENT:
        return True
    except Exception as exc:  # noqa: BLE001 - inspected, not swallowed
        cause = exc.__cause__
        return isinstance(exc, StoreError) and isinstance(cause, TRANSIENT)
    return False


def _unit_cache_key(context: TaskRunContext, arguments: dict) -> str:
    """Input checksums + config hash + the store's identity: a re-run skips finished units."""
    h = hashlib.sha256()
    h.update(arguments["store_key"].encode())
    h.update(json.dumps(arguments["config"], sort_keys=True, default=str).encode())
    # what decides an item's outcome beyond the config: the pixel limit and whether conflicts replace
    h.update(json.dumps([arguments["execution"].get("max_pixels"), arguments.get("replace", False)]).encode())
    for item in arguments["items"]:
        path = item["path"]
        h.update(path.encode("utf-8", "surrogateescape"))
        h.update((file_checksum(path) if Path(path).exists() else "missing").encode())
    return "preprocess-unit-" + h.hexdigest()[:32]


@task(
    name="preprocess-units",
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=_transient_only,
    cache_key_fn=_unit_cache_key,
    persist_result=True,
)
def preprocess_units(
    items: list[dict], output: str, config: dict, execution: dict, input_root: str | None, store_key: str,
    replace: bool = False,
) -> list[dict]:
    """Process a batch of items (videos) into parts of ``output``; returns small summaries."""
    require_project_packages()  # on a Dask worker: fail naming a folder that shadows a package
    skip_collection_at_exit()  # a spawned task process's exit is what the flow waits for at the end
    # after the guard, deliberately: here a worker's first use of the packages fails in one line
    # naming the shadowing folder, not with an ImportError far from the cause (flows.workerenv)
    from pipeline.run.config import PreprocessConfig
    from pipeline.run.runners import run_units

    cfg = PreprocessConfig.from_dict({**config, **{k: execution[k] for k in PreprocessConfig.EXECUTION_ONLY
                                                   if k in execution}})
    with task_threads(execution.get("threads")):
        return run_units(items, output, cfg, input_root=input_root, replace=replace,
                         detect_frames=execution.get("detect_batch", 1))


@contextlib.contextmanager
def task_threads(n: int | None):
    """torch and OpenCV on ``n`` threads for the block (None: left as they are).

    What the pipelined runner's workers do (:mod:`pipeline.run.parallel`): each task process
    (thread, for the thread runner) gets its share of the cores, ``cores // max_workers``; left at
    their defaults every torch and OpenCV in every task process would use all the cores, and on a
    2-core machine two such processes ran the detector 13x slower than the CLI (issue 16).
    torch's count belongs to the calling thread (OpenMP) and is restored after; OpenCV's is
    process-wide and stays set (tasks of one run all set the same value). torch's inter-op pool
    can be sized only before its first use: set once per process where still possible."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    cv2.setNumThreads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:  # already sized (started, or set by an earlier task of this process)
        pass
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _store_state(output: str, config: dict) -> tuple[str, set[str], dict]:
    """The store's identity (changes when it is deleted and recreated), its committed parts and
    the package versions its parts differ in from this process (logged; :func:`version_mix`)."""
    w = DatasetWriter.open(output, config)
    created = zarr.open_group(output, mode="r").attrs.get("created", "")
    return f"{output}|{w.config_hash}|{created}", set(w.parts), version_mix(w)


def _not_in_store(results: list[dict], parts: dict) -> bool:
    """Whether a result claims a part (written / skipped) that the manifest ``parts`` lacks."""
    for r in results:
        if r["status"] in ("written", "skipped"):
            info = parts.get(r["part_id"])
            if info is None or info.input_checksum != r.get("input_checksum"):
                return True
    return False


@flow(name="preprocess-units-runner")
def _run_units(units: list[list[dict]], output: str, config: dict, execution: dict,
               input_root: str | None, store_key: str, gpu: bool, committed: set[str],
               replace: bool = False, results: str | None = None) -> list[dict]:
    logger = get_run_logger()
    task_fn = preprocess_units.with_options(tags=["gpu"]) if gpu else preprocess_units
    if results:
        task_fn = task_fn.with_options(result_storage=_result_block(results))
    progress = create_progress_artifact(0.0, key="preprocess-progress", description="units done (%)")
    args = (output, config, execution, input_root, store_key, replace)
    futures = {task_fn.submit(u, *args): i for i, u in enumerate(units)}
    by_unit: dict[int, list[dict]] = {}
    for done, fut in enumerate(as_completed(list(futures)), start=1):
        by_unit[futures[fut]] = fut.result()
        update_progress_artifact(progress, 100.0 * done / max(len(futures), 1))
    parts = DatasetWriter.open(output, config).parts  # what the store holds now, cache or not
    stale = [i for i, res in by_unit.items() if _not_in_store(res, parts)]
    if stale:
        logger.warning("%d unit(s) have a cached result whose part is not in the store; recomputing", len(stale))
        fresh = task_fn.with_options(refresh_cache=True)
        redo = {fresh.submit(units[i], *args): i for i in stale}
        for fut in as_completed(list(redo)):
            by_unit[redo[fut]] = [dict(r, message=r["message"] or "recomputed: the cached part was not in the store")
                                  for r in fut.result()]
    results: list[dict] = []
    for i in sorted(by_unit):
        for r in by_unit[i]:
            if r["status"] == "written" and r["part_id"] in committed and i not in stale:
                # a cache hit returns the earlier run's summary: the part was already there
                r = dict(r, status="skipped", message="cached: finished by an earlier run")
            results.append(r)
            logger.info("%s %s (%s frames)", r["status"], r["path"], r["frames_stored"])
    return results


@flow(name="preprocess")
@preprocess_parameters
def preprocess(**params) -> dict:
    """Videos/images → aligned face crops + 3D-fit pseudo-depth in a zarr v3 store.

    Flat parameters (:mod:`flows.params`); a bad one fails the run before any work."""
    run, runner_opts = build(PreprocessRun, params), build(RunnerOptions, params)
    check_paths(input=run.input, manifest=run.manifest, model_dir=run.config.model_dir)
    cfg = run.config
    logger = get_run_logger()
    config = cfg.output_config()
    execution = {"device": cfg.device, "model_dir": cfg.model_dir, "batch_size": cfg.batch_size,
                 "max_pixels": cfg.frames.max_pixels, "threads": _threads_per_task(runner_opts),
                 "detect_batch": ParallelConfig.detect_batch}
    inputs = collect_items(run.input, manifest=run.manifest, dataset=run.dataset,
                           allow_outside_root=run.allow_outside_root, protocol=run.protocol)
    logger.info("%d items planned, %d rejected by the adapter", len(inputs.items), len(inputs.rejected))
    refuse_if_locked(run.output)  # at once, even while the holder sits in a commit
    store_key, committed, mix = _store_state(run.output, config)
    if mix:  # also in the run's log (the core's warning goes to the process's log only)
        logger.warning("%s: parts made with other package versions than this run's: %s (first: this run's)",
                       run.output, mix)
    items = [{k: v for k, v in it.to_dict().items()} for it in inputs.items]
    units = plan_units(items, runner_opts.items_per_task, runner_opts.max_workers)
    owner = f"prefect flow run {flow_run.get_id()}"
    result_storage = runner_opts.result_storage or _beside(run.output, ".prefect-results")
    _check_shared(runner_opts, run.output, result_storage, items[0]["path"] if items else None)
    with run_lock(run.output, owner=owner), shared_api_server():
        runner = make_task_runner(runner_opts)
        results = _run_units.with_options(task_runner=runner)(
            units, run.output, config, execution, inputs.root, store_key, cfg.device.startswith("cuda"), committed,
            run.replace, result_storage,
        )
    report = RunReport(output=run.output, config=config, rejected=inputs.rejected,
                       units=[UnitResult(**r) for r in results], version_mix=mix)
    rep = report.to_dict()
    report_path = run.report or _default_report(run.output)
    if report_path:
        Path(report_path).write_text(json.dumps(rep, indent=2, default=str))
        html_path = write_html_report(rep, run.output, Path(report_path).with_suffix(".html"))
        create_markdown_artifact(f"Run report: `{html_path.resolve()}` (JSON: `{report_path}`)",
                                 key="preprocess-html-report")
    counts = rep["counts"]
    rows = [{"what": k, "count": v} for k, v in counts.items()]
    rows += [{"what": f"FAILED {f['path']}", "count": f"{f['reason']}: {f['message']}"} for f in rep["failures"]]
    create_table_artifact(rows, key="preprocess-report", description=f"store {run.output}")
    logger.info("counts: %s", counts)
    return {"store": run.output, "report": report_path, "counts": counts}


#: most videos in one task when the flow chooses (``items_per_task`` none)
AUTO_ITEMS_PER_TASK = 8


def plan_units(items: list, per_task: int | None, workers: int) -> list[list]:
    """``items`` cut into tasks: ``per_task`` items each, or (None) into a multiple of ``workers``
    tasks of at most :data:`AUTO_ITEMS_PER_TASK` items whose sizes differ by one at most.

    Each task costs a few API calls, a cache key and a result file, and its items run one after
    the other in one process: few, even tasks keep that overhead small and every worker busy
    until the end (10 videos on 2 workers: 2 tasks of 5, where 3 of 3 and 1 would leave one
    worker idle for a third of the run). Contiguous, so a task's items share their folder."""
    if per_task:
        return [items[i : i + per_task] for i in range(0, len(items), per_task)]
    n = min(len(items), workers * -(-len(items) // (workers * AUTO_ITEMS_PER_TASK)))
    if n == 0:
        return []
    size, extra = divmod(len(items), n)
    bounds = [i * size + min(i, extra) for i in range(n + 1)]
    return [items[a:b] for a, b in zip(bounds, bounds[1:])]


@contextlib.contextmanager
def shared_api_server():
    """Task processes started in the block (process pool, local Dask cluster) use the temporary
    API server this flow run already uses, when no ``PREFECT_API_URL`` is configured (the flow
    called directly, not by a deployment). They inherit this process's environment, and without
    the URL each started a temporary server of its own: seconds of CPU per process, and on a
    loaded or single-core machine the start timed out ("Timed out while attempting to connect to
    ephemeral Prefect API server"), failing the run. The environment is restored after."""
    if PREFECT_API_URL.value():
        yield
        return
    # here, not at the top: the server module costs seconds to import, which every task process
    # importing this module would pay; a process running a flow without a URL has it loaded
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    if not server.running:
        yield
        return
    before = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = before


def _threads_per_task(opts: RunnerOptions) -> int:
    """torch / OpenCV threads of each task (:func:`task_threads`): this machine's cores shared by
    the ``max_workers`` tasks that run at once; on an external Dask cluster (other machines,
    unknown cores) 1, one thread per task slot, as Dask itself sets ``OMP_NUM_THREADS=1``."""
    if opts.task_runner == "dask" and opts.dask_address:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // opts.max_workers)


def _default_report(output: str) -> str | None:
    if "://" in output:
        return None
    p = Path(output)
    return str(p.with_name(p.name + ".report.json"))


def _beside(output: str, suffix: str) -> str:
    """``output`` + ``suffix``: a sibling of the store, local (absolute) or at the same URL."""
    return output.rstrip("/") + suffix if "://" in output else str(Path(output).expanduser().resolve()) + suffix


def _result_block(location: str):
    """Prefect result storage at a folder or fsspec URL that every worker reaches (not the
    default under each worker's own PREFECT_HOME, which other machines cannot see). A folder
    is given as a Path; a URL as a RemoteFileSystem block saved under a name derived from it
    (Prefect takes only saved blocks, which workers then load from the API)."""
    if "://" not in location:
        path = Path(location)
        path.mkdir(parents=True, exist_ok=True)
        return path
    block = RemoteFileSystem(basepath=location)
    block.save(f"depthseg-results-{hashlib.sha256(location.encode()).hexdigest()[:12]}", overwrite=True)
    return block


def _check_shared(opts: RunnerOptions, output: str, result_storage: str, first_item: str | None) -> None:
    """On an external Dask cluster, every worker must see the store, the inputs and the result
    storage as this machine does (a shared folder at the same path, or a URL); otherwise the
    parts would be written on the workers' own disks. Checked, not assumed: each worker hashes
    the head of the store's ``zarr.json``, of the first input and of a fresh probe file."""
    if opts.task_runner != "dask" or not opts.dask_address:
        return
    files = {"output": f"{output}/zarr.json", "input": first_item}
    if "://" not in result_storage:
        probe = _result_block(result_storage) / ".shared-probe"
        probe.write_text(uuid.uuid4().hex)
        files["result_storage"] = str(probe)
    local = {k: p for k, p in files.items() if p and "://" not in p}
    if not local:
        return
    if not is_local_address(opts.dask_address):
        get_run_logger().warning("Dask scheduler %s is on another machine and %s are local paths: checking that "
                                 "every worker sees them (a shared folder)", opts.dask_address, sorted(local))
    problems = unseen_paths(opts.dask_address, {k: (p, fingerprint(p)) for k, p in local.items()})
    if problems:
        raise ConfigError(f"the Dask workers of {opts.dask_address} do not see these paths as this machine does: "
                          f"{'; '.join(problems)}; use a folder shared by every worker at the same path, or an "
                          f"fsspec URL (s3://...), for the input, the store and result_storage")
