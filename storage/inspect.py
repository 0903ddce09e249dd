"""Integrity checks, summaries, repair and migration of a dataset store (``depthseg-fas inspect``).

:func:`verify` recomputes each part's checksum and, for schema >= 2, reads every chunk through
the same strict store the reader uses (a missing chunk or a crc32c mismatch is a problem).
:func:`repair` rebuilds a lost or unreadable manifest from the parts' own records (``commit/zarr.json``).
:func:`migrate` moves a store of the legacy layout (schema <= 2) to schema 3 in place.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from typing import Any

import numpy as np
import zarr

from .errors import IntegrityError, RepairNeeded, SchemaTooOld, StoreError, StoreLocked
from .layout import (
    COMMIT_LOCK,
    DAMAGE_DETECTION_SCHEMA,
    FRAMES_PER_SHARD,
    LEGACY_MANIFEST,
    LEGACY_STAGING,
    MANIFEST,
    MANIFEST_META,
    NODE_LAYOUT_SCHEMA,
    PART_META,
    PARTS,
    RUN_LOCK,
    SCHEMA_VERSION,
    STAGING,
    Location,
    check_entry,
    check_part_path,
    empty_manifest,
    ensure_staging,
    legacy_entries,
    list_names,
    manifest_lost,
    migration_hint,
    part_checksum,
    part_dir,
    read_manifest,
    root_schema,
    safe_remove,
    schema1_refusal,
    token,
    write_manifest,
)
from .locks import commit_lock, describe_holder, legacy_commit_lock, other_run_holder
from .reader import open_dataset

log = logging.getLogger(__name__)


def _read_every_chunk(loc: Location, rel: str) -> None:
    """Read every array of a part through the strict store, a shard's worth of frames at a time."""
    group = zarr.open_group(loc.zarr_store(*rel.split("/"), read_only=True, strict=True), mode="r")
    members = list(group.members(max_depth=None))
    for _, node in members:
        if isinstance(node, zarr.Array):
            for start in range(0, node.shape[0], FRAMES_PER_SHARD):
                node[start:start + FRAMES_PER_SHARD]


def _part_problem(loc: Location, part_id: str, entry: dict, schema: int) -> str | None:
    """The first problem of one committed part (None when it is sound)."""
    rel = entry["path"]
    try:
        path = part_dir(loc, rel)
    except IntegrityError as e:
        return f"part {part_id}: {e}"
    if not loc.fs.exists(path):
        return f"part {part_id}: folder {rel} is missing"
    actual = part_checksum(loc.fs, path)
    if actual != entry.get("checksum"):
        return f"part {part_id}: checksum mismatch in {rel} (manifest {entry.get('checksum')}, files {actual})"
    try:
        frames = zarr.open_array(loc.zarr_store(*rel.split("/"), "image", read_only=True), mode="r").shape[0]
        if schema >= DAMAGE_DETECTION_SCHEMA:
            _read_every_chunk(loc, rel)
    except Exception as e:  # noqa: BLE001 - any failure to read is a problem to report
        return f"part {part_id}: unreadable data in {rel}: {e!r}"
    if frames != entry["frames"]:
        return f"part {part_id}: {frames} frames on disk, manifest says {entry['frames']}"
    return None


def verify(url: str | os.PathLike, storage_options: dict | None = None) -> list[str]:
    """Check every committed part against the manifest.

    Returns a list of problems, one line each naming the part (empty when the store is sound):
    a manifest that is missing, unreadable or invalid (hostile paths, wrong field types), a part
    folder missing or leading outside the store, a checksum mismatch, a frame count differing
    from the manifest, a chunk missing or failing its crc32c (schema >= 2), a schema version
    this package does not know.
    """
    loc = Location.parse(url, storage_options)
    try:
        manifest = read_manifest(loc)
        schema = root_schema(loc)
    except StoreError as e:
        return [str(e)]
    if manifest is None:
        return [manifest_lost(loc) or f"{loc.url}: no manifest (not a dataset store)"]
    problems = []
    if schema > SCHEMA_VERSION:
        problems.append(f"{loc.url}: schema version {schema} is newer than {SCHEMA_VERSION}")
    for part_id, entry in sorted(manifest["parts"].items()):
        problem = _part_problem(loc, part_id, check_entry(part_id, entry), schema)
        if problem:
            problems.append(problem)
    return problems


def _part_record(loc: Location, name: str) -> tuple[dict | None, str]:
    """(record, "") of a sound part folder ``parts/<name>`` per its ``commit`` record, else (None, why)."""
    rel = f"{PARTS}/{name}"
    try:
        path = part_dir(loc, rel)
        with loc.fs.open(loc.path(PARTS, name, PART_META), "rb") as fh:
            record = json.loads(fh.read())
            record = record.get("attributes") if isinstance(record, dict) else None
        if not isinstance(record, dict):
            raise IntegrityError(f"{PART_META} is not a JSON object")
        entry = check_entry(record.get("part_id"), {**record, "path": rel})  # path of its own id
    except FileNotFoundError:
        return None, f"{rel}: no {PART_META}"
    except (IntegrityError, ValueError, OSError) as e:
        return None, f"{rel}: {e}"
    actual = part_checksum(loc.fs, path)
    if actual != entry["checksum"]:
        return None, f"{rel}: checksum mismatch ({PART_META} {entry['checksum']}, files {actual})"
    return {**entry, "part_id": record["part_id"], "committed": str(record.get("committed", ""))}, ""


