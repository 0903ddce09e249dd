"""Part ids: different inputs never silently share a part (issue 11, item 1), every frame names its file.

Real stores written by the CLI from the real face photos in ../shared: two different files with the
same name (one run each) and two different folders of loose images used to end up as one part, the
second run replacing the first without a word.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import storage
from pipeline.cli import main as cli
from pipeline.io.items import WorkItem
from pipeline.run.unit import part_id_for
from tests.conftest import FACES
from tests.helpers.stores import read_manifest

SIZE = 64


def preprocess(src: Path, store: Path, *extra: str) -> tuple[int, dict]:
    rc = cli(["preprocess", "--input", str(src), "--output", str(store), "--size", str(SIZE), *extra])
    return rc, json.loads(Path(f"{store}.report.json").read_text())


def frames_by_part(store: Path) -> dict[str, dict]:
    """Part id -> its images, ``meta/source`` and input checksum, read where the manifest points."""
    import zarr

    out: dict[str, dict] = {}
    for pid, entry in read_manifest(store)["parts"].items():
        g = zarr.open_group(str(store / entry["path"]), mode="r")
        out[pid] = {"image": g["image"][:], "source": [str(s) for s in g["meta/source"][:]],
                    "input_checksum": entry["input_checksum"]}
    return out


@pytest.mark.slow  # >= 2.5 s on an idle 2-core machine
def test_same_file_name_in_two_folders_is_a_conflict_unless_replace(tmp_path):
    a, b = tmp_path / "A", tmp_path / "B"
    a.mkdir(), b.mkdir()
    shutil.copy(FACES / "obama.jpg", a / "face.jpg")
    shutil.copy(FACES / "biden.jpg", b / "face.jpg")
    store = tmp_path / "store.zarr"

    rc, rep = preprocess(a / "face.jpg", store)
    assert rc == 0 and rep["counts"]["written"] == 1
    first = frames_by_part(store)
    assert len(first) == 1
    (pid, part), = first.items()
    assert part["source"] == ["face.jpg"]

    # another file under the same relative name: refused, the committed frame is kept
    rc, rep = preprocess(b / "face.jpg", store)
    assert rc == 1
    assert rep["counts"]["failed"] == 1 and rep["counts"]["written"] == 0
    (failure,) = rep["failures"]
    assert failure["reason"] == "part-conflict"
    assert pid in failure["message"] and "--replace" in failure["message"]
    kept = frames_by_part(store)
    assert list(kept) == [pid]
    np.testing.assert_array_equal(kept[pid]["image"], part["image"])
    assert kept[pid]["input_checksum"] == storage.file_checksum(a / "face.jpg")
    assert storage.verify(str(store)) == []

    # the same file again: skipped (stable id), nothing rewritten
    rc, rep = preprocess(a / "face.jpg", store)
    assert rc == 0 and rep["counts"]["skipped"] == 1

    # asked for explicitly: replaced
    rc, rep = preprocess(b / "face.jpg", store, "--replace")
    assert rc == 0 and rep["counts"]["written"] == 1
    replaced = frames_by_part(store)
    assert list(replaced) == [pid]
    assert replaced[pid]["input_checksum"] == storage.file_checksum(b / "face.jpg")
    assert not np.array_equal(replaced[pid]["image"], part["image"])
    assert storage.verify(str(store)) == []


def test_conflict_in_the_pipelined_runner_fails_the_item_only(tmp_path):
    a, b = tmp_path / "A", tmp_path / "B"
    a.mkdir(), b.mkdir()
    shutil.copy(FACES / "obama.jpg", a / "face.jpg")
    shutil.copy(FACES / "biden.jpg", b / "face.jpg")
    store = tmp_path / "store.zarr"
    assert preprocess(a / "face.jpg", store)[0] == 0
    before = frames_by_part(store)
    rc, rep = preprocess(b / "face.jpg", store, "--workers", "1")
    assert rc == 1 and [f["reason"] for f in rep["failures"]] == ["part-conflict"]
    after = frames_by_part(store)
    assert list(after) == list(before)
    np.testing.assert_array_equal(next(iter(after.values()))["image"], next(iter(before.values()))["image"])


@pytest.mark.slow  # >= 2.5 s on an idle 2-core machine
def test_two_image_folders_are_two_parts_and_frames_name_their_files(tmp_path):
    a, b = tmp_path / "A", tmp_path / "B"
    (a / "sub").mkdir(parents=True), b.mkdir()
    shutil.copy(FACES / "obama.jpg", a / "one.jpg")
    shutil.copy(FACES / "obama2.jpg", a / "two.jpg")
    shutil.copy(FACES / "biden.jpg", a / "sub" / "three.jpg")
    shutil.copy(FACES / "biden.jpg", b / "one.jpg")
    store = tmp_path / "store.zarr"

    rc, rep = preprocess(a, store)
    assert rc == 0 and rep["counts"]["written"] == 2  # A's loose images, A/sub's loose images
    rc, rep = preprocess(b, store)
    assert rc == 0 and rep["counts"]["written"] == 1
    parts = frames_by_part(store)
    assert len(parts) == 3, sorted(parts)
    sources = sorted(s for p in parts.values() for s in p["source"])
    # relative to each run's input root; one row per image
    assert sources == ["one.jpg", "one.jpg", "sub/three.jpg", "two.jpg"]
    by_sources = {tuple(p["source"]): p for p in parts.values()}
    assert set(by_sources) == {("one.jpg", "two.jpg"), ("sub/three.jpg",), ("one.jpg",)}
    # the reader exposes the column too
    ds = storage.open_dataset(str(store))
    assert sorted(ds.meta["source"].tolist()) == sources

    # re-runs skip: ids are stable
    rc, rep = preprocess(a, store)
    assert rep["counts"]["skipped"] == 2 and rep["counts"]["written"] == 0
    rc, rep = preprocess(b, store)
    assert rep["counts"]["skipped"] == 1


def test_ids_of_one_root_never_collide_even_when_names_sanitise_alike(tmp_path):
    rels = ["x/face.jpg", "x__face.jpg", "x_face.jpg", "x face.jpg", "x/face.jpg/."]
    ids = [part_id_for(WorkItem(str(tmp_path / r)), tmp_path) for r in rels]
    assert len(set(ids[:4])) == 4  # sanitised alike ("x__face.jpg"), told apart by the hash
    assert ids[4] == ids[0]  # one file, one id (lexically normalised), on every run
