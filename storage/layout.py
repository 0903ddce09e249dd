"""On-disk layout of a depthseg-fas dataset store, and the records shared by writer and reader.

A dataset is one zarr v3 group (a local folder or any fsspec URL)::

    <root>/
      zarr.json              root group; attributes: schema_version, config (the JSON config
                             dict), config_hash, created (ISO-8601 UTC), package ("depthseg-fas")
      manifest.json          the commit record: which parts exist (see below). A part folder
                             that the manifest does not list is invisible and gets cleaned.
      parts/zarr.json        group holding one subgroup per committed part
      parts/<part_id>/       one work unit (a video, or a batch of images), N frames:
        zarr.json            attributes: part_id, input_checksum, config_hash, frames,
                             versions (package versions), extra (free JSON dict), created
        image                (N, S, S, 3) uint8 RGB crops     dims frame, y, x, channel
        depth                (N, S, S)    uint8 pseudo-depth  dims frame, y, x
        landmarks            (N, 68, 2)   float32 frame px    dims frame, point, xy
        bbox                 (N, 4)       float32 x0,y0,x1,y1 dims frame, coord
        affine               (N, 2, 3)    float32 frame->crop dims frame, row, col
        fit_residual         (N,)         float32 (NaN: no fit, e.g. spoof frames)
        qc/<column>          (N,) det_score, face_size, yaw, pitch, roll, blur float32; qc_flags uint8
        meta/<column>        (N,) video_id, label, attack_type, subject, session, device, split,
                             source (the frame's file, relative to the input root: the video,
                             or the image of an image-folder part) (zarr v3 variable-length
                             UTF-8 strings), frame_index int64, timestamp float64
      .staging/              housekeeping, not a zarr node (zarr warns "not recognized" about it
                             and about manifest.json when iterating the root, and goes on):
        commit.lock          flock(2) target serialising manifest updates between processes
        run.lock             run-level lock (JSON: pid, host, owner, time), see locks.run_lock
        <part_id>.<token>/   a part being written (whole, or streamed chunk by chunk); its
                             writer holds flock on the folder

``image`` and ``depth`` have one frame per chunk and up to 512 frames per shard; the other
arrays have unsharded chunks of up to 1024 frames (a part written whole gets ``min(N, 512)``
and ``min(N, 1024)``; a streamed part, whose N is unknown when its arrays are created, 512 and
1024). Every array is zstd-compressed and carries
``dimension_names``. Part ids are folder names: ``[A-Za-z0-9][A-Za-z0-9._-]*``. The folder of a part that replaced an older
version is ``parts/<part_id>~<token>`` (the manifest's ``path`` says which folder is current).

``manifest.json``::

    {"schema_version": 1, "config_hash": "...", "updated": "...",
     "parts": {"<part_id>": {"path": "parts/<part_id>", "frames": N, "input_checksum": "...",
                             "config_hash": "...", "checksum": "<sha256 of the part's files>",
                             "versions": {...}, "created": "...", "extra": {...},
                             "columns": {"qc": [...], "meta": [...]}}}}
                             (``columns`` is {} when the part has just the required columns)

The part checksum is :func:`file_checksum` of the part folder (its files in sorted order).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import re
import uuid
from dataclasses import dataclass, field
from importlib import metadata as _metadata
from pathlib import Path
from typing import Any

import fsspec
import numpy as np

from .errors import IntegrityError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
PACKAGE = "depthseg-fas"

MANIFEST = "manifest.json"
PARTS = "parts"
STAGING = ".staging"
COMMIT_LOCK = "commit.lock"
RUN_LOCK = "run.lock"

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
    def from_manifest(cls, part_id: str, entry: dict) -> PartInfo:
        return cls(
            part_id=part_id,
            frames=int(entry["frames"]),
            input_checksum=entry["input_checksum"],
            config_hash=entry["config_hash"],
            versions=dict(entry.get("versions", {})),
            created=entry.get("created", ""),
            extra=dict(entry.get("extra", {})),
            checksum=entry.get("checksum", ""),
            path=entry.get("path", f"{PARTS}/{part_id}"),
            columns={k: list(v) for k, v in entry.get("columns", {}).items()},
        )


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


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape a store: depthseg-fas, zarr, numpy, torch (if any)."""
    out = {}
    for name in (PACKAGE, "zarr", "numpy", "torch"):
        try:
            out[name] = _metadata.version(name)
        except _metadata.PackageNotFoundError:
            if name == PACKAGE:
                out[name] = "unknown"
    return out


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


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

    def zarr_store(self, *parts: str, read_only: bool = False):
        """A zarr store rooted at ``parts`` below the store root."""
        from zarr.storage import FsspecStore, LocalStore

        if self.local:
            return LocalStore(self.path(*parts), read_only=read_only)
        return FsspecStore.from_url(self.child_url(*parts), storage_options=self.storage_options or None,
                                    read_only=read_only)


# ---------------------------------------------------------------------------------------------
# checksums and the manifest


def _tree_checksum(fs: Any, path: str, *, fsync: bool = False) -> str:
    """sha256 (hex) of a file's bytes, or over a folder's files in sorted relative-path order.

    In a folder each file contributes its relative POSIX path, its size and its bytes. With
    ``fsync`` (local files only) every file is flushed to disk on the way.
    """
    h = hashlib.sha256()
    if fs.isfile(path):
        files = [(None, path)]
    else:
        base = path.rstrip("/")
        # regular files only: a symlinked folder (fsspec lists it as an entry, not descended)
        # or a broken link in the tree is not content
        files = sorted((f[len(base):].lstrip("/").replace(os.sep, "/"), f) for f in fs.find(base) if fs.isfile(f))
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


def empty_manifest(cfg_hash: str) -> dict:
    return {"schema_version": SCHEMA_VERSION, "config_hash": cfg_hash, "updated": now_iso(), "parts": {}}


def read_manifest(loc: Location) -> dict | None:
    """The store's manifest, or None if it has none; IntegrityError if it cannot be parsed."""
    path = loc.path(MANIFEST)
    try:
        with loc.fs.open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        return None
    try:
        manifest = json.loads(raw)
        if not isinstance(manifest.get("parts"), dict):
            raise ValueError("no 'parts' mapping")
    except (ValueError, AttributeError) as e:
        raise IntegrityError(f"{loc.url}: manifest {MANIFEST} is unreadable: {e}") from e
    return manifest


def write_manifest(loc: Location, manifest: dict) -> None:
    """Replace the manifest atomically (local: temp file + fsync + os.replace + dir fsync).

    An error before ``os.replace`` leaves the old manifest in place; once it is replaced the
    new manifest counts as committed.
    """
    manifest = dict(manifest, updated=now_iso())
    data = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode("utf-8")
    if not loc.local:
        loc.fs.pipe_file(loc.path(MANIFEST), data)
        return
    tmp = loc.path(STAGING, f"{MANIFEST}.{token()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, loc.path(MANIFEST))  # the commit point
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    try:
        fsync_dir(loc.root)
    except OSError as e:  # committed already; only durability across a power cut is in doubt
        log.warning("%s: could not fsync the store folder after updating the manifest: %s", loc.url, e)


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
