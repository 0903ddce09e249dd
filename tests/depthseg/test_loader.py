"""The training read path: frames read straight from the shards (storage.fastread), bit-exact
with zarr and damage-detecting; FrameDataset under a plain torch DataLoader and make_loader;
per-frame columns packed at commit (storage.colpack).

Stores are written by the real writer from the shared face photos (schema 2: zstd then crc32c
per chunk, every chunk written), with image/depth rewritten into small shards so that reads cross
shard files; the schema-1 store is the real one of tests/helpers/old_store.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from torch.utils.data import DataLoader
from zarr.codecs import Crc32cCodec, ZstdCodec

import storage
import storage.reader
from depthseg.data import FrameDataset, make_loader
from storage import colpack
from storage.fastread import FrameReader
from storage.layout import ARRAYS
from tests.conftest import REPO
from tests.helpers.old_store import extract_schema1_store
from tests.helpers.stores import write_store
from tests.helpers.train_store import make_store

FRAMES_PER_SHARD = 3


def relayout(path: Path, *, schema: int = 2) -> None:
    """Rewrite every part's image/depth as zstd + crc32c chunks, every chunk written, shards of
    FRAMES_PER_SHARD frames (the last one partial), and stamp the schema version."""
    root = zarr.open_group(str(path), mode="r+")
    for _, part in root["parts"].groups():
        for name in ("image", "depth"):
            data = part[name][...]
            arr = part.create_array(name, shape=data.shape, dtype=data.dtype, chunks=(1, *data.shape[1:]),
                                    shards=(FRAMES_PER_SHARD, *data.shape[1:]), overwrite=True,
                                    compressors=[ZstdCodec(level=3), Crc32cCodec()],
                                    dimension_names=list(ARRAYS[name][1]), config={"write_empty_chunks": True})
            arr[...] = data
    root.attrs["schema_version"] = schema


def zarr_frames(reader: storage.DatasetReader, rows: np.ndarray, name: str) -> np.ndarray:
    """The frames as plain zarr reads them, one basic selection each (the reference)."""
    pids, store = reader.part_ids[rows], zarr.open_group(reader.url, mode="r")
    first = {p.part_id: int(np.flatnonzero(reader.part_ids == p.part_id)[0]) for p in reader.parts}
    local = [int(i) - first[pid] for pid, i in zip(pids, rows)]
    paths = {p.part_id: p.path for p in reader.parts}
    return np.stack([store[paths[pid]][name][j] for pid, j in zip(pids, local)])


def no_zarr_selection(monkeypatch) -> None:
    def boom(*a, **k):
        raise AssertionError("image/depth went through zarr, not storage.fastread")
    monkeypatch.setattr(zarr.Array, "get_orthogonal_selection", boom)
    monkeypatch.setattr(zarr.Array, "__getitem__", boom)


@pytest.fixture(scope="module")
def v1_store(tmp_path_factory) -> Path:
    # a real schema-1 store: old-spoof's all-zero depth was never written (no chunk at all)
    return extract_schema1_store(tmp_path_factory.mktemp("loader"))


@pytest.fixture(scope="module")
def v2_store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("loader") / "v2.zarr"
    write_store(path)
    relayout(path)
    return path


@pytest.mark.parametrize("which", ["v1_store", "v2_store"])
def test_fast_reads_bit_exact_with_zarr(which, request, monkeypatch):
    path = request.getfixturevalue(which)
    r = storage.open_dataset(path)
    assert r._fast.strict == (which == "v2_store")
    rows = np.random.default_rng(0).integers(0, len(r), 40)
    rows = np.concatenate([rows, rows[:5], np.arange(len(r))[::-1]])  # duplicates, reverse order
    want = {name: zarr_frames(r, rows, name) for name in ("image", "depth")}
    assert want["image"].std() > 10 and want["depth"].max() > 0 and (want["depth"] == 0).all(axis=(1, 2)).any()
    no_zarr_selection(monkeypatch)
    got = r.read_batch(rows, fields=("image", "depth"))
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
        out = np.empty_like(want[name])
        assert r.read_into(rows, name, out) is out
        np.testing.assert_array_equal(out, want[name])
    view = r.filter(label="live")  # views map their positions to the right part and row
    np.testing.assert_array_equal(view.read_batch([1, 0], ("image",))["image"],
                                  want["image"][[np.flatnonzero(rows == i)[0] for i in
                                                 np.flatnonzero(r.meta["label"] == "live")[[1, 0]]]])


def _shard(path: Path, part: str, name: str, shard: int) -> Path:
    return path.joinpath("parts", part, name, "c", str(shard), *["0"] * (len(ARRAYS[name][1]) - 1))


def _damaged(tmp_path: Path, src: Path) -> Path:
    dst = tmp_path / "damaged.zarr"
    shutil.copytree(src, dst)
    return dst


def test_damage_raises_naming_part_and_frame(v2_store, tmp_path):
    path = _damaged(tmp_path, v2_store)
    r = storage.open_dataset(path)
    rows = {pid: np.flatnonzero(r.part_ids == pid) for pid in ("vid-a", "vid-b", "vid-c")}
    # a flipped byte in a chunk's data: crc32c mismatch
    f = _shard(path, "vid-a", "image", 0)
    raw = bytearray(f.read_bytes())
    raw[100] ^= 0x40
    f.write_bytes(raw)
    with pytest.raises(storage.IntegrityError, match=r"part vid-a: image of frame\(s\) 0 cannot be read: chunk .* damaged \(crc32c"):
        r.read_batch(rows["vid-a"][:2], ("image",))
    np.testing.assert_array_equal(r.read_batch(rows["vid-a"][3:4], ("image",))["image"],  # other shards fine
                                  zarr_frames(r, rows["vid-a"][3:4], "image"))
    # a deleted shard file: missing chunks raise, never read as zeros
    _shard(path, "vid-c", "image", 1).unlink()
    with pytest.raises(storage.IntegrityError, match=r"part vid-c: image of frame\(s\) 3 cannot be read: chunk is missing \(no shard file"):
        r.read_batch(rows["vid-c"][[0, 3]], ("image",))
    # a flipped byte in a shard index
    f = _shard(path, "vid-b", "depth", 0)
    raw = bytearray(f.read_bytes())
    raw[-10] ^= 0x01
    f.write_bytes(raw)
    with pytest.raises(storage.IntegrityError, match=r"part vid-b: depth of frame\(s\) 1 cannot be read: shard .* damaged index"):
        r.read_batch(rows["vid-b"][1:2], ("depth",))
    # the same through the training loader
    ds = FrameDataset(storage.open_dataset(path), {"video_id": "vid-c"}, include_flagged=True)  # every frame, flagged too
    for workers in (0, 2):  # with workers: raised in a worker, decoding into a pooled buffer
        with pytest.raises(storage.IntegrityError, match=r"part vid-c: image of frame\(s\) 3"):
            list(make_loader(ds, 8, num_workers=workers))


@pytest.mark.slow  # >= 2.5 s on an idle 2-core machine
def test_damage_schema1_store(v1_store, tmp_path):
    path = _damaged(tmp_path, v1_store)
    r = storage.open_dataset(path)
    rows = np.flatnonzero(r.part_ids == "old-live")
    f = _shard(path, "old-live", "image", 0)
    raw = f.read_bytes()
    f.write_bytes(raw[:-3])  # truncated: the index (at the end) no longer checks
    with pytest.raises(storage.IntegrityError, match=r"part old-live: image of frame\(s\) 1 cannot be read: shard .* damaged index"):
        r.read_batch(rows[1:2], ("image",))
    # schema 1 does not write all-zero chunks (old-spoof's depth): strict reading calls them missing
    strict = FrameReader(str(path), str(path), strict=True)
    part_b = [p for p in r.parts if p.part_id == "old-spoof"]
    with pytest.raises(storage.IntegrityError, match=r"part old-spoof: depth of frame\(s\) 0 cannot be read: chunk is missing"):
        strict.read(part_b, np.zeros(1, np.int64), np.zeros(1, np.int64), "depth")


def _check_batch(reader: storage.DatasetReader, ds: FrameDataset, batch: dict) -> None:
    idx = batch["index"].numpy()
    stored = reader.read_batch(idx, fields=("image", "depth"))
    np.testing.assert_array_equal(batch["image"].numpy(), stored["image"])
    live = ds.is_live[idx]
    np.testing.assert_array_equal(batch["is_live"].numpy(), live)
    np.testing.assert_array_equal(batch["depth"].numpy()[live], stored["depth"][live])
    assert (batch["depth"].numpy()[~live] == 0).all()  # spoof depth is zero whatever is stored


@pytest.mark.slow  # >= 2.5 s on an idle 2-core machine
def test_plain_dataloader_and_make_loader(tmp_path):
    store = make_store(tmp_path)  # spoof frames stored with NON-zero depth
    ds = FrameDataset(store, "train")
    reader = ds.reader
    sample = ds[3]
    assert sample["image"].shape == (128, 128, 3) and sample["depth"].shape == (128, 128)
    assert sample["index"].item() == 3 and sample["is_live"].dtype == torch.bool
    plain = list(DataLoader(ds, batch_size=8, shuffle=True, num_workers=2,
                            generator=torch.Generator().manual_seed(0)))
    assert sorted(np.concatenate([b["index"].numpy() for b in plain]).tolist()) == list(range(len(ds)))
    assert plain[0]["image"].shape == (8, 128, 128, 3) and plain[0]["image"].dtype == torch.uint8
    assert not all((b["index"].diff() > 0).all() for b in plain)  # really shuffled
    fast = list(make_loader(ds, 8, shuffle=True, generator=torch.Generator().manual_seed(0), num_workers=2))
    assert sorted(np.concatenate([b["index"].numpy() for b in fast]).tolist()) == list(range(len(ds)))
    assert (~ds.is_live).any() and ds.is_live.any()
    for batch in plain + fast:
        _check_batch(reader, ds, batch)


def _in_pool(loader, tensor: torch.Tensor) -> bool:
    data = loader._pool.data
    return data.data_ptr() <= tensor.data_ptr() < data.data_ptr() + data.numel()


@pytest.mark.slow  # >= 2.5 s on an idle 2-core machine
def test_make_loader_workers_decode_into_reused_buffers(tmp_path):
    """With workers, batches come in shared buffers reused from batch to batch (depthseg.batchpool),
    and a batch still held (or any view of it) is never overwritten."""
    ds = FrameDataset(make_store(tmp_path), "train")
    loader = make_loader(ds, 2, shuffle=True, generator=torch.Generator().manual_seed(0), num_workers=2)
    seen = set()
    for batch in loader:  # each batch dropped before the next: slots come back
        _check_batch(ds.reader, ds, batch)
        assert _in_pool(loader, batch["image"]) and _in_pool(loader, batch["depth"])
        seen.add(batch["image"].data_ptr())
    slots = loader._pool.busy.numel()
    assert len(loader) > slots >= len(seen)
    kept = list(loader)  # every batch held: the slots run out, the rest come in fresh memory
    pooled = [_in_pool(loader, b["image"]) for b in kept]
    assert 0 < sum(pooled) <= slots and not all(pooled)
    for batch in kept:  # checked after the whole epoch: nothing was overwritten
        _check_batch(ds.reader, ds, batch)
    view = next(b for b, p in zip(kept, pooled) if p)["depth"][1].numpy()
    del kept, batch
    assert loader._pool.busy.sum() == 1  # only the slot under the numpy view is still taken
    del view
    assert loader._pool.busy.sum() == 0
    # two iterations at once: the second reads without the pool, both correct
    first = iter(loader)
    batches = [next(first)]
    second = list(loader)
    assert not any(_in_pool(loader, b["image"]) for b in second)
    batches += list(first)
    assert sorted(np.concatenate([b["index"].numpy() for b in batches]).tolist()) == list(range(len(ds)))
    for batch in batches + second:
        _check_batch(ds.reader, ds, batch)


@pytest.mark.slow  # >= 2.5 s on an idle 2-core machine
def test_readme_plain_pytorch_example_runs(tmp_path):
    """The README's plain-PyTorch block, run as written on a real store (only its path swapped)."""
    readme = (REPO / "README.md").read_text()
    block = next(b.split("\n", 1)[1] for b in readme.split("```python")[1:]
                 if "from torch.utils.data import DataLoader" in b).split("```")[0]
    store = make_store(tmp_path)
    scope: dict = {}
    exec(compile(block.replace("runs/sample/store.zarr", store), "README.md", "exec"), scope)
    batch, ds = scope["batch"], scope["ds"]
    assert batch["image"].shape == (8, 128, 128, 3) and batch["depth"].shape == (8, 128, 128)
    assert len(list(scope["fast"])) == -(-len(ds) // 64)


def test_packed_columns(tmp_path, monkeypatch):
    path = tmp_path / "s.zarr"
    write_store(path)
    r = storage.open_dataset(path)
    with monkeypatch.context() as m:
        m.setattr(storage.reader, "load_packed_columns", lambda loc, parts, names: [None] * len(parts))
        slow = storage.open_dataset(path)  # every part from its arrays, as before
    assert r.columns == slow.columns
    for name in r.columns:
        a, b = r.meta[name], slow.meta[name]
        assert a.dtype == b.dtype, name
        np.testing.assert_array_equal(a, b)
    # a part without the attribute (written before it existed) is read from its arrays
    del zarr.open_group(str(path / "parts" / "vid-a"), mode="r+").attrs[colpack.ATTR]
    calls, real = [], colpack.load

    def spy(*args):
        calls.append(real(*args))
        return calls[-1]

    monkeypatch.setattr(storage.reader, "load_packed_columns", spy)
    again = storage.open_dataset(path)
    assert [c is None for c in calls[0]] == [True, False, False]  # parts sorted: vid-a, vid-b, vid-c
    for name in r.columns:
        np.testing.assert_array_equal(again.meta[name], r.meta[name])
    # a damaged attribute raises, naming the part
    meta = path / "parts" / "vid-c" / "zarr.json"
    doc = json.loads(meta.read_text())
    text = doc["attributes"][colpack.ATTR]
    doc["attributes"][colpack.ATTR] = text[:40] + ("A" if text[40] != "A" else "B") + text[41:]
    meta.write_text(json.dumps(doc))
    with pytest.raises(storage.IntegrityError, match="part vid-c: the packed columns .* are damaged"):
        storage.open_dataset(path)
