"""The preprocess flow on a real Dask cluster: `dask scheduler` + two `dask worker` processes.

The processes run from a scratch working directory (not the project), as on a real cluster,
with the environment of this test minus PYTHONPATH: a worker finds the project's packages the
way the install provides them. A Dask worker puts its local directory, which holds Dask's spill
folder ``storage/``, first on ``sys.path``; the store written through the cluster must equal a
local run's, and a rerun must skip every unit.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("prefect_dask")
from prefect.testing.utilities import prefect_test_harness  # noqa: E402

import storage  # noqa: E402
from tests.helpers.flow_inputs import flow_params, write_clips  # noqa: E402

pytestmark = pytest.mark.slow  # a scheduler, two workers and three flow runs (~2 min loaded)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each process (by PID), then SIGKILL what is still alive after 20 s."""
    for p in procs:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            p.wait(timeout=10)


def _wait_for_workers(address: str, n: int, procs: list[subprocess.Popen], logs: Path) -> None:
    from distributed import Client

    with Client(address, timeout=60) as client:
        deadline = time.monotonic() + 120
        while len(client.scheduler_info()["workers"]) < n:
            dead = [p.args for p in procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"dask cluster did not start ({dead}); logs in {logs}")
            time.sleep(0.5)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """``tcp://127.0.0.1:PORT`` of a scheduler with two single-threaded worker processes."""
    cwd = tmp_path_factory.mktemp("cluster-cwd")  # not the project: nothing importable here
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(DASK_DISTRIBUTED__WORKER__DAEMON="False", OMP_NUM_THREADS="1")
    dask = [sys.executable, "-m", "dask"]  # this venv's `dask` command
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs: list[subprocess.Popen] = []
    try:
        with open(cwd / "scheduler.log", "w") as log:
            procs.append(subprocess.Popen(
                [*dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT))
        for i in range(2):
            with open(cwd / f"worker{i}.log", "w") as log:
                procs.append(subprocess.Popen(
                    [*dask, "worker", address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard",
                     "--host", "127.0.0.1", "--name", f"w{i}"],
                    cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT))
        _wait_for_workers(address, 2, procs, cwd)
        yield address
    finally:
        _stop(procs)
    assert all(p.poll() is not None for p in procs)


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=300):  # a loaded machine starts it slowly
        yield


@pytest.fixture(scope="module")
def clips(tmp_path_factory, portraits):
    return write_clips(tmp_path_factory.mktemp("clips"), portraits)



def _assert_same_store(a: str, b: str) -> None:
    """Same parts and frames; arrays equal or within the documented thread-count guarantee
    (README: at most 1 uint8 level on under 0.1% of image / depth pixels)."""
    ra, rb = storage.open_dataset(a), storage.open_dataset(b)
    assert [(p.part_id, p.frames, p.input_checksum) for p in ra.parts] == \
        [(p.part_id, p.frames, p.input_checksum) for p in rb.parts]
    assert len(ra) == len(rb) > 0
    idx = np.arange(len(ra))
    ba, bb = ra.read_batch(idx), rb.read_batch(idx)
    for name in ("image", "depth"):
        x, y = np.asarray(ba[name]).astype(np.int16), np.asarray(bb[name]).astype(np.int16)
        diff = np.abs(x - y)
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, name
    for col in ("part_id", "frame_index", "label"):
        if col in ra.meta:
            assert list(ra.meta[col]) == list(rb.meta[col]), col


def test_preprocess_on_external_dask_cluster(harness, cluster, clips, tmp_path):  # API server first
    from flows.preprocess import preprocess

    local = tmp_path / "local.zarr"
    res = preprocess(**flow_params(clips, local, task_runner="thread", max_workers=1))
    assert res["counts"]["written"] == 3

    out = tmp_path / "dask.zarr"
    res = preprocess(**flow_params(clips, out, task_runner="dask", dask_address=cluster))
    assert res["counts"]["written"] == 3 and res["counts"]["failed"] == 0, res["counts"]
    assert storage.verify(str(out)) == []
    _assert_same_store(str(local), str(out))

    assert (tmp_path / "dask.zarr.prefect-results").is_dir()  # task results beside the store, not in PREFECT_HOME

    again = preprocess(**flow_params(clips, out, task_runner="dask", dask_address=cluster))
    assert again["counts"]["skipped"] == 3 and again["counts"]["written"] == 0, again["counts"]


def test_paths_the_workers_do_not_see_are_named(cluster, tmp_path):
    from flows.workerenv import fingerprint, unseen_paths

    seen = tmp_path / "zarr.json"
    seen.write_text("{}")
    assert unseen_paths(cluster, {"output": (str(seen), fingerprint(str(seen)))}) == []
    # what a worker on another machine reports: the path missing there, or other contents
    problems = unseen_paths(cluster, {"output": (str(tmp_path / "gone.json"), "2:abc"),
                                      "input": (str(seen), "3:other")})
    assert len(problems) == 4 and sum("missing" in p for p in problems) == 2
    assert sum("input: " in p and "other contents" in p for p in problems) == 2
