"""On-disk layout of a depthseg-fas dataset store, and the records shared by writer and reader.

A dataset is one zarr v3 group (a local folder or any fsspec URL)::

    <root>/
      zarr.json              root group; attributes: schema_version, config (the JSON config
                             dict), config_hash, created (ISO-8601 UTC), package ("depthseg-fas")
      manifest/zarr.json     the commit record (schema >= 3): an empty zarr group whose attributes
                             are the manifest (see below), which parts exist. A part folder that
                             the manifest does not list is invisible and gets cleaned (only while
                             the manifest exists: without it nothing is cleaned)
      parts/zarr.json        group holding one subgroup per committed part
      parts/<part_id>/       one work unit (a video, or a batch of images), N frames:
        zarr.json            attributes: part_id, input_checksum, config_hash, frames,
                             versions (package versions), extra (free JSON dict), created
        commit/zarr.json     (schema >= 2) the part's own record, written at commit: an empty
                             zarr group whose attributes are its manifest entry without
                             ``path``, plus part_id, schema_version and ``committed`` (ISO time,
                             microseconds). Lets ``inspect --repair`` rebuild a lost manifest
                             and verify each part; a zarr node, so zarr tools list it quietly.
        image                (N, S, S, 3) uint8 RGB crops     dims frame, y, x, channel
        depth                (N, S, S)    uint8 pseudo-depth  dims frame, y, x (0 background
                             and spoof, 255 nearest; what the values mean is the config's
                             ``label_version``, see pipeline.reconstruct.depth)
        landmarks            (N, 68, 2)   float32 frame px    dims frame, point, xy
        bbox                 (N, 4)       float32 x0,y0,x1,y1 dims frame, coord
        affine               (N, 2, 3)    float32 frame->crop dims frame, row, col
        fit_residual         (N,)         float32 (NaN: no fit, e.g. spoof frames)
        qc/<column>          (N,) det_score, face_size, yaw, pitch, roll, blur float32; qc_flags uint8
        meta/<column>        (N,) video_id, label, attack_type, subject, session, device, split,
                             source (the frame's file, relative to the input root: the video,
                             or the image of an image-folder part) (zarr v3 variable-length
                             UTF-8 strings), frame_index int64, timestamp float64
      staging/               housekeeping (schema >= 3): a zero-size zarr array (dimension
                             ``entry``), so zarr and xarray list it quietly and never look inside;
                             every name in it holds a dot (never the array's ``c/`` or a node):
        commit.lock          flock(2) target serialising manifest updates between processes
        run.lock             run-level lock (JSON: pid, host, owner, time), see locks.run_lock
        <part_id>.<token>/   a part being written (whole, or streamed chunk by chunk); its
                             writer holds flock on the folder
        manifest.<token>.tmp a manifest being written (replaces ``manifest/zarr.json``)
        manifest.<token>.bak the manifest ``inspect --repair`` replaced (``manifest.json.<token>.bak``:
                             a legacy one)

Schema 3 (zarr-tool friendly layout): every entry of the root is a zarr node, so
``zarr.open_group(root).tree()``, ``members(max_depth=None)`` and ``xarray.open_zarr`` on the root
or a part are silent (zarr warns about every file it does not know, dot-files included). Stores
of schema <= 2 have the legacy layout, ``manifest.json`` (the same dict, plain JSON) and
``.staging/`` in the root: they are read as they are, and written only after
``depthseg-fas inspect STORE --migrate`` (:func:`storage.inspect.migrate`). While a legacy
``manifest.json`` exists it is the commit record (a migration that stopped half way leaves both).
Older packages refuse to open a schema-3 store, so they never write a ``manifest.json`` into one.

Schema 2 (damage detection): every chunk carries a ``crc32c`` codec after zstd (the sharding
index has its own) and is written even when all zeros (``write_empty_chunks``), so a missing
chunk file is always damage; readers of schema-2 parts use :class:`StrictLocalStore`, which
raises on a missing chunk. Schema-1 stores (no crc32c, no chunk for an all-zero array, no
``commit`` record) are read with a warning and never written to.

``image`` and ``depth`` have one frame per chunk and up to 512 frames per shard; the other
arrays have unsharded chunks of up to 1024 frames (a part written whole gets ``min(N, 512)``
and ``min(N, 1024)``; a streamed part, whose N is unknown when its arrays are created, 512 and
1024). Every array is zstd-compressed and carries
``dimension_names``. Part ids are folder names: ``[A-Za-z0-9][A-Za-z0-9._-]*``. The folder of a part that replaced an older
version is ``parts/<part_id>~<token>`` (the manifest's ``path`` says which folder is current).

The manifest (attributes of ``manifest/``; ``manifest.json`` in a legacy store)::

    {"schema_version": 3, "config_hash": "...", "updated": "...",
     "parts": {"<part_id>": {"path": "parts/<part_id>", "frames": N, "input_checksum": "...",
                             "config_hash": "...", "checksum": "<sha256 of the part's files>",
                             "versions": {...}, "created": "...", "extra": {...},
                             "columns": {"qc": [...], "meta": [...]}}}}
                             (``columns`` is {} when the part has just the required columns)
     "superseded": [{"path": "parts/<id>", "since": <unix time>}, ...],
     "quarantined": ["parts/<id>~<token>", ...]}

``path`` must be ``parts/<part_id>`` or ``parts/<part_id>~<token>`` and every field has a fixed
type (:func:`check_manifest`); anything else is an IntegrityError. ``superseded``: folders of
replaced parts, removed by a writer opened after a grace period (an open reader keeps reading
them meanwhile). ``quarantined``: damaged folders ``inspect --repair`` left out; never removed
automatically. The part checksum (:func:`part_checksum`) is :func:`file_checksum` of the part
folder without its ``commit/zarr.json`` (which cannot contain its own checksum).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from importlib import metadata as _metadata
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import zarr
from zarr.storage import FsspecStore, LocalStore

from .errors import IntegrityError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3
#: first schema whose parts carry crc32c codecs, every chunk written and a ``commit`` record
DAMAGE_DETECTION_SCHEMA = 2
#: first schema whose manifest and staging folder are zarr nodes (``manifest/``, ``staging/``)
NODE_LAYOUT_SCHEMA = 3
PACKAGE = "depthseg-fas"

#: the manifest group; the manifest is its attributes (``manifest/zarr.json``)
MANIFEST = "manifest"
MANIFEST_META = "manifest/zarr.json"
PARTS = "parts"
#: the housekeeping array (see the module docstring)
STAGING = "staging"
#: the legacy layout (schema <= 2): plain files zarr warns about
LEGACY_MANIFEST = "manifest.json"
LEGACY_STAGING = ".staging"
COMMIT_LOCK = "commit.lock"
RUN_LOCK = "run.lock"
#: a part's own record, inside its folder: the attributes of the zarr group ``commit`` (see the
#: module docstring)
PART_META = "commit/zarr.json"

#: frames per shard of the image/depth arrays (one frame per chunk)
FRAMES_PER_SHARD = 512
#: frames per chunk of the small per-frame arrays (landmarks, columns, ...)
FRAMES_PER_CHUNK = 1024
ZSTD_LEVEL = 3

#: the frame-stacked arrays of a part: name -> (dtype, dimension names)
ARRAYS: dict[str, tuple[np.dtype, tuple[str, ...]]] = {
    "image": (np.dtype(np.uint8), ("frame", "y", "x", "channel")),
    "depth": (np.dtype(np.uint8), ("frame", "y", "x")),
    "landmarks": (np.dtype(np.float32), ("frame", "point", "xy")),
    "bbox": (np.dtype(np.float32), ("frame", "coord")),
    "affine": (np.dtype(np.float32), ("frame", "row", "col")),
    "fit_residual": (np.dtype(np.float32), ("frame",)),
}
#: arrays stored sharded, one frame per chunk
SHARDED = ("image", "depth")
#: required quality-control columns and their dtypes
QC_COLUMNS: dict[str, np.dtype] = {
    **{k: np.dtype(np.float32) for k in ("det_score", "face_size", "yaw", "pitch", "roll", "blur")},
    "qc_flags": np.dtype(np.uint8),
}
STR = np.dtype(str)
#: required metadata columns and their dtypes (``STR``: any-length unicode string)
META_COLUMNS: dict[str, np.dtype] = {
    "video_id": STR,
    "frame_index": np.dtype(np.int64),
    "timestamp": np.dtype(np.float64),
    "label": STR,
    "attack_type": STR,
    "subject": STR,
    "session": STR,
    "device": STR,
    "split": STR,
    "source": STR,
}
#: meta columns a schema-1 part does not have (its manifest ``columns`` {} means the others)
META_SINCE_SCHEMA_2 = ("source",)


def required_columns(schema_version: int) -> dict[str, list[str]]:
    """The qc/meta column names a part of ``schema_version`` has when its manifest entry's
    ``columns`` is ``{}``: ``QC_COLUMNS`` and ``META_COLUMNS`` (schema 1: without ``source``)."""
    meta = [c for c in META_COLUMNS if schema_version >= 2 or c not in META_SINCE_SCHEMA_2]
    return {"qc": list(QC_COLUMNS), "meta": meta}

_PART_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_part_id(part_id: str) -> str:
    """Return ``part_id`` if it can name a folder (``[A-Za-z0-9][A-Za-z0-9._-]*``), else raise."""
    if not isinstance(part_id, str) or not _PART_ID.match(part_id) or len(part_id) > 200:
        raise ValueError(
            f"part id {part_id!r} is not allowed: use letters, digits, '.', '_', '-' "
            "(first character a letter or digit, at most 200 characters)"
        )
    return part_id


def safe_text(value: Any) -> str:
    """``value`` as a string zarr can store: bytes decoded as UTF-8, and the lone surrogates a
    non-UTF-8 file name decodes to (``os.fsdecode``) written as ``\\xNN`` escapes."""
    text = value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:  # surrogates that are not escaped bytes
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _as_column(part_id: str, name: str, values: Any, dtype: np.dtype | None, n: int) -> np.ndarray:
    if not _COLUMN.match(name):
        raise ValueError(f"part {part_id}: column name {name!r} is not an identifier")
    arr = np.asarray(values)
    if dtype is None:  # extra column: keep its dtype, strings as unicode
        dtype = STR if arr.dtype.kind in "UOST" else arr.dtype
        if dtype.kind not in "biufUc":
            raise ValueError(f"part {part_id}: column {name!r} has unsupported dtype {arr.dtype}")
    if dtype == STR:
        text = [safe_text(v) for v in arr.ravel()]
        arr = np.asarray(text, dtype=str).reshape(arr.shape)
        if arr.size == 0:
            arr = np.zeros(arr.shape, dtype="<U1")
    elif arr.dtype.kind in "UOST":
        raise ValueError(f"part {part_id}: column {name!r} must be numeric ({dtype}), got strings")
    else:
        arr = arr.astype(dtype, casting="same_kind") if arr.size else np.zeros(arr.shape, dtype)
    if arr.shape != (n,):
        raise ValueError(f"part {part_id}: column {name!r} must have shape ({n},), got {arr.shape}")
    return arr


@dataclass
class PartData:
    """The arrays of one part (N frames); shapes and dtypes as in the module docstring.

    ``image`` (N, S, S, 3) uint8 RGB crops; ``depth`` (N, S, S) uint8 pseudo-depth (0 background
    or spoof, 255 nearest); ``landmarks`` (N, 68, 2) float32 frame pixels; ``bbox`` (N, 4) float32
    x0, y0, x1, y1 frame pixels; ``affine`` (N, 2, 3) float32 frame -> crop; ``fit_residual``
    (N,) float32 (NaN where there is no fit); ``qc`` and ``meta`` per-frame columns (the
    ``QC_COLUMNS`` and ``META_COLUMNS`` are required; extra identifier-named columns are kept).
    """

    image: np.ndarray
    depth: np.ndarray
    landmarks: np.ndarray
    bbox: np.ndarray
    affine: np.ndarray
    fit_residual: np.ndarray
    qc: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def frames(self) -> int:
        return int(np.shape(self.image)[0])

    @classmethod
    def concat(cls, parts: "list[PartData]") -> "PartData":
        """Frames of several chunks (same columns) as one PartData, in order."""
        def cat(get):
            return np.concatenate([get(p) for p in parts])

        return cls(
            image=cat(lambda p: p.image), depth=cat(lambda p: p.depth), landmarks=cat(lambda p: p.landmarks),
            bbox=cat(lambda p: p.bbox), affine=cat(lambda p: p.affine), fit_residual=cat(lambda p: p.fit_residual),
            qc={k: cat(lambda p, k=k: p.qc[k]) for k in parts[0].qc},
            meta={k: cat(lambda p, k=k: p.meta[k]) for k in parts[0].meta},
        )

    def validated(self, part_id: str) -> PartData:
        """Return a copy with canonical dtypes; raise ValueError naming the part and field."""
        n = self.frames
        image = np.asarray(self.image)
        if image.dtype != np.uint8 or image.ndim != 4 or image.shape[3] != 3 or image.shape[1] != image.shape[2]:
            raise ValueError(f"part {part_id}: image must be (N, S, S, 3) uint8, got {image.shape} {image.dtype}")
        s = image.shape[1]
        expected = {
            "depth": (n, s, s),
            "landmarks": (n, 68, 2),
            "bbox": (n, 4),
            "affine": (n, 2, 3),
            "fit_residual": (n,),
        }
        out: dict[str, Any] = {"image": image}
        for name, shape in expected.items():
            arr = np.asarray(getattr(self, name))
            dtype = ARRAYS[name][0]
            if name == "depth" and arr.dtype != np.uint8:
                raise ValueError(f"part {part_id}: depth must be uint8, got {arr.dtype}")
            if arr.shape != shape:
                raise ValueError(f"part {part_id}: {name} must have shape {shape}, got {arr.shape}")
            out[name] = arr.astype(dtype, casting="same_kind", copy=False)
        for kind, required, given in (("qc", QC_COLUMNS, self.qc), ("meta", META_COLUMNS, self.meta)):
            missing = sorted(set(required) - set(given))
            if missing:
                raise ValueError(f"part {part_id}: {kind} columns missing: {', '.join(missing)}")
            out[kind] = {k: _as_column(part_id, k, v, required.get(k), n) for k, v in given.items()}
        clash = (set(out["qc"]) & set(out["meta"])) | ((set(out["qc"]) | set(out["meta"])) & set(ARRAYS))
        if clash:
            raise ValueError(f"part {part_id}: column names used twice: {', '.join(sorted(clash))}")
        return PartData(**out)


@dataclass
class PartInfo:
    """A committed part as the manifest records it.

    ``checksum`` is the sha256 of the part's files (:func:`file_checksum`); ``path`` the part
    folder relative to the store root (``parts/<part_id>`` or ``parts/<part_id>~<token>``);
    ``columns`` the names of its per-frame columns, ``{"qc": [...], "meta": [...]}``, or ``{}``
    when they are exactly ``QC_COLUMNS`` and ``META_COLUMNS``.
    """

    part_id: str
    frames: int
    input_checksum: str
    config_hash: str
    versions: dict = field(default_factory=dict)
    created: str = ""
    extra: dict = field(default_factory=dict)
    checksum: str = ""
    path: str = ""
    columns: dict = field(default_factory=dict)

    def to_manifest(self) -> dict:
        return {
            "path": self.path,
            "frames": self.frames,
            "input_checksum": self.input_checksum,
            "config_hash": self.config_hash,
            "checksum": self.checksum,
            "versions": self.versions,
            "created": self.created,
            "extra": self.extra,
            "columns": self.columns,
        }

    @classmethod
    def from_manifest(cls, part_id: str, entry: Any) -> PartInfo:
        """The record of a manifest entry; IntegrityError naming the part and field if invalid."""
        e = check_entry(part_id, entry)
        return cls(part_id=part_id, frames=e["frames"], input_checksum=e["input_checksum"],
                   config_hash=e["config_hash"], versions=dict(e["versions"]), created=e["created"],
                   extra=dict(e["extra"]), checksum=e["checksum"], path=e["path"],
                   columns={k: list(v) for k, v in e["columns"].items()})


# ---------------------------------------------------------------------------------------------
# validating what the store's JSON files say (the manifest and part records are untrusted input)

_TOKEN = r"~[A-Za-z0-9]{1,64}"
#: the only folders a manifest may point at: ``parts/<part_id>`` and ``parts/<part_id>~<token>``
_PART_PATH = re.compile(rf"^{PARTS}/([A-Za-z0-9][A-Za-z0-9._-]*?)({_TOKEN})?$")
#: entry field -> (accepted types, default when absent; ``...``: required)
_ENTRY_FIELDS: dict[str, tuple[tuple[type, ...], Any]] = {
    "frames": ((int,), ...),
    "input_checksum": ((str,), ...),
    "config_hash": ((str,), ...),
    "checksum": ((str,), ""),
    "created": ((str,), ""),
    "versions": ((dict,), {}),
    "extra": ((dict,), {}),
    "columns": ((dict,), {}),
}


def check_part_path(path: Any, part_id: str | None = None) -> str:
    """``path`` if it is a part folder the store itself writes (of ``part_id``, if given).

    Anything else (``../x``, absolute paths, other folders, another part's folder) raises
    IntegrityError: a manifest is never trusted to point outside ``parts/``.
    """
    m = _PART_PATH.match(path) if isinstance(path, str) else None
    if m is None or len(path) > 300 or (part_id is not None and m.group(1) != part_id):
        want = f"'{PARTS}/{part_id}' or '{PARTS}/{part_id}~<token>'" if part_id else f"'{PARTS}/<part id>[~<token>]'"
        raise IntegrityError(f"path {path!r} is not a part folder of this store (expected {want})")
    return path


def check_entry(part_id: Any, entry: Any) -> dict:
    """A manifest entry with defaults filled in; IntegrityError naming the part and the field.

    Checks the part id, the path (:func:`check_part_path`), the type of every field (``frames``
    an int >= 0, strings, dicts) and the column names.
    """
    try:
        check_part_id(part_id)
    except ValueError as e:
        raise IntegrityError(f"manifest entry {part_id!r}: {e}") from None
    if not isinstance(entry, dict):
        raise IntegrityError(f"manifest entry of part {part_id}: expected a JSON object, got "
                             f"{type(entry).__name__}")
    out = dict(entry)
    for name, (types, default) in _ENTRY_FIELDS.items():
        if name not in entry:
            if default is ...:
                raise IntegrityError(f"manifest entry of part {part_id}: field {name!r} is missing")
            out[name] = type(default)(default) if isinstance(default, dict) else default
        elif not isinstance(entry[name], types) or isinstance(entry[name], bool):
            raise IntegrityError(f"manifest entry of part {part_id}: field {name!r} must be "
                                 f"{'/'.join(t.__name__ for t in types)}, got {type(entry[name]).__name__} "
                                 f"{str(entry[name])[:40]!r}")
    if out["frames"] < 0:
        raise IntegrityError(f"manifest entry of part {part_id}: field 'frames' is negative ({out['frames']})")
    try:
        out["path"] = check_part_path(entry.get("path", f"{PARTS}/{part_id}"), part_id)
    except IntegrityError as e:
        raise IntegrityError(f"manifest entry of part {part_id}: field 'path': {e}") from None
    for kind, names in out["columns"].items():
        if kind not in ("qc", "meta") or not isinstance(names, list) or not all(
                isinstance(n, str) and _COLUMN.match(n) for n in names):
            raise IntegrityError(f"manifest entry of part {part_id}: field 'columns' must map 'qc'/'meta' "
                                 f"to lists of column names, got {kind!r}: {str(names)[:40]}")
    return out


def _check_path_list(loc_url: str, manifest: dict, key: str) -> None:
    items = manifest.get(key, [])
    if not isinstance(items, list):
        raise IntegrityError(f"{loc_url}: manifest field {key!r} must be a list")
    for item in items:
        path = item.get("path") if isinstance(item, dict) else item
        try:
            check_part_path(path)
        except IntegrityError as e:
            raise IntegrityError(f"{loc_url}: manifest field {key!r}: {e}") from None
        if isinstance(item, dict) and (not isinstance(item.get("since"), (int, float))
                                       or isinstance(item.get("since"), bool)):
            raise IntegrityError(f"{loc_url}: manifest field {key!r}: 'since' of {path} must be a number")


def check_manifest(loc_url: str, manifest: Any) -> dict:
    """Validate a parsed manifest (every entry, ``superseded``, ``quarantined``); return it."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("parts"), dict):
        raise IntegrityError(f"{loc_url}: the manifest is unreadable: no 'parts' mapping")
    version = manifest.get("schema_version", 1)
    if not isinstance(version, int) or isinstance(version, bool):
        raise IntegrityError(f"{loc_url}: manifest field 'schema_version' must be an int, got {version!r}")
    if not isinstance(manifest.get("config_hash", ""), str):
        raise IntegrityError(f"{loc_url}: manifest field 'config_hash' must be a string")
    for part_id, entry in manifest["parts"].items():
        try:
            check_entry(part_id, entry)
        except IntegrityError as e:
            raise IntegrityError(f"{loc_url}: {e}") from None
    _check_path_list(loc_url, manifest, "superseded")
    _check_path_list(loc_url, manifest, "quarantined")
    return manifest


# ---------------------------------------------------------------------------------------------
# JSON, hashes, versions


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"value {obj!r} of type {type(obj).__name__} is not JSON-serialisable")


