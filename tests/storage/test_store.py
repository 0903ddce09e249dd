"""Dataset stores: writing parts, reading them back, resume, config safety, atomicity, locks."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import multiprocessing as mp
import os
import pickle
import shutil
import socket
import time

import numpy as np
import pytest
import zarr

import storage
from storage.layout import META_COLUMNS, QC_COLUMNS
from tests.helpers.stores import CONFIG, PARTS, S, expected_rows, make_part, manifest_file, read_manifest, staged, staging_dir, write_store


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "store.zarr"
    return path, write_store(path)


def test_roundtrip_counts_order_metadata(store):
    path, written = store
    r = storage.open_dataset(path)
    rows = expected_rows(written)
    assert len(r) == sum(d.frames for d in written.values()) == len(rows)
    assert [p.part_id for p in r.parts] == sorted(written)
    assert r.schema_version == storage.SCHEMA_VERSION
    assert r.config == CONFIG and r.config_hash == storage.config_hash(CONFIG)
    assert list(r.part_ids) == [pid for pid, _ in rows]
    meta = r.meta
    for name in (*META_COLUMNS, *QC_COLUMNS, "fit_residual"):
        assert name in meta
    for name in META_COLUMNS:
        want = np.concatenate([np.asarray(written[pid].meta[name]) for pid in sorted(written)])
        np.testing.assert_array_equal(meta[name], want.astype(meta[name].dtype))
    assert meta["label"].dtype.kind == "U" and meta["frame_index"].dtype == np.int64
    assert meta["qc_flags"].dtype == np.uint8 and meta["det_score"].dtype == np.float32
    for i, (pid, j) in enumerate(rows):
        frame, src = r[i], written[pid]
        np.testing.assert_array_equal(frame["image"], src.image[j])
        np.testing.assert_array_equal(frame["depth"], src.depth[j])
        np.testing.assert_array_equal(frame["landmarks"], src.landmarks[j].astype(np.float32))
        np.testing.assert_array_equal(frame["bbox"], src.bbox[j].astype(np.float32))
        np.testing.assert_array_equal(frame["affine"], src.affine[j].astype(np.float32))
        np.testing.assert_array_equal(frame["fit_residual"], np.float32(src.fit_residual[j]))
        assert frame["det_score"] == np.float32(src.qc["det_score"][j])
        assert type(frame["label"]) is str and frame["label"] == src.meta["label"][j]
        assert frame["device"] == "phone-ü" and frame["frame_index"] == 2 * j
    assert r[-1]["video_id"] == rows[-1][0]
    with pytest.raises(IndexError):
        r[len(r)]


def test_zarr_layout(store):
    path, written = store
    root = zarr.open_group(path, mode="r")
    attrs = root.attrs.asdict()
    assert attrs["schema_version"] == storage.SCHEMA_VERSION and attrs["config"] == CONFIG
    assert attrs["config_hash"] == storage.config_hash(CONFIG) and attrs["package"] == "depthseg-fas"
    part = root["parts/vid-a"]
    pattrs = part.attrs.asdict()
    assert pattrs["part_id"] == "vid-a" and pattrs["frames"] == 5 and pattrs["input_checksum"] == "sha-vid-a"
    assert pattrs["extra"] == {"source": "vid-a.mp4"} and pattrs["versions"]["zarr"] == zarr.__version__
    image = part["image"]
    assert image.shape == (5, S, S, 3) and image.dtype == np.uint8
    assert image.metadata.dimension_names == ("frame", "y", "x", "channel")
    assert image.chunks == (1, S, S, 3) and image.shards == (5, S, S, 3)
    assert "zstd" in type(image.compressors[0]).__name__.lower()
    assert part["depth"].metadata.dimension_names == ("frame", "y", "x")
    assert part["depth"].shards == (5, S, S)
    for name in ("landmarks", "bbox", "affine", "fit_residual", "qc/yaw", "meta/label"):
        assert part[name].metadata.dimension_names[0] == "frame"
    assert part["meta/label"][0] == "live"  # zarr v3 string array


def test_sorted_batch_reads_equal_random_access(store, monkeypatch):
    path, _ = store
    r = storage.open_dataset(path)
    rng = np.random.default_rng(7)
    idx = np.concatenate([rng.permutation(len(r))[:9], [3, 3, 0, len(r) - 1]])  # unsorted, duplicates
    calls = []
    real = zarr.Array.get_orthogonal_selection

    def spy(self, selection, **kw):
        sel = selection[0] if isinstance(selection, tuple) else selection
        rows = np.arange(sel.start, sel.stop) if isinstance(sel, slice) else np.asarray(sel).copy()
        calls.append((str(self.store_path), rows))
        return real(self, selection, **kw)

    monkeypatch.setattr(zarr.Array, "get_orthogonal_selection", spy)
    batch = r.read_batch(idx, fields=("image", "depth", "landmarks", "label"))
    batch_calls = list(calls)
    assert batch["image"].shape == (len(idx), S, S, 3)
    for k, i in enumerate(idx):
        frame = r[int(i)]
        for name in ("image", "depth", "landmarks", "label"):
            np.testing.assert_array_equal(batch[name][k], frame[name])
    # each (part, array) was read at most once, with strictly increasing row indices (image and
    # depth do not go through zarr's selection: storage.fastread reads their shards directly)
    keys = [p for p, _ in batch_calls]
    assert len(keys) == len(set(keys)) == 1 * len({pid for pid in r.part_ids[idx]})
    for _, sel in batch_calls:
        assert np.all(np.diff(sel) > 0)
    # a filtered view reads the same frames as the full reader
    view = r.filter(split=("train", "dev"))
    full_rows = np.flatnonzero(np.isin(r.meta["split"], ["train", "dev"]))
    vb = view.read_batch(np.arange(len(view))[::-1], fields=("image",))
    np.testing.assert_array_equal(vb["image"], r.read_batch(full_rows[::-1], fields=("image",))["image"])
    assert r.read_batch([], fields=("image", "depth"))["depth"].shape == (0, S, S)


def test_filter_and_select(store):
    path, written = store
    r = storage.open_dataset(path)
    split = r.meta["split"]
    train = r.filter(split="train")
    assert len(train) == int(np.sum(split == "train")) > 0
    assert set(train.meta["split"]) == {"train"}
    both = r.filter(label=("live", "spoof"))
    assert len(both) == len(r)
    live_train = r.filter(label="live").filter(split={"train"})
    assert len(live_train) == int(np.sum((r.meta["label"] == "live") & (split == "train")))
    assert len(r.filter(label="spoof", split="train")) == 0
    spoof = r.filter(label=["spoof"])
    assert np.isnan(spoof.meta["fit_residual"]).all()
    assert np.all(spoof.read_batch(range(len(spoof)), fields=("depth",))["depth"] == 0)
    sel = r.select([5, 1, 5])
    assert len(sel) == 3 and sel[0]["frame_index"] == r[5]["frame_index"]
    np.testing.assert_array_equal(sel[1]["image"], r[1]["image"])
    np.testing.assert_array_equal(train.select([0])[0]["image"], train[0]["image"])
    with pytest.raises(KeyError, match="no column 'nope'"):
        r.filter(nope=1)


def test_reader_pickles_and_feeds_dataloader(store):
    torch = pytest.importorskip("torch")
    path, _ = store
    r = storage.open_dataset(path).filter(split=("train", "dev"))
    first = r[0]  # opens array handles
    clone = pickle.loads(pickle.dumps(r))
    assert len(clone) == len(r)
    np.testing.assert_array_equal(clone[0]["image"], first["image"])

    class Frames(torch.utils.data.Dataset):
        def __init__(self, reader):
            self.reader = reader

        def __len__(self):
            return len(self.reader)

        def __getitem__(self, i):
            f = self.reader[i]
            return torch.from_numpy(f["image"]), i

    loader = torch.utils.data.DataLoader(Frames(r), batch_size=4, num_workers=2)
    seen = {}
    for images, idx in loader:
        for img, i in zip(images, idx.tolist()):
            seen[i] = img.numpy()
    assert sorted(seen) == list(range(len(r)))
    want = r.read_batch(np.arange(len(r)), fields=("image",))["image"]
    np.testing.assert_array_equal(np.stack([seen[i] for i in range(len(r))]), want)


def test_resume_exists_and_replace(tmp_path):
    path = tmp_path / "s"
    w = storage.DatasetWriter.open(path, CONFIG)
    d1 = make_part(4, seed=1)
    info = w.write_part("v1", d1, input_checksum="aaa")
    assert info.frames == 4 and info.config_hash == w.config_hash and len(info.checksum) == 64
    assert w.has_part("v1", "aaa") and not w.has_part("v1", "bbb") and not w.has_part("v2", "aaa")
    w2 = storage.DatasetWriter.open(path, dict(CONFIG))
    assert w2.has_part("v1", "aaa") and list(w2.parts) == ["v1"]
    with pytest.raises(storage.PartExists, match="v1"):
        w2.write_part("v1", d1, input_checksum="aaa")
    # a changed input is refused (two inputs, one id), unless replace: then atomically, under a new folder name
    d2 = make_part(6, seed=2, label="spoof")
    with pytest.raises(storage.PartConflict, match="v1.*another input.*aaa"):
        w2.write_part("v1", d2, input_checksum="bbb")
    with pytest.raises(storage.PartConflict, match="v1"):
        w2.begin_part("v1", input_checksum="bbb")
    assert w2.has_part("v1", "aaa")
    new = w2.write_part("v1", d2, input_checksum="bbb", replace=True)
    # the old folder stays (superseded, for open readers) until a writer opens after the grace period
    assert new.path != info.path and (path / info.path).is_dir() and (path / new.path).is_dir()
    assert w2.has_part("v1", "bbb") and not w2.has_part("v1", "aaa")
    r = storage.open_dataset(path)
    assert len(r) == 6 and set(r.meta["label"]) == {"spoof"}
    np.testing.assert_array_equal(r.read_batch(range(6), fields=("image",))["image"], d2.image)
    assert storage.verify(path) == []
    storage.DatasetWriter.open(path, dict(CONFIG))  # within the grace period: kept
    assert (path / info.path).is_dir()
    storage.DatasetWriter.superseded_grace_s, grace = 0.0, storage.DatasetWriter.superseded_grace_s
    try:
        storage.DatasetWriter.open(path, dict(CONFIG))
    finally:
        storage.DatasetWriter.superseded_grace_s = grace
    assert sorted(os.listdir(path / "parts")) == sorted([new.path.split("/")[1], "zarr.json"])
    assert read_manifest(path)["superseded"] == []
    assert storage.verify(path) == []


def test_config_mismatch_names_hashes_and_keys(store):
    path, _ = store
    manifest = manifest_file(path).read_bytes()
    other = {**CONFIG, "crop": {"size": 128, "margin": 0.25}, "detector": "retinaface"}
    with pytest.raises(storage.ConfigMismatch) as exc:
        storage.DatasetWriter.open(path, other)
    msg = str(exc.value)
    assert storage.config_hash(CONFIG) in msg and storage.config_hash(other) in msg
    assert exc.value.keys == ["crop.size", "detector"] and "crop.size" in msg and "detector" in msg
    assert manifest_file(path).read_bytes() == manifest
    # a store without parts takes a new config
    empty = path.parent / "empty"
    storage.DatasetWriter.open(empty, CONFIG)
    w = storage.DatasetWriter.open(empty, other)
    assert storage.open_dataset(empty).config == other and w.config_hash == storage.config_hash(other)
    with pytest.raises(storage.StoreError, match="create=False"):
        storage.DatasetWriter.open(path.parent / "nothing", CONFIG, create=False)


def test_orphans_invisible_and_cleaned(store):
    path, written = store
    n = len(storage.open_dataset(path))
    # a crashed writer's staging folder, a part folder that never reached the manifest
    leftover = staging_dir(path) / "vid-z.deadbeef"
    shutil.copytree(path / "parts" / "vid-a", leftover)
    shutil.copytree(path / "parts" / "vid-a", path / "parts" / "vid-orphan")
    # a staging folder whose writer is alive (holds the flock): must survive cleaning
    busy = staging_dir(path) / "vid-y.cafe"
    busy.mkdir()
    fd = os.open(busy, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        r = storage.open_dataset(path)
        assert len(r) == n and "vid-orphan" not in [p.part_id for p in r.parts]
        assert "vid-orphan" in zarr.open_group(path, mode="r")["parts"]  # zarr itself sees it
        storage.DatasetWriter.open(path, CONFIG)
        assert not leftover.exists() and not (path / "parts" / "vid-orphan").exists()
        assert busy.exists()
    finally:
        os.close(fd)
    storage.DatasetWriter.open(path, CONFIG)
    assert not busy.exists()
    assert len(storage.open_dataset(path)) == n and storage.verify(path) == []


def _commit_parts(path: str, worker: int, count: int) -> None:
    w = storage.DatasetWriter.open(path, CONFIG)
    for k in range(count):
        pid = f"w{worker}-p{k}"
        w.write_part(pid, make_part(3 + k, seed=10 * worker + k, video_id=pid), input_checksum=pid)


@pytest.mark.slow  # >= 2.5 s on an idle 2-core machine
def test_concurrent_commits_from_processes(tmp_path):
    path = str(tmp_path / "shared.zarr")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_commit_parts, args=(path, i, 3)) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    manifest = read_manifest(path)
    want = {f"w{i}-p{k}" for i in range(3) for k in range(3)}
    assert set(manifest["parts"]) == want
    r = storage.open_dataset(path)
    assert len(r) == 3 * (3 + 4 + 5)
    assert set(r.meta["video_id"]) == want
    assert storage.verify(path) == []
    assert staged(path) == []


@contextlib.contextmanager
def _holder_process(target, path: str):
    """A spawned process running ``target(path, ready, release)``: yielded once it is ready, with
    the event that lets it go; let go and joined on exit."""
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    p = ctx.Process(target=target, args=(path, ready, release))
    p.start()
    try:
        assert ready.wait(60)
        yield p, release
    finally:
        release.set()
        p.join(60)


def _hold_lock(path: str, ready, release) -> None:
    with storage.run_lock(path, owner="other-run"):
        ready.set()
        release.wait(60)


def test_run_lock(tmp_path, caplog):
    path = tmp_path / "locked"
    with storage.run_lock(path, owner="run-1") as rec:
        assert rec["pid"] == os.getpid()
        with pytest.raises(storage.StoreLocked) as exc:
            with storage.run_lock(path, owner="run-2"):
                pass
        assert f"pid {os.getpid()}" in str(exc.value) and "run-1" in str(exc.value)
        assert socket.gethostname() in str(exc.value)
    # released: another process can take it, and then we cannot
    with _holder_process(_hold_lock, str(path)) as (p, _):
        with pytest.raises(storage.StoreLocked, match=f"pid {p.pid}.*other-run"):
            with storage.run_lock(path, owner="me"):
                pass
    assert not (staging_dir(path) / "run.lock").exists()
    # a lock left by a dead process on this host is taken over with a warning
    dead = mp.get_context("spawn").Process(target=os.getpid)
    dead.start()
    dead.join()
    lock = staging_dir(path) / "run.lock"
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "owner": "crashed"}))
    with caplog.at_level(logging.WARNING, logger="storage.locks"):
        with storage.run_lock(path, owner="me") as rec:
            assert json.loads(lock.read_text())["token"] == rec["token"]
    assert "stale" in caplog.text and "crashed" in caplog.text
    # ... but one from another host is not
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere", "owner": "remote-run"}))
    with pytest.raises(storage.StoreLocked, match="elsewhere"):
        with storage.run_lock(path, owner="me"):
            pass


def test_run_lock_is_never_visible_half_written(tmp_path, monkeypatch):
    """Another run reading the lock between its creation and its write saw an empty file ("an
    unknown holder", and a test of the CLI failed on ``json.loads('')``); a process killed there
    would leave a lock naming nobody, never broken automatically. The lock must appear complete."""
    path = tmp_path / "atomic"
    lock = staging_dir(path) / "run.lock"
    seen = []
    real_write = os.write

    def watching_write(fd, data):
        if lock.exists():  # what a concurrent reader would read at this instant
            seen.append(lock.read_bytes())
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", watching_write)
    for _ in range(2):  # a fresh lock, then a stale one's takeover
        with storage.run_lock(path, owner="me") as rec:
            assert json.loads(lock.read_text())["token"] == rec["token"]
        lock.write_text(json.dumps({"pid": 2**22 + 1, "host": socket.gethostname(), "owner": "gone"}))
    assert all(json.loads(b)["owner"] == "gone" for b in seen), seen
    monkeypatch.undo()
    assert sorted(p.name for p in staging_dir(path).iterdir() if p.name.startswith("run.lock")) == ["run.lock"]


def test_run_lock_without_hard_links_falls_back_to_exclusive_create(tmp_path, monkeypatch):
    """Some mounts (FUSE, SMB) have no hard links: the lock is still taken, and still exclusive."""
    def no_link(src, dst):
        raise PermissionError(errno.EPERM, "Operation not permitted", src)

    monkeypatch.setattr(os, "link", no_link)
    path = tmp_path / "nolinks"
    with storage.run_lock(path, owner="me") as rec:
        assert json.loads((staging_dir(path) / "run.lock").read_text())["token"] == rec["token"]
        with pytest.raises(storage.StoreLocked, match="me"):
            with storage.run_lock(path, owner="other"):
                pass
    assert [p.name for p in staging_dir(path).iterdir() if p.name.startswith("run.lock")] == []


def _hold_run_and_commit_locks(path: str, ready, release) -> None:
    """A run paused inside a commit: it holds the run lock and the commit lock."""
    from storage.layout import Location
    from storage.locks import commit_lock

    with storage.run_lock(path, owner="paused-run"), commit_lock(Location.parse(path)):
        ready.set()
        release.wait(60)


def test_locked_store_is_refused_at_once_while_its_holder_sits_in_a_commit(tmp_path):
    """A holder paused mid-commit (Ctrl-Z, a scheduler's suspend) keeps commit.lock: a second run
    must still fail at once naming it, not wait without a word (CI hung here before the fix)."""
    path = str(tmp_path / "held")
    storage.refuse_if_locked(path)  # no store, no lock: nothing to refuse
    with _holder_process(_hold_run_and_commit_locks, path) as (p, _):
        with pytest.raises(storage.StoreLocked, match=f"pid {p.pid} .*paused-run"):
            storage.refuse_if_locked(path)
        with pytest.raises(storage.StoreLocked, match=f"pid {p.pid} .*paused-run"):
            with storage.run_lock(path, owner="me"):
                pass
    storage.refuse_if_locked(path)  # released
    with storage.run_lock(path, owner="me"):
        storage.refuse_if_locked(path)  # this process's own lock is not another run's


def _hold_commit_lock(path: str, ready, release) -> None:
    from storage.layout import Location
    from storage.locks import commit_lock

    with commit_lock(Location.parse(path)):
        ready.set()
        release.wait(60)


def test_a_long_wait_for_the_commit_lock_is_logged(tmp_path, monkeypatch, caplog):
    import threading

    from storage import locks
    from storage.layout import Location

    monkeypatch.setattr(locks, "COMMIT_WAIT_WARN_S", 0.3)
    path = str(tmp_path / "slow")
    with _holder_process(_hold_commit_lock, path) as (_, release):
        def release_once_warned() -> None:  # the holder lets go only after the wait was logged
            deadline = time.monotonic() + 60
            while "still waiting" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.02)
            release.set()

        with caplog.at_level(logging.WARNING, logger="storage.locks"):
            threading.Thread(target=release_once_warned, daemon=True).start()
            with locks.commit_lock(Location.parse(path)):
                assert release.is_set()  # had only once the holder let go
    assert "waited 0 s for the store's commit lock; still waiting (run lock: none)" in caplog.text


def test_failing_write_leaves_nothing_visible(store, monkeypatch):
    path, written = store
    manifest = manifest_file(path).read_bytes()
    parts_before = sorted(os.listdir(path / "parts"))
    from zarr.storage import LocalStore

    real_set = LocalStore.set
    chunk_writes = []

    async def failing_set(self, key, value):
        if "/c/" in f"/{key}":
            chunk_writes.append(key)
            if len(chunk_writes) == 3:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), key)
        return await real_set(self, key, value)

    monkeypatch.setattr(LocalStore, "set", failing_set)
    w = storage.DatasetWriter.open(path, CONFIG)
    with pytest.raises(storage.StoreError) as exc:
        w.write_part("vid-new", make_part(6, seed=9), input_checksum="x")
    assert "vid-new" in str(exc.value) and "No space left" in str(exc.value)
    assert len(chunk_writes) >= 3
    assert manifest_file(path).read_bytes() == manifest
    assert sorted(os.listdir(path / "parts")) == parts_before
    assert staged(path) == []
    r = storage.open_dataset(path)
    assert "vid-new" not in [p.part_id for p in r.parts] and len(r) == sum(d.frames for d in written.values())
    assert storage.verify(path) == []
    monkeypatch.setattr(LocalStore, "set", real_set)
    w.write_part("vid-new", make_part(6, seed=9), input_checksum="x")
    assert len(storage.open_dataset(path)) == len(r) + 6


def test_failing_manifest_update_leaves_nothing_visible(store, monkeypatch):
    path, written = store
    manifest = manifest_file(path).read_bytes()
    parts_before = sorted(os.listdir(path / "parts"))
    import storage.writer

    def disk_full(loc, new_manifest):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "manifest.json")

    monkeypatch.setattr(storage.writer, "write_manifest", disk_full)
    w = storage.DatasetWriter.open(path, CONFIG)
    with pytest.raises(storage.StoreError, match="committing part vid-new.*No space left"):
        w.write_part("vid-new", make_part(3, seed=4), input_checksum="x")
    assert manifest_file(path).read_bytes() == manifest
    assert sorted(os.listdir(path / "parts")) == parts_before
    assert not w.has_part("vid-new", "x") and storage.verify(path) == []


def test_memory_url_write_read():
    fsspec = pytest.importorskip("fsspec")
    url = "memory://depthseg-test/store.zarr"
    fs = fsspec.filesystem("memory")
    if fs.exists("/depthseg-test"):
        fs.rm("/depthseg-test", recursive=True)
    try:
        written = write_store(url)
        r = storage.open_dataset(url)
        rows = expected_rows(written)
        assert len(r) == len(rows)
        for i in (0, len(rows) // 2, len(rows) - 1):
            pid, j = rows[i]
            np.testing.assert_array_equal(r[i]["image"], written[pid].image[j])
        w = storage.DatasetWriter.open(url, CONFIG)
        assert w.has_part("vid-a", "sha-vid-a")
        new = w.write_part("vid-a", make_part(2, seed=5), input_checksum="changed", replace=True)
        assert new.path != "parts/vid-a" and fs.exists("/depthseg-test/store.zarr/parts/vid-a")  # superseded
        assert len(storage.open_dataset(url)) == len(rows) - 5 + 2
        assert storage.verify(url) == []
        with storage.run_lock(url, owner="x") as rec:  # remote: warning only
            assert rec == {}
        with pytest.raises(storage.ConfigMismatch):
            storage.DatasetWriter.open(url, {"other": 1})
    finally:
        fs.rm("/depthseg-test", recursive=True)


def test_memory_url_failing_write_leaves_nothing(monkeypatch):
    fsspec = pytest.importorskip("fsspec")
    from zarr.storage import FsspecStore

    url = "memory://depthseg-fail/store.zarr"
    fs = fsspec.filesystem("memory")
    try:
        write_store(url, parts=PARTS[:1])
        manifest = fs.cat("/depthseg-fail/store.zarr/manifest/zarr.json")
        real_set = FsspecStore.set
        chunk_writes = []

        async def failing_set(self, key, value, *args, **kwargs):
            if "/c/" in f"/{key}":
                chunk_writes.append(key)
                if len(chunk_writes) == 3:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), key)
            return await real_set(self, key, value, *args, **kwargs)

        monkeypatch.setattr(FsspecStore, "set", failing_set)
        w = storage.DatasetWriter.open(url, CONFIG)
        with pytest.raises(storage.StoreError, match="part vid-x.*No space left"):
            w.write_part("vid-x", make_part(4, seed=3), input_checksum="x")
        assert fs.cat("/depthseg-fail/store.zarr/manifest/zarr.json") == manifest
        assert not fs.exists("/depthseg-fail/store.zarr/parts/vid-x")
        assert [p.part_id for p in storage.open_dataset(url).parts] == [PARTS[0][0]]
    finally:
        fs.rm("/depthseg-fail", recursive=True)


def test_part_validation(tmp_path):
    w = storage.DatasetWriter.open(tmp_path / "v", CONFIG)
    good = make_part(3, seed=0)
    for bad_id in ("", "a/b", ".hidden", "x y", "p~1"):
        with pytest.raises(ValueError, match="part id"):
            w.write_part(bad_id, good, input_checksum="c")
    bad = make_part(3, seed=0)
    bad.depth = bad.depth[:2]
    with pytest.raises(ValueError, match="part p: depth must have shape"):
        w.write_part("p", bad, input_checksum="c")
    bad = make_part(3, seed=0)
    del bad.meta["split"]
    with pytest.raises(ValueError, match="meta columns missing: split"):
        w.write_part("p", bad, input_checksum="c")
    bad = make_part(3, seed=0)
    bad.image = bad.image.astype(np.float32)
    with pytest.raises(ValueError, match="image must be"):
        w.write_part("p", bad, input_checksum="c")
    # extra columns are kept and read back
    extra = make_part(3, seed=0)
    extra.meta["source_path"] = ["a.mp4", "b.mp4", "c.mp4"]
    w.write_part("p", extra, input_checksum="c")
    w.write_part("q", make_part(0, seed=1), input_checksum="c")  # an empty part is allowed
    r = storage.open_dataset(tmp_path / "v")
    assert len(r) == 3 and "source_path" not in r.meta  # not in every part
    assert list(storage.open_dataset(tmp_path / "v").filter(label="live").part_ids) == ["p"] * 3


def test_hashes(tmp_path):
    h = storage.config_hash({"a": 1, "b": [1, 2]})
    assert len(h) == 16 and h == storage.config_hash({"b": (1, 2), "a": 1}) != storage.config_hash({"a": 2, "b": [1, 2]})
    f = tmp_path / "f.bin"
    f.write_bytes(os.urandom(3_000_000))
    assert storage.file_checksum(f) == hashlib.sha256(f.read_bytes()).hexdigest()
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "a").write_bytes(b"x")
    (d / "sub" / "b").write_bytes(b"y")
    before = storage.file_checksum(d)
    (d / "sub" / "b").rename(d / "sub" / "c")
    renamed = storage.file_checksum(d)
    (d / "a").write_bytes(b"z")
    assert len({before, renamed, storage.file_checksum(d)}) == 3
