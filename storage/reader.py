"""Reading a dataset store as one sequence of frames (layout: see :mod:`storage.layout`).

``open_dataset(url)`` reads the manifest, the root attributes and every committed part's
per-frame columns (``meta/*``, ``qc/*``, ``fit_residual``; packed in the part's ``zarr.json``,
see :mod:`storage.colpack`); the big arrays are opened on demand.
Frames are ordered by part id (sorted), then by their order inside the part. Only parts the
manifest lists are read, and only from folders proven to lie inside the store
(:func:`storage.layout.part_dir`).

Damage detection (schema >= 2): every chunk read goes through a strict zarr store (a missing
chunk file raises instead of reading as zeros) and every chunk carries a crc32c (a flipped
byte fails to decode); any failure to read a part raises :class:`IntegrityError` naming the
part, the array and the frames. A part folder removed under an open reader raises the same.
Schema-1 stores are read with one warning: they have no crc32c and no chunk for all-zero
arrays, so damage there reads as zeros. Readers are picklable (open zarr handles are dropped and reopened),
so torch DataLoader workers can share one.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import zarr
import zarr.api.asynchronous as zarr_async
from zarr.core.sync import sync as zarr_sync

from .colpack import load as load_packed_columns
from .errors import IntegrityError, StoreError
from .errors import RepairNeeded
from .fastread import FrameReader
from .layout import (
    ARRAYS,
    DAMAGE_DETECTION_SCHEMA,
    META_COLUMNS,
    QC_COLUMNS,
    SCHEMA_VERSION,
    SHARDED,
    Location,
    PartInfo,
    manifest_lost,
    part_dir,
    read_manifest,
    required_columns,
)

log = logging.getLogger(__name__)

#: arrays read on demand (everything else a frame has is a per-frame column held in memory)
BIG_ARRAYS = tuple(name for name in ARRAYS if name != "fit_residual")


def _as_numpy(values: Any) -> np.ndarray:
    """A zarr read result as numpy; strings as fixed-width unicode (``<U``), not StringDType."""
    arr = np.asarray(values)
    if arr.dtype.kind == "T" or arr.dtype == object:
        arr = np.array(arr.tolist(), dtype=str) if arr.size else np.zeros(arr.shape, dtype="<U1")
    return arr


def _empty_columns() -> dict[str, np.ndarray]:
    cols = {name: np.zeros(0, dtype="<U1" if dt.kind == "U" else dt) for name, dt in META_COLUMNS.items()}
    cols.update({name: np.zeros(0, dtype=dt) for name, dt in QC_COLUMNS.items()})
    cols["fit_residual"] = np.zeros(0, dtype=np.float32)
    return cols


def _column_paths(part: PartInfo, schema_version: int) -> dict[str, str]:
    """A part's per-frame columns in reader order (meta, qc, fit_residual): name -> array path."""
    columns = part.columns or required_columns(schema_version)
    paths = {name: f"{kind}/{name}" for kind in ("meta", "qc") for name in columns.get(kind, [])}
    paths["fit_residual"] = "fit_residual"
    return paths


