"""The preprocess task body runs as a pipelined worker does (issue 16 item 0): torch and OpenCV
pinned to its share of the cores, detection batched over frames; the flow plans even tasks."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("prefect")
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import storage  # noqa: E402
from flows.params import RunnerOptions  # noqa: E402
from flows.preprocess import _threads_per_task, plan_units, preprocess_units  # noqa: E402
from pipeline.io.inputs import collect_items  # noqa: E402
from pipeline.run import runners  # noqa: E402
from pipeline.run.config import PreprocessConfig  # noqa: E402
from tests.helpers.flow_inputs import write_clips  # noqa: E402


@pytest.mark.slow  # >= 2.5 s on an idle 2-core machine
def test_task_body_pins_threads_and_batches_detection(tmp_path, portraits, monkeypatch):
    clips = write_clips(tmp_path / "clips", portraits)
    inputs = collect_items(str(clips))
    cfg = PreprocessConfig.from_dict({"size": 64, "max_frames": 4})
    seen = {}
    real = runners.run_units

    def recording(*args, **kw):  # the real engine, with what the task set around it recorded
        seen.update(torch=torch.get_num_threads(), cv2=cv2.getNumThreads(), detect=kw.get("detect_frames"))
        return real(*args, **kw)

    monkeypatch.setattr(runners, "run_units", recording)
    torch.set_num_threads(2)
    cv2_before = cv2.getNumThreads()
    out = str(tmp_path / "s.zarr")
    storage.DatasetWriter.open(out, cfg.output_config())
    execution = {"device": "cpu", "model_dir": None, "batch_size": 64, "threads": 1, "detect_batch": 8}
    try:
        res = preprocess_units.fn([it.to_dict() for it in inputs.items[:1]], out, cfg.output_config(), execution,
                                  inputs.root, "key")
        assert seen == {"torch": 1, "cv2": 1, "detect": 8}
        assert torch.get_num_threads() == 2  # torch's count is restored after the task
    finally:
        cv2.setNumThreads(cv2_before)
    assert [r["status"] for r in res] == ["written"]
    # the store equals the CLI's sequential one (one detector call per frame), array for array
    cli = str(tmp_path / "cli.zarr")
    torch.set_num_threads(1)
    try:
        runners.run_preprocess(inputs.items[:1], cli, cfg, input_root=inputs.root)
    finally:
        torch.set_num_threads(2)
    _assert_identical(out, cli)


def _assert_identical(a: str, b: str) -> None:
    ra, rb = storage.open_dataset(a), storage.open_dataset(b)
    assert [(p.part_id, p.frames) for p in ra.parts] == [(p.part_id, p.frames) for p in rb.parts]
    assert len(ra) == len(rb) > 0
    idx = np.arange(len(ra))
    ba, bb = ra.read_batch(idx), rb.read_batch(idx)
    assert sorted(ba) == sorted(bb) and {"image", "depth"} <= set(ba)
    for name in ba:
        x, y = np.asarray(ba[name]), np.asarray(bb[name])
        assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), name


def test_threads_per_task_share_the_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    assert _threads_per_task(RunnerOptions(task_runner="process", max_workers=2)) == 4
    assert _threads_per_task(RunnerOptions(task_runner="dask", max_workers=3)) == 2
    assert _threads_per_task(RunnerOptions(task_runner="thread", max_workers=16)) == 1
    # an external cluster's cores are not this machine's: one thread per task slot
    assert _threads_per_task(RunnerOptions(task_runner="dask", dask_address="tcp://h:8786")) == 1


@pytest.mark.parametrize("n, workers, sizes", [
    (0, 2, []), (1, 2, [1]), (3, 2, [2, 1]), (10, 2, [5, 5]), (10, 1, [5, 5]), (60, 2, [8] * 4 + [7] * 4),
])
def test_default_plan_is_even_tasks_in_multiples_of_the_workers(n, workers, sizes):
    items = list(range(n))
    units = plan_units(items, None, workers)
    assert [len(u) for u in units] == sizes
    assert [x for u in units for x in u] == items  # every item once, in order


def test_items_per_task_given_is_kept():
    assert plan_units(list(range(5)), 2, 4) == [[0, 1], [2, 3], [4]]
