"""Store integrity checks (verify), summaries, and plain zarr access to a store."""

from __future__ import annotations

import os
import shutil
import warnings

import numpy as np
import pytest
import zarr

import storage
from tests.conftest import FACES
from tests.helpers.stores import CONFIG, PARTS, manifest_file, read_manifest, write_store


def test_verify_detects_a_flipped_byte(tmp_path):
    path = tmp_path / "s.zarr"
    write_store(path)
    assert storage.verify(path) == []
    manifest = read_manifest(path)
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
    manifest_file(path).write_text("{not json")
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


@pytest.mark.slow  # a real preprocess run (face detector and model load): ~45 s on the loaded 2-core machine
def test_plain_zarr_and_xarray_are_silent_on_a_cli_store(tmp_path):
    """zarr 3 warns about every entry of a group that is not a zarr node (dot-files too): the
    manifest and the housekeeping folder are zarr nodes, so listing the root, iterating every
    member and xarray on a part raise nothing with warnings as errors (main: manifest.json and
    .staging/ warned on every root listing). The manifest reads as the attributes of ``manifest``."""
    xr = pytest.importorskip("xarray")
    cli = pytest.importorskip("pipeline.cli")
    src, path = tmp_path / "in", tmp_path / "s.zarr"
    src.mkdir()
    shutil.copy(FACES / "obama.jpg", src / "obama.jpg")
    assert cli.main(["preprocess", "--input", str(src), "--output", str(path), "--size", "64"]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        root = zarr.open_group(path, mode="r")
        tree = str(root.tree())
        members = dict(root.members(max_depth=None))
        manifest = dict(root["manifest"].attrs)
        (entry,) = manifest["parts"].values()
        ds = xr.open_zarr(path, group=entry["path"], consolidated=False)
        xr.open_zarr(path, consolidated=False)
    assert manifest == storage.layout.read_manifest(storage.layout.Location.parse(path))
    assert f"{entry['path']}/image" in members and "staging" in tree
    assert ds["image"].dims == ("frame", "y", "x", "channel") and ds.sizes["frame"] == entry["frames"]
    np.testing.assert_array_equal(ds["image"].values, storage.open_dataset(path).read_batch([0])["image"])


def test_inspect_command_exit_code(tmp_path, capsys):
    cli = pytest.importorskip("pipeline.cli")
    path = tmp_path / "s.zarr"
    write_store(path)
    assert cli.main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"parts:          {len(PARTS)}" in out and "integrity: all parts match" in out
    manifest = read_manifest(path)
    shard = path / manifest["parts"]["vid-a"]["path"] / "depth" / "c" / "0" / "0" / "0"
    raw = bytearray(shard.read_bytes())
    raw[-20] ^= 0xFF
    shard.write_bytes(bytes(raw))
    assert cli.main(["inspect", str(path)]) != 0
    err = capsys.readouterr().err
    assert "part vid-a" in err and "checksum mismatch" in err and "vid-b" not in err
