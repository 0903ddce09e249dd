"""End to end: CLI preprocess of real images and test-made videos into a store."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import storage
from pipeline.cli import main as cli
from tests.conftest import load_rgb
from tests.helpers.media import make_face_video
from tests.helpers.csv_manifest import write_manifest
from tests.helpers.stores import manifest_file, staging_dir

SIZE = 128


@pytest.fixture(scope="module")
def video_set(tmp_path_factory, portraits):
    root = tmp_path_factory.mktemp("videos")
    face = load_rgb(next(p for p in portraits if p.name == "obama.jpg"))
    make_face_video(root / "live_obama.mp4", face, n=30, gap=(12, 18))
    biden = load_rgb(next(p for p in portraits if p.name == "biden.jpg"))
    make_face_video(root / "print_biden.mp4", biden, n=20, gap=(20, 20))
    return root


@pytest.mark.slow  # >= 2.5 s on an idle 2-core machine
def test_video_and_images_to_store(tmp_path, video_set, pad_samples):
    data = tmp_path / "in"
    shutil.copytree(video_set, data)
    for kind, p in pad_samples.items():
        shutil.copy(p, data / p.name)
    manifest = write_manifest(data / "manifest.csv", [
        {"path": "live_obama.mp4", "label": "live", "attack_type": "none", "subject": "obama", "split": "train"},
        {"path": "print_biden.mp4", "label": "spoof", "attack_type": "print", "subject": "biden", "split": "train"},
        {"path": "image_F1.jpg", "label": "spoof", "attack_type": "print", "subject": "s1", "split": "test"},
        {"path": "image_F2.jpg", "label": "spoof", "attack_type": "replay", "subject": "s1", "split": "test"},
        {"path": "image_T1.jpg", "label": "live", "attack_type": "none", "subject": "s1", "split": "test"},
    ])
    store = tmp_path / "store.zarr"
    rc = cli(["preprocess", "--input", str(data), "--manifest", str(manifest), "--output", str(store),
              "--size", str(SIZE)])
    assert rc == 0
    report = json.loads((tmp_path / "store.zarr.report.json").read_text())
    units = {Path(u["path"]).name: u for u in report["units"]}
    assert all(u["status"] == "written" for u in units.values()), units
    # the 6 frames of the gap have no face: reported, not stored
    assert units["live_obama.mp4"]["frames_decoded"] == 30
    assert units["live_obama.mp4"]["frames_no_face"] == 6
    assert units["live_obama.mp4"]["frames_stored"] == 24
    assert set(report["seconds_per_stage"]) >= {"decode", "detect", "landmarks", "fit+render", "write"}

    ds = storage.open_dataset(str(store))
    assert units["print_biden.mp4"]["frames_stored"] + units["print_biden.mp4"]["frames_no_face"] == 20
    assert units["print_biden.mp4"]["frames_stored"] >= 5
    assert len(ds) == sum(u["frames_stored"] for u in units.values())
    meta = ds.meta
    live_vid = np.flatnonzero(meta["video_id"] == "csv/live_obama.mp4")
    assert len(live_vid) == 24
    # the stored frame indices skip the gap 12..17
    assert set(meta["frame_index"][live_vid]) == set(range(30)) - set(range(12, 18))
    assert set(meta["split"][live_vid]) == {"train"}
    spoof = np.flatnonzero(meta["label"] == "spoof")
    live = np.flatnonzero(meta["label"] == "live")
    batch = ds.read_batch(spoof, fields=("depth",))
    assert batch["depth"].max() == 0, "spoof depth must be all zero"
    live_depth = ds.read_batch(live, fields=("depth", "image", "landmarks", "bbox"))
    cover = (live_depth["depth"] > 0).mean(axis=(1, 2))
    assert cover.min() >= 0.3, cover
    # landmarks inside the (slightly enlarged) box
    lm, bb = live_depth["landmarks"], live_depth["bbox"]
    w = (bb[:, 2] - bb[:, 0])[:, None]
    assert ((lm[..., 0] > bb[:, None, 0] - 0.15 * w) & (lm[..., 0] < bb[:, None, 2] + 0.15 * w)).mean() > 0.95
    attacks = dict(zip(meta["video_id"], meta["attack_type"]))
    assert attacks["csv/image_F2.jpg"] == "replay" and attacks["csv/image_F1.jpg"] == "print"

    # a second run skips every committed part and leaves the store unchanged
    before = storage.open_dataset(str(store)).parts
    rc = cli(["preprocess", "--input", str(data), "--manifest", str(manifest), "--output", str(store),
              "--size", str(SIZE)])
    assert rc == 0
    report2 = json.loads((tmp_path / "store.zarr.report.json").read_text())
    assert report2["counts"]["skipped"] == 5 and report2["counts"]["written"] == 0
    assert storage.open_dataset(str(store)).parts == before
    assert storage.verify(str(store)) == []

    # a different config never mixes into the store
    rc = cli(["preprocess", "--input", str(data), "--manifest", str(manifest), "--output", str(store),
              "--size", "64"])
    assert rc == 2


@pytest.mark.slow  # >= 2.5 s on an idle 2-core machine
def test_bad_inputs_reported_rest_lands(tmp_path, video_set, portraits):
    data = tmp_path / "bad"
    data.mkdir()
    shutil.copy(video_set / "live_obama.mp4", data / "good.mp4")
    (data / "empty.mp4").write_bytes(b"")
    full = (video_set / "live_obama.mp4").read_bytes()
    (data / "truncated.mp4").write_bytes(full[: len(full) // 3])
    (data / "text.mp4").write_text("this is not a video\n" * 50)
    (data / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(500))
    rows = [{"path": n, "label": "live"} for n in ("good.mp4", "empty.mp4", "truncated.mp4", "text.mp4", "broken.jpg")]
    rows.append({"path": "missing.mp4", "label": "live"})
    manifest = write_manifest(data / "m.csv", rows)
    store = tmp_path / "s.zarr"
    rc = cli(["preprocess", "--input", str(data), "--manifest", str(manifest), "--output", str(store),
              "--size", "64", "--max-frames", "8"])
    assert rc == 0
    rep = json.loads((tmp_path / "s.zarr.report.json").read_text())
    failed = {Path(f["path"]).name: f for f in rep["failures"]}
    for name in ("empty.mp4", "text.mp4", "broken.jpg", "missing.mp4"):
        assert name in failed, (name, failed)
        assert name in failed[name]["message"]
    # the truncated video either yields its first good frames or fails with a clear reason
    trunc = [u for u in rep["units"] if u["path"].endswith("truncated.mp4")]
    assert trunc and (trunc[0]["status"] == "written" or "truncated.mp4" in trunc[0]["message"])
    ds = storage.open_dataset(str(store))
    assert set(ds.meta["video_id"]) == {"csv/good.mp4"}


@pytest.mark.slow  # a CLI run killed and rerun in subprocesses
def test_killed_run_leaves_no_partial_part_and_completes(tmp_path, video_set):
    data = tmp_path / "many"
    data.mkdir()
    for i in range(4):
        shutil.copy(video_set / "live_obama.mp4", data / f"clip{i}.mp4")
    store = tmp_path / "k.zarr"
    # every 3rd frame: 8 face frames of the 30 (frames 12-17 show no face), a third of the work
    args = ["preprocess", "--input", str(data), "--output", str(store), "--size", "64", "--every-n", "3"]
    cmd = [sys.executable, "-m", "pipeline.cli", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    manifest = manifest_file(store)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if manifest.exists() and len(json.loads(manifest.read_text())["attributes"].get("parts", {})) >= 1:
            break
        time.sleep(0.2)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = storage.open_dataset(str(store))
    assert 1 <= len(partial.parts) < 4 or proc.returncode == 0
    assert storage.verify(str(store)) == []
    rc = cli(args)
    assert rc == 0
    final = storage.open_dataset(str(store))
    assert len(final.parts) == 4
    assert len(final) == 4 * len([i for i in range(0, 30, 3) if not 12 <= i < 18])
    assert storage.verify(str(store)) == []
    # no staged part left behind, and no part folder the manifest does not list
    staged = [p for p in staging_dir(store).iterdir() if p.is_dir()]
    assert not staged, staged
    on_disk = {p.name for p in (store / "parts").iterdir() if p.is_dir()}
    assert on_disk == {Path(info.path).name for info in final.parts}
