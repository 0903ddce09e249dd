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

Export reads through :class:`storage.reader.DatasetReader` (its column and ``read_batch`` paths),
so damage the reader detects stops the export instead of being copied into the file, and it
writes ``<out>.tmp-<token>`` renamed into place at the end: a failed export leaves no file.

Import treats the file as hostile. Before reading any data it walks the whole file and refuses
(:class:`~storage.errors.UnsafeHDF5`) anything the exporter never writes and that would make the
import read outside the file, without bounds, or fill values instead of data: soft and external
links, external raw storage, virtual datasets, committed datatypes, object/vlen/compound/enum/
reference/array dtypes, filters other than deflate/shuffle/fletcher32/lzf (an unknown filter id
makes HDF5 load a plugin), datasets whose chunks are not all written, chunks over
``MAX_CHUNK_BYTES``, unknown groups or datasets. Every shape and dtype is checked against the
schema (:data:`~storage.layout.ARRAYS`, ``QC_COLUMNS``, ``META_COLUMNS``; one N per part,
S <= ``MAX_SIZE``) and the declared total against ``max_bytes``
(:class:`~storage.errors.HDF5ImportError`). Data is then read in blocks of at most
``READ_BYTES`` of image+depth into :class:`~storage.writer.PartBuilder` s, so memory stays bounded
whatever the file declares. An import is all-or-nothing: it writes a new store under a hidden
sibling ``.<name>.import-<token>`` renamed onto the target at the end, and removes it (and any
parent folder it created) on any failure, Ctrl-C included. The target must not exist or be an
empty folder: merging into a store with parts could replace them silently.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np
import zarr
from h5py import h5d, h5z

from .errors import HDF5ImportError, IntegrityError, StoreError, UnsafeHDF5
from .layout import (
    ARRAYS,
    FRAMES_PER_SHARD,
    META_COLUMNS,
    QC_COLUMNS,
    SCHEMA_VERSION,
    SHARDED,
    STR,
    Location,
    PartData,
    PartInfo,
    check_part_id,
    config_hash,
    fsync_dir,
    required_columns,
    token,
)
from .reader import BIG_ARRAYS, open_dataset
from .writer import DatasetWriter

log = logging.getLogger(__name__)

FORMAT = "depthseg-fas-hdf5"
_STR = h5py.string_dtype("utf-8")

#: largest crop size S an import accepts
MAX_SIZE = 4096
#: default limit on the uncompressed size an HDF5 file declares (``max_bytes`` of import_hdf5)
DEFAULT_MAX_BYTES = 64 << 30
#: largest HDF5 chunk (uncompressed) an import accepts: one chunk is decompressed whole
MAX_CHUNK_BYTES = 64 << 20
#: image+depth bytes read per block, import and export
READ_BYTES = 32 << 20
#: longest string (characters) of a column value or attribute
MAX_TEXT = 1 << 20
#: HDF5 filters the exporter writes (deflate, shuffle, fletcher32, lzf); any other is refused
_FILTERS = {h5z.FILTER_DEFLATE, h5z.FILTER_SHUFFLE, h5z.FILTER_FLETCHER32, 32000}
_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ROOT_ATTRS = ("format", "schema_version", "config", "config_hash", "created", "package", "split")


# ---------------------------------------------------------------------------------------------
# export


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


def _put(dst: h5py.Dataset, start: int, values: np.ndarray) -> None:
    dst[start:start + len(values)] = values.astype(object) if values.dtype.kind == "U" else values