def repair(url: str | os.PathLike, storage_options: dict | None = None) -> dict[str, list[str]]:
    """Rebuild the manifest from the parts' own ``commit`` records (schema >= 2), under the commit lock.

    Every folder of ``parts/`` is checked: its record must validate and the folder's
    checksum must match it. Of several sound folders of one part id the latest committed is
    the part, the others are recorded as superseded. A folder that fails is reported and
    recorded as quarantined (left in place, never removed automatically). An existing manifest
    is kept as ``staging/manifest.<token>.bak`` (a legacy one as ``staging/manifest.json.<token>.bak``;
    the rebuilt one is written in the schema-3 place, and ``--migrate`` finishes a legacy store). Returns ``{"parts": [...], "superseded":
    [...], "damaged": ["<folder>: <why>", ...]}``.
    """
    loc = Location.parse(url, storage_options)
    schema = root_schema(loc)
    if schema < DAMAGE_DETECTION_SCHEMA:
        raise StoreError(f"{loc.url}: schema {schema} parts have no {PART_META}; the manifest cannot be rebuilt")
    cfg_hash = zarr.open_group(loc.zarr_store(read_only=True), mode="r").attrs.get("config_hash", "")
    with contextlib.ExitStack() as stack:
        if LEGACY_STAGING in legacy_entries(loc):  # writers of an older package may be at work
            stack.enter_context(legacy_commit_lock(loc))
        stack.enter_context(commit_lock(loc))
        sound: dict[str, list[dict]] = {}
        damaged, quarantined = [], []
        for name in sorted(n for n in list_names(loc, PARTS) if n != "zarr.json"):
            record, why = _part_record(loc, name)
            if record is None:
                damaged.append(why)
                if _is_part_path(f"{PARTS}/{name}"):
                    quarantined.append(f"{PARTS}/{name}")
            else:
                sound.setdefault(record["part_id"], []).append(record)
        manifest = dict(empty_manifest(str(cfg_hash)), superseded=[], quarantined=quarantined)
        for part_id, records in sound.items():
            records.sort(key=lambda r: (r["committed"], r["path"]))
            entry = {k: v for k, v in records[-1].items() if k not in ("part_id", "committed", "schema_version")}
            manifest["parts"][part_id] = entry
            manifest["superseded"] += [{"path": r["path"], "since": time.time()} for r in records[:-1]]
        for rel, name in ((MANIFEST_META, MANIFEST), (LEGACY_MANIFEST, LEGACY_MANIFEST)):
            if loc.fs.exists(loc.path(*rel.split("/"))):
                ensure_staging(loc)
                loc.fs.mv(loc.path(*rel.split("/")), loc.path(STAGING, f"{name}.{token()}.bak"))
        write_manifest(loc, manifest)
    log.info("%s: manifest rebuilt: %d part(s), %d damaged folder(s) left out", loc.url, len(manifest["parts"]),
             len(damaged))
    return {"parts": sorted(manifest["parts"]), "superseded": [s["path"] for s in manifest["superseded"]],
            "damaged": damaged}


def layout_note(url: str | os.PathLike, storage_options: dict | None = None) -> str | None:
    """One line when the store has the legacy layout (schema <= 2, or entries a stopped migration
    left) naming the command that migrates it; None for a schema-3 store."""
    loc = Location.parse(url, storage_options)
    version = root_schema(loc)
    if version >= NODE_LAYOUT_SCHEMA and not legacy_entries(loc):
        return None
    return migration_hint(loc, version)


