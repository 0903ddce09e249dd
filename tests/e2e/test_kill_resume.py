"""Crash safety: SIGKILLed preprocess and training runs, rerun, end exactly where an uninterrupted run ends.

* Preprocess: ``python -m pipeline.cli preprocess`` over 4 short videos made from the shared
  portraits is killed (whole process group, SIGKILL) at two times drawn by a seeded RNG, then
  rerun to completion. The final store must equal an uninterrupted run's store: same part ids,
  same frames per part, identical image / depth / landmarks arrays; ``storage.verify`` clean,
  no staged part and no part folder the manifest does not list. After each kill, what a reader
  sees must already be sound (committed parts only, each equal to the reference's part).
* Preprocess flow: the Prefect ``preprocess`` flow (process pool of 2 workers, temporary API
  server) is killed with its whole process group after a seeded random number of committed parts
  and run again on the same Prefect home and store; the store must equal the uninterrupted CLI
  run's (same config), the rerun must skip exactly the committed parts, no process may survive.
* Training: ``depthseg-fas train`` is killed a moment into epoch 2 and rerun with ``--resume``;
  on CPU the metrics history, the best / last metrics and the final weights must equal an
  uninterrupted run's exactly (resume restarts the killed epoch from the epoch-1 checkpoint,
  RNG states included).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import storage
from depthseg.trainer import TIMING_KEYS
from tests.conftest import REPO, load_rgb
from tests.helpers.media import make_face_video
from tests.helpers.train_store import make_store
from tests.helpers.stores import manifest_file, staging_dir

# slow: SIGKILLed preprocess / flow / training runs, rerun to the end
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SEED = 20260
FIELDS = ("image", "depth", "landmarks")
#: torch threads of every run here: the flow's tasks (process pool of 2) run on ``cores // 2``
#: (flows.preprocess.task_threads), and labels are bit-identical only at one thread count (README,
#: Guarantees), so the CLI runs they are compared with get the same count
THREADS = max(1, len(os.sched_getaffinity(0)) // 2)
ENV = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "PYTHONUNBUFFERED": "1"}


def _start(args: list[str], log: Path) -> subprocess.Popen:
    """``python -m pipeline.cli ARGS`` in its own session (so the whole group can be killed)."""
    fh = open(log, "ab")
    try:
        return subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args], cwd=REPO, env=ENV,
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        fh.close()


def _kill_group(proc: subprocess.Popen) -> bool:
    """SIGKILL the process group of ``proc``; True when it was still running."""
    alive = proc.poll() is None
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)
    return alive


def _committed(store: Path) -> dict:
    manifest = manifest_file(store)
    try:
        return json.loads(manifest.read_text())["attributes"].get("parts", {}) if manifest.exists() else {}
    except json.JSONDecodeError:  # never expected: the manifest is replaced atomically
        raise AssertionError(f"{manifest} is not valid JSON after a kill") from None


def _parts(store: Path) -> dict[str, dict[str, np.ndarray]]:
    """part id -> {field: array of the part's frames} as a reader sees the store."""
    ds = storage.open_dataset(str(store))
    ids = ds.part_ids
    out = {}
    for info in ds.parts:
        rows = np.flatnonzero(ids == info.part_id)
        assert len(rows) == info.frames, info.part_id
        batch = ds.read_batch(rows, fields=FIELDS)
        batch["frame_index"] = ds.meta["frame_index"][rows]
        out[info.part_id] = batch
    return out


def _assert_clean(store: Path) -> None:
    assert storage.verify(str(store)) == []
    staging = staging_dir(store)
    staged = [p for p in staging.iterdir() if p.is_dir()] if staging.exists() else []
    assert not staged, f"staged part folders left behind: {staged}"
    listed = {Path(e["path"]).name for e in _committed(store).values()}
    on_disk = {p.name for p in (store / "parts").iterdir() if p.is_dir()} if (store / "parts").exists() else set()
    assert on_disk == listed, f"part folders not in the manifest: {on_disk - listed}"


# --------------------------------------------------------------------------- preprocess


@pytest.fixture(scope="module")
def videos(tmp_path_factory, portraits) -> Path:
    root = tmp_path_factory.mktemp("kill_videos")
    by_name = {p.name: p for p in portraits}
    for i, name in enumerate(("obama.jpg", "biden.jpg", "obama2.jpg", "obama.jpg")):
        make_face_video(root / f"clip{i}.mp4", load_rgb(by_name[name]), n=8, gap=(8, 8))
    return root


@dataclass
class Reference:
    """An uninterrupted ``depthseg-fas preprocess`` run over the videos, timed."""

    store: Path
    parts: dict[str, dict[str, np.ndarray]]
    t_first: float  # seconds from the start to the first committed part
    t_total: float


@pytest.fixture(scope="module")
def reference(tmp_path_factory, videos) -> Reference:
    tmp = tmp_path_factory.mktemp("kill_ref")
    ref = tmp / "ref.zarr"
    t0 = time.monotonic()
    proc = _start([*_cli_args(videos), "--output", str(ref)], tmp / "ref.log")
    t_first = None
    while proc.poll() is None:
        if t_first is None and _committed(ref):
            t_first = time.monotonic() - t0
        time.sleep(0.05)
    t_total = time.monotonic() - t0
    assert proc.returncode == 0, (tmp / "ref.log").read_text()[-3000:]
    parts = _parts(ref)
    assert len(parts) == 4 and all(len(p["image"]) > 0 for p in parts.values())
    _assert_clean(ref)
    return Reference(ref, parts, t_first or t_total, t_total)


def _cli_args(videos: Path) -> list[str]:
    return ["preprocess", "--input", str(videos), "--size", "64"]


def _assert_equal_parts(got: dict, expected: dict, what: str) -> int:
    """Every part of ``got`` equals the reference's, array for array; returns frames lost."""
    lost = 0
    for pid, part in got.items():
        assert pid in expected, pid
        lost += len(expected[pid]["image"]) - len(part["image"])
        for k, v in part.items():
            np.testing.assert_array_equal(v, expected[pid][k], err_msg=f"{pid}/{k} {what}")
    return lost


def test_killed_preprocess_resumes_to_identical_store(tmp_path, videos, reference):
    args = _cli_args(videos)
    expected, t_first, t_total = reference.parts, reference.t_first, reference.t_total

    # the same run killed twice at seeded random times, then completed; when the first kill
    # lands after that run ended (the machine got faster than during the reference run), the
    # try is repeated on a fresh store with the window scaled down
    rng = np.random.default_rng(SEED)
    for scale in (1.0, 0.6, 0.35, 0.2):
        store = tmp_path / f"killed-{scale}.zarr"
        kills = _kill_twice(args, store, expected, t_first * scale, t_total * scale, rng, tmp_path)
        if kills[0]["killed_running"]:
            break
    print(f"\npreprocess reference: first commit {t_first:.1f}s, total {t_total:.1f}s; kills: {kills}")
    assert kills[0]["killed_running"], f"the first kill came after the run ended: {kills}"

    proc = _start([*args, "--output", str(store)], tmp_path / "final.log")
    assert proc.wait(timeout=300) == 0, (tmp_path / "final.log").read_text()[-3000:]
    final = _parts(store)
    assert sorted(final) == sorted(expected)
    lost = _assert_equal_parts(final, expected, "after the rerun")
    assert lost == 0
    _assert_clean(store)
    print(f"preprocess: {sum(k['killed_running'] for k in kills)} kills of a running process, "
          f"recovered to {len(final)} parts / {sum(len(p['image']) for p in final.values())} frames, "
          f"{lost} frames lost")


def _kill_twice(args, store, expected, t_first, t_total, rng, tmp_path) -> list[dict]:
    """Start the run on ``store`` and SIGKILL it twice at random times; check what readers see."""
    kills = []
    for attempt in range(2):
        remaining = 4 - len(_committed(store))
        # a window from the reference's first commit to just before this attempt would finish
        hi = t_first + (t_total - t_first) * remaining / 4 * 0.9
        at = float(rng.uniform(t_first, max(hi, t_first + 0.5)))
        proc = _start([*args, "--output", str(store)], tmp_path / f"kill{attempt}.log")
        start = time.monotonic()
        while proc.poll() is None and time.monotonic() - start < at:
            time.sleep(0.02)
        hit = _kill_group(proc)
        seen = _parts(store) if manifest_file(store).exists() else {}
        kills.append({"at_s": round(at, 2), "killed_running": hit, "parts_committed": len(seen)})
        # what readers see right after the kill: committed parts only, each complete and exact
        if seen:
            assert storage.verify(str(store)) == []
        _assert_equal_parts(seen, expected, f"after kill {attempt}")
    return kills


_FLOW_CODE = """
import json, sys
from flows.preprocess import preprocess
print("COUNTS " + json.dumps(preprocess(**json.loads(sys.argv[1]))["counts"]), flush=True)
"""


def _start_flow(params: dict, home: Path, log: Path) -> subprocess.Popen:
    """The Prefect ``preprocess`` flow run from Python in its own session, as a user would run it
    without a server: Prefect starts a temporary API server on ``home``'s SQLite database."""
    env = {k: v for k, v in ENV.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    fh = open(log, "ab")
    try:
        return subprocess.Popen([sys.executable, "-c", _FLOW_CODE, json.dumps(params)], cwd=REPO, env=env,
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        fh.close()


def _processes_using(home: Path) -> list[int]:
    """PIDs of live processes whose environment points PREFECT_HOME at ``home``."""
    psutil = pytest.importorskip("psutil")
    pids = []
    for p in psutil.process_iter():
        try:
            if p.environ().get("PREFECT_HOME") == str(home):
                pids.append(p.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return pids


def test_killed_preprocess_flow_resumes_to_identical_store(tmp_path, videos, reference):
    """The Prefect flow (process pool of 2 workers) is SIGKILLed with its whole process group -
    flow process, task workers, temporary API server - after a seeded random number of committed
    parts, then run again on the same Prefect home and store: the store ends equal to the
    uninterrupted CLI run's, the rerun skips what was committed, no process is left behind."""
    pytest.importorskip("prefect")
    rng = np.random.default_rng(SEED + 1)
    after, delay = int(rng.integers(1, 3)), float(rng.uniform(0.0, 0.15))  # 1 or 2 parts of 4
    for attempt in range(3):  # a kill that lands after the 4th commit (fast machine) is redone
        store, home = tmp_path / f"flow{attempt}.zarr", tmp_path / f"prefect-home{attempt}"
        params = {"input": str(videos), "output": str(store), "size": 64,
                  "task_runner": "process", "max_workers": 2}
        log = tmp_path / f"killed{attempt}.log"
        proc = _start_flow(params, home, log)
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline and len(_committed(store)) < after:
            time.sleep(0.01)
        time.sleep(delay)
        hit = _kill_group(proc)
        assert hit, "the flow ended before the kill: " + log.read_text()[-2000:]
        seen = _parts(store)
        if len(seen) < 4:
            break
        after, delay = 1, 0.0
    assert 1 <= len(seen) < 4, f"killed after {len(seen)} committed parts"
    assert storage.verify(str(store)) == []
    _assert_equal_parts(seen, reference.parts, "after the kill")
    time.sleep(0.5)
    left = _processes_using(home)
    for pid in left:  # do not leak them into the rest of the session, then fail
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes survived the kill of the flow's process group: {left}"

    proc = _start_flow(params, home, tmp_path / "rerun.log")
    rc = proc.wait(timeout=400)
    log = (tmp_path / "rerun.log").read_text()
    assert rc == 0, log[-3000:]
    counts = json.loads(log.split("COUNTS ", 1)[1].splitlines()[0])
    assert counts["skipped"] == len(seen) and counts["written"] == 4 - len(seen), counts
    assert counts["failed"] == 0, counts
    final = _parts(store)
    assert sorted(final) == sorted(reference.parts)
    assert _assert_equal_parts(final, reference.parts, "after the rerun") == 0
    _assert_clean(store)
    print(f"\npreprocess flow: killed after {len(seen)} of 4 parts (+{delay:.2f} s), rerun wrote "
          f"{counts['written']} and skipped {counts['skipped']}; 0 frames lost")


# --------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def train_store(tmp_path_factory) -> str:
    return make_store(tmp_path_factory.mktemp("kill_train"), size=64)


def _train_args(store: str, out: Path) -> list[str]:
    return ["train", "--store", store, "--out-dir", str(out), "--arch", "pspnet", "--encoder", "resnet18",
            "--input-size", "64", "--label-size", "32", "--epochs", "3", "--batch-size", "8",
            "--max-steps-per-epoch", "3", "--device", "cpu", "--seed", "0"]


def _history_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _history(out: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in _history_rows(out)]


def test_killed_training_resumes_exactly(tmp_path, train_store):
    ref = tmp_path / "ref"
    proc = _start(_train_args(train_store, ref), tmp_path / "ref.log")
    assert proc.wait(timeout=300) == 0, (tmp_path / "ref.log").read_text()[-3000:]

    # kill a moment into epoch 2: the delay after epoch 1's files appear is a seeded fraction of the
    # reference's epoch-2 duration, so a faster machine gets a shorter delay; when the kill still
    # lands after epoch 2 ended (a scheduling hiccup), try again with a smaller fraction
    epoch2_s = _history_rows(ref)[1]["epoch_seconds"]
    rng = np.random.default_rng(SEED)
    for attempt in range(4):
        out = tmp_path / f"cut{attempt}"
        proc = _start(_train_args(train_store, out), tmp_path / f"cut{attempt}.log")
        deadline = time.monotonic() + 240
        # epoch 1 fully written: checkpoint, last.pt and its metrics row
        while proc.poll() is None and time.monotonic() < deadline:
            if (out / "last.pt").exists() and (out / "metrics.jsonl").exists():
                break
            time.sleep(0.005)
        time.sleep(epoch2_s * float(rng.uniform(0.1, 0.5)) / 2 ** attempt)
        hit = _kill_group(proc)
        if hit and not (out / "epoch_2.pt").exists():
            break
    assert hit, "training ended before the kill"
    assert (out / "epoch_1.pt").exists() and not (out / "epoch_2.pt").exists(), sorted(os.listdir(out))
    assert len(_history(out)) == 1

    proc = _start([*_train_args(train_store, out), "--resume"], tmp_path / "resume.log")
    assert proc.wait(timeout=300) == 0, (tmp_path / "resume.log").read_text()[-3000:]
    assert "resuming" in (tmp_path / "resume.log").read_text()

    assert _history(out) == _history(ref)
    assert [r["epoch"] for r in _history(out)] == [1, 2, 3]
    for name in ("last.pt", "best.pt"):
        a = torch.load(ref / name, weights_only=True)
        b = torch.load(out / name, weights_only=True)
        assert a["epoch"] == b["epoch"] and a["best"] == b["best"], name
        assert a["dev_metrics"] == b["dev_metrics"] and a["thresholds"] == b["thresholds"], name
        for k, v in a["model_state"].items():
            assert torch.equal(v, b["model_state"][k]), f"{name}: weights differ in {k}"
        for pid, st in a["optimizer_state"]["state"].items():
            for k, v in st.items():
                assert torch.equal(v, b["optimizer_state"]["state"][pid][k]), (name, pid, k)
    leftovers = [p.name for p in out.iterdir() if p.name.startswith(".") and ".tmp" in p.name]
    print(f"\ntraining: killed in epoch 2, resumed; final dev ACER {_history(out)[-1].get('dev_acer')}, "
          f"weights identical; temp files left by the kill: {leftovers}")
