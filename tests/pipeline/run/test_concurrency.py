"""Two preprocess runs pointed at the same store at once: the second fails at once, nothing is lost.

Real CLI subprocesses (``python -m pipeline.cli preprocess``) over videos made from the shared
portraits. While run A holds the store's run lock, run B (same config) and run C (another
config) must exit with a clear "store is locked" message naming A's pid, without waiting for A
and without touching the store; A then completes, the store verifies and holds every part of A
with A's config.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import storage
from pipeline.run.config import PreprocessConfig
from storage.layout import Location
from storage.locks import commit_lock
from tests.conftest import REPO, load_rgb
from tests.helpers.media import make_face_video
from tests.helpers.stores import staging_dir

SIZE = 64
N_VIDEOS = 3
N_FRAMES = 10

# slow: three concurrent CLI runs on one store (3 min on the loaded 2-core machine)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def preprocess_cmd(data: Path, store: Path, size: int = SIZE) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", "preprocess", "--input", str(data), "--output", str(store),
            "--size", str(size)]


def _run_during(a: subprocess.Popen, *cmds: list[str]) -> list[tuple[subprocess.CompletedProcess, bool]]:
    """Run ``cmds`` at the same time; for each, its result and whether ``a`` still ran when it ended."""
    procs = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for cmd in cmds]
    ended: dict[int, bool] = {}
    deadline = time.time() + 120
    while len(ended) < len(procs) and time.time() < deadline:
        for i, proc in enumerate(procs):
            if i not in ended and proc.poll() is not None:
                ended[i] = a.poll() is None
        time.sleep(0.02)
    out = []
    for i, proc in enumerate(procs):
        stdout, stderr = proc.communicate(timeout=60)
        out.append((subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), ended.get(i, False)))
    return out


@pytest.fixture(scope="module")
def videos(tmp_path_factory, portraits) -> Path:
    root = tmp_path_factory.mktemp("conc")
    face = load_rgb(next(p for p in portraits if p.name == "obama.jpg"))
    for i in range(N_VIDEOS):
        make_face_video(root / f"clip{i}.mp4", face, n=N_FRAMES + i, gap=(N_FRAMES, N_FRAMES))
    return root


def test_second_run_on_locked_store_fails_fast_and_nothing_is_lost(tmp_path, videos):
    store = tmp_path / "c.zarr"
    lock = staging_dir(store) / "run.lock"
    a = subprocess.Popen(preprocess_cmd(videos, store), cwd=REPO, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.time() + 120
        while not lock.exists() and a.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert lock.exists(), f"run A never took the lock (rc {a.poll()})"
        holder = json.loads(lock.read_text())
        assert holder["pid"] == a.pid and holder["owner"] == "depthseg-fas preprocess"

        # A is paused (SIGSTOP: alive, holding its lock, mid-run) while B and C run, so that they
        # land inside A's run however slow their start-up is next to A's work (a single core)
        os.killpg(a.pid, signal.SIGSTOP)
        try:
            # C: same store, another config (likely before A's first commit): refused, and it must
            # not re-stamp the store's config under A's feet; B: same store, same config
            (c, a_running_after_c), (b, a_running_after_b) = _run_during(
                a, preprocess_cmd(videos, store, size=96), preprocess_cmd(videos, store))
        finally:
            os.killpg(a.pid, signal.SIGCONT)
        a_out, a_err = a.communicate(timeout=240)
    finally:
        if a.poll() is None:
            os.killpg(a.pid, signal.SIGKILL)
            a.wait()

    for name, proc, running in (("B", b, a_running_after_b), ("C", c, a_running_after_c)):
        assert proc.returncode == 2, (name, proc.stdout, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
        # "at once": the refused run ended while A was still holding the store (it did not wait)
        assert running, f"run {name} only ended after run A had finished"
        if name == "C" and "refusing to add parts made with config" in proc.stderr:
            continue  # A had committed a part already: the config mismatch is named instead
        assert "store is locked by another run" in proc.stderr, (name, proc.stderr[-2000:])
        assert f"pid {a.pid} " in proc.stderr and "depthseg-fas preprocess" in proc.stderr, proc.stderr[-2000:]
    assert a.returncode == 0, a_err.decode()[-3000:]

    # nothing lost: A's report and store hold every item, every frame, intact, with A's config
    rep = json.loads((tmp_path / "c.zarr.report.json").read_text())
    assert rep["counts"]["written"] == N_VIDEOS and rep["counts"]["failed"] == 0, rep["failures"]
    ds = storage.open_dataset(str(store))
    assert storage.verify(str(store)) == []
    assert len(ds.parts) == N_VIDEOS
    c = rep["counts"]
    assert c["frames_decoded"] == sum(N_FRAMES + i for i in range(N_VIDEOS))
    assert len(ds) == c["frames_stored"] == c["frames_decoded"] - c["frames_no_face"]
    assert sorted(set(ds.meta["video_id"])) == [f"folder/clip{i}.mp4" for i in range(N_VIDEOS)]
    for u in rep["units"]:
        rows = np.flatnonzero(ds.meta["video_id"] == f"folder/{Path(u['path']).name}")
        idx = ds.meta["frame_index"][rows]
        assert len(rows) == u["frames_stored"] >= N_FRAMES // 2 and len(set(idx)) == len(idx)
        assert set(idx) <= set(range(u["frames_decoded"]))
    assert ds.read_batch([0], fields=("image",))["image"].shape == (1, SIZE, SIZE, 3)
    cfg_a = PreprocessConfig.flat(size=SIZE).output_config()
    stamped = json.loads((store / "zarr.json").read_text())["attributes"]
    assert stamped["config_hash"] == storage.config_hash(cfg_a), "the refused run changed the store's config"
    assert not lock.exists(), "run A left its lock behind"
    assert [p for p in staging_dir(store).iterdir() if p.is_dir()] == []

    # the lock is free again: the same command now runs and finds everything committed
    again = subprocess.run(preprocess_cmd(videos, store), cwd=REPO, capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, again.stderr[-3000:]
    rep2 = json.loads((tmp_path / "c.zarr.report.json").read_text())
    assert rep2["counts"]["skipped"] == N_VIDEOS and rep2["counts"]["written"] == 0
    assert storage.open_dataset(str(store)).parts == ds.parts


def test_refused_run_leaves_an_empty_locked_store_alone(tmp_path, portraits):
    """The window before the holder's first commit: a run with another config must not re-stamp
    the store's config (the holder would then commit parts the store's config disowns)."""
    store = tmp_path / "e.zarr"
    cfg_a = PreprocessConfig.flat(size=SIZE).output_config()
    storage.DatasetWriter.open(str(store), cfg_a)  # created, no parts yet
    image = next(p for p in portraits if p.name == "obama-240p.jpg")
    with storage.run_lock(str(store), owner="test holder") as record:
        c = subprocess.run(preprocess_cmd(image, store, size=96), cwd=REPO, capture_output=True, text=True,
                           timeout=120)
        assert c.returncode == 2, c.stderr[-2000:]
        assert "store is locked by another run" in c.stderr and f"pid {record['pid']} " in c.stderr, c.stderr
        assert "'test holder'" in c.stderr
        stamped = json.loads((store / "zarr.json").read_text())["attributes"]["config_hash"]
        assert stamped == storage.config_hash(cfg_a), "the refused run re-stamped the store's config"
        # the holder itself goes on writing with its config
        w = storage.DatasetWriter.open(str(store), cfg_a)
        assert w.config_hash == stamped and w.parts == {}
    # once the lock is free, an empty store may take another config (documented behaviour)
    cfg_c = PreprocessConfig.flat(size=96).output_config()
    assert storage.DatasetWriter.open(str(store), cfg_c).config_hash == storage.config_hash(cfg_c)


def test_run_is_refused_at_once_while_the_holder_is_paused_in_a_commit(tmp_path, portraits):
    """CI failure: run A was paused (SIGSTOP) while it held commit.lock, and runs B and C, which
    opened the store's writer before checking the run lock, waited for it without end. The run
    lock is read first now: both CLI runs (same config, another config) fail at once."""
    store = tmp_path / "p.zarr"
    cfg_a = PreprocessConfig.flat(size=SIZE).output_config()
    storage.DatasetWriter.open(str(store), cfg_a)
    image = next(p for p in portraits if p.name == "obama-240p.jpg")
    with storage.run_lock(str(store), owner="paused holder") as record, commit_lock(Location.parse(str(store))):
        for size in (SIZE, 96):
            c = subprocess.run(preprocess_cmd(image, store, size=size), cwd=REPO, capture_output=True,
                               text=True, timeout=90)
            assert c.returncode == 2, c.stderr[-2000:]
            assert "store is locked by another run" in c.stderr and f"pid {record['pid']} " in c.stderr, c.stderr
            assert "Traceback" not in c.stderr, c.stderr[-3000:]
    assert not storage.open_dataset(str(store)).parts