def _export_part(reader: Any, p: int, group: Any, columns: dict[str, np.ndarray], start: int,
                 rows: np.ndarray, dst: h5py.Group, compression: str) -> None:
    """Write frames ``rows`` (local) of part ``p`` (zarr group ``group``) into ``dst``, big arrays
    in bounded blocks."""
    info = reader.parts[p]
    missing = [name for name in BIG_ARRAYS if name not in group]
    if missing:
        raise IntegrityError(f"{reader.url}: part {info.part_id}: arrays {', '.join(missing)} are missing "
                             f"from {info.path}")
    shapes = {name: group[name].shape[1:] for name in BIG_ARRAYS}
    out = {name: _create_dataset(dst, name, (len(rows), *shapes.get(name, ())), dtype, dims,
                                 name in SHARDED, compression) for name, (dtype, dims) in ARRAYS.items()}
    frame_bytes = 4 * max(1, math.prod(shapes["depth"]))
    block = max(1, min(FRAMES_PER_SHARD, READ_BYTES // frame_bytes))
    for a in range(0, len(rows), block):
        batch = reader.read_batch(start + rows[a:a + block], fields=BIG_ARRAYS)
        for name in BIG_ARRAYS:
            _put(out[name], a, batch[name])
    _put(out["fit_residual"], 0, columns["fit_residual"][rows])
    kinds = info.columns or required_columns(reader.schema_version)
    for kind in ("qc", "meta"):
        sub = dst.create_group(kind)
        for name in sorted(kinds.get(kind, [])):
            values = columns[name][rows]
            dtype = STR if values.dtype.kind not in "biuf" else values.dtype
            _put(_create_dataset(sub, name, (len(rows),), dtype, ("frame",), False, compression), 0, values)


def _write_export(f: h5py.File, reader: Any, root_attrs: dict, split: str | None,
                  compression: str) -> list[PartInfo]:
    f.attrs["format"] = FORMAT
    f.attrs["schema_version"] = int(root_attrs["schema_version"])
    f.attrs["config"] = json.dumps(root_attrs["config"])
    for key in ("config_hash", "created", "package"):
        f.attrs[key] = str(root_attrs[key])
    f.attrs["split"] = split or ""
    parts = f.create_group("parts")
    exported = []
    columns = reader._load_columns()  # the reader's column path: damage raises there
    start = 0
    for p, info in enumerate(reader.parts):
        rows = np.arange(info.frames)
        if split is not None:
            rows = np.flatnonzero(columns[p]["split"] == split)
        if split is None or rows.size:
            dst = parts.create_group(info.part_id)
            group = reader._part_group(info)
            attrs = group.attrs.asdict()
            for key in ("part_id", "input_checksum", "config_hash", "created"):
                dst.attrs[key] = str(attrs[key])
            dst.attrs["frames"] = int(rows.size)
            dst.attrs["versions"] = json.dumps(attrs["versions"])
            dst.attrs["extra"] = json.dumps(attrs["extra"])
            _export_part(reader, p, group, columns[p], start, rows, dst, compression)
            exported.append(PartInfo(**{**info.__dict__, "frames": int(rows.size)}))
        start += info.frames
    return exported


def export_hdf5(store_url: str | os.PathLike, out_h5: str | os.PathLike, split: str | None = None, *,
                compression: str = "gzip", storage_options: dict | None = None) -> list[PartInfo]:
    """Write the store's committed parts (only frames of ``split`` if given) to ``out_h5``.

    Parts with no frame in ``split`` are left out. Returns the exported parts' records (frames
    as exported). ``compression`` is ``"gzip"`` (portable) or ``"lzf"`` (faster, h5py only).
    Frames are read through the store reader, so a damaged part raises its error (naming the
    part) and no output file is left behind; an unwritable output raises :class:`StoreError`.
    """
    if compression not in ("gzip", "lzf"):
        raise ValueError(f"compression must be 'gzip' or 'lzf', got {compression!r}")
    reader = open_dataset(store_url, storage_options)
    loc = Location.parse(store_url, storage_options)
    root_attrs = zarr.open_group(loc.zarr_store(read_only=True), mode="r").attrs.asdict()
    out_h5 = os.fspath(out_h5)
    tmp = f"{out_h5}.tmp-{token()}"
    try:
        try:
            f = h5py.File(tmp, "w")
        except OSError as e:
            raise StoreError(f"{out_h5}: cannot write the HDF5 file: {e}") from e
        with f:
            exported = _write_export(f, reader, root_attrs, split, compression)
        os.replace(tmp, out_h5)
    except OSError as e:
        raise StoreError(f"{out_h5}: writing the HDF5 export of {reader.url} failed: {e}") from e
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    log.info("exported %d part(s) of %s to %s", len(exported), reader.url, out_h5)
    return exported


# ---------------------------------------------------------------------------------------------
# import: validation (no data read)


@dataclass
class _Part:
    """A part of the file, validated: where its datasets are and what they hold."""

    part_id: str
    frames: int
    size: int
    attrs: dict[str, Any]
    #: dataset path inside the part group -> dtype to read it as (``STR`` for strings)
    datasets: dict[str, np.dtype] = field(default_factory=dict)


class _Checker:
    """Walks an HDF5 file without reading data; every refusal names the file and the object."""

    def __init__(self, path: str, max_bytes: int):
        self.path = path
        self.max_bytes = max_bytes
        self.declared = 0
        self.schema_version = SCHEMA_VERSION  # the file's, once root() has read it

    def unsafe(self, where: str, problem: str) -> UnsafeHDF5:
        return UnsafeHDF5(f"{self.path}: {where}: {problem}; refusing to import")

    def bad(self, where: str, problem: str) -> HDF5ImportError:
        return HDF5ImportError(f"{self.path}: {where}: {problem}")

    def members(self, group: h5py.Group, where: str) -> dict[str, type]:
        """Name -> h5py.Group / h5py.Dataset of a group's links; only hard links are allowed."""
        out = {}
        for name in group:
            link = group.get(name, getlink=True)
            at = f"{where.rstrip('/')}/{name}"
            if not isinstance(link, h5py.HardLink):
                raise self.unsafe(at, f"is a {type(link).__name__} (links are never exported)")
            kind = group.get(name, getclass=True)
            if kind not in (h5py.Group, h5py.Dataset):
                raise self.unsafe(at, f"is a {getattr(kind, '__name__', kind)}, not a group or dataset")
            out[name] = kind
        return out

    def attr(self, obj: Any, name: str, where: str, kind: str = "str") -> Any:
        """A scalar attribute: ``kind`` "str" (UTF-8 text) or "int"."""
        if name not in obj.attrs:
            raise self.bad(where, f"attribute {name!r} is missing")
        aid = obj.attrs.get_id(name)
        dt = aid.dtype
        if aid.shape not in ((), None) and aid.shape != (1,):
            raise self.bad(where, f"attribute {name!r} has shape {aid.shape}, expected a scalar")
        if kind == "int":
            if dt.kind not in "iu" or dt.metadata:
                raise self.unsafe(where, f"attribute {name!r} has dtype {dt}, expected an integer")
            return int(np.asarray(obj.attrs[name]).reshape(()))
        if h5py.check_string_dtype(dt) is None:
            raise self.unsafe(where, f"attribute {name!r} has dtype {dt}, expected a string")
        value = np.asarray(obj.attrs[name]).reshape(()).item()
        try:
            value = value.decode("utf-8") if isinstance(value, bytes) else value
        except UnicodeDecodeError as e:
            raise self.bad(where, f"attribute {name!r} is not UTF-8 ({e})") from None
        if not isinstance(value, str) or len(value) > MAX_TEXT:
            raise self.bad(where, f"attribute {name!r} is not a string of at most {MAX_TEXT} characters")
        return value

    def json_attr(self, obj: Any, name: str, where: str, kind: type) -> Any:
        try:
            value = json.loads(self.attr(obj, name, where))
        except ValueError as e:
            raise self.bad(where, f"attribute {name!r} is not JSON ({e})") from None
        if not isinstance(value, kind):
            raise self.bad(where, f"attribute {name!r} is not a JSON {kind.__name__}")
        return value

    def dataset(self, ds: h5py.Dataset, where: str, want: np.dtype | None, shape: tuple[int, ...]) -> np.dtype:
        """Check one dataset's storage, dtype (``want``; None: any number or string) and shape."""
        if ds.is_virtual:
            raise self.unsafe(where, "is a virtual dataset (it reads other files)")
        dcpl = ds.id.get_create_plist()
        if dcpl.get_external_count() > 0:
            raise self.unsafe(where, "has external raw storage (its data lives in another file)")
        dtype = self.dtype(ds.dtype, where, want)
        if ds.shape != shape:
            raise self.bad(where, f"has shape {ds.shape}, expected {shape}")
        filters = [dcpl.get_filter(i)[0] for i in range(dcpl.get_nfilters())]
        if any(fid not in _FILTERS for fid in filters):
            raise self.unsafe(where, f"uses HDF5 filter(s) {filters}; only deflate, shuffle, fletcher32 "
                                     "and lzf are accepted")
        self.storage(ds, dcpl.get_layout(), where)
        self.declared += math.prod(shape) * ds.id.get_type().get_size()
        if self.declared > self.max_bytes:
            raise self.bad(where, f"the file declares more than {self.max_bytes} bytes of data "
                                  "(max_bytes); refusing to import")
        return dtype

    def dtype(self, dt: np.dtype, where: str, want: np.dtype | None) -> np.dtype:
        if want == STR or (want is None and h5py.check_string_dtype(dt) is not None):
            if h5py.check_string_dtype(dt) is None:
                raise self.unsafe(where, f"has dtype {dt}, expected strings")
            return STR
        plain = dt.kind in "biuf" and dt.fields is None and dt.subdtype is None and not dt.metadata
        if not plain:
            raise self.unsafe(where, f"has dtype {dt} ({'enum/vlen/reference' if dt.metadata else dt.kind}); "
                                     "only plain numbers and strings are accepted")
        native = dt.newbyteorder("=")
        if want is not None and native != want:
            raise self.bad(where, f"has dtype {dt}, expected {want}")
        return native

    def storage(self, ds: h5py.Dataset, layout: int, where: str) -> None:
        """Refuse chunks over MAX_CHUNK_BYTES and storage not fully written (it reads as fill)."""
        n = math.prod(ds.shape)
        if layout == h5d.CHUNKED:
            chunks = ds.chunks
            if math.prod(chunks) * ds.id.get_type().get_size() > MAX_CHUNK_BYTES:
                raise self.bad(where, f"has chunks of {chunks}, over {MAX_CHUNK_BYTES} bytes each")
            expected = math.prod(math.ceil(s / c) for s, c in zip(ds.shape, chunks)) if n else 0
            if ds.id.get_num_chunks() != expected:
                raise self.bad(where, f"has {ds.id.get_num_chunks()} of its {expected} chunks written "
                                      "(the rest would read as fill values)")
        elif layout == h5d.CONTIGUOUS:
            if n and ds.id.get_storage_size() == 0:
                raise self.bad(where, "has no data written (it would read as fill values)")
        elif layout != h5d.COMPACT:
            raise self.unsafe(where, f"has storage layout {layout}")

    def root(self, f: h5py.File) -> dict[str, Any]:
        """The root attributes (config checked against its hash) and the part groups' names."""
        fmt = self.attr(f, "format", "/") if "format" in f.attrs else None
        if fmt != FORMAT:
            raise self.bad("/", f"not a {FORMAT} file (format attribute {fmt!r})")
        out: dict[str, Any] = {"schema_version": self.attr(f, "schema_version", "/", "int")}
        self.schema_version = out["schema_version"]
        if not 1 <= out["schema_version"] <= SCHEMA_VERSION:
            raise self.bad("/", f"schema version {out['schema_version']} is not one this package reads "
                                f"(1..{SCHEMA_VERSION})")
        for key in ("config_hash", "created", "package", "split"):
            out[key] = self.attr(f, key, "/")
        out["config"] = self.json_attr(f, "config", "/", dict)
        if config_hash(out["config"]) != out["config_hash"]:
            raise self.bad("/", f"config does not match its config_hash {out['config_hash']!r}")
        self.expect(self.members(f, "/"), {"parts": h5py.Group}, "")
        return out

    def expect(self, members: dict[str, type], want: dict[str, type], where: str) -> None:
        """Refuse a group whose members are not exactly ``want`` (name -> Group/Dataset)."""
        for name in sorted(set(members) | set(want)):
            if name not in want:
                raise self.unsafe(f"{where}/{name}", "unknown object (the exporter never writes it)")
            if members.get(name) is not want[name]:
                raise self.bad(f"{where}/{name}", f"missing or not a {want[name].__name__}")

    def part(self, group: h5py.Group, name: str, cfg_hash: str) -> _Part:
        where = f"/parts/{name}"
        try:
            check_part_id(name)
        except ValueError as e:
            raise self.bad(where, str(e)) from None
        attrs = {key: self.attr(group, key, where) for key in ("part_id", "input_checksum", "config_hash", "created")}
        if attrs["part_id"] != name or attrs["config_hash"] != cfg_hash:
            raise self.bad(where, f"attributes part_id {attrs['part_id']!r} / config_hash "
                                  f"{attrs['config_hash']!r} do not match the group name / the file's config")
        attrs["versions"] = self.json_attr(group, "versions", where, dict)
        attrs["extra"] = self.json_attr(group, "extra", where, dict)
        n = self.attr(group, "frames", where, "int")
        want = {**{a: h5py.Dataset for a in ARRAYS}, "qc": h5py.Group, "meta": h5py.Group}
        self.expect(self.members(group, where), want, where)
        image = group["image"]
        size = image.shape[1] if image.ndim == 4 else -1
        if not 1 <= size <= MAX_SIZE:
            raise self.bad(f"{where}/image", f"has shape {image.shape}; expected (N, S, S, 3), 1 <= S <= {MAX_SIZE}")
        shapes = {"image": (n, size, size, 3), "depth": (n, size, size), "landmarks": (n, 68, 2),
                  "bbox": (n, 4), "affine": (n, 2, 3), "fit_residual": (n,)}
        part = _Part(name, n, size, attrs)
        for key, (dtype, _) in ARRAYS.items():
            part.datasets[key] = self.dataset(group[key], f"{where}/{key}", dtype, shapes[key])
        have = required_columns(self.schema_version)  # a schema-1 export has no meta/source
        for kind, all_required in (("qc", QC_COLUMNS), ("meta", META_COLUMNS)):
            required = {k: v for k, v in all_required.items() if k in have[kind]}
            sub = group[kind]
            cols = self.members(sub, f"{where}/{kind}")
            missing = sorted(set(required) - set(cols))
            if missing:
                raise self.bad(f"{where}/{kind}", f"required columns missing: {', '.join(missing)}")
            for col, cls in cols.items():
                at = f"{where}/{kind}/{col}"
                if cls is not h5py.Dataset or not _COLUMN.match(col) or col in ARRAYS or col in part.datasets:
                    raise self.unsafe(at, "is not a column dataset with an identifier name used once")
                part.datasets[f"{kind}/{col}"] = self.dataset(sub[col], at, required.get(col), (n,))
        return part


def _plan(f: h5py.File, path: str, max_bytes: int) -> tuple[dict[str, Any], list[_Part]]:
    """Validate the whole file (metadata only); returns its root attributes and its parts."""
    check = _Checker(path, max_bytes)
    root = check.root(f)
    parts_group = f["parts"]
    names = list(check.members(parts_group, "/parts"))
    parts = [check.part(parts_group[name], name, root["config_hash"]) for name in names]
    return root, parts


# ---------------------------------------------------------------------------------------------
# import: data


def _read_rows(ds: h5py.Dataset, dtype: np.dtype, start: int, stop: int) -> np.ndarray:
    if dtype != STR:
        return np.asarray(ds[start:stop]).astype(dtype, copy=False)
    values = ds.asstr(errors="strict")[start:stop].tolist()
    if any(len(v) > MAX_TEXT for v in values):
        raise ValueError(f"a string is longer than {MAX_TEXT} characters")
    return np.array(values, dtype=str) if values else np.zeros(0, dtype="<U1")


def _read_block(group: h5py.Group, part: _Part, start: int, stop: int) -> PartData:
    values = {}
    for key, dtype in part.datasets.items():
        try:
            values[key] = _read_rows(group[key], dtype, start, stop)
        except (OSError, ValueError, UnicodeError) as e:
            raise HDF5ImportError(f"/parts/{part.part_id}/{key}: frames {start}..{stop - 1} cannot be "
                                  f"read: {e}") from e
    cols = {kind: {k.split("/", 1)[1]: v for k, v in values.items() if k.startswith(f"{kind}/")}
            for kind in ("qc", "meta")}
    if "source" not in cols["meta"]:  # migrating a schema-1 export: the part's recorded input
        cols["meta"]["source"] = np.full(stop - start, str(part.attrs["extra"].get("source", "")))
    return PartData(**{k: values[k] for k in ARRAYS}, qc=cols["qc"], meta=cols["meta"])


def _import_part(group: h5py.Group, part: _Part, writer: DatasetWriter) -> PartInfo:
    """Copy one validated part in blocks of at most READ_BYTES of image+depth."""
    meta = dict(input_checksum=part.attrs["input_checksum"], extra=part.attrs["extra"],
                versions=part.attrs["versions"], created=part.attrs["created"])
    if part.frames == 0:
        return writer.write_part(part.part_id, _read_block(group, part, 0, 0), **meta)
    block = max(1, min(64, READ_BYTES // (4 * part.size * part.size)))
    with writer.begin_part(part.part_id, frames=part.frames, **meta) as builder:
        for start in range(0, part.frames, block):
            builder.append(_read_block(group, part, start, min(part.frames, start + block)))
        return builder.commit()


def _refuse_existing(loc: Location) -> None:
    if loc.local:
        root = loc.root
        taken = os.path.lexists(root) and (os.path.islink(root) or not os.path.isdir(root) or os.listdir(root))
    else:
        taken = loc.fs.exists(loc.root) and bool(loc.fs.ls(loc.root))
    if taken:
        raise StoreError(f"{loc.url}: exists and is not an empty folder; import-hdf5 writes a new store")


@contextlib.contextmanager
def _new_store(loc: Location) -> Iterator[str]:
    """Yield where to write the new store; on success it becomes ``loc``, on failure it is gone.

    Local: a hidden sibling renamed onto the target (an empty target folder is replaced); the
    parent folders this creates are removed again on failure. Remote: the target itself,
    removed on failure.
    """
    _refuse_existing(loc)
    if not loc.local:
        try:
            yield loc.url
        except BaseException:
            with contextlib.suppress(Exception):
                loc.fs.rm(loc.root, recursive=True)
            raise
        return
    root = loc.root
    parent, created = os.path.dirname(root), []
    probe = parent
    while not os.path.lexists(probe):
        created.append(probe)
        probe = os.path.dirname(probe)
    os.makedirs(parent, exist_ok=True)
    stage = os.path.join(parent, f".{os.path.basename(root)}.import-{token()}")
    try:
        yield stage
        os.rename(stage, root)  # replaces an empty folder; a non-empty one raises
        fsync_dir(parent)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        for folder in created:  # deepest first; only if still empty
            with contextlib.suppress(OSError):
                os.rmdir(folder)
        raise


def import_hdf5(h5_path: str | os.PathLike, store_url: str | os.PathLike, *,
                storage_options: dict | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> list[PartInfo]:
    """Turn an exported HDF5 file into a new store at ``store_url``, all or nothing.

    The whole file is validated before any data is read (see the module docstring):
    :class:`UnsafeHDF5` for features that could read outside the file, :class:`HDF5ImportError`
    for anything else the file gets wrong, both naming the file and the dataset; ``max_bytes``
    bounds the uncompressed size the file may declare. Part provenance (input checksum,
    versions, created, extra) and the exported store's ``created`` are kept. Raises
    :class:`StoreError` if ``store_url`` exists and is not an empty folder. Returns the parts.
    """
    h5_path = os.fspath(h5_path)
    loc = Location.parse(store_url, storage_options)
    _refuse_existing(loc)
    try:
        f = h5py.File(h5_path, "r")
    except OSError as e:
        raise HDF5ImportError(f"{h5_path}: cannot open as HDF5: {e}") from e
    out = []
    with f:
        root, parts = _plan(f, h5_path, max_bytes)
        with _new_store(loc) as target:
            writer = DatasetWriter.open(target, root["config"], storage_options=storage_options)
            tloc = Location.parse(target, storage_options)
            zarr.open_group(tloc.zarr_store(), mode="r+").attrs.update({"created": root["created"]})
            for part in parts:
                try:
                    out.append(_import_part(f["parts"][part.part_id], part, writer))
                except HDF5ImportError as e:
                    raise HDF5ImportError(f"{h5_path}: {e}") from e
                except ValueError as e:
                    raise HDF5ImportError(f"{h5_path}: /parts/{part.part_id}: {e}") from e
    log.info("imported %d part(s) from %s into %s", len(out), h5_path, loc.url)
    return out
