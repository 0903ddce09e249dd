"""Store integrity checks (verify), summaries, and plain zarr access to a store."""

from __future__ import annotations

import json
import os
import shutil
import warnings

import numpy as np
import pytest
import zarr

import storage
from tests.helpers.stores import CONFIG, PARTS, write_store


def test_verify_detects_a_flipped_byte(tmp_path):
    path = tmp_path / "s.zarr"
    write_store(path)
    assert storage.verify(path) == []
    manifest = json.loads((path / "manifest.json").read_text())
    shard = path / manifest["parts"]["vid-b"]["path"] / "image" / "c" / "0" / "0" / "0" / "0"
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    shard.write_bytes(bytes(raw))
    problems = storage.verify(path)
    assert len(problems) == 1 and problems[0].startswith("part vid-b:") and "checksum mismatch" in problems[0]
    # a missing part folder is reported by name too
    shutil.rmtree(path / manifest["parts"]["vid-c"]["path"])
    problems = storage.verify(path)
    assert [p.split(":")[0] for p in problems] == ["part vid-b", "part vid-c"] and "missing" in problems[1]
    with pytest.raises(storage.IntegrityError, match="part vid-c"):
        storage.open_dataset(path)
    (path / "manifest.json").write_text("{not json")
    assert "manifest" in storage.verify(path)[0]


def test_summary_counts(tmp_path):
    path = tmp_path / "s.zarr"
    written = write_store(path)
    info = storage.summary(path)
    labels = np.concatenate([np.asarray(d.meta["label"]) for d in written.values()])
    attacks = np.concatenate([np.asarray(d.meta["attack_type"]) for d in written.values()])
    splits = np.concatenate([np.asarray(d.meta["split"]) for d in written.values()])

    def counts(values):
        return {str(v): int(np.sum(values == v)) for v in set(values.tolist())}

    assert info["parts"] == len(PARTS) and info["frames"] == len(labels)
    assert info["frames_by_label"] == counts(labels)
    assert info["frames_by_attack_type"] == counts(attacks)
    assert info["frames_by_split"] == counts(splits)
    on_disk = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
    assert info["bytes"] == on_disk
    assert info["schema_version"] == storage.SCHEMA_VERSION and info["config"] == CONFIG
    assert info["config_hash"] == storage.config_hash(CONFIG)
    text = storage.format_summary(info)
    assert f"parts:          {len(PARTS)}" in text and f"frames: {len(labels)}" in text
    assert f"spoof: {int(np.sum(labels == 'spoof'))}" in text


def test_plain_zarr_tree_and_iteration(tmp_path):
    path = tmp_path / "s.zarr"
    write_store(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        root = zarr.open_group(path, mode="r")
        tree = str(root.tree())
        members = dict(root.members(max_depth=None))
    for pid, *_ in PARTS:
        assert pid in tree and f"parts/{pid}/image" in members
    assert "manifest" not in tree and ".staging" not in tree
    # zarr only notes the two non-zarr entries of the root (manifest, staging), and goes on; a
    # part's own record is a zarr group (commit), so listing a part is quiet
    messages = {str(w.message) for w in caught}
    assert all("is not recognized as a component" in m for m in messages)
    assert all("manifest.json" in m or ".staging" in m for m in messages)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        str(zarr.open_group(path / "parts" / "vid-a", mode="r").tree())
    assert zarr.open_array(path / "parts" / "vid-a" / "image", mode="r").shape[0] == 5
    xarray = pytest.importorskip("xarray")
    with warnings.catch_warnings():  # a part with xarray, as the README shows: quiet, labelled
        warnings.simplefilter("error")
        ds = xarray.open_zarr(path, group="parts/vid-a", consolidated=False)
        assert ds["image"].dims == ("frame", "y", "x", "channel") and ds.sizes["frame"] == 5
        np.testing.assert_array_equal(ds["image"].values, zarr.open_array(path / "parts" / "vid-a" / "image")[...])


def test_inspect_command_exit_code(tmp_path, capsys):
    cli = pytest.importorskip("pipeline.cli")
    path = tmp_path / "s.zarr"
    write_store(path)
    assert cli.main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"parts:          {len(PARTS)}" in out and "integrity: all parts match" in out
    manifest = json.loads((path / "manifest.json").read_text())
    shard = path / manifest["parts"]["vid-a"]["path"] / "depth" / "c" / "0" / "0" / "0"
    raw = bytearray(shard.read_bytes())
    raw[-20] ^= 0xFF
    shard.write_bytes(bytes(raw))
    assert cli.main(["inspect", str(path)]) != 0
    err = capsys.readouterr().err
    assert "part vid-a" in err and "checksum mismatch" in err and "vid-b" not in err
