"""import-hdf5 on hostile files: refused before any data is read, nothing written, one-line CLI errors.

Every file is a real export of the standard test store (tests.helpers.stores) edited with h5py
the way an attacker would; the import must raise the project's typed error naming the file
and the object, leave no store (nor a staging folder) behind and touch nothing around it.
"""

from __future__ import annotations

import shutil
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest

import storage
from pipeline.cli import main
from storage.errors import HDF5ImportError, IntegrityError, StoreError, UnsafeHDF5
from storage.hdf5 import export_hdf5, import_hdf5
from tests.helpers.hdf5_files import replace_dataset, replace_link, valid_export
from tests.helpers.sandbox import tree_snapshot
from tests.helpers.stores import write_store

SECRET = b"root:x:0:0:SECRET-MARKER:/root:/bin/bash\n"


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return valid_export(tmp_path_factory.mktemp("base"))


def _edited(tmp_path: Path, base: Path, edit) -> Path:
    h5 = tmp_path / "in.h5"
    shutil.copyfile(base, h5)
    with h5py.File(h5, "r+") as f:
        edit(f)
    return h5


def _refused(tmp_path: Path, h5: Path, error: type, where: str, **kwargs) -> str:
    """Import must raise ``error`` naming the file and ``where``, and change nothing in tmp_path."""
    target = tmp_path / "out" / "store.zarr"
    before = tree_snapshot(tmp_path)
    with pytest.raises(error) as info:
        import_hdf5(h5, target, **kwargs)
    msg = str(info.value)
    assert str(h5) in msg and where in msg, msg
    assert "\n" not in msg
    assert not target.exists()
    assert tree_snapshot(tmp_path) == before  # no staging sibling, no created parent left
    return msg


