"""HDF5 interchange: export a dataset store to one HDF5 file and import it back.

File layout (mirrors the zarr store, see :mod:`storage.layout`)::

    /                         attrs: format ("depthseg-fas-hdf5"), schema_version, config (JSON
                              string), config_hash, created, package, split ("" = all frames)
    /parts/<part_id>/         attrs: part_id, input_checksum, config_hash, frames, created,
                              versions (JSON string), extra (JSON string)
        image, depth, landmarks, bbox, affine, fit_residual    same shapes/dtypes as the store
        qc/<column>, meta/<column>                             strings: variable-length UTF-8

Every dataset has a ``dimension_names`` attribute (JSON list). Non-empty datasets are chunked
(one frame per chunk for image/depth) and compressed (gzip by default, or lzf). Exporting all
frames and importing them gives a store whose arrays and attributes equal the original's.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import h5py
import numpy as np
import zarr

from .layout import ARRAYS, FRAMES_PER_SHARD, SHARDED, Location, PartData, PartInfo
from .reader import _as_numpy, open_dataset
from .writer import DatasetWriter

log = logging.getLogger(__name__)

FORMAT = "depthseg-fas-hdf5"
_STR = h5py.string_dtype("utf-8")


def _create_dataset(group: h5py.Group, name: str, shape: tuple[int, ...], dtype: np.dtype,
                    dims: tuple[str, ...], sharded: bool, compression: str) -> h5py.Dataset:
    kwargs: dict[str, Any] = {}
    if shape[0] > 0:
        frames = 1 if sharded else min(shape[0], 4096)
        kwargs = {"chunks": (frames, *shape[1:]), "compression": compression}
        if compression == "gzip":
            kwargs["compression_opts"] = 4
    ds = group.create_dataset(name, shape=shape, dtype=_STR if dtype.kind in "UT" else dtype, **kwargs)
    ds.attrs["dimension_names"] = json.dumps(list(dims))
    return ds


def _copy(src: Any, dst: h5py.Dataset, rows: np.ndarray | None) -> None:
    """Copy a zarr array (the given rows, or all) into ``dst`` in blocks of one shard."""
    n = dst.shape[0]
    for start in range(0, n, FRAMES_PER_SHARD):
        stop = min(n, start + FRAMES_PER_SHARD)
        block = src[start:stop] if rows is None else src.get_orthogonal_selection((rows[start:stop],))
        block = _as_numpy(block)
        dst[start:stop] = block.astype(object) if block.dtype.kind == "U" else block


def export_hdf5(store_url: str | os.PathLike, out_h5: str | os.PathLike, split: str | None = None, *,
                compression: str = "gzip", storage_options: dict | None = None) -> list[PartInfo]:
    """Write the store's committed parts (only frames of ``split`` if given) to ``out_h5``.

    Parts with no frame in ``split`` are left out. Returns the exported parts' records (frames
    as exported). ``compression`` is ``"gzip"`` (portable) or ``"lzf"`` (faster, h5py only).
    """
    if compression not in ("gzip", "lzf"):
        raise ValueError(f"compression must be 'gzip' or 'lzf', got {compression!r}")
    reader = open_dataset(store_url, storage_options)
    loc = Location.parse(store_url, storage_options)
    root_attrs = zarr.open_group(loc.zarr_store(read_only=True), mode="r").attrs.asdict()
    exported = []
    with h5py.File(out_h5, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["schema_version"] = int(root_attrs["schema_version"])
        f.attrs["config"] = json.dumps(root_attrs["config"])
        for key in ("config_hash", "created", "package"):
            f.attrs[key] = str(root_attrs[key])
        f.attrs["split"] = split or ""
        parts = f.create_group("parts")
        for info in reader.parts:
            src = reader._part_group(info)
            rows = None
            if split is not None:
                rows = np.flatnonzero(_as_numpy(src["meta/split"][...]) == split)
                if rows.size == 0:
                    continue
            frames = info.frames if rows is None else int(rows.size)
            dst = parts.create_group(info.part_id)
            attrs = src.attrs.asdict()
            for key in ("part_id", "input_checksum", "config_hash", "created"):
                dst.attrs[key] = str(attrs[key])
            dst.attrs["frames"] = frames
            dst.attrs["versions"] = json.dumps(attrs["versions"])
            dst.attrs["extra"] = json.dumps(attrs["extra"])
            for name, (dtype, dims) in ARRAYS.items():
                arr = src[name]
                ds = _create_dataset(dst, name, (frames, *arr.shape[1:]), dtype, dims, name in SHARDED, compression)
                _copy(arr, ds, rows)
            for kind in ("qc", "meta"):
                sub = dst.create_group(kind)
                for name in sorted(src[kind].array_keys()):
                    arr = src[kind][name]
                    dtype = np.dtype(str) if arr.dtype.kind not in "biuf" else np.dtype(arr.dtype)
                    _copy(arr, _create_dataset(sub, name, (frames,), dtype, ("frame",), False, compression), rows)
            exported.append(PartInfo(**{**info.__dict__, "frames": frames}))
    log.info("exported %d part(s) of %s to %s", len(exported), reader.url, out_h5)
    return exported


def _read(ds: h5py.Dataset) -> np.ndarray:
    if h5py.check_string_dtype(ds.dtype) is not None:
        values = ds.asstr()[...]
        return np.array(values.tolist(), dtype=str) if values.size else np.zeros(ds.shape, dtype="<U1")
    return ds[...]


def import_hdf5(h5_path: str | os.PathLike, store_url: str | os.PathLike, *,
                storage_options: dict | None = None) -> list[PartInfo]:
    """Turn an exported HDF5 file into a store (created, or added to if its config matches).

    Part provenance (input checksum, versions, created, extra) is kept; a new store also keeps the
    exported store's ``created``. Returns the committed parts' records.
    """
    out = []
    with h5py.File(h5_path, "r") as f:
        if f.attrs.get("format") != FORMAT:
            raise ValueError(f"{h5_path}: not a {FORMAT} file (format attribute {f.attrs.get('format')!r})")
        writer = DatasetWriter.open(store_url, json.loads(f.attrs["config"]), storage_options=storage_options)
        if not writer.parts:
            loc = Location.parse(store_url, storage_options)
            zarr.open_group(loc.zarr_store(), mode="r+").attrs.update({"created": str(f.attrs["created"])})
        for part_id, group in f["parts"].items():
            data = PartData(
                **{name: _read(group[name]) for name in ARRAYS},
                qc={name: _read(ds) for name, ds in group["qc"].items()},
                meta={name: _read(ds) for name, ds in group["meta"].items()},
            )
            out.append(writer.write_part(
                part_id, data,
                input_checksum=str(group.attrs["input_checksum"]),
                extra=json.loads(group.attrs["extra"]),
                versions=json.loads(group.attrs["versions"]),
                created=str(group.attrs["created"]),
                overwrite=True,
            ))
    log.info("imported %d part(s) from %s into %s", len(out), h5_path, writer.url)
    return out