def normalize_json(obj: Any, what: str = "value") -> Any:
    """Return ``obj`` as plain JSON types (tuples -> lists, Path -> str, numpy -> Python)."""
    try:
        return json.loads(json.dumps(obj, default=_json_default, allow_nan=True))
    except TypeError as e:
        raise TypeError(f"{what}: {e}") from None


def canonical_json(obj: Any) -> str:
    return json.dumps(normalize_json(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def config_hash(config: dict) -> str:
    """sha256 of the canonical JSON of ``config`` (sorted keys), first 16 hex characters."""
    return hashlib.sha256(canonical_json(config).encode("utf-8")).hexdigest()[:16]


def config_diff(a: dict, b: dict) -> list[str]:
    """Dotted keys whose values differ between two (nested) config dicts."""

    def flat(d: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(d, dict) and d:
            out: dict[str, Any] = {}
            for k, v in d.items():
                out.update(flat(v, f"{prefix}{k}."))
            return out
        return {prefix[:-1]: d}

    fa, fb = flat(normalize_json(a)), flat(normalize_json(b))
    return sorted(k for k in set(fa) | set(fb) if fa.get(k, ...) != fb.get(k, ...))


#: packages whose version can change what a part holds, recorded per part (those installed):
#: the store and array libraries, and the image / landmark backends (an OpenCV 5.0 -> 5.1
#: upgrade alone changed the crops and depth labels of the same code, bench/RESULTS.md)
VERSIONED_PACKAGES = (PACKAGE, "zarr", "numpy", "torch", "opencv-python-headless", "opencv-python",
                      "ai-edge-litert", "dlib-bin", "dlib")


def package_versions() -> dict[str, str]:
    """Versions of the installed :data:`VERSIONED_PACKAGES` (depthseg-fas: "unknown" if missing)."""
    out = {}
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = _metadata.version(name)
        except _metadata.PackageNotFoundError:
            if name == PACKAGE:
                out[name] = "unknown"
    return out


def now_iso(timespec: str = "seconds") -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec=timespec)


def token() -> str:
    return uuid.uuid4().hex[:10]


# ---------------------------------------------------------------------------------------------
# locations (local folder or fsspec URL)


@dataclass(frozen=True)
class Location:
    """Where a store lives: an fsspec filesystem and the root path in it."""

    url: str
    fs: Any
    root: str
    local: bool
    storage_options: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, url: str | os.PathLike, storage_options: dict | None = None) -> Location:
        url = os.fspath(url)
        opts = dict(storage_options or {})
        if "://" not in url or url.startswith("file://"):
            root = os.path.abspath(url[len("file://"):] if url.startswith("file://") else url)
            return cls(url=root, fs=fsspec.filesystem("file"), root=root, local=True, storage_options=opts)
        fs, root = fsspec.core.url_to_fs(url, **opts)
        return cls(url=url.rstrip("/"), fs=fs, root=root.rstrip("/"), local=False, storage_options=opts)

    def path(self, *parts: str) -> str:
        """Path inside the filesystem (for ``fs`` or ``os`` calls)."""
        if self.local:
            return os.path.join(self.root, *parts)
        return "/".join([self.root, *parts])

    def child_url(self, *parts: str) -> str:
        return self.path(*parts) if self.local else "/".join([self.url, *parts])

    def zarr_store(self, *parts: str, read_only: bool = False, strict: bool = False):
        """A zarr store rooted at ``parts`` below the store root.

        ``strict``: a missing chunk raises IntegrityError instead of reading as fill values
        (see :class:`StrictLocalStore`); for parts of schema >= 2, where every chunk exists.
        """
        local_cls, remote_cls = (StrictLocalStore, StrictFsspecStore) if strict else (LocalStore, FsspecStore)
        if self.local:
            return local_cls(self.path(*parts), read_only=read_only)
        return remote_cls.from_url(self.child_url(*parts), storage_options=self.storage_options or None,
                                   read_only=read_only)


def _is_chunk_key(key: str) -> bool:
    return "/c/" in f"/{key}"  # zarr v3 default chunk keys: <array>/c/<i>/<j>...


def _missing_chunk(root: Any, key: str) -> IntegrityError:
    return IntegrityError(f"chunk file {root}/{key} is missing (deleted or never written)")


class StrictLocalStore(LocalStore):
    """LocalStore whose missing chunk keys raise :class:`IntegrityError`.

    zarr reads a missing chunk as fill values (zeros). Schema-2 parts are written with
    ``write_empty_chunks=True``, so every chunk of every array exists and a missing one is
    damage; checking it here costs nothing (zarr asks the store for the key anyway), unlike a
    listing of the shard files before each read.
    """

    async def get(self, key: str, prototype: Any = None, byte_range: Any = None) -> Any:
        buf = await super().get(key, prototype, byte_range)
        if buf is None and _is_chunk_key(key):
            raise _missing_chunk(self.root, key)
        return buf


class StrictFsspecStore(FsspecStore):
    """FsspecStore whose missing chunk keys raise :class:`IntegrityError` (see StrictLocalStore)."""

    async def get(self, key: str, prototype: Any = None, byte_range: Any = None) -> Any:
        buf = await super().get(key, prototype, byte_range)
        if buf is None and _is_chunk_key(key):
            raise _missing_chunk(self.path, key)
        return buf


# ---------------------------------------------------------------------------------------------
# checksums and the manifest


def _tree_checksum(fs: Any, path: str, *, fsync: bool = False, exclude: tuple[str, ...] = ()) -> str:
    """sha256 (hex) of a file's bytes, or over a folder's files in sorted relative-path order.

    In a folder each file contributes its relative POSIX path, its size and its bytes; files
    whose relative path is in ``exclude`` are left out. With ``fsync`` (local files only)
    every file is flushed to disk on the way.
    """
    h = hashlib.sha256()
    if fs.isfile(path):
        files = [(None, path)]
    else:
        base = path.rstrip("/")
        # regular files only: a symlinked folder (fsspec lists it as an entry, not descended)
        # or a broken link in the tree is not content
        files = sorted((f[len(base):].lstrip("/").replace(os.sep, "/"), f) for f in fs.find(base) if fs.isfile(f))
        files = [(rel, f) for rel, f in files if rel not in exclude]
    for rel, f in files:
        if rel is not None:
            h.update(f"{rel}\0{fs.size(f)}\0".encode("utf-8", "surrogateescape"))
        with (open(f, "rb") if fsync else fs.open(f, "rb")) as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
            if fsync:
                os.fsync(fh.fileno())
    return h.hexdigest()


def file_checksum(path: str | os.PathLike, storage_options: dict | None = None) -> str:
    """Streaming sha256 (hex) of a file (same as ``sha256sum``), or of a folder's files, sorted.

    ``path`` is a local path or an fsspec URL. For a folder each file contributes its relative
    path, its size and its bytes, so renaming, moving or editing a file changes the checksum.
    """
    loc = Location.parse(path, storage_options)
    if not loc.fs.exists(loc.root):
        raise FileNotFoundError(f"{loc.url}: no such file or folder")
    return _tree_checksum(loc.fs, loc.root)


def part_checksum(fs: Any, path: str, *, fsync: bool = False) -> str:
    """The checksum of a part folder: every file but its own record ``commit/zarr.json`` (which
    holds the checksum). A schema-1 part has no record, so this is also the checksum schema 1 recorded.
    """
    return _tree_checksum(fs, path, fsync=fsync, exclude=(PART_META,))


def part_dir(loc: Location, rel: str) -> str:
    """The filesystem path of the part folder ``rel``, proven to lie inside the store.

    ``rel`` must be a part path (:func:`check_part_path`); locally the folder must not be a
    symlink and its real path must be below the store's real root (no link in ``parts/``
    leads out). Raises IntegrityError otherwise. A missing folder is returned as is.
    """
    check_part_path(rel)
    path = loc.path(*rel.split("/"))
    if loc.local:
        _check_inside(loc, path, rel)
    return path


def _check_inside(loc: Location, path: str, rel: str) -> None:
    root = os.path.realpath(loc.root)
    if os.path.islink(path) or not os.path.realpath(path).startswith(root + os.sep):
        raise IntegrityError(f"{loc.url}: {rel} is a link or leads outside the store; refusing to use it")


def safe_remove(loc: Location, rel: str) -> None:
    """Remove ``rel`` (a folder or file directly inside ``parts/``, ``staging/`` or a legacy
    ``.staging/``), proven to be inside the store: the one way the storage package deletes anything.

    Refuses (IntegrityError) any other path, ``.``/``..``, the staging array's own ``zarr.json``
    and ``c``, a symlink, or a target whose real path is outside the store root. A target that
    is already gone is fine. ``shutil.rmtree`` does not follow links inside the folder.
    """
    top, _, name = rel.partition("/")
    if (top not in (PARTS, STAGING, LEGACY_STAGING) or name in ("", ".", "..") or "/" in name or "\0" in name
            or (top == STAGING and name in ("zarr.json", "c"))):
        raise IntegrityError(f"{loc.url}: refusing to remove {rel!r}: not an entry of {PARTS}/ or {STAGING}/")
    path = loc.path(top, name)
    if not loc.local:
        with contextlib.suppress(FileNotFoundError):
            loc.fs.rm(path, recursive=True)
        return
    if not os.path.lexists(path):
        return
    _check_inside(loc, path, rel)
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)


