"""Generic CSV manifest adapter (``csv``).

The scanned "root" is the CSV file itself. Columns (header row, names case-insensitive):

* required: ``path`` (relative to the CSV's folder, or absolute) and ``label``
  (``live``/``spoof``/``unknown``, case-insensitive);
* optional: ``attack_type`` (a family from :data:`pipeline.io.items.ATTACK_TYPES` or a numbered
  refinement such as ``print1``; empty -> ``none`` for live rows, ``unknown`` otherwise),
  ``subject``, ``session``, ``device``, ``split`` (``train``/``dev``/``test`` or empty),
  ``video_id`` (default ``"<dataset>/<path relative to the input root>"``), ``max_frames``
  (positive integer), ``dataset`` (qualifies subjects; default the adapter's ``dataset``
  option, ``"csv"``). Any other column is kept as a string in ``item.extra``.

A missing required column raises :class:`~pipeline.base.errors.DatasetLayoutError` naming it. Rows
are rejected (with ``"row N: reason"``) for an unknown label, attack type or split, a live row
with an attack type (or a spoof row with ``none``), a path outside the input root (unless
``allow_outside_root=True``), a missing file, a file that is neither a video nor an image, a
folder without images, and a repeated path or video id. The input root is the CSV's folder
unless ``root=`` is given; "outside" is decided on normalised absolute paths (``..`` resolved,
symlinks inside the root are not resolved, so a dataset linked into the root counts as inside).
"""

from __future__ import annotations

import csv
import logging
import os

from pipeline.base.errors import DatasetLayoutError, InputNotFound
from pipeline.io.items import ATTACK_TYPES, LABELS, WorkItem
from .base import ADAPTERS, IMAGE_EXTENSIONS, SPLITS, VIDEO_EXTENSIONS, DatasetAdapter, ScanResult

logger = logging.getLogger(__name__)

NAME = "csv"
REQUIRED_COLUMNS = ("path", "label")
OPTIONAL_COLUMNS = ("attack_type", "subject", "session", "device", "split", "video_id", "max_frames", "dataset")


def input_kind(path: str) -> str | None:
    """``video``, ``image``, ``image_folder`` or None (not an input) for an existing ``path``."""
    if os.path.isdir(path):
        try:
            names = os.listdir(path)
        except OSError:
            return None
        has_images = any(os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS for n in names)
        return "image_folder" if has_images else None
    ext = os.path.splitext(path)[1].lower()
    if ext in VIDEO_EXTENSIONS:
        return "video"
    if ext in IMAGE_EXTENSIONS:
        return "image"
    return None


def is_within(path: str, root: str) -> bool:
    """Whether absolute ``path`` lies in (or is) folder ``root`` (lexical, normalised)."""
    try:
        return os.path.commonpath([os.path.normcase(path), os.path.normcase(root)]) == os.path.normcase(root)
    except ValueError:  # different drives
        return False


