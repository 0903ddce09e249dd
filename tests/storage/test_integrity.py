"""Issue 11, store core: lost manifests, hostile manifest paths and types, damaged chunks,
parts replaced under open readers, schema-1 stores. Every store here is written by the real
writer (tests.helpers.stores) or is the real schema-1 store the old writer wrote."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import warnings

import numpy as np
import pytest
import zarr

import storage
from pipeline import cli
from storage.layout import Location
from tests.helpers.old_store import SCHEMA2_PARTS, extract_schema1_store, extract_schema2_store
from tests.helpers.sandbox import tree_snapshot
from tests.helpers.stores import CONFIG, make_part, manifest_file, read_manifest, write_manifest, write_store


def _manifest(path):
    return read_manifest(path)


def _set_manifest(path, manifest):
    write_manifest(path, manifest)


def _chunk(path, part_id, *rel):
    return path / _manifest(path)["parts"][part_id]["path"] / os.path.join(*rel)


def _flip(file, at=None):
    raw = bytearray(file.read_bytes())
    raw[len(raw) // 3 if at is None else at] ^= 0x01
    file.write_bytes(bytes(raw))


def _outside_staging(path):
    """The store's tree but ``staging/`` (where a writer takes its commit lock, even to refuse)."""
    return {k: v for k, v in tree_snapshot(path).items() if not k.startswith(("staging", ".staging"))}


def _one_line_error(capsys, argv, *needles):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


# -- item 2: a lost manifest is refused, never cleaned; inspect --repair rebuilds it ----------


def test_missing_manifest_refused_and_nothing_removed(tmp_path, capsys):
    path = tmp_path / "s.zarr"
    write_store(path)
    manifest_file(path).unlink()
    before = tree_snapshot(path)
    with pytest.raises(storage.StoreError, match="--repair") as exc:  # main: cleaned every part
        storage.DatasetWriter.open(path, CONFIG)
    assert exc.type.__name__ == "RepairNeeded"
    with pytest.raises(storage.StoreError, match=r"manifest \(manifest/zarr.json\) is missing") as exc:
        storage.open_dataset(path)
    assert exc.type.__name__ == "RepairNeeded"
    _one_line_error(capsys, ["inspect", str(path)], "--repair")
    assert tree_snapshot(path) == before  # every committed part still there


def test_repair_rebuilds_verifies_and_quarantines(tmp_path, capsys):
    path = tmp_path / "s.zarr"
    written = write_store(path)
    w = storage.DatasetWriter.open(path, CONFIG)
    replacement = make_part(3, seed=9, video_id="vid-a")
    new = w.write_part("vid-a", replacement, input_checksum="changed", replace=True)  # parts/vid-a is superseded
    expected = _manifest(path)["parts"]
    _flip(_chunk(path, "vid-b", "image", "c", "0", "0", "0", "0"))
    manifest_file(path).write_text("{broken")
    assert cli.main(["inspect", str(path), "--repair"]) == 2  # a damaged part was left out
    out, err = capsys.readouterr()
    assert "rebuilt with 2 part(s), 1 superseded" in out and "vid-b" in err and "checksum mismatch" in err
    manifest = _manifest(path)
    assert sorted(manifest["parts"]) == ["vid-a", "vid-c"]
    for pid in ("vid-a", "vid-c"):  # the rebuilt entries are the committed ones
        assert manifest["parts"][pid] == expected[pid]
    assert manifest["quarantined"] == ["parts/vid-b"]
    assert [s["path"] for s in manifest["superseded"]] == ["parts/vid-a"]
    assert new.path == manifest["parts"]["vid-a"]["path"]
    r = storage.open_dataset(path)
    np.testing.assert_array_equal(r.filter(video_id="vid-a").read_batch(range(3))["image"], replacement.image)
    np.testing.assert_array_equal(r.filter(video_id="vid-c").read_batch(range(4))["depth"], written["vid-c"].depth)
    assert storage.verify(path) == []
    storage.DatasetWriter.open(path, CONFIG)  # the damaged folder is kept, not cleaned as an orphan
    assert (path / "parts" / "vid-b" / "commit" / "zarr.json").is_file()


