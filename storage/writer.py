"""Writing a dataset store part by part, atomically (layout: see :mod:`storage.layout`).

Commit protocol, local folders: a part is written as a standalone zarr group in
``<root>/.staging/<part_id>.<token>/`` (its writer holds ``flock`` on that folder), checksummed
and fsync'ed, then, under the store's commit lock, renamed into ``parts/<part_id>`` and added to
``manifest.json`` (temp file + fsync + ``os.replace``). Readers only see manifest-listed parts, so
a crash at any point leaves nothing partial visible. Replacing a committed part writes the new
version to ``parts/<part_id>~<token>``, swaps the manifest entry, then deletes the old folder.

Remote fsspec URLs: the part is written in place under ``parts/<part_id>`` (or a suffixed folder
when replacing) and the manifest is rewritten afterwards; the manifest stays the commit point,
but there is no locking, so only one process may write a remote store at a time.

Opening a writer cleans orphans: part folders the manifest does not list and staging folders
whose writer is gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
from typing import Any

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from .errors import ConfigMismatch, PartExists, StoreError
from .layout import (
    ARRAYS,
    FRAMES_PER_CHUNK,
    FRAMES_PER_SHARD,
    META_COLUMNS,
    PACKAGE,
    PARTS,
    QC_COLUMNS,
    SCHEMA_VERSION,
    SHARDED,
    STAGING,
    ZSTD_LEVEL,
    Location,
    PartData,
    PartInfo,
    _tree_checksum,
    check_part_id,
    config_diff,
    config_hash,
    empty_manifest,
    fsync_dir,
    normalize_json,
    now_iso,
    package_versions,
    read_manifest,
    token,
    write_manifest,
)
from .locks import commit_lock

log = logging.getLogger(__name__)


def _put_array(group: Any, name: str, arr: np.ndarray, dims: tuple[str, ...], sharded: bool) -> None:
    n, rest = arr.shape[0], arr.shape[1:]
    if sharded:
        chunks, shards = (1, *rest), (max(1, min(n, FRAMES_PER_SHARD)), *rest)
    else:
        chunks, shards = (max(1, min(n, FRAMES_PER_CHUNK)), *rest), None
    out = group.create_array(
        name,
        shape=arr.shape,
        dtype=str if arr.dtype.kind == "U" else arr.dtype,
        chunks=chunks,
        shards=shards,
        compressors=ZstdCodec(level=ZSTD_LEVEL),
        dimension_names=list(dims),
    )
    if n:
        out[...] = arr


def write_part_group(store: Any, info: PartInfo, data: PartData) -> None:
    """Write one validated part as a standalone zarr group into ``store`` (must be empty)."""
    attrs = {
        "part_id": info.part_id,
        "input_checksum": info.input_checksum,
        "config_hash": info.config_hash,
        "frames": info.frames,
        "versions": info.versions,
        "created": info.created,
        "extra": info.extra,
    }
    group = zarr.open_group(store, mode="w-", attributes=attrs)
    for name, (_, dims) in ARRAYS.items():
        _put_array(group, name, getattr(data, name), dims, name in SHARDED)
    for kind in ("qc", "meta"):
        sub = group.create_group(kind)
        for name, col in getattr(data, kind).items():
            _put_array(sub, name, col, ("frame",), False)


def _rm(loc: Location, rel: str) -> None:
    """Remove a folder below the root, ignoring one that is already gone."""
    if loc.local:
        shutil.rmtree(loc.path(*rel.split("/")), ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            loc.fs.rm(loc.path(rel), recursive=True)


def _list_dirs(loc: Location, rel: str) -> list[str]:
    if loc.local:
        try:
            return sorted(e.name for e in os.scandir(loc.path(rel)) if e.is_dir())
        except FileNotFoundError:
            return []
    try:
        entries = loc.fs.ls(loc.path(rel), detail=True)
    except FileNotFoundError:
        return []
    return sorted(e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e["type"] == "directory")


class DatasetWriter:
    """Adds parts to one dataset store; create it with :meth:`open`."""

    def __init__(self, loc: Location, config: dict, manifest: dict):
        self._loc = loc
        self.config = config
        self.config_hash = config_hash(config)
        self._manifest = manifest
        self._versions = package_versions()

    # -- opening --------------------------------------------------------------------------

    @classmethod
    def open(cls, url: str | os.PathLike, config: dict, *, create: bool = True,
             storage_options: dict | None = None) -> DatasetWriter:
        """Open (or create) the store at ``url`` for writing parts made with ``config``.

        Raises :class:`ConfigMismatch` (naming both hashes and the differing keys) when the store
        already has parts made with another config; a store without parts takes the new config.
        ``create=False`` raises :class:`StoreError` when there is no store yet. Orphan part
        folders and abandoned staging folders are removed.
        """
        if not isinstance(config, dict):
            raise TypeError(f"config must be a dict, got {type(config).__name__}")
        loc = Location.parse(url, storage_options)
        config = normalize_json(config, "config")
        new_hash = config_hash(config)
        if not create and not loc.fs.exists(loc.path("zarr.json")):
            raise StoreError(f"{loc.url}: no dataset store here (create=False)")
        with commit_lock(loc):
            if loc.fs.exists(loc.path("zarr.json")):
                manifest = cls._check_existing(loc, config, new_hash)
            else:
                manifest = cls._create(loc, config, new_hash)
            cls._clean_orphans(loc, manifest)
        return cls(loc, config, manifest)

    @staticmethod
    def _create(loc: Location, config: dict, cfg_hash: str) -> dict:
        if loc.fs.exists(loc.root):
            others = [n for n in _list_names(loc) if n != STAGING]
            if others:
                raise StoreError(f"{loc.url}: folder exists, is not a dataset store and is not empty "
                                 f"(has {', '.join(sorted(others)[:5])})")
        attrs = {"schema_version": SCHEMA_VERSION, "config": config, "config_hash": cfg_hash,
                 "created": now_iso(), "package": PACKAGE}
        root = zarr.create_group(loc.zarr_store(), attributes=attrs)
        root.create_group(PARTS)
        manifest = empty_manifest(cfg_hash)
        write_manifest(loc, manifest)
        log.info("%s: created dataset store (config %s)", loc.url, cfg_hash)
        return manifest

    @staticmethod
    def _check_existing(loc: Location, config: dict, cfg_hash: str) -> dict:
        root = zarr.open_group(loc.zarr_store(), mode="r+")
        attrs = root.attrs.asdict()
        version = attrs.get("schema_version")
        if version is None or "config_hash" not in attrs:
            raise StoreError(f"{loc.url}: zarr group is not a {PACKAGE} dataset store "
                             "(no schema_version/config_hash attributes)")
        if int(version) > SCHEMA_VERSION:
            raise StoreError(f"{loc.url}: store schema version {version} is newer than this "
                             f"package's ({SCHEMA_VERSION}); upgrade {PACKAGE}")
        manifest = read_manifest(loc) or empty_manifest(attrs["config_hash"])
        if attrs["config_hash"] != cfg_hash:
            if manifest["parts"]:
                keys = config_diff(attrs.get("config", {}), config)
                raise ConfigMismatch(
                    f"{loc.url}: store holds {len(manifest['parts'])} part(s) made with config "
                    f"{attrs['config_hash']}, refusing to add parts made with config {cfg_hash}; "
                    f"differing keys: {', '.join(keys) or '(none found)'}. Use another store.",
                    store_hash=attrs["config_hash"], new_hash=cfg_hash, keys=keys)
            log.info("%s: store has no parts; config %s replaces %s", loc.url, cfg_hash,
                     attrs["config_hash"])
            root.attrs.update({"config": config, "config_hash": cfg_hash})
            manifest = dict(manifest, config_hash=cfg_hash)
            write_manifest(loc, manifest)
        return manifest

    @staticmethod
    def _clean_orphans(loc: Location, manifest: dict) -> None:
        """Remove unlisted part folders and staging folders whose writer is gone (under the lock)."""
        listed = {entry["path"] for entry in manifest["parts"].values()}
        for name in _list_dirs(loc, PARTS):
            if f"{PARTS}/{name}" not in listed:
                log.warning("%s: removing orphan part folder %s/%s (not in the manifest)", loc.url, PARTS, name)
                _rm(loc, f"{PARTS}/{name}")
        if not loc.local:
            return
        staging = loc.path(STAGING)
        for entry in os.scandir(staging):
            if entry.is_file() and entry.name.endswith(".tmp"):  # manifest temp of a dead writer
                os.unlink(entry.path)
            elif entry.is_dir():
                fd = os.open(entry.path, os.O_RDONLY)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its writer is still at work
                else:
                    log.warning("%s: removing abandoned staging folder %s", loc.url, entry.name)
                    shutil.rmtree(entry.path, ignore_errors=True)
                finally:
                    os.close(fd)

    # -- state ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self._loc.url

    @property
    def parts(self) -> dict[str, PartInfo]:
        """Committed parts as of the last open/refresh/commit, by part id."""
        return {pid: PartInfo.from_manifest(pid, e) for pid, e in sorted(self._manifest["parts"].items())}

    def refresh(self) -> None:
        """Re-read the manifest (to see parts other processes committed since)."""
        self._manifest = read_manifest(self._loc) or empty_manifest(self.config_hash)

    def has_part(self, part_id: str, input_checksum: str) -> bool:
        """True if ``part_id`` is committed with this input checksum and this writer's config."""
        entry = self._manifest["parts"].get(part_id)
        return bool(entry and entry["input_checksum"] == input_checksum
                    and entry["config_hash"] == self.config_hash)

    # -- writing --------------------------------------------------------------------------

    def write_part(self, part_id: str, data: PartData, *, input_checksum: str, extra: dict | None = None,
                   overwrite: bool = False, versions: dict | None = None,
                   created: str | None = None) -> PartInfo:
        """Write one part atomically and commit it to the manifest; returns its record.

        A part already committed with the same input checksum and config raises
        :class:`PartExists` unless ``overwrite``; one committed with another input checksum is
        replaced atomically. ``versions``/``created`` default to the installed packages and now
        (pass them to keep provenance when copying parts). A storage failure raises
        :class:`StoreError` naming the part and the cause, and leaves nothing partial visible.
        """
        check_part_id(part_id)
        data = data.validated(part_id)
        info = PartInfo(
            part_id=part_id,
            frames=data.frames,
            input_checksum=str(input_checksum),
            config_hash=self.config_hash,
            versions=normalize_json(versions, "versions") if versions is not None else dict(self._versions),
            created=created or now_iso(),
            extra=normalize_json(extra or {}, f"part {part_id}: extra"),
            columns=_extra_columns(data),
        )
        self.refresh()
        self._check_exists(info, overwrite)
        if self._loc.local:
            info = self._write_local(info, data, overwrite)
        else:
            info = self._write_remote(info, data, overwrite)
        log.info("%s: committed part %s (%d frames)", self.url, part_id, info.frames)
        return info

    def _check_exists(self, info: PartInfo, overwrite: bool) -> dict | None:
        if self._manifest.get("config_hash", self.config_hash) != self.config_hash:
            raise ConfigMismatch(
                f"{self.url}: the store's config changed to {self._manifest['config_hash']} while "
                f"this writer (config {self.config_hash}) was open",
                store_hash=self._manifest["config_hash"], new_hash=self.config_hash, keys=[])
        if self.has_part(info.part_id, info.input_checksum) and not overwrite:
            raise PartExists(f"{self.url}: part {info.part_id} is already committed with input "
                             f"checksum {info.input_checksum} and config {self.config_hash}")
        return self._manifest["parts"].get(info.part_id)

    def _target(self, part_id: str) -> str:
        plain = f"{PARTS}/{part_id}"
        return plain if not self._loc.fs.exists(self._loc.path(plain)) else f"{plain}~{token()}"

    def _write_local(self, info: PartInfo, data: PartData, overwrite: bool) -> PartInfo:
        loc = self._loc
        name = f"{info.part_id}.{token()}"
        staged = loc.path(STAGING, name)
        with commit_lock(loc):  # so that no cleaner sees the folder before we hold its flock
            os.makedirs(staged)
            fd = os.open(staged, os.O_RDONLY)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            try:
                write_part_group(loc.zarr_store(STAGING, name), info, data)
                info.checksum = _tree_checksum(loc.fs, staged, fsync=True)
            except Exception as e:
                raise StoreError(f"{self.url}: writing part {info.part_id} failed: {e!r}") from e
            with commit_lock(loc):
                self.refresh()
                old = self._check_exists(info, overwrite)
                target = self._target(info.part_id)
                try:
                    os.rename(staged, loc.path(*target.split("/")))
                    fsync_dir(loc.path(PARTS))
                    info.path = target
                    manifest = dict(self._manifest, parts={**self._manifest["parts"],
                                                           info.part_id: info.to_manifest()})
                    write_manifest(loc, manifest)
                except OSError as e:
                    _rm(loc, target)
                    raise StoreError(f"{self.url}: committing part {info.part_id} failed: {e!r}") from e
                self._manifest = manifest
        finally:
            shutil.rmtree(staged, ignore_errors=True)
            os.close(fd)
        if old is not None:
            _rm(loc, old["path"])
        return info

    def _write_remote(self, info: PartInfo, data: PartData, overwrite: bool) -> PartInfo:
        loc = self._loc
        old = self._manifest["parts"].get(info.part_id)
        target = self._target(info.part_id)
        try:
            write_part_group(loc.zarr_store(*target.split("/")), info, data)
            info.checksum = _tree_checksum(loc.fs, loc.path(target))
            info.path = target
            manifest = dict(self._manifest, parts={**self._manifest["parts"], info.part_id: info.to_manifest()})
            write_manifest(loc, manifest)
        except Exception as e:
            with contextlib.suppress(Exception):
                _rm(loc, target)
            raise StoreError(f"{self.url}: writing part {info.part_id} failed: {e!r}") from e
        self._manifest = manifest
        if old is not None:
            _rm(loc, old["path"])
        return info


def _extra_columns(data: PartData) -> dict[str, list[str]]:
    """The part's column names for the manifest, or {} when they are just the required ones."""
    if set(data.qc) == set(QC_COLUMNS) and set(data.meta) == set(META_COLUMNS):
        return {}
    return {"qc": sorted(data.qc), "meta": sorted(data.meta)}


def _list_names(loc: Location) -> list[str]:
    if loc.local:
        return os.listdir(loc.root)
    return [p.rstrip("/").rsplit("/", 1)[-1] for p in loc.fs.ls(loc.root, detail=False)]
