"""Property test: import-hdf5 on random HDF5 files, in a sandbox folder with sibling files.

Files are a real export of the standard test store with random edits (objects deleted, added or
replaced with random dtypes and shapes, random attributes, soft/external links, external
storage on a sibling file, bytes flipped in data chunks), or random files from scratch. Whatever
the file, the import either succeeds with a store that verifies, or raises one of the project's
typed errors (StoreError) and leaves no store; nothing else in the sandbox (the file itself,
its siblings, the parent folder) is created, changed or removed.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import storage
from storage.errors import StoreError
from storage.hdf5 import FORMAT, import_hdf5
from tests.helpers.hdf5_files import valid_export
from tests.helpers.sandbox import tree_snapshot

NAMES = st.one_of(
    st.sampled_from(["image", "depth", "label", "split", "qc", "meta", "parts", "vid-a", "vid-z", "frames", "x"]),
    st.text(alphabet="abcxyz019_-", min_size=1, max_size=6).filter(lambda s: s not in (".", "..")),
)
DTYPES = [np.uint8, np.float32, np.int64, np.float64, np.bool_, ">f4", np.float16, np.complex64, "S8",
          h5py.string_dtype("utf-8"), h5py.string_dtype("ascii"), np.dtype([("a", "f4"), ("b", "i4")]),
          h5py.vlen_dtype(np.int32), h5py.enum_dtype({"x": 0, "y": 1}, basetype="i1"), h5py.ref_dtype]
SHAPES = st.lists(st.integers(0, 6), min_size=1, max_size=4).map(tuple)
ATTR_NAMES = st.sampled_from(["frames", "part_id", "config", "config_hash", "format", "schema_version",
                              "extra", "versions", "created", "input_checksum", "split", "dimension_names", "x"])
ATTR_VALUES = st.one_of(
    st.integers(-2, 10**12), st.text(max_size=20), st.binary(max_size=12), st.floats(allow_nan=True),
    st.lists(st.integers(0, 9), max_size=4).map(np.array), st.sampled_from(["{}", "[]", "{\"a\": 1}", FORMAT]),
)

MUTATION = st.one_of(
    st.tuples(st.just("delete"), st.integers(0, 999)),
    st.tuples(st.just("add"), st.integers(0, 999), NAMES, st.integers(0, len(DTYPES) - 1), SHAPES, st.booleans()),
    st.tuples(st.just("replace"), st.integers(0, 999), st.integers(0, len(DTYPES) - 1), SHAPES, st.booleans()),
    st.tuples(st.just("group"), st.integers(0, 999), NAMES),
    st.tuples(st.just("attr"), st.integers(0, 999), ATTR_NAMES, ATTR_VALUES),
    st.tuples(st.just("link"), st.integers(0, 999),
              st.sampled_from(["soft", "dangling", "external", "external-missing"])),
    st.tuples(st.just("external"), st.integers(0, 999)),
    st.tuples(st.just("flip"), st.integers(0, 999), st.integers(0, 10**6)),
)


def _objects(f: h5py.File) -> tuple[list[str], list[str]]:
    """(groups, datasets) of the file by path, links not followed; the root is a group."""
    groups, datasets = ["/"], []

    def walk(group, prefix):
        for name in group:
            link = group.get(name, getlink=True)
            path = f"{prefix}{name}"
            if isinstance(link, h5py.HardLink):
                kind = group.get(name, getclass=True)
                if kind is h5py.Group:
                    groups.append(path)
                    walk(group[name], path + "/")
                elif kind is h5py.Dataset:
                    datasets.append(path)

    walk(f, "/")
    return groups, datasets


def _data(dtype, shape, rng):
    dt = np.dtype(dtype)
    if h5py.check_string_dtype(dt) is not None or dt.kind == "S":
        values = [rng.choice(["live", "spoof", "ü", ""]).encode() for _ in range(int(np.prod(shape)))]
        return np.array(values, dtype=object if dt.kind == "O" else "S8").reshape(shape)  # raw bytes
    if dt.kind in "biufc":
        return (rng.random(shape) * 300).astype(dt)
    return None  # compound / vlen / enum / references: left unwritten


def _apply(f: h5py.File, m: tuple, sandbox: Path, rng) -> list[tuple[int, int]]:
    """Apply one mutation; returns byte ranges (offset, size) of chunks to damage after closing."""
    groups, datasets = _objects(f)
    kind, i = m[0], m[1]
    if kind == "delete" and len(groups) + len(datasets) > 1:
        path = (groups[1:] + datasets)[i % (len(groups) + len(datasets) - 1)]
        del f[path]
    elif kind == "add":
        _, _, name, d, shape, write = m
        parent = f[groups[i % len(groups)]]
        if name not in parent:
            ds = parent.create_dataset(name, shape=shape, dtype=DTYPES[d])
            data = _data(DTYPES[d], shape, rng) if write else None
            if data is not None and data.size:
                ds[...] = data
    elif kind == "replace" and datasets:
        _, _, d, shape, write = m
        path = datasets[i % len(datasets)]
        old = f[path]
        shape = old.shape if rng.random() < 0.5 else shape
        del f[path]
        ds = f.create_dataset(path, shape=shape, dtype=DTYPES[d])
        data = _data(DTYPES[d], shape, rng) if write else None
        if data is not None and data.size:
            ds[...] = data
    elif kind == "group":
        parent = f[groups[i % len(groups)]]
        if m[2] not in parent:
            parent.create_group(m[2])
    elif kind == "attr":
        objs = groups + datasets
        f[objs[i % len(objs)]].attrs[m[2]] = m[3]
    elif kind == "link" and datasets:
        path = datasets[i % len(datasets)]
        target = {"soft": h5py.SoftLink(datasets[(i + 1) % len(datasets)]), "dangling": h5py.SoftLink("/nowhere"),
                  "external": h5py.ExternalLink(str(sandbox / "sibling.h5"), "/label"),
                  "external-missing": h5py.ExternalLink(str(sandbox / "gone.h5"), "/x")}[m[2]]
        del f[path]
        f[path] = target
    elif kind == "external" and datasets:
        path = datasets[i % len(datasets)]
        shape, size = f[path].shape, (sandbox / "passwd").stat().st_size
        del f[path]
        f.create_dataset(path, shape=shape, dtype=np.uint8 if len(shape) > 1 else "S8",
                         external=[(str(sandbox / "passwd"), 0, size)])
    elif kind == "flip" and datasets:
        ds = f[datasets[i % len(datasets)]]
        if ds.chunks is not None and ds.id.get_num_chunks():
            info = ds.id.get_chunk_info(m[2] % ds.id.get_num_chunks())
            return [(info.byte_offset, info.size)]
    return []


def _make_sandbox(root: Path, base: Path | None) -> tuple[Path, Path]:
    sandbox = Path(tempfile.mkdtemp(dir=root))
    (sandbox / "passwd").write_bytes(b"root:x:0:0:SECRET:/root:/bin/sh\n" * 4096)
    (sandbox / "notes").mkdir()
    (sandbox / "notes" / "readme.txt").write_text("keep me")
    with h5py.File(sandbox / "sibling.h5", "w") as g:
        g.create_dataset("label", data=np.array(["live"] * 5, dtype=object), dtype=h5py.string_dtype())
    h5 = sandbox / "in.h5"
    if base is not None:
        shutil.copyfile(base, h5)
    else:
        with h5py.File(h5, "w") as f:
            f.attrs["format"] = FORMAT
    return sandbox, h5


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    # two small parts (a live one and an all-zero-depth spoof one) keep a successful import ~1 s
    return valid_export(tmp_path_factory.mktemp("base"), parts=[("vid-a", 2, "live", ("train", "dev"), "obama.jpg"),
                                                                ("vid-b", 1, "spoof", ("test",), "biden.jpg")])


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sandboxes")


@pytest.mark.slow
@settings(max_examples=30, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(from_export=st.booleans(), mutations=st.lists(MUTATION, min_size=0, max_size=4), seed=st.integers(0, 2**16))
def test_random_files_give_a_verified_store_or_a_typed_error_and_touch_nothing(base, root, from_export,
                                                                                mutations, seed):
    rng = np.random.default_rng(seed)
    sandbox, h5 = _make_sandbox(root, base if from_export else None)
    damage = []
    with h5py.File(h5, "r+") as f:
        for m in mutations:
            damage += _apply(f, m, sandbox, rng)
    if damage:
        raw = bytearray(h5.read_bytes())
        for offset, size in damage:
            for j in range(offset, offset + size, max(1, size // 8)):
                raw[j] ^= 0xFF
        h5.write_bytes(bytes(raw))
    target = sandbox / "store.zarr"
    before = tree_snapshot(sandbox)
    try:
        parts = import_hdf5(h5, target)
    except StoreError as e:
        event(f"refused: {type(e).__name__}")
        assert "\n" not in str(e) and str(h5) in str(e), str(e)
        assert not target.exists()
    else:
        event("imported")
        assert storage.verify(target) == []
        assert len(storage.open_dataset(target)) == sum(p.frames for p in parts)
    after = tree_snapshot(sandbox, skip=target)
    assert {k: v for k, v in after.items() if k != target.name} == before
    shutil.rmtree(sandbox)
