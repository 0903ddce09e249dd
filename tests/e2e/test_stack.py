"""Integration: the real local Prefect stack (server, work pool, deployments, worker) from a
clean PREFECT_HOME runs the `preprocess`, `train` and `benchmark` deployments through
`prefect deployment run`."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

import storage
from tests.conftest import REPO, load_rgb
from tests.helpers.benchmark_table import check_table, file_times
from tests.helpers.dataset_trees import build_oulu_benchmark
from tests.helpers.media import make_face_video
from tests.helpers.csv_manifest import write_manifest
from tests.helpers.stores import manifest_file

pytestmark = [pytest.mark.stack, pytest.mark.timeout(1200)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect_home")
    env = {**os.environ, "PREFECT_HOME": str(home), "DEPTHSEG_PREFECT_PORT": str(free_port()),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "VENV": str(Path(os.sys.executable).parent.parent)}
    env.pop("PREFECT_API_URL", None)
    up = subprocess.run(["scripts/stack.sh", "up"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "preprocess/sample" in up.stdout and "train/sample" in up.stdout
    env["PREFECT_API_URL"] = f"http://127.0.0.1:{env['DEPTHSEG_PREFECT_PORT']}/api"
    yield env
    down = subprocess.run(["scripts/stack.sh", "down"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert down.returncode == 0
    for name in ("server", "worker"):
        assert not (home / "run" / f"{name}.pid").exists()


def run_deployment(env: dict, name: str, params: dict, *, one_by_one: bool = False) -> subprocess.CompletedProcess:
    """``prefect deployment run NAME --params JSON`` (or ``-p key=value`` per parameter)."""
    prefect = str(Path(env["VENV"]) / "bin" / "prefect")
    def value(v):  # `-p` takes a JSON value (true, 1) or a bare string
        return v if isinstance(v, str) else json.dumps(v)

    args = ([a for k, v in params.items() for a in ("-p", f"{k}={value(v)}")] if one_by_one
            else ["--params", json.dumps(params)])
    return subprocess.run([prefect, "deployment", "run", name, *args, "--watch", "--watch-timeout", "900"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=960)


@pytest.fixture(scope="module")
def sample_input(tmp_path_factory, portraits):
    root = tmp_path_factory.mktemp("stack_in")
    rows = []
    for i, p in enumerate(sorted(portraits)[:4]):
        make_face_video(root / f"live{i}.mp4", load_rgb(p), n=6, gap=(6, 6))
        shutil.copy(p, root / f"spoof{i}.jpg")
        split = ("train", "dev")[i % 2]
        rows.append({"path": f"live{i}.mp4", "label": "live", "subject": f"p{i}", "split": split})
        rows.append({"path": f"spoof{i}.jpg", "label": "spoof", "attack_type": "print", "subject": f"p{i}",
                     "split": split})
    return write_manifest(root / "manifest.csv", rows)


def test_preprocess_and_train_deployments(stack, sample_input, tmp_path):
    store = tmp_path / "store.zarr"
    # flat parameters merge into the deployment's (every_n 3 there): give every field the test relies on
    params = {"input": str(sample_input), "output": str(store), "size": 64, "every_n": 1, "task_runner": "process",
              "max_workers": 2, "items_per_task": 2}
    first = run_deployment(stack, "preprocess/sample", params)
    assert first.returncode == 0 and "Completed" in first.stdout, first.stdout + first.stderr
    assert storage.verify(str(store)) == []
    ds = storage.open_dataset(str(store))
    assert len(ds.parts) == 8 and set(ds.meta["split"]) == {"train", "dev"}
    manifest = manifest_file(store).read_bytes()
    report = json.loads(Path(f"{store}.report.json").read_text())
    assert report["counts"]["written"] == 8

    second = run_deployment(stack, "preprocess/sample", params)
    assert second.returncode == 0 and "Completed" in second.stdout, second.stdout + second.stderr
    report2 = json.loads(Path(f"{store}.report.json").read_text())
    assert report2["counts"]["skipped"] == 8 and report2["counts"]["written"] == 0
    assert manifest_file(store).read_bytes() == manifest, "a re-run must leave the store unchanged"
    log = (Path(stack["PREFECT_HOME"]) / "worker.log").read_text()
    assert "Cached" in log or "skipped" in log

    out = tmp_path / "train"
    # flat parameters: each -p overrides one field, every other one keeps the deployment's value
    # (include_flagged: the clips' small faces carry the small-face flag, left out by default)
    tr = run_deployment(stack, "train/sample", {"store": str(store), "out_dir": str(out), "epochs": 1,
                                                 "test_split": "dev", "include_flagged": True}, one_by_one=True)
    assert tr.returncode == 0 and "Completed" in tr.stdout, tr.stdout + tr.stderr
    ckpt = torch.load(out / "best.pt", weights_only=True, map_location="cpu")
    assert "model_state" in ckpt
    deployed = yaml.safe_load((REPO / "prefect.yaml").read_text())
    defaults = next(d["parameters"] for d in deployed["deployments"] if d["entrypoint"].endswith(":train"))
    config = ckpt["config"]
    assert config["epochs"] == 1 and config["store"] == str(store)
    assert {k: config[k] for k in ("input_size", "batch_size", "arch", "encoder")} == \
        {k: defaults[k] for k in ("input_size", "batch_size", "arch", "encoder")}
    assert (out / "eval-dev" / "metrics.json").is_file()


def test_bad_parameter_fails_the_run_naming_it(stack, tmp_path):
    res = run_deployment(stack, "preprocess/sample", {"input": str(tmp_path / "missing"), "output": str(tmp_path / "x.zarr")})
    assert res.returncode != 0
    log = (Path(stack["PREFECT_HOME"]) / "worker.log").read_text()
    assert "parameter 'input'" in log and "does not exist" in log
    res = run_deployment(stack, "preprocess/sample", {"input": str(tmp_path), "output": str(tmp_path / "x.zarr"),
                                                      "batch_size": -2})
    assert "batch_size" in res.stdout + res.stderr


def test_benchmark_deployment_runs_its_fold_and_a_rerun_skips_it(stack, tmp_path):
    """`prefect deployment run benchmark/sample` with flat `-p` overrides: OULU-NPU P3 fold 2 trained
    and evaluated, the table what the fold measured; a second run retrains nothing. (All six folds
    as separate tasks, their table and partial reruns: tests/e2e/test_benchmark.py, through the same
    flow; one fold here keeps this deployment round trip at a sixth of the training.)"""
    tree = build_oulu_benchmark(tmp_path / "OULU-NPU")
    out = tmp_path / "p3"
    params = {"datasets": ["oulu-npu"], "roots": [str(tree)], "protocol": "oulu-npu-p3:fold=2", "out_dir": str(out),
              "epochs": 1, "size": 32, "every_n": 1, "max_frames": 2, "input_size": 32, "label_size": 8,
              "batch_size": 8, "threads": 1, "include_flagged": True}
    first = run_deployment(stack, "benchmark/sample", params, one_by_one=True)
    assert first.returncode == 0 and "Completed" in first.stdout, first.stdout + first.stderr
    check_table(out, ["oulu-npu-p3_fold2"])
    before = file_times(out)
    second = run_deployment(stack, "benchmark/sample", params, one_by_one=True)
    assert second.returncode == 0 and "Completed" in second.stdout, second.stdout + second.stderr
    assert file_times(out) == before  # the fold not retrained or re-evaluated, the store untouched
    log = (Path(stack["PREFECT_HOME"]) / "worker.log").read_text()
    assert "1 fold(s), 0 to run: none" in log