def list_names(loc: Location, rel: str = "") -> list[str]:
    """Names of the entries of the folder ``rel`` below the root ([] if it does not exist)."""
    path = loc.path(rel) if rel else loc.root
    try:
        if loc.local:
            return os.listdir(path)
        return [p.rstrip("/").rsplit("/", 1)[-1] for p in loc.fs.ls(path, detail=False)]
    except FileNotFoundError:
        return []


#: ``staging/zarr.json``: a zero-size uint8 array; ``dimension_names`` so that xarray opens the root
_STAGING_META = json.dumps({
    "zarr_format": 3, "node_type": "array", "shape": [0], "data_type": "uint8",
    "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [1]}},
    "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
    "fill_value": 0, "codecs": [{"name": "bytes"}], "dimension_names": ["entry"],
    "attributes": {"description": f"{PACKAGE} housekeeping (locks, parts being written); no data"},
}, indent=2).encode("utf-8")


def ensure_staging(loc: Location) -> str:
    """Create the housekeeping array ``staging/`` if it is missing; returns its path. Locally its
    ``zarr.json`` appears whole (temp file + ``os.replace``), so concurrent callers are fine
    (remote stores use it only for ``inspect --repair``'s manifest backup)."""
    path = loc.path(STAGING)
    if not loc.local:
        if not loc.fs.exists(f"{path}/zarr.json"):
            loc.fs.pipe_file(f"{path}/zarr.json", _STAGING_META)
        return path
    meta = os.path.join(path, "zarr.json")
    if not os.path.exists(meta):
        os.makedirs(path, exist_ok=True)
        tmp = os.path.join(path, f"zarr.json.{token()}.new")  # not *.tmp: the cleaner leaves it alone
        with open(tmp, "wb") as fh:
            fh.write(_STAGING_META)
        os.replace(tmp, meta)
    return path


