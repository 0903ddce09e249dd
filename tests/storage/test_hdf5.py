"""HDF5 interchange: export a store, import it back, compare everything."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import zarr

import storage
from storage.hdf5 import export_hdf5, import_hdf5
from tests.helpers.stores import PARTS, read_manifest, write_store


def _arrays(group: zarr.Group) -> dict[str, np.ndarray]:
    return {name: np.asarray(arr[...]) for name, arr in group.arrays()} | {
        f"{kind}/{name}": np.asarray(arr[...]) for kind in ("qc", "meta") for name, arr in group[kind].arrays()
    }


@pytest.mark.slow  # >= 2.5 s on an idle 2-core machine
@pytest.mark.parametrize("compression", ["gzip", "lzf"])
def test_roundtrip_is_lossless(tmp_path, compression):
    src = tmp_path / "src.zarr"
    write_store(src)
    h5 = tmp_path / "out.h5"
    exported = export_hdf5(src, h5, compression=compression)
    assert [p.part_id for p in exported] == sorted(pid for pid, *_ in PARTS)
    dst = tmp_path / "dst.zarr"
    import_hdf5(h5, dst)

    a, b = zarr.open_group(src, mode="r"), zarr.open_group(dst, mode="r")
    assert a.attrs.asdict() == b.attrs.asdict()
    ma = read_manifest(src)["parts"]
    mb = read_manifest(dst)["parts"]
    assert ma.keys() == mb.keys()
    for pid in ma:
        pa, pb = a[ma[pid]["path"]], b[mb[pid]["path"]]
        assert pa.attrs.asdict() == pb.attrs.asdict()
        xa, xb = _arrays(pa), _arrays(pb)
        assert xa.keys() == xb.keys() and len(xa) == 6 + 7 + 10
        for name in xa:
            assert xa[name].dtype == xb[name].dtype, name
            np.testing.assert_array_equal(xa[name], xb[name], err_msg=f"{pid}/{name}")
            assert pa[name].metadata.dimension_names == pb[name].metadata.dimension_names
        # same data, same attributes, same codecs: the part's files are byte-identical
        assert {k: v for k, v in ma[pid].items() if k != "path"} == {k: v for k, v in mb[pid].items() if k != "path"}
    assert storage.verify(dst) == []
    ra, rb = storage.open_dataset(src), storage.open_dataset(dst)
    for name, col in ra.meta.items():
        np.testing.assert_array_equal(col, rb.meta[name])


def test_hdf5_file_layout(tmp_path):
    src = tmp_path / "src.zarr"
    written = write_store(src)
    h5 = tmp_path / "out.h5"
    export_hdf5(src, h5)
    with h5py.File(h5, "r") as f:
        assert json.loads(f.attrs["config"]) == storage.open_dataset(src).config
        assert f.attrs["schema_version"] == storage.SCHEMA_VERSION
        part = f["parts/vid-a"]
        assert part.attrs["frames"] == written["vid-a"].frames
        assert json.loads(part.attrs["extra"]) == {"source": "vid-a.mp4"}
        image = part["image"]
        assert image.chunks == (1, *image.shape[1:]) and image.compression == "gzip"
        assert json.loads(image.attrs["dimension_names"]) == ["frame", "y", "x", "channel"]
        np.testing.assert_array_equal(image[...], written["vid-a"].image)
        label = part["meta/device"]
        assert h5py.check_string_dtype(label.dtype).encoding == "utf-8" and label.asstr()[0] == "phone-ü"
        assert part["meta/frame_index"].dtype == np.int64 and part["qc/qc_flags"].dtype == np.uint8


def test_export_one_split(tmp_path):
    src = tmp_path / "src.zarr"
    written = write_store(src)
    h5 = tmp_path / "train.h5"
    exported = export_hdf5(src, h5, split="train")
    want = {pid: np.flatnonzero(np.asarray(d.meta["split"]) == "train") for pid, d in written.items()}
    want = {pid: rows for pid, rows in want.items() if rows.size}
    assert {p.part_id: p.frames for p in exported} == {pid: len(rows) for pid, rows in want.items()}
    dst = tmp_path / "train.zarr"
    import_hdf5(h5, dst)
    r = storage.open_dataset(dst)
    assert set(r.meta["split"]) == {"train"} and len(r) == sum(len(v) for v in want.values())
    images = r.read_batch(np.arange(len(r)), fields=("image",))["image"]
    expected = np.concatenate([written[pid].image[want[pid]] for pid in sorted(want)])
    np.testing.assert_array_equal(images, expected)
