"""DDP training: ``depthseg-fas train --nproc 2`` (torchrun, gloo on CPU) on the real test store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from depthseg.distributed import ShardedBatchSampler
from depthseg.evaluate import evaluate
from depthseg.trainer import TIMING_KEYS, json_safe
from tests.helpers.train_store import make_store

pytestmark = pytest.mark.slow  # three 2-process training runs (~2 min loaded)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return make_store(tmp_path_factory.mktemp("ddp-store"))


def _cmd(store: str, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", "train", "--store", store, "--out-dir", str(out),
            "--input-size", "64", "--label-size", "32", "--batch-size", "6", "--epochs", "3",
            "--max-steps-per-epoch", "2", "--lr", "3e-3", "--device", "cpu", "--nproc", "2", *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _reported(stdout: str) -> dict:
    """The metrics JSON the CLI prints after 'last checkpoint: ...'."""
    return json.loads(stdout.split("last checkpoint:", 1)[1].split("\n", 1)[1].rsplit("}", 1)[0] + "}")


def test_sharded_sampler_covers_every_batch_once():
    gens = [torch.Generator().manual_seed(3) for _ in range(3)]
    ref = list(ShardedBatchSampler(23, 4, 0, 1, shuffle=True, generator=torch.Generator().manual_seed(3)))
    shards = [list(ShardedBatchSampler(23, 4, r, 3, shuffle=True, generator=g, pad=False)) for r, g in enumerate(gens)]
    assert sorted(map(tuple, sum(shards, []))) == sorted(map(tuple, ref))
    padded = [ShardedBatchSampler(23, 4, r, 4, shuffle=True, generator=torch.Generator()) for r in range(4)]
    assert {len(s) for s in padded} == {2} and {len(list(s)) for s in padded} == {2}


def test_ddp_two_processes_train_resume_evaluate(store, tmp_path):
    full_out = tmp_path / "full"
    done = subprocess.run(_cmd(store, full_out), env=_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    names = sorted(p.name for p in full_out.iterdir() if p.name != "tensorboard")
    assert names == ["best.pt", "epoch_1.pt", "epoch_2.pt", "epoch_3.pt", "last.pt", "metrics.csv", "metrics.jsonl", "metrics.png"]
    rows = [json.loads(line) for line in (full_out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    last = torch.load(full_out / "last.pt", weights_only=True)
    assert last["world_size"] == 2 and len(last["rng_ranks"]) == 2
    assert done.stdout.count("best checkpoint:") == 1  # rank 0 reports, once
    reported = _reported(done.stdout)

    # evaluating the best checkpoint in one process gives the dev metrics the run reported
    ev = evaluate(full_out / "best.pt", store, split="dev", dev_split="dev", out_dir=tmp_path / "ev", device="cpu")
    # (each frame is scored in the batch a one-process run gives it: equal, not merely close)
    assert json_safe(reported["best"]["frame"]) == ev["frame"]
    assert json_safe(reported["best"]["video"]) == ev["video"]
    assert reported["thresholds"]["frame"] == ev["thresholds"]["frame"]

    # killed after its first epoch, then resumed: ends exactly as the uninterrupted run
    cut = tmp_path / "cut"
    proc = subprocess.Popen(_cmd(store, cut), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while not ((cut / "metrics.jsonl").is_file() and (cut / "metrics.jsonl").read_text().strip()):
            assert proc.poll() is None and time.monotonic() < deadline, "first epoch never finished"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both ranks
        proc.wait(timeout=60)
    assert not (cut / "epoch_3.pt").exists()
    resumed = subprocess.run(_cmd(store, cut, "--resume"), env=_env(), capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = torch.load(full_out / "last.pt", weights_only=True), torch.load(cut / "last.pt", weights_only=True)
    for k, v in a["model_state"].items():
        assert torch.equal(v, b["model_state"][k]), k

    def strip(history):
        return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in history]

    assert strip(b["history"]) == strip(a["history"])
    assert _reported(resumed.stdout)["best"] == reported["best"]