def legacy_entries(loc: Location) -> list[str]:
    """The legacy-layout entries (schema <= 2) present in the root: ``manifest.json``, ``.staging``."""
    return [n for n in (LEGACY_MANIFEST, LEGACY_STAGING) if loc.fs.exists(loc.path(n))]


def root_schema(loc: Location) -> int:
    """The ``schema_version`` of the root group (0 if it has none); IntegrityError if unreadable."""
    try:
        version = zarr.open_group(loc.zarr_store(read_only=True), mode="r").attrs.get("schema_version", 0)
    except Exception as e:  # noqa: BLE001 - missing or damaged root metadata
        raise IntegrityError(f"{loc.url}: root zarr.json is unreadable: {e!r}") from e
    return version if isinstance(version, int) and not isinstance(version, bool) else 0


def migration_hint(loc: Location, version: int) -> str:
    """One line: the store has the legacy layout (schema <= 2), and the command that migrates it."""
    entries = legacy_entries(loc)
    where = f" ({' and '.join(entries)} in the root, which zarr tools warn about)" if entries else ""
    return (f"{loc.url}: store has the legacy layout of schema {version}{where}; migrate it in place with: "
            f"depthseg-fas inspect {loc.url} --migrate")


def schema1_refusal(loc: Location, version: int) -> str:
    """Why parts cannot be added to a store with parts of a schema before damage detection."""
    return (f"{loc.url}: store was written with schema {version}, before schema {DAMAGE_DETECTION_SCHEMA} "
            f"(damage detection); refusing to add parts to it. Migrate it to a new store with: "
            f"depthseg-fas export-hdf5 {loc.url} OLD.h5 && depthseg-fas import-hdf5 OLD.h5 NEW_STORE")