# -- item 3 + item 8: manifest paths and field types are validated; deletes stay inside ---------


@pytest.mark.parametrize("bad", ["../outside", "/tmp/x", "parts/vid-c", "parts/vid-a/../../outside",
                                 "parts/vid-a/image", "parts/vid-a~../x", ".staging/vid-a", "staging/vid-a.0"])
def test_hostile_manifest_path_refused_everywhere(tmp_path, capsys, bad):
    path = tmp_path / "s.zarr"
    write_store(path)
    outside = tmp_path / "outside"
    shutil.copytree(path / "parts" / "vid-a", outside)  # a valid-looking part outside the store
    manifest = _manifest(path)
    manifest["parts"]["vid-a"]["path"] = bad
    _set_manifest(path, manifest)
    before = tree_snapshot(tmp_path)
    with pytest.raises(storage.IntegrityError, match="vid-a.*'path'"):
        storage.open_dataset(path)
    assert any("vid-a" in p and "path" in p for p in storage.verify(path))
    with pytest.raises(storage.IntegrityError, match="vid-a"):
        w = storage.DatasetWriter.open(path, CONFIG)
        w.write_part("vid-a", make_part(2, seed=3), input_checksum="new", replace=True)  # main: rmtree(bad)
    _one_line_error(capsys, ["inspect", str(path)], "vid-a")
    assert tree_snapshot(tmp_path) == before


def test_symlinked_part_folder_is_not_followed(tmp_path):
    path = tmp_path / "s.zarr"
    write_store(path)
    outside = tmp_path / "outside"
    shutil.move(path / "parts" / "vid-a", outside)
    os.symlink(outside, path / "parts" / "vid-a")
    before = tree_snapshot(tmp_path)
    with pytest.raises(storage.IntegrityError, match="link or leads outside"):
        storage.open_dataset(path)
    assert any("part vid-a" in p and "outside" in p for p in storage.verify(path))
    with pytest.raises(storage.IntegrityError, match="outside"):
        storage.DatasetWriter.open(path, CONFIG).write_part("vid-a", make_part(2, seed=3), input_checksum="n", replace=True)
    assert tree_snapshot(tmp_path) == before
    from storage.layout import safe_remove  # here: on the code of main the module has none

    loc = Location.parse(path)
    for rel in ("../outside", "parts/..", "parts/vid-a", "parts/a/b", "zarr.json", "manifest", "staging/zarr.json",
                "staging/c"):  # the last two: the housekeeping array itself
        with pytest.raises(storage.IntegrityError):
            safe_remove(loc, rel)
    assert tree_snapshot(tmp_path) == before


@pytest.mark.parametrize("field, value", [("frames", "many"), ("frames", -1), ("frames", True), ("extra", [1]),
                                          ("versions", "x"), ("input_checksum", 5), ("columns", {"qc": "abc"}),
                                          (None, ["not", "an", "object"])])
def test_manifest_entry_of_wrong_type(tmp_path, capsys, field, value):
    path = tmp_path / "s.zarr"
    write_store(path)
    manifest = _manifest(path)
    if field is None:
        manifest["parts"]["vid-c"] = value
    else:
        manifest["parts"]["vid-c"][field] = value
    _set_manifest(path, manifest)
    before = tree_snapshot(path)
    needle = "vid-c" if field is None else f"'{field}'"
    with pytest.raises(storage.IntegrityError, match="part vid-c"):
        storage.open_dataset(path)
    with pytest.raises(storage.IntegrityError, match=needle):
        storage.DatasetWriter.open(path, CONFIG)
    _one_line_error(capsys, ["inspect", str(path)], "vid-c", needle)
    assert tree_snapshot(path) == before