def _secret_file(tmp_path: Path, size: int) -> Path:
    secret = tmp_path / "passwd"
    secret.write_bytes((SECRET * (size // len(SECRET) + 1))[:size])
    return secret


def _no_secret_anywhere(tmp_path: Path, secret: Path) -> None:
    for p in tmp_path.rglob("*"):
        if p.is_file() and p != secret and p.suffix != ".h5":
            assert b"SECRET-MARKER" not in p.read_bytes(), p


def test_external_storage_image_refused(tmp_path, base):
    shape = (5, 64, 64, 3)
    secret = _secret_file(tmp_path, int(np.prod(shape)))
    h5 = _edited(tmp_path, base, lambda f: replace_dataset(
        f, "parts/vid-a/image", shape=shape, dtype=np.uint8, external=[(str(secret), 0, secret.stat().st_size)]))
    msg = _refused(tmp_path, h5, UnsafeHDF5, "/parts/vid-a/image")
    assert "external" in msg
    _no_secret_anywhere(tmp_path, secret)


def test_external_storage_string_column_refused(tmp_path, base):
    secret = _secret_file(tmp_path, 5 * 16)
    h5 = _edited(tmp_path, base, lambda f: replace_dataset(
        f, "parts/vid-a/meta/subject", shape=(5,), dtype="S16", external=[(str(secret), 0, 80)]))
    _refused(tmp_path, h5, UnsafeHDF5, "/parts/vid-a/meta/subject")
    _no_secret_anywhere(tmp_path, secret)


def test_external_link_refused(tmp_path, base):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as g:
        g.create_dataset("label", data=np.array(["live"] * 5, dtype=object), dtype=h5py.string_dtype())
    h5 = _edited(tmp_path, base, lambda f: replace_link(f, "parts/vid-a/meta/label",
                                                       h5py.ExternalLink(str(other), "/label")))
    assert "ExternalLink" in _refused(tmp_path, h5, UnsafeHDF5, "/parts/vid-a/meta/label")


@pytest.mark.parametrize("target", ["/nowhere", "/parts/vid-c/meta/label"])
def test_soft_links_refused(tmp_path, base, target):
    """A dangling soft link and one to another part's column: the exporter writes no links."""
    h5 = _edited(tmp_path, base, lambda f: replace_link(f, "parts/vid-a/meta/label", h5py.SoftLink(target)))
    assert "SoftLink" in _refused(tmp_path, h5, UnsafeHDF5, "/parts/vid-a/meta/label")


def test_virtual_dataset_refused(tmp_path, base):
    other = tmp_path / "frames.h5"
    with h5py.File(other, "w") as g:
        g.create_dataset("image", data=np.full((5, 64, 64, 3), 7, np.uint8))

    def edit(f):
        layout = h5py.VirtualLayout(shape=(5, 64, 64, 3), dtype=np.uint8)
        layout[...] = h5py.VirtualSource(str(other), "image", shape=(5, 64, 64, 3))
        del f["parts/vid-a/image"]
        f["parts/vid-a"].create_virtual_dataset("image", layout)

    assert "virtual" in _refused(tmp_path, _edited(tmp_path, base, edit), UnsafeHDF5, "/parts/vid-a/image")


def _huge(f, frames, size):
    replace_dataset(f, "parts/vid-a/image", shape=(frames, size, size, 3), dtype=np.uint8,
                    chunks=(1, size, size, 3), compression="gzip")
    f["parts/vid-a"].attrs["frames"] = frames


@pytest.mark.parametrize("frames,size,problem", [(25_000, 64, "chunks written"), (2, 5000, "S <= 4096")])
def test_small_file_declaring_huge_shape_refused_in_bounded_memory(tmp_path, base, frames, size, problem):
    h5 = _edited(tmp_path, base, lambda f: _huge(f, frames, size))
    assert h5.stat().st_size < 1 << 20 and frames * size * size * 3 > 140 << 20  # ~1 MB declaring > 140 MB
    tracemalloc.start()
    try:
        msg = _refused(tmp_path, h5, HDF5ImportError, "/parts/vid-a/image")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert problem in msg
    assert peak < 16 << 20, f"peak {peak / 2**20:.0f} MiB"


def test_declared_size_over_limit_refused(tmp_path, base):
    msg = _refused(tmp_path, base, HDF5ImportError, "/parts/", max_bytes=100_000)
    assert "max_bytes" in msg


@pytest.mark.parametrize("path,dtype", [
    ("parts/vid-a/qc/blur", np.dtype([("a", "f4"), ("b", "i4")])),            # compound
    ("parts/vid-a/meta/frame_index", h5py.vlen_dtype(np.int64)),               # vlen int
    ("parts/vid-a/meta/frame_index", h5py.enum_dtype({"a": 0, "b": 1}, basetype="i8")),
    ("parts/vid-a/meta/label", np.dtype(np.int64)),                           # non-string label
    ("parts/vid-a/landmarks", h5py.ref_dtype),                                 # references
])
def test_dtypes_outside_the_schema_refused(tmp_path, base, path, dtype):
    shape = (5, 68, 2) if path.endswith("landmarks") else (5,)
    h5 = _edited(tmp_path, base, lambda f: replace_dataset(f, path, shape=shape, dtype=dtype))
    assert "dtype" in _refused(tmp_path, h5, UnsafeHDF5, "/" + path)


def test_non_utf8_label_refused(tmp_path, base):
    def edit(f):
        ds = replace_dataset(f, "parts/vid-c/meta/label", shape=(4,), dtype=h5py.string_dtype("utf-8"))
        ds[...] = np.array([b"live", b"\xff\xfeli", b"live", b"live"], dtype=object)

    _refused(tmp_path, _edited(tmp_path, base, edit), HDF5ImportError, "/parts/vid-c/meta/label")


@pytest.mark.parametrize("edit,where", [
    (lambda f: f.create_dataset("payload", data=np.arange(4)), "/payload"),
    (lambda f: f.create_group("parts/vid-a/extra_group"), "/parts/vid-a"),
    (lambda f: f["parts/vid-a/meta"].create_group("nested"), "/parts/vid-a/meta/nested"),
    (lambda f: f["parts"].create_group("../evil"), "/parts"),
])
def test_unknown_objects_refused(tmp_path, base, edit, where):
    _refused(tmp_path, _edited(tmp_path, base, edit), HDF5ImportError, where)


def test_frames_inconsistent_within_a_part_refused(tmp_path, base):
    h5 = _edited(tmp_path, base, lambda f: replace_dataset(f, "parts/vid-a/bbox", data=np.zeros((4, 4), np.float32)))
    assert "shape" in _refused(tmp_path, h5, HDF5ImportError, "/parts/vid-a/bbox")


def test_damaged_chunk_of_last_part_leaves_no_store(tmp_path, base):
    """The first parts import fine, the last one's image chunk does not inflate: no store at all."""
    h5 = tmp_path / "in.h5"
    shutil.copyfile(base, h5)
    with h5py.File(h5, "r") as f:
        assert list(f["parts"]) == ["vid-a", "vid-b", "vid-c"]
        chunk = f["parts/vid-c/image"].id.get_chunk_info(2)
    raw = bytearray(h5.read_bytes())
    for i in range(chunk.byte_offset + 8, chunk.byte_offset + chunk.size - 8, 7):
        raw[i] ^= 0x5A
    h5.write_bytes(bytes(raw))
    msg = _refused(tmp_path, h5, HDF5ImportError, "/parts/vid-c/image")
    assert "frames 0..3" in msg


def test_target_with_a_store_is_refused_and_kept(tmp_path, base):
    target = tmp_path / "store.zarr"
    write_store(target, parts=[("keep-me", 3, "live", ("train",), "obama.jpg")])
    before = tree_snapshot(tmp_path)
    with pytest.raises(StoreError, match="not an empty folder"):
        import_hdf5(base, target)
    assert tree_snapshot(tmp_path) == before


@pytest.mark.slow  # >= 2.5 s on an idle 2-core machine
def test_import_into_empty_folder_and_missing_parents(tmp_path, base):
    empty = tmp_path / "empty.zarr"
    empty.mkdir()
    assert len(import_hdf5(base, empty)) == 3 and storage.verify(empty) == []
    nested = tmp_path / "a" / "b" / "store.zarr"
    import_hdf5(base, nested)
    assert storage.verify(nested) == [] and sorted(p.name for p in nested.parent.iterdir()) == ["store.zarr"]


def test_cli_hdf5_errors_are_one_line(tmp_path, base, capfd):
    secret = _secret_file(tmp_path, 5 * 64 * 64 * 3)
    h5 = _edited(tmp_path, base, lambda f: replace_dataset(
        f, "parts/vid-a/image", shape=(5, 64, 64, 3), dtype=np.uint8, external=[(str(secret), 0, 5 * 64 * 64 * 3)]))
    cases = [
        ["import-hdf5", str(h5), str(tmp_path / "s.zarr")],
        ["import-hdf5", str(secret), str(tmp_path / "s.zarr")],          # not an HDF5 file
        ["import-hdf5", str(tmp_path / "missing.h5"), str(tmp_path / "s.zarr")],
        ["import-hdf5", str(base), str(tmp_path / "s.zarr"), "--max-gib", "0.00001"],
        ["export-hdf5", str(tmp_path / "no-store"), str(tmp_path / "x.h5")],
        ["export-hdf5", str(tmp_path / "src.zarr"), str(tmp_path / "no" / "dir" / "x.h5")],
    ]
    write_store(tmp_path / "src.zarr")
    capfd.readouterr()
    for argv in cases:
        assert main(argv) == 2, argv
        err = capfd.readouterr().err.strip().splitlines()
        err = [ln for ln in err if "depthseg-fas" in ln or "Traceback" in ln]
        assert len(err) == 1 and err[0].startswith(f"depthseg-fas {argv[0]}:"), (argv, err)
    assert not (tmp_path / "s.zarr").exists() and not (tmp_path / "no").exists()


def test_failed_export_leaves_no_file(tmp_path):
    store = tmp_path / "s.zarr"
    write_store(store)
    out = tmp_path / "out.h5"
    out.mkdir()  # the rename onto it fails after the whole file is written
    with pytest.raises(StoreError, match="out.h5"):
        export_hdf5(store, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5", "s.zarr"] and not any(out.iterdir())


def test_export_failing_midway_leaves_no_file(tmp_path):
    """The last part's image array is gone: the export fails after writing two parts, no file stays."""
    store = tmp_path / "s.zarr"
    write_store(store)
    shutil.rmtree(store / "parts" / "vid-c" / "image")
    out = tmp_path / "out.h5"
    with pytest.raises(IntegrityError, match="vid-c.*image"):
        export_hdf5(store, out)
    assert not list(tmp_path.glob("out.h5*"))


_DAMAGE_DETECTED = storage.SCHEMA_VERSION >= 2  # the store branch's crc32c + missing-chunk checks


@pytest.mark.skipif(not _DAMAGE_DETECTED, reason="needs the store's damage detection (issue 11 item 5, "
                                                 "schema version 2); runs once that branch is merged")
@pytest.mark.parametrize("damage", ["delete-shard", "flip-byte"])
def test_export_does_not_launder_damage(tmp_path, damage):
    store = tmp_path / "s.zarr"
    write_store(store)
    shard = sorted((store / "parts" / "vid-b" / "image").rglob("c/*/*/*/*"))[0]
    if damage == "delete-shard":
        shard.unlink()
    else:
        raw = bytearray(shard.read_bytes())
        raw[len(raw) // 2] ^= 0x01
        shard.write_bytes(bytes(raw))
    out = tmp_path / "out.h5"
    with pytest.raises(IntegrityError, match="vid-b"):
        export_hdf5(store, out)
    assert not out.exists() and not list(tmp_path.glob("out.h5*"))
