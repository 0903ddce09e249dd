"""Issue 11, property test (store half; the HDF5 half lives with storage/hdf5.py's tests).

Random manifests (random JSON, fields of the wrong type, hostile paths such as ``../x`` or
absolute paths, symlinks planted in ``parts/``) are fed to the reader, ``verify``/``summary``
(what ``inspect`` runs) and a writer re-run that adds a part, in a sandbox: the store sits in a
parent folder next to sibling files and a valid-looking part folder outside it. Whatever the
manifest says: only the storage package's typed errors (StoreError and subclasses) escape, no
file outside the store is created, changed or removed, and no part the manifest validly
listed before loses a byte.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import storage
from storage.layout import read_manifest, Location
from tests.helpers.sandbox import tree_snapshot
from tests.helpers.stores import CONFIG, make_part, manifest_file, write_store
from tests.helpers.stores import read_manifest as manifest_on_disk

PART_IDS = ["vid-a", "vid-b", "vid-c"]
FIELDS = ["path", "frames", "input_checksum", "config_hash", "checksum", "versions", "extra", "columns"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 10**6) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
#: paths a hostile manifest may hold; OUTSIDE/SIBLING are replaced by the sandbox's real paths
hostile_paths = st.sampled_from([
    "../outside-part", "../../sibling-dir", "OUTSIDE", "SIBLING", "parts/..", "parts/../..",
    "parts/vid-a/../../../sibling-dir", "parts/vid-c", "parts/vid-a~tok", "parts/vid-a/image",
    "parts/link-out", ".staging", "staging", "staging/x.y", "", "parts/vid-a~../../x", "parts/vid-a\x00",
])
mutation = st.one_of(
    st.tuples(st.just("entry-field"), st.sampled_from(PART_IDS), st.sampled_from(FIELDS),
              st.one_of(json_values, hostile_paths)),
    st.tuples(st.just("entry-path"), st.sampled_from(PART_IDS), st.just("path"), hostile_paths),
    st.tuples(st.just("entry"), st.sampled_from(PART_IDS), st.just(""), json_values),
    st.tuples(st.just("new-entry"), st.sampled_from(["vid-z", "../z", "", "a/b", "link-out"]),
              st.just("path"), hostile_paths),
    st.tuples(st.just("top"), st.sampled_from(["parts", "superseded", "quarantined", "schema_version",
                                               "config_hash"]), st.just(""),
              st.one_of(json_values, st.lists(hostile_paths, max_size=2),
                        st.lists(st.fixed_dictionaries({"path": hostile_paths, "since": st.integers(0, 10)}),
                                 max_size=2))),
    st.tuples(st.just("whole"), st.just(""), st.just(""), json_values),
)
links = st.lists(st.tuples(st.sampled_from(["link-out", "vid-a", "vid-z~abc"]),
                           st.sampled_from(["OUTSIDE", "SIBLING", "SIBLING_FILE", "/nonexistent"])),
                 max_size=2, unique_by=lambda t: t[0])


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    path = tmp_path_factory.mktemp("template") / "store.zarr"
    write_store(path)
    return path


def _sandbox(root: Path, template: Path) -> dict[str, Path]:
    parent = root / "parent"
    parent.mkdir()
    store = parent / "store.zarr"
    shutil.copytree(template, store, symlinks=True)
    (parent / "sibling.txt").write_text("do not touch")
    (root / "sibling-dir").mkdir()
    (root / "sibling-dir" / "file.bin").write_bytes(os.urandom(64))
    shutil.copytree(template / "parts" / "vid-a", parent / "outside-part")  # a valid-looking part
    return {"store": store, "OUTSIDE": parent / "outside-part", "SIBLING": root / "sibling-dir",
            "SIBLING_FILE": parent / "sibling.txt"}


def _real(value, where):
    return str(where[value]) if isinstance(value, str) and value in where else value


def _mutate(manifest: dict, kind: str, key: str, fld: str, value, where, valid_entry: dict) -> object:
    value = _real(value, where)
    if isinstance(value, list):
        value = [dict(v, path=_real(v["path"], where)) if isinstance(v, dict) and "path" in v else _real(v, where)
             for v in value]
    if kind == "whole":
        return value
    if kind == "top":
        manifest[key] = value
    elif kind == "entry":
        manifest["parts"][key] = value
    elif kind == "new-entry":
        manifest["parts"][key] = {**valid_entry, fld: value}
    elif isinstance(manifest["parts"].get(key), dict):
        manifest["parts"][key][fld] = value
    return manifest


def _listed_parts(store: Path) -> dict[str, dict]:
    """Part folder -> snapshot, for the parts a valid manifest lists (all of parts/ otherwise)."""
    try:
        manifest = read_manifest(Location.parse(store))
    except storage.StoreError:
        manifest = None
    if manifest is None:
        return {"parts": tree_snapshot(store / "parts")}
    out = {}
    for entry in manifest["parts"].values():
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            continue  # (main's unvalidated manifests)
        folder = store / entry["path"]
        if folder.is_dir() and not folder.is_symlink():
            out[entry["path"]] = tree_snapshot(folder)
    return out


def _run_everything(store: Path) -> None:
    """What users run on a store: reader + reads, inspect (verify, summary), a writer re-run."""
    calls = [
        lambda: storage.open_dataset(store).read_batch(range(len(storage.open_dataset(store))),
                                                        fields=("image", "depth", "label")),
        lambda: storage.verify(store),
        lambda: storage.summary(store),
        lambda: storage.DatasetWriter.open(store, CONFIG).write_part(
            "vid-new", make_part(2, seed=11), input_checksum="new"),
    ]
    for call in calls:
        try:
            call()
        except storage.StoreError:
            pass  # the project's typed errors are the one allowed way to refuse


@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(mutation, min_size=1, max_size=3), planted=links)
def test_random_manifests_stay_inside_the_store(template, mutations, planted):
    with tempfile.TemporaryDirectory(prefix="depthseg-prop-") as tmp:
        where = _sandbox(Path(tmp), template)
        store = where["store"]
        manifest = manifest_on_disk(store)
        valid_entry = dict(manifest["parts"]["vid-c"])
        for kind, key, fld, value in mutations:
            manifest = _mutate(manifest, kind, key, fld, value, where, valid_entry)
            if not isinstance(manifest, dict) or not isinstance(manifest.get("parts"), dict):
                break
        try:
            text = json.dumps({"zarr_format": 3, "node_type": "group", "attributes": manifest})
        except (TypeError, ValueError):
            text = "{not json"
        manifest_file(store).write_text(text)
        for name, target in planted:
            link = store / "parts" / name
            if link.exists() or link.is_symlink():
                shutil.rmtree(link) if link.is_dir() and not link.is_symlink() else link.unlink()
            os.symlink(_real(target, where), link)
        outside = tree_snapshot(tmp, skip=store)
        committed = _listed_parts(store)
        _run_everything(store)
        assert tree_snapshot(tmp, skip=store) == outside
        for folder, snap in committed.items():
            assert (store / folder).is_dir(), f"committed part folder {folder} was removed"
            assert tree_snapshot(store / folder) == snap, f"committed part folder {folder} changed"
