"""The ``preprocess`` flow called directly, with no Prefect server configured: its task processes
use the temporary API server of the flow's own process instead of each starting one (which took
seconds of CPU per process and, on a loaded or single-core machine, timed out and failed the run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import storage
from tests.conftest import REPO
from tests.helpers.flow_inputs import flow_params, write_clips

# slow: a flow run with a process pool of 2 in a subprocess (Prefect's temporary server, 2 task processes)
pytestmark = pytest.mark.slow

CODE = """
import json, sys
from flows.preprocess import preprocess
print("COUNTS " + json.dumps(preprocess(**json.loads(sys.argv[1]))["counts"]), flush=True)
"""


def test_task_processes_share_the_flows_temporary_server(tmp_path, portraits):
    clips = write_clips(tmp_path / "clips", portraits)
    store = tmp_path / "store.zarr"
    params = flow_params(clips, store, task_runner="process", max_workers=2, items_per_task=1)
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_API_KEY")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", CODE, json.dumps(params)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    counts = json.loads(out.split("COUNTS ", 1)[1].splitlines()[0])
    assert counts["failed"] == 0 and counts["written"] == len(list(storage.open_dataset(str(store)).parts))
    # one temporary server (the flow's); each task process used to start its own
    assert out.count("Starting temporary server") == 1, out[-3000:]