# -- item 5: every chunk written, crc32c everywhere, damage detected on every read path ---------


def test_every_chunk_written_with_crc32c_even_all_zero_spoof_depth(tmp_path):
    import zarr

    path = tmp_path / "s.zarr"
    written = write_store(path)
    assert not written["vid-b"].depth.any()  # the spoof part: all-zero depth
    for name in ("depth", "image", "meta/label", "qc/blur", "landmarks"):
        arr = zarr.open_array(_chunk(path, "vid-b", name), mode="r")
        codecs = json.dumps(arr.metadata.to_dict()["codecs"])
        assert '"crc32c"' in codecs and '"zstd"' in codecs, (name, codecs)
    shard = _chunk(path, "vid-b", "depth", "c", "0", "0", "0")
    assert shard.is_file()
    frames = written["vid-b"].frames  # shard index at the end: (offset, nbytes) per chunk + crc32c
    index = np.frombuffer(shard.read_bytes()[-(16 * frames + 4):-4], "<u8").reshape(frames, 2)
    assert (index != np.iinfo(np.uint64).max).all()  # no inner chunk left out


@pytest.mark.parametrize("damage", ["delete-shard", "flip-image-byte", "flip-depth-byte", "delete-column-chunk"])
def test_damage_raises_on_every_read_path(tmp_path, damage):
    path = tmp_path / "s.zarr"
    write_store(path)
    r = storage.open_dataset(path)
    spoof = [i for i, pid in enumerate(r.part_ids) if pid == "vid-b"]
    if damage == "delete-shard":  # the spoof depth shard: zarr would read zeros, the true value
        _chunk(path, "vid-b", "depth", "c", "0", "0", "0").unlink()
    elif damage == "flip-image-byte":
        _flip(_chunk(path, "vid-b", "image", "c", "0", "0", "0", "0"), at=40)
    elif damage == "flip-depth-byte":
        _flip(_chunk(path, "vid-b", "depth", "c", "0", "0", "0"), at=5)  # inside frame 0's chunk
    else:
        _chunk(path, "vid-b", "meta", "label", "c", "0").unlink()
        # readers take the columns from the copy packed in the part's zarr.json at commit
        # (storage.colpack), never fill values; verify still reports the damaged array
        assert set(storage.open_dataset(path).filter(video_id="vid-b").meta["label"]) == {"spoof"}
        assert any(p.startswith("part vid-b") for p in storage.verify(path))
        return
    field = "depth" if "depth" in damage or damage == "delete-shard" else "image"
    with pytest.raises(storage.IntegrityError, match=rf"part vid-b: {field} of frame\(s\) 0"):
        storage.open_dataset(path).read_batch(spoof, fields=(field,))
    with pytest.raises(storage.IntegrityError, match="part vid-b"):
        storage.open_dataset(path)[spoof[0]]
    with pytest.raises(storage.IntegrityError, match="part vid-b"):
        r.read_batch([spoof[0]], fields=(field,))  # arrays opened before the damage too
    problems = storage.verify(path)
    assert len(problems) == 1 and problems[0].startswith("part vid-b")
    others = [i for i, pid in enumerate(r.part_ids) if pid != "vid-b"]
    assert len(storage.open_dataset(path).read_batch(others)["image"]) == len(others)  # the rest reads


# -- item 6: a replaced part's folder outlives its open readers; a vanished one raises -----------