class DatasetReader(Sequence):
    """All committed parts of a store as one sequence of frames, optionally filtered.

    ``r[i]`` is a dict with the frame's arrays (image (S, S, 3) uint8, depth (S, S) uint8,
    landmarks (68, 2), bbox (4,), affine (2, 3) float32) and its per-frame columns as scalars
    (Python ``str`` for strings). ``read_batch`` stacks many frames; ``meta`` holds every
    per-frame column of the view; ``filter``/``select`` return sub-views sharing the store.
    """

    def __init__(self, url: str | os.PathLike, storage_options: dict | None = None):
        self._loc = Location.parse(url, storage_options)
        manifest = read_manifest(self._loc)
        if manifest is None:
            problem = manifest_lost(self._loc)
            if problem:
                raise RepairNeeded(problem)
            raise StoreError(f"{self._loc.url}: no dataset store here (no manifest)")
        attrs = self._root_attrs()
        self.config: dict = attrs.get("config", {})
        self.config_hash: str = attrs.get("config_hash", "")
        self.schema_version: int = attrs["schema_version"]
        self._strict = self.schema_version >= DAMAGE_DETECTION_SCHEMA
        if not self._strict:
            log.warning("%s: store written before schema %d (schema %d): damage detection unavailable "
                        "(a damaged chunk may read as zeros); migrate with: depthseg-fas export-hdf5 %s "
                        "OLD.h5 && depthseg-fas import-hdf5 OLD.h5 NEW_STORE", self._loc.url,
                        DAMAGE_DETECTION_SCHEMA, self.schema_version, self._loc.url)
        self.parts: list[PartInfo] = [PartInfo.from_manifest(pid, e) for pid, e in sorted(manifest["parts"].items())]
        for part in self.parts:
            part_dir(self._loc, part.path)  # proven inside the store: no link leading out
        columns = self._load_columns()
        if columns:
            names = [n for n in columns[0] if all(n in c for c in columns[1:])]
            self._columns = {n: np.concatenate([c[n] for c in columns]) for n in names}
        else:
            self._columns = _empty_columns()
        frames = np.array([p.frames for p in self.parts], dtype=np.int64)
        self._part_of = np.repeat(np.arange(len(self.parts), dtype=np.int64), frames)
        starts = np.concatenate([[0], np.cumsum(frames)[:-1]]).astype(np.int64)
        self._local = np.arange(int(frames.sum()), dtype=np.int64) - starts[self._part_of]
        self._rows = np.arange(int(frames.sum()), dtype=np.int64)  # view -> global frame
        self._arrays: dict[tuple[int, str], Any] = {}
        self._fast = FrameReader(self._loc.root if self._loc.local else None, self._loc.url,
                                 strict=self._strict)

    # -- opening helpers ------------------------------------------------------------------

    def _root_attrs(self) -> dict:
        try:
            attrs = zarr.open_group(self._loc.zarr_store(read_only=True), mode="r").attrs.asdict()
        except FileNotFoundError as e:
            raise StoreError(f"{self._loc.url}: no dataset store here ({e})") from e
        except Exception as e:  # noqa: BLE001 - a damaged zarr.json
            raise IntegrityError(f"{self._loc.url}: root zarr.json is unreadable: {e!r}") from e
        version = attrs.get("schema_version", 0)
        if not isinstance(version, int) or isinstance(version, bool) or version > SCHEMA_VERSION:
            raise StoreError(f"{self._loc.url}: store schema version {version!r} is not one this "
                             f"package reads (<= {SCHEMA_VERSION})")
        return attrs

    def _store(self, part: PartInfo) -> Any:
        return self._loc.zarr_store(*part.path.split("/"), read_only=True, strict=self._strict)

    def _part_group(self, part: PartInfo) -> Any:
        try:
            return zarr.open_group(self._store(part), mode="r")
        except FileNotFoundError as e:
            raise IntegrityError(f"{self.url}: part {part.part_id} is in the manifest but its folder "
                                 f"{part.path} is missing") from e
        except Exception as e:  # noqa: BLE001 - damaged metadata
            raise IntegrityError(f"{self.url}: part {part.part_id}: {part.path} cannot be opened: {e!r}") from e

    def _load_columns(self) -> list[dict[str, np.ndarray]]:
        """Every part's per-frame columns: packed in its ``zarr.json`` (:mod:`storage.colpack`),
        else (parts written before that) read from its arrays concurrently on zarr's event loop."""
        packed = load_packed_columns(self._loc, self.parts, [list(_column_paths(p, self.schema_version)) for p in self.parts])
        limit = asyncio.Semaphore(64)

        async def read(store: Any, path: str) -> np.ndarray:
            async with limit:
                arr = await zarr_async.open_array(store=store, path=path, mode="r")
                return _as_numpy(await arr.getitem(...))

        async def part_columns(part: PartInfo) -> dict[str, np.ndarray]:
            store = self._store(part)
            paths = _column_paths(part, self.schema_version)
            values = await asyncio.gather(*(read(store, p) for p in paths.values()), return_exceptions=True)
            failed = [v for v in values if isinstance(v, BaseException)]
            if failed:
                raise IntegrityError(f"{self.url}: part {part.part_id} is in the manifest but its "
                                     f"columns in {part.path} cannot be read: {failed[0]!r}") from failed[0]
            cols = dict(zip(paths, values))
            bad = {n: len(c) for n, c in cols.items() if len(c) != part.frames}
            if bad:
                raise IntegrityError(f"{self.url}: part {part.part_id}: columns {bad} do not match the "
                                     f"manifest's {part.frames} frames")
            return cols

        async def everything() -> list[Any]:
            # return_exceptions: let every read finish before raising, no task left pending
            slow = [p for p, cols in zip(self.parts, packed) if cols is None]
            return list(await asyncio.gather(*(part_columns(p) for p in slow), return_exceptions=True))

        results = iter(zarr_sync(everything()) if any(cols is None for cols in packed) else [])
        columns = [cols if cols is not None else next(results) for cols in packed]
        for result in columns:
            if isinstance(result, BaseException):
                raise result
        return columns

    def _array(self, part: int, name: str) -> Any:
        key = (part, name)
        if key not in self._arrays:
            info = self.parts[part]
            try:
                self._arrays[key] = self._part_group(info)[name]
            except IntegrityError:
                raise
            except Exception as e:  # noqa: BLE001 - missing or damaged array metadata
                raise IntegrityError(f"{self.url}: part {info.part_id}: array {name} cannot be opened: "
                                     f"{e!r}") from e
        return self._arrays[key]

    def read_part(self, part: int, name: str, sel: slice | np.ndarray) -> np.ndarray:
        """Frames ``sel`` (a slice or sorted indices) of array ``name`` of ``self.parts[part]``.

        The one checked way to read a part's array (``read_batch`` and ``__getitem__`` use it;
        so should any other reader of whole parts, e.g. an export): IntegrityError naming the
        part, the array and the frames when the data cannot be read (missing chunk, crc32c
        mismatch, undecodable bytes) or the part's folder is gone.
        """
        arr = self._array(part, name)
        info = self.parts[part]
        try:
            data = arr[sel] if isinstance(sel, slice) else arr.get_orthogonal_selection((sel,))
            if not self._strict and not self._loc.fs.exists(self._loc.path(*info.path.split("/"))):
                raise FileNotFoundError(f"part folder {info.path} is gone")
        except Exception as e:  # noqa: BLE001 - crc32c mismatch, missing chunk, decode error, ...
            frames = list(range(sel.start, sel.stop)) if isinstance(sel, slice) else [int(i) for i in sel]
            shown = ", ".join(map(str, frames[:8])) + (", ..." if len(frames) > 8 else "")
            raise IntegrityError(f"{self.url}: part {info.part_id}: {name} of frame(s) {shown} cannot be "
                                 f"read (damaged or missing data in {info.path}): {e}") from e
        return data

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_arrays"] = {}
        return state

    # -- views ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self._loc.url

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def columns(self) -> list[str]:
        """Names of the per-frame columns (meta, qc, fit_residual)."""
        return list(self._columns)

    @property
    def meta(self) -> dict[str, np.ndarray]:
        """Every per-frame column (meta + qc + fit_residual) over this view, as numpy arrays."""
        return {name: col[self._rows] for name, col in self._columns.items()}

    @property
    def part_ids(self) -> np.ndarray:
        """Part id of each frame of the view (unicode array)."""
        ids = np.array([p.part_id for p in self.parts] or [""], dtype=str)
        return ids[self._part_of[self._rows]]

    def _view(self, rows: np.ndarray) -> DatasetReader:
        out = copy.copy(self)
        out._rows = rows
        return out

    def _positions(self, indices: Iterable[int] | np.ndarray) -> np.ndarray:
        idx = np.asarray(indices if not isinstance(indices, (int, np.integer)) else [indices])
        if idx.size == 0:
            return np.zeros(0, dtype=np.int64)
        if idx.dtype.kind not in "iu":
            raise TypeError(f"indices must be integers, got {idx.dtype}")
        idx = idx.astype(np.int64).ravel()
        n = len(self)
        if idx.min() < -n or idx.max() >= n:
            raise IndexError(f"{self.url}: index out of range for {n} frames")
        return np.where(idx < 0, idx + n, idx)

    def select(self, indices: Iterable[int] | np.ndarray) -> DatasetReader:
        """A view of the given frames (indices into this view, in the order given)."""
        return self._view(self._rows[self._positions(indices)])

    def filter(self, **criteria: Any) -> DatasetReader:
        """A view of the frames whose columns match every criterion.

        Each value is a scalar (equality) or a collection (membership), e.g.
        ``filter(split="train", label=("live", "spoof"))``.
        """
        keep = np.ones(len(self), dtype=bool)
        for name, want in criteria.items():
            if name not in self._columns:
                raise KeyError(f"{self.url}: no column {name!r}; columns: {', '.join(self._columns)}")
            col = self._columns[name][self._rows]
            if (isinstance(want, (str, bytes)) or not isinstance(want, Iterable)
                    or (isinstance(want, np.ndarray) and want.ndim == 0)):
                keep &= col == want
            else:
                keep &= np.isin(col, np.asarray(list(want)))
        return self._view(self._rows[keep])

    # -- reading --------------------------------------------------------------------------

    def read_batch(self, indices: Iterable[int] | np.ndarray,
                   fields: Sequence[str] = ("image", "depth")) -> dict[str, np.ndarray]:
        """Stack the given frames' fields in the order given (indices into this view).

        ``image``/``depth`` of a local store are read frame by frame from the shard files
        (:mod:`storage.fastread`); other big arrays part by part, each with one sorted orthogonal
        selection (duplicates read once), then put back in the requested order. Fields may also
        name columns.
        """
        pos = self._positions(indices)
        rows = self._rows[pos]
        out: dict[str, np.ndarray] = {}
        big = []
        for name in fields:
            if name in self._columns:
                out[name] = self._columns[name][rows]
            elif name in BIG_ARRAYS:
                big.append(name)
            else:
                raise KeyError(f"{self.url}: no field {name!r}; arrays: {', '.join(BIG_ARRAYS)}; "
                               f"columns: {', '.join(self._columns)}")
        if not big:
            return out
        parts, local = self._part_of[rows], self._local[rows]
        for name in [n for n in big if n in SHARDED]:
            data = self._fast.read(self.parts, parts, local, name)
            if data is not None:
                out[name] = data
                big.remove(name)
        order = np.argsort(parts, kind="stable")
        bounds = np.flatnonzero(np.diff(parts[order])) + 1
        for group in np.split(order, bounds) if len(order) else []:
            p = int(parts[group[0]])
            uniq, inverse = np.unique(local[group], return_inverse=True)
            if uniq[-1] - uniq[0] + 1 == len(uniq):
                sel: Any = slice(int(uniq[0]), int(uniq[-1]) + 1)
            else:
                sel = uniq
            for name in big:
                arr = self._array(p, name)
                data = self.read_part(p, name, sel)
                if name not in out:
                    out[name] = np.empty((len(rows), *arr.shape[1:]), dtype=arr.dtype)
                out[name][group] = data[inverse]
        for name in big:  # no rows asked: empty, with the frame shape when there is a part
            if name not in out:
                shape = self._array(0, name).shape[1:] if self.parts else ()
                out[name] = np.zeros((0, *shape), dtype=ARRAYS[name][0])
        return {name: out[name] for name in fields}

    def read_into(self, indices: Iterable[int] | np.ndarray, name: str, out: np.ndarray) -> np.ndarray:
        """Read array ``name`` of the given frames into ``out`` (``(len, *frame)``, e.g. a batch
        in shared memory) and return it; decoded in place, without a copy, where
        :mod:`storage.fastread` reads the array."""
        rows = self._rows[self._positions(indices)]
        if name not in SHARDED or self._fast.read(self.parts, self._part_of[rows], self._local[rows], name, out) is None:
            out[...] = self.read_batch(indices, fields=(name,))[name]
        return out

    def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"index must be an int (use select() for many), got {type(index).__name__}")
        batch = self.read_batch([index], fields=(*BIG_ARRAYS, *self._columns))
        return {name: (v[0].item() if v.ndim == 1 else v[0]) for name, v in batch.items()}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"DatasetReader({self.url!r}, parts={len(self.parts)}, frames={len(self)})"


def open_dataset(url: str | os.PathLike, storage_options: dict | None = None) -> DatasetReader:
    """Open the committed parts of the store at ``url`` (local path or fsspec URL) for reading."""
    return DatasetReader(url, storage_options)
