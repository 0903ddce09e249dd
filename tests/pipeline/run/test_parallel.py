"""The pipelined runner (pipeline.run.parallel) against the sequential path, on test-made videos.

Parts must be identical (same arrays, same records) to what ``run_preprocess`` writes in-process;
bad inputs are reported as failed; a killed worker fails only its item and leaves nothing
partial in the store; a worker that cannot load its backends ends the run with the error.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import zarr

import storage
from depthseg.benchmark import pinned_threads
from pipeline.base.errors import ModelAssetMissing
from pipeline.io.items import WorkItem
from pipeline.run.parallel import WORKER_DIED, ParallelConfig, run_parallel
from pipeline.run.config import PreprocessConfig
from pipeline.run.runners import run_preprocess
from pipeline.run.unit import part_id_for
from tests.conftest import load_rgb
from tests.helpers.media import make_face_video
from tests.helpers.stores import read_manifest, staging_dir

SIZE = 64
# small batches and chunks, so that one fit+render batch mixes faces of several items and each
# part is appended in several pieces
CFG = PreprocessConfig.flat(size=SIZE, batch_size=8)
PCFG = ParallelConfig(workers=2, chunk_frames=5, detect_batch=3, append_frames=7)


@pytest.fixture(scope="module")
def media(tmp_path_factory, portraits) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("parallel-media")
    faces = {p.name: load_rgb(p) for p in portraits}
    out = {
        "a": make_face_video(root / "live_obama.mp4", faces["obama.jpg"], n=24, gap=(10, 14)),
        "b": make_face_video(root / "live_biden.mp4", faces["biden.jpg"], n=16, gap=(16, 16)),
        "c": make_face_video(root / "print_obama2.mp4", faces["obama2.jpg"], n=12, gap=(3, 5)),
        "long": make_face_video(root / "long_obama.mp4", faces["obama.jpg"], n=90, gap=(0, 0)),
    }
    bad = root / "broken.mp4"
    bad.write_text("this is not a video\n" * 50)
    out["bad"] = bad
    return out


def items_of(media: dict[str, Path]) -> list[WorkItem]:
    return [
        WorkItem(str(media["a"]), label="live", subject="obama", split="train"),
        WorkItem(str(media["bad"]), label="live"),
        WorkItem(str(media["b"]), label="live", subject="biden", split="dev"),
        WorkItem(str(media["c"]), label="spoof", attack_type="print", subject="obama2"),
    ]


def manifest(store: Path) -> dict:
    return read_manifest(store)["parts"]


def part_arrays(store: Path, entry: dict) -> dict[str, np.ndarray]:
    """Every array of a committed part (``image``, ..., ``qc/<col>``, ``meta/<col>``)."""
    group = zarr.open_group(str(store / entry["path"]), mode="r")
    out = {name: arr[:] for name, arr in group.arrays()}
    for sub in ("qc", "meta"):
        out.update({f"{sub}/{name}": arr[:] for name, arr in group[sub].arrays()})
    return out


def assert_same_arrays(a: dict[str, np.ndarray], b: dict[str, np.ndarray], what: str) -> None:
    assert sorted(a) == sorted(b), what
    for key in a:
        x, y = np.asarray(a[key]), np.asarray(b[key])
        assert x.shape == y.shape, f"{what}/{key}: {x.shape} vs {y.shape}"
        if x.dtype.kind in "fc":
            assert x.dtype == y.dtype and np.array_equal(x, y, equal_nan=True), f"{what}/{key} differs"
        elif x.dtype.kind in "iub":
            assert x.dtype == y.dtype and np.array_equal(x, y), f"{what}/{key} differs"
        else:
            assert x.tolist() == y.tolist(), f"{what}/{key} differs"


def staged_parts(store: Path) -> list[str]:
    staging = staging_dir(store)
    return sorted(e.name for e in staging.iterdir() if e.is_dir()) if staging.is_dir() else []


@pytest.mark.slow  # both runners over the test media (~95 s loaded)
def test_parts_identical_to_sequential(tmp_path, media):
    """Bit-identical at equal torch thread counts (workers detect with 1 thread, so the reference
    does too); across thread counts within the tolerance pipeline/depth.py documents."""
    items = items_of(media)
    seq, par = tmp_path / "seq.zarr", tmp_path / "par.zarr"
    with pinned_threads(1):
        rep_seq = run_preprocess(items, str(seq), CFG)
    finished = []
    rep_par = run_parallel(items, str(par), CFG, pcfg=replace(PCFG, main_threads=1), on_unit=finished.append)

    # same outcome per item, reported in the items' order
    keys = ("path", "part_id", "status", "reason", "frames_decoded", "frames_stored", "frames_no_face",
            "frames_dropped_qc", "frames_flagged_qc")
    assert [[getattr(u, k) for k in keys] for u in rep_par.units] == \
           [[getattr(u, k) for k in keys] for u in rep_seq.units]
    assert sorted(u.path for u in finished) == sorted(it.path for it in items)
    status = {Path(u.path).name: u for u in rep_par.units}
    assert status["broken.mp4"].status == "failed" and status["broken.mp4"].reason == "corrupt-video"
    assert "broken.mp4" in status["broken.mp4"].message
    assert status["live_obama.mp4"].frames_no_face == 4 and status["live_obama.mp4"].frames_stored == 20
    assert {"decode", "detect", "landmarks", "crop", "fit+render", "write"} <= set(status["live_obama.mp4"].seconds)
    d = rep_par.to_dict()
    assert d["counts"]["written"] == 3 and d["counts"]["failed"] == 1
    assert [f["reason"] for f in d["failures"]] == ["corrupt-video"]

    # same parts: records and every array
    m_seq, m_par = manifest(seq), manifest(par)
    assert sorted(m_par) == sorted(m_seq) and len(m_par) == 3
    for pid in m_seq:
        for k in ("frames", "input_checksum", "config_hash", "extra", "columns"):
            assert m_par[pid][k] == m_seq[pid][k], (pid, k)
        assert_same_arrays(part_arrays(seq, m_seq[pid]), part_arrays(par, m_par[pid]), pid)
    spoof = part_arrays(par, m_par[part_id_for(items[3])])
    assert spoof["depth"].max() == 0 and np.isnan(spoof["fit_residual"]).all()
    live = part_arrays(par, m_par[part_id_for(items[0])])
    assert (live["depth"] > 0).mean(axis=(1, 2)).min() > 0.2
    assert storage.verify(str(par)) == [] and staged_parts(par) == []

    # another thread count (the detector's float reductions differ): same frames and records,
    # crops and depth within 1 level on a few pixels
    two = tmp_path / "two.zarr"
    with pinned_threads(2):
        rep_two = run_preprocess(items, str(two), CFG)
    assert [u.frames_stored for u in rep_two.units] == [u.frames_stored for u in rep_seq.units]
    m_two = manifest(two)
    for pid in m_seq:
        assert {k: m_two[pid][k] for k in ("frames", "input_checksum", "extra", "columns")} == \
               {k: m_seq[pid][k] for k in ("frames", "input_checksum", "extra", "columns")}
        a, b = part_arrays(seq, m_seq[pid]), part_arrays(two, m_two[pid])
        for key in ("image", "depth"):
            diff = np.abs(a[key].astype(int) - b[key].astype(int))
            assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, (pid, key, diff.max(), (diff > 0).mean())
        assert ((a["depth"] > 0) == (b["depth"] > 0)).all()
        np.testing.assert_allclose(b["bbox"], a["bbox"], atol=1e-2)

    # a second run (through run_preprocess's dispatch) skips the committed parts, retries the bad one
    rep2 = run_preprocess(items, str(par), replace(CFG, workers=2))
    assert [u.status for u in rep2.units] == ["skipped", "failed", "skipped", "skipped"]
    assert manifest(par) == m_par

    # batches mixing items: the same frames and crops; fit outputs equal up to float rounding
    mix = tmp_path / "mix.zarr"
    rep_mix = run_parallel(items, str(mix), CFG, pcfg=replace(PCFG, mix_items=True, main_threads=1))
    assert [u.frames_stored for u in rep_mix.units] == [u.frames_stored for u in rep_seq.units]
    m_mix = manifest(mix)
    assert sorted(m_mix) == sorted(m_seq)
    for pid in m_seq:
        a, b = part_arrays(seq, m_seq[pid]), part_arrays(mix, m_mix[pid])
        rounding = ("depth", "fit_residual", "qc/yaw", "qc/pitch", "qc/roll")
        assert_same_arrays({k: v for k, v in a.items() if k not in rounding},
                           {k: v for k, v in b.items() if k not in rounding}, pid)
        diff = np.abs(a["depth"].astype(int) - b["depth"].astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, (pid, diff.max(), (diff > 0).mean())
        for k in rounding[1:]:
            np.testing.assert_allclose(b[k], a[k], rtol=1e-4, atol=1e-3, equal_nan=True, err_msg=f"{pid}/{k}")


def _kill_when_staged(store: Path, part_id: str, killed: dict, stop: threading.Event) -> None:
    """SIGKILL the worker process as soon as frames of ``part_id`` are being written."""
    while not stop.is_set():
        staging = staging_dir(store)
        if staging.is_dir() and any(e.name.startswith(part_id + ".") and (e / "image").exists()
                                    for e in staging.iterdir()):
            procs = [p for p in mp.active_children() if p.name.startswith("depthseg-preprocess-")]
            if procs:
                killed["pid"] = procs[0].pid
                killed["frames_staged"] = True
                os.kill(procs[0].pid, signal.SIGKILL)
                return
        time.sleep(0.005)


@pytest.mark.slow  # worker processes, one SIGKILLed (~20 s loaded)
def test_killed_worker_fails_its_item_only(tmp_path, media):
    store = tmp_path / "store.zarr"
    long_item = WorkItem(str(media["long"]), label="live")
    short_item = WorkItem(str(media["a"]), label="live")
    pcfg = ParallelConfig(workers=1, chunk_frames=4, append_frames=4, prefetch=1)
    killed: dict = {}
    stop = threading.Event()
    watcher = threading.Thread(target=_kill_when_staged, args=(store, part_id_for(long_item), killed, stop))
    watcher.start()
    try:
        report = run_parallel([long_item, short_item], str(store), CFG, pcfg=pcfg)
    finally:
        stop.set()
        watcher.join()
    assert killed.get("pid"), "the worker was not killed while the part was being written"
    by_path = {u.path: u for u in report.units}
    dead = by_path[long_item.path]
    assert dead.status == "failed" and dead.reason == WORKER_DIED, dead
    assert str(-signal.SIGKILL) in dead.message and long_item.path in dead.message
    # the item queued behind it went to the replacement worker
    short = by_path[short_item.path]
    assert short.status == "written" and short.frames_stored > 0

    # nothing of the killed item is visible or left behind
    parts = manifest(store)
    assert sorted(parts) == [part_id_for(short_item)]
    assert sorted(p.name for p in (store / "parts").iterdir() if p.is_dir()) == [part_id_for(short_item)]
    assert staged_parts(store) == []
    assert storage.verify(str(store)) == []
    assert len(storage.open_dataset(str(store))) == short.frames_stored

    # resuming writes the missing part whole
    report2 = run_parallel([long_item, short_item], str(store), CFG, pcfg=pcfg)
    assert [u.status for u in report2.units] == ["written", "skipped"]
    resumed = report2.units[0]
    assert resumed.frames_decoded == 90 and resumed.frames_stored > 60
    assert manifest(store)[part_id_for(long_item)]["frames"] == resumed.frames_stored


@pytest.mark.slow  # >= 2.5 s on an idle 2-core machine
def test_worker_that_cannot_load_its_models_ends_the_run(tmp_path, media, model_dir):
    """Model dir with the face model (the main process loads it) but no detector weights."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "sfm").symlink_to(Path(model_dir) / "sfm", target_is_directory=True)
    cfg = PreprocessConfig.flat(size=SIZE, batch_size=8, model_dir=str(models))
    store = tmp_path / "store.zarr"
    with pytest.raises(ModelAssetMissing, match="blazeface"):
        run_parallel([WorkItem(str(media["b"]), label="live")], str(store), cfg,
                     pcfg=ParallelConfig(workers=1))
    assert manifest(store) == {} and staged_parts(store) == []
    assert not (staging_dir(store) / "run.lock").exists()


@pytest.mark.cuda
def test_parts_identical_to_sequential_on_cuda(tmp_path, media):
    """Fit + render on the GPU (workers detect there too, one frame per detector call)."""
    cfg = replace(CFG, device="cuda")
    items = [WorkItem(str(media["a"]), label="live"), WorkItem(str(media["b"]), label="live")]
    seq, par = tmp_path / "seq.zarr", tmp_path / "par.zarr"
    run_preprocess(items, str(seq), cfg)
    rep = run_parallel(items, str(par), cfg, pcfg=replace(PCFG, detect_batch=1))
    assert [u.status for u in rep.units] == ["written", "written"]
    m_seq, m_par = manifest(seq), manifest(par)
    assert sorted(m_par) == sorted(m_seq)
    for pid in m_seq:
        assert_same_arrays(part_arrays(seq, m_seq[pid]), part_arrays(par, m_par[pid]), pid)