def test_open_reader_keeps_reading_a_replaced_part(tmp_path):
    path = tmp_path / "s.zarr"
    written = write_store(path)
    r = storage.open_dataset(path)
    rows = [i for i, pid in enumerate(r.part_ids) if pid == "vid-a"]
    np.testing.assert_array_equal(r.read_batch(rows[:1])["image"], written["vid-a"].image[:1])  # arrays open
    storage.DatasetWriter.open(path, CONFIG).write_part("vid-a", make_part(2, seed=7), input_checksum="new",
                                                                 replace=True)
    batch = r.read_batch(rows)  # the old version, whole: never zeros
    np.testing.assert_array_equal(batch["image"], written["vid-a"].image)
    np.testing.assert_array_equal(batch["depth"], written["vid-a"].depth)
    shutil.rmtree(path / "parts" / "vid-a")  # the folder vanishes under the reader
    with pytest.raises(storage.IntegrityError, match="part vid-a"):
        r.read_batch(rows)
    with pytest.raises(storage.IntegrityError, match="part vid-a"):
        r[rows[-1]]


# -- item 11: schema 2; schema-1 stores read with a warning and never written --------------------


def test_new_stores_are_schema_3(tmp_path):
    path = tmp_path / "s.zarr"
    write_store(path)
    assert storage.SCHEMA_VERSION == 3
    assert json.loads((path / "zarr.json").read_text())["attributes"]["schema_version"] == 3
    assert _manifest(path)["schema_version"] == 3
    record = zarr.open_group(path / "parts" / "vid-a" / "commit", mode="r").attrs  # a plain zarr group
    assert record["checksum"] == _manifest(path)["parts"]["vid-a"]["checksum"] and record["frames"] == 5


def test_schema1_store_read_with_warning_and_refused_for_writing(tmp_path, caplog, capsys):
    path = extract_schema1_store(tmp_path)
    before = _outside_staging(path)
    with caplog.at_level(logging.WARNING, logger="storage"):
        r = storage.open_dataset(path)
    warned = [m for m in caplog.messages if "before schema 2" in m]
    assert len(warned) == 1 and "damage detection unavailable" in warned[0] and "migrate" in warned[0]
    assert r.schema_version == 1 and len(r) == 5
    spoof = r.filter(label="spoof")
    assert len(spoof) == 3 and not spoof.read_batch(range(3))["depth"].any()  # no chunk, fill value: fine
    with pytest.raises(storage.SchemaTooOld, match="schema 1"):
        storage.DatasetWriter.open(path, CONFIG)
    with pytest.raises(storage.SchemaTooOld, match="export-hdf5"):  # parts without crc32c: not stamped 3
        storage.migrate(path)
    assert storage.verify(path) == []
    h5 = tmp_path / "old.h5"
    assert cli.main(["export-hdf5", str(path), str(h5)]) == 0
    _one_line_error(capsys, ["import-hdf5", str(h5), str(path)], "not an empty folder")  # never into it
    assert _outside_staging(path) == before
    new = tmp_path / "new.zarr"  # the migration the warning names
    assert cli.main(["import-hdf5", str(h5), str(new)]) == 0
    assert storage.open_dataset(new).schema_version == 3 and storage.verify(new) == []
    migrated = storage.open_dataset(new).read_batch(range(5))["image"]
    np.testing.assert_array_equal(migrated, r.read_batch(range(5))["image"])
    assert "source" in storage.open_dataset(new).columns  # schema 2 column, filled on migration


# -- schema 3: manifest and housekeeping are zarr nodes; schema-2 stores read, migrated on demand -----


def _legacy_store(tmp_path):
    """The real schema-2 store main's writer wrote, with a staging folder a crashed writer left."""
    path = extract_schema2_store(tmp_path)
    (path / ".staging" / "old-x.deadbeef").mkdir()
    (path / ".staging" / "old-x.deadbeef" / "zarr.json").write_text("{}")
    return path


def _fixture_frames():
    return {pid: make_part(n, seed=i, label=label, video_id=pid, face=face, splits=splits)
            for i, (pid, n, label, splits, face) in enumerate(SCHEMA2_PARTS)}