def _legacy_writers(loc: Location) -> list:
    """Under the legacy commit lock: raise StoreLocked if a run of an older package holds the legacy
    run lock or a legacy staging folder is being written; returns the flock'ed folders' fds."""
    holder = other_run_holder(loc, LEGACY_STAGING)
    if holder is not None:
        raise StoreLocked(f"{loc.url}: a run holds the store ({describe_holder(holder)}); migrate it "
                          "when that run is done", holder=holder)
    fds = []
    for entry in os.scandir(loc.path(LEGACY_STAGING)):
        if entry.is_dir(follow_symlinks=False):
            fds.append(os.open(entry.path, os.O_RDONLY))
            try:
                fcntl.flock(fds[-1], fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                for fd in fds:
                    os.close(fd)
                raise StoreLocked(f"{loc.url}: part {entry.name} is being written; migrate the store when "
                                  "its writer is done", holder={}) from None
    return fds


def _move_legacy_staging(loc: Location) -> list[str]:
    """Move what ``.staging/`` holds (abandoned staging folders, temp files, manifest backups) into
    ``staging/``, where the next writer cleans the abandoned ones; remove the lock files and the folder."""
    moved = []
    for name in sorted(os.listdir(loc.path(LEGACY_STAGING))):
        rel = f"{LEGACY_STAGING}/{name}"
        if name in (COMMIT_LOCK, RUN_LOCK) or "." not in name or name == "zarr.json":
            safe_remove(loc, rel)  # locks (free: checked under the lock), or no name of ours
        elif os.path.islink(loc.path(LEGACY_STAGING, name)):
            safe_remove(loc, rel)  # a link is never followed (unlinks the link only)
        else:
            os.rename(loc.path(LEGACY_STAGING, name), loc.path(STAGING, name))
            moved.append(name)
    os.rmdir(loc.path(LEGACY_STAGING))
    return moved


def migrate(url: str | os.PathLike, storage_options: dict | None = None) -> dict[str, Any]:
    """Move a store of the legacy layout (schema <= 2) to schema 3 in place; a no-op on schema 3.

    Under the legacy commit lock (so no writer of an older package commits meanwhile) and the new
    one: refuses (StoreLocked) while a run or a part writer of the legacy layout is at work, writes
    the manifest as ``manifest/``, creates ``staging/``, stamps the root with schema 3, deletes
    ``manifest.json`` (the commit point: until then it stays the commit record, see
    :mod:`storage.layout`), then moves what ``.staging/`` holds into ``staging/``. Stopped at any
    point, running it again finishes it. A store whose parts are schema 1 cannot be stamped (no
    damage detection): :class:`SchemaTooOld`, export/import it; a lost manifest: :class:`RepairNeeded`.
    Returns ``{"schema": <old>, "parts": <count>, "moved": [<names moved from .staging>]}``.
    """
    loc = Location.parse(url, storage_options)
    version = root_schema(loc)
    if not 0 < version <= SCHEMA_VERSION:
        raise StoreError(f"{loc.url}: not a dataset store this package can migrate (schema {version})")
    if version >= NODE_LAYOUT_SCHEMA and not legacy_entries(loc):
        return {"schema": version, "parts": len((read_manifest(loc) or {"parts": {}})["parts"]), "moved": []}
    with contextlib.ExitStack() as stack:
        stack.enter_context(legacy_commit_lock(loc))
        for fd in _legacy_writers(loc) if loc.local else []:
            stack.callback(os.close, fd)
        manifest = read_manifest(loc)
        if manifest is None:
            raise RepairNeeded(manifest_lost(loc) or f"{loc.url}: no manifest (not a dataset store)")
        if version < DAMAGE_DETECTION_SCHEMA and manifest["parts"]:
            raise SchemaTooOld(schema1_refusal(loc, version))
        stack.enter_context(commit_lock(loc))  # creates staging/: only once the store can be migrated
        write_manifest(loc, dict(manifest, schema_version=SCHEMA_VERSION))
        zarr.open_group(loc.zarr_store(), mode="r+").attrs.update({"schema_version": SCHEMA_VERSION})
        if loc.fs.exists(loc.path(LEGACY_MANIFEST)):
            loc.fs.rm(loc.path(LEGACY_MANIFEST))
        moved = _move_legacy_staging(loc) if loc.local else []
    log.info("%s: migrated from schema %d to %d (%d part(s))", loc.url, version, SCHEMA_VERSION,
             len(manifest["parts"]))
    return {"schema": version, "parts": len(manifest["parts"]), "moved": moved}


def _is_part_path(rel: str) -> bool:
    try:
        check_part_path(rel)
    except IntegrityError:
        return False
    return True


def _counts(col: np.ndarray) -> dict[str, int]:
    values, counts = np.unique(col, return_counts=True)
    return {str(v): int(c) for v, c in zip(values, counts)}


def summary(url: str | os.PathLike, storage_options: dict | None = None) -> dict[str, Any]:
    """Parts, frames (total and by label / attack_type / split), bytes on disk, schema, config."""
    reader = open_dataset(url, storage_options)
    loc = Location.parse(url, storage_options)
    meta = reader.meta
    return {
        "url": reader.url,
        "schema_version": reader.schema_version,
        "config_hash": reader.config_hash,
        "config": reader.config,
        "parts": len(reader.parts),
        "frames": len(reader),
        "frames_by_label": _counts(meta["label"]),
        "frames_by_attack_type": _counts(meta["attack_type"]),
        "frames_by_split": _counts(meta["split"]),
        "bytes": int(loc.fs.du(loc.root, total=True)),
    }


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def format_summary(info: dict[str, Any]) -> str:
    """Human-readable text of a :func:`summary` dict (several lines, no trailing newline)."""

    def counts(d: dict[str, int]) -> str:
        return ", ".join(f"{k or '(empty)'}: {v}" for k, v in sorted(d.items())) or "-"

    return "\n".join([
        f"store:          {info['url']}",
        f"schema version: {info['schema_version']}   config: {info['config_hash']}",
        f"parts:          {info['parts']}   frames: {info['frames']}   on disk: {_human_bytes(info['bytes'])}",
        f"by label:       {counts(info['frames_by_label'])}",
        f"by attack type: {counts(info['frames_by_attack_type'])}",
        f"by split:       {counts(info['frames_by_split'])}",
    ])