@ADAPTERS.register(NAME)
class CsvAdapter(DatasetAdapter):
    """Items listed in a CSV manifest (see module docstring).

    ``root``: folder every path must stay within (default: the CSV's folder);
    ``allow_outside_root``: accept paths outside it; ``dataset``: default ``extra["dataset"]``.
    """

    name = NAME

    def __init__(self, root: str | os.PathLike | None = None, allow_outside_root: bool = False, dataset: str = NAME):
        self.root = os.fspath(root) if root is not None else None
        self.allow_outside_root = allow_outside_root
        self.dataset = dataset

    def scan(self, root) -> ScanResult:
        csv_path = os.path.abspath(os.fspath(root))
        if not os.path.isfile(csv_path):
            raise InputNotFound("CSV manifest does not exist (the csv adapter scans a .csv file)", source=csv_path)
        base = os.path.dirname(csv_path)
        input_root = os.path.abspath(self.root) if self.root is not None else base
        result = ScanResult(dataset=NAME, root=input_root)
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise DatasetLayoutError("empty CSV (no header row)", source=csv_path)
            cols = [h.strip().lower() for h in header]
            missing = [c for c in REQUIRED_COLUMNS if c not in cols]
            if missing:
                raise DatasetLayoutError(
                    f"missing required column(s): {', '.join(missing)} (header has: {', '.join(cols) or 'nothing'}; "
                    f"required: {', '.join(REQUIRED_COLUMNS)}; optional: {', '.join(OPTIONAL_COLUMNS)})",
                    source=csv_path,
                )
            dupes = sorted({c for c in cols if cols.count(c) > 1})
            if dupes:
                raise DatasetLayoutError(f"repeated column(s): {', '.join(dupes)}", source=csv_path)
            seen_paths: dict[str, int] = {}
            seen_ids: dict[str, int] = {}
            for rowno, values in enumerate(reader, start=2):
                if not any(v.strip() for v in values):
                    continue
                if len(values) != len(cols):
                    result.rejected.append(
                        (f"{csv_path}:{rowno}", f"row {rowno}: {len(values)} fields, the header has {len(cols)}")
                    )
                    continue
                row = {c: v.strip() for c, v in zip(cols, values)}
                where = row["path"] or f"{csv_path}:{rowno}"
                try:
                    item = self._row_item(row, base, input_root, rowno)
                except DatasetLayoutError as exc:
                    result.rejected.append((where, f"row {rowno}: {exc}"))
                    continue
                if item.path in seen_paths:
                    first = seen_paths[item.path]
                    result.rejected.append((item.path, f"row {rowno}: path already listed in row {first}"))
                    continue
                if item.video_id in seen_ids:
                    first = seen_ids[item.video_id]
                    why = f"row {rowno}: video id {item.video_id!r} already used in row {first}"
                    result.rejected.append((item.path, why))
                    continue
                seen_paths[item.path] = seen_ids[item.video_id] = rowno
                result.items.append(item)
        logger.info("csv %s: %d items, %d rejected", csv_path, len(result.items), len(result.rejected))
        return result

    def _row_item(self, row: dict[str, str], base: str, input_root: str, rowno: int) -> WorkItem:
        raw = row["path"]
        if not raw:
            raise DatasetLayoutError("empty path")
        label = row["label"].lower()
        if label not in LABELS:
            raise DatasetLayoutError(f"unknown label {row['label']!r} (expected one of {', '.join(LABELS)})")
        attack = row.get("attack_type", "").lower()
        if not attack:
            attack = "none" if label == "live" else "unknown"
        family = attack.rstrip("0123456789")
        if family not in ATTACK_TYPES:
            raise DatasetLayoutError(
                f"unknown attack type {row['attack_type']!r} "
                f"(expected one of {', '.join(ATTACK_TYPES)}, optionally numbered)"
            )
        if label == "live" and family != "none":
            raise DatasetLayoutError(f"label live with attack type {attack!r}")
        if label == "spoof" and family == "none":
            raise DatasetLayoutError("label spoof with attack type 'none'")
        split = row.get("split", "").lower()
        if split not in SPLITS and split != "":
            raise DatasetLayoutError(f"unknown split {row['split']!r} (expected {', '.join(SPLITS)} or empty)")
        max_frames = None
        if row.get("max_frames"):
            if not row["max_frames"].isdigit() or int(row["max_frames"]) < 1:
                raise DatasetLayoutError(f"max_frames {row['max_frames']!r} is not a positive integer")
            max_frames = int(row["max_frames"])
        path = os.path.abspath(os.path.join(base, os.path.expanduser(raw)))
        inside = is_within(path, input_root)
        if not inside and not self.allow_outside_root:
            raise DatasetLayoutError(
                f"path {raw!r} points outside the input root {input_root} (allow_outside_root=True accepts it)"
            )
        if not os.path.exists(path):
            raise DatasetLayoutError(f"file not found: {path}")
        kind = input_kind(path)
        if kind is None:
            raise DatasetLayoutError(
                "folder without images" if os.path.isdir(path) else f"not a video or image file: {path}"
            )
        rel = (os.path.relpath(path, input_root) if inside else path.lstrip("/\\")).replace(os.sep, "/")
        dataset = row.get("dataset") or self.dataset
        known = set(REQUIRED_COLUMNS) | set(OPTIONAL_COLUMNS)
        extra = {k: v for k, v in row.items() if k not in known}
        extra.update(dataset=dataset, relpath=rel, kind=kind, attack_family=family, csv_row=rowno)
        return WorkItem(
            path=path, label=label, attack_type=attack,
            subject=row.get("subject", ""), session=row.get("session", ""), device=row.get("device", ""),
            split=split, video_id=row.get("video_id") or f"{dataset}/{rel}", max_frames=max_frames, extra=extra,
        )