def test_schema2_store_read_as_is_and_refused_for_writing(tmp_path, caplog, capsys):
    path = _legacy_store(tmp_path)
    before = tree_snapshot(path)
    with caplog.at_level(logging.WARNING, logger="storage"):
        r = storage.open_dataset(path)
    assert r.schema_version == 2 and len(r) == 5 and not caplog.messages  # damage detection: no warning
    for pid, data in _fixture_frames().items():
        view = r.filter(video_id=pid)
        np.testing.assert_array_equal(view.read_batch(range(len(view)))["image"], data.image)
    assert storage.verify(path) == []
    with pytest.raises(storage.MigrationNeeded, match=f"inspect {path} --migrate"):
        storage.DatasetWriter.open(path, CONFIG)
    assert cli.main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "layout: " in out and "legacy layout of schema 2" in out and f"inspect {path} --migrate" in out
    assert tree_snapshot(path) == before  # refused before any lock: nothing created, nothing cleaned


def test_migrate_schema2_store_in_place(tmp_path, capsys):
    path = _legacy_store(tmp_path)
    old = json.loads((path / "manifest.json").read_text())
    busy = os.open(path / ".staging" / "old-x.deadbeef", os.O_RDONLY)  # a legacy writer at work
    fcntl.flock(busy, fcntl.LOCK_EX)
    before = _outside_staging(path)
    with pytest.raises(storage.StoreLocked, match="old-x.deadbeef"):
        storage.migrate(path)
    assert _outside_staging(path) == before and not (path / "staging").exists()
    os.close(busy)  # that writer died: its folder is moved, then cleaned by the next writer
    assert cli.main(["inspect", str(path), "--migrate"]) == 0
    out = capsys.readouterr().out
    assert "migrate: schema 2 -> 3, 2 part(s)" in out and "layout:" not in out
    assert sorted(os.listdir(path)) == ["manifest", "parts", "staging", "zarr.json"]
    assert (path / "staging" / "old-x.deadbeef").is_dir()
    manifest = _manifest(path)
    assert manifest["parts"] == old["parts"] and manifest["schema_version"] == 3
    assert json.loads((path / "zarr.json").read_text())["attributes"]["schema_version"] == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        root = zarr.open_group(path, mode="r")
        str(root.tree()), dict(root.members(max_depth=None))
        assert dict(root["manifest"].attrs) == manifest
    r = storage.open_dataset(path)
    for pid, data in _fixture_frames().items():
        view = r.filter(video_id=pid)
        np.testing.assert_array_equal(view.read_batch(range(len(view)))["depth"], data.depth)
    w = storage.DatasetWriter.open(path, CONFIG)  # cleans the abandoned folder, then writes
    assert not (path / "staging" / "old-x.deadbeef").exists()
    w.write_part("new", make_part(2, seed=5, video_id="new"), input_checksum="sha-new")
    assert storage.verify(path) == [] and len(storage.open_dataset(path)) == 7
    assert storage.migrate(path)["moved"] == []  # schema 3: nothing to do


def test_migration_stopped_half_way_is_refused_then_finished(tmp_path, monkeypatch):
    path = _legacy_store(tmp_path)
    old = json.loads((path / "manifest.json").read_text())

    def stop(loc):
        raise OSError("power cut")

    monkeypatch.setattr(storage.inspect, "_move_legacy_staging", stop)
    with pytest.raises(OSError, match="power cut"):
        storage.migrate(path)
    monkeypatch.undo()
    assert not (path / "manifest.json").exists() and (path / ".staging").is_dir()  # schema 3 + a leftover
    assert storage.open_dataset(path).schema_version == 3
    with pytest.raises(storage.MigrationNeeded, match=r"\.staging"):
        storage.DatasetWriter.open(path, CONFIG)
    assert storage.inspect.layout_note(path) is not None
    assert storage.migrate(path)["moved"] == ["old-x.deadbeef"]
    assert storage.inspect.layout_note(path) is None and _manifest(path)["parts"] == old["parts"]
    storage.DatasetWriter.open(path, CONFIG)
