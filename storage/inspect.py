"""Integrity checks and summaries of a dataset store (what ``depthseg-fas inspect`` reports)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import zarr

from .errors import StoreError
from .layout import SCHEMA_VERSION, Location, _tree_checksum, read_manifest
from .reader import open_dataset


def verify(url: str | os.PathLike, storage_options: dict | None = None) -> list[str]:
    """Recompute every committed part's checksum against the manifest.

    Returns a list of problems, one line each naming the part (empty when the store is sound):
    a missing part folder, a checksum mismatch, a frame count differing from the manifest, an
    unreadable manifest or a schema version this package does not know.
    """
    loc = Location.parse(url, storage_options)
    try:
        manifest = read_manifest(loc)
    except StoreError as e:
        return [str(e)]
    if manifest is None:
        return [f"{loc.url}: no manifest.json (not a dataset store)"]
    problems = []
    if int(manifest.get("schema_version", 0)) > SCHEMA_VERSION:
        problems.append(f"{loc.url}: schema version {manifest['schema_version']} is newer than {SCHEMA_VERSION}")
    for part_id, entry in sorted(manifest["parts"].items()):
        path = loc.path(*entry["path"].split("/"))
        if not loc.fs.exists(path):
            problems.append(f"part {part_id}: folder {entry['path']} is missing")
            continue
        actual = _tree_checksum(loc.fs, path)
        if actual != entry.get("checksum"):
            problems.append(f"part {part_id}: checksum mismatch in {entry['path']} (manifest "
                            f"{entry.get('checksum')}, files {actual})")
            continue
        try:
            frames = zarr.open_array(loc.zarr_store(*entry["path"].split("/"), "image", read_only=True),
                                     mode="r").shape[0]
        except Exception as e:  # noqa: BLE001 - any failure to open is a problem to report
            problems.append(f"part {part_id}: image array unreadable: {e!r}")
            continue
        if frames != entry["frames"]:
            problems.append(f"part {part_id}: {frames} frames on disk, manifest says {entry['frames']}")
    return problems


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