def manifest_lost(loc: Location) -> str | None:
    """Why the store needs ``inspect --repair`` when it has no manifest: ``parts/`` holds part
    folders (a lost manifest; cleaning would delete every committed part). None if it is empty."""
    names = sorted(n for n in list_names(loc, PARTS) if n != "zarr.json")
    if not names:
        return None
    return (f"{loc.url}: the manifest ({MANIFEST_META}) is missing but {PARTS}/ holds {len(names)} folder(s) "
            f"(e.g. {names[0]}); refusing to use the store. Rebuild it with: depthseg-fas inspect {loc.url} --repair")


def empty_manifest(cfg_hash: str) -> dict:
    return {"schema_version": SCHEMA_VERSION, "config_hash": cfg_hash, "updated": now_iso(), "parts": {}}


def read_manifest(loc: Location) -> dict | None:
    """The store's manifest, or None if it has none; IntegrityError if it cannot be parsed or
    does not validate (:func:`check_manifest`: hostile paths, wrong field types).

    A legacy ``manifest.json`` wins while it exists (it stays the commit record until a
    migration removes it, see the module docstring); else the attributes of ``manifest/``.
    """
    for rel in (LEGACY_MANIFEST, MANIFEST_META):
        try:
            with loc.fs.open(loc.path(*rel.split("/")), "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            continue
        try:
            doc = json.loads(raw)
        except ValueError as e:
            raise IntegrityError(f"{loc.url}: manifest {rel} is unreadable: {e}") from e
        if rel == MANIFEST_META:
            if not isinstance(doc, dict) or doc.get("node_type") != "group" or not isinstance(doc.get("attributes"), dict):
                raise IntegrityError(f"{loc.url}: manifest {rel} is unreadable: not a zarr group with attributes")
            doc = doc["attributes"]
        return check_manifest(loc.url, doc)
    return None


def write_manifest(loc: Location, manifest: dict) -> None:
    """Replace the manifest (``manifest/zarr.json``) atomically (local: temp file in ``staging/``
    + fsync + os.replace + dir fsync).

    An error before ``os.replace`` leaves the old manifest in place; once it is replaced the
    new manifest counts as committed.
    """
    manifest = dict(manifest, updated=now_iso())
    data = json.dumps({"zarr_format": 3, "node_type": "group", "attributes": manifest},
                      sort_keys=True, separators=(",", ":")).encode("utf-8")
    target = loc.path(*MANIFEST_META.split("/"))
    if not loc.local:
        loc.fs.pipe_file(target, data)
        return
    created = not os.path.isdir(loc.path(MANIFEST))
    os.makedirs(loc.path(MANIFEST), exist_ok=True)
    tmp = os.path.join(ensure_staging(loc), f"{MANIFEST}.{token()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)  # the commit point
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    try:
        fsync_dir(loc.path(MANIFEST))
        if created:
            fsync_dir(loc.root)
    except OSError as e:  # committed already; only durability across a power cut is in doubt
        log.warning("%s: could not fsync the manifest folder after updating the manifest: %s", loc.url, e)


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
