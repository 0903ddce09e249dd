"""Turn what the user points at (file, folder, CSV manifest, dataset root) into work items."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipeline.base.errors import InputNotFound
from pipeline.datasets import scan_dataset
from pipeline.datasets.roles import preprocess_items
from pipeline.io.items import WorkItem


@dataclass
class Inputs:
    items: list[WorkItem]
    rejected: list[dict] = field(default_factory=list)  # {"path", "reason", "message"}
    root: str | None = None


def collect_items(
    input_path: str | Path,
    *,
    manifest: str | Path | None = None,
    dataset: str | None = None,
    allow_outside_root: bool = False,
    protocol: str | None = None,
) -> Inputs:
    """Items of ``input_path``: a dataset root (``dataset=``), a CSV manifest, a folder, or one file.

    Items of a plain folder or file carry label ``unknown`` (depth rendered as for live faces).
    ``protocol`` (``oulu-npu-p3``, ``siw-p1``, ...) keeps only the items some fold of it uses
    (:func:`pipeline.datasets.roles.preprocess_items`; refused when a fold lacks what it needs).
    """
    src = Path(input_path)
    if not src.exists():
        raise InputNotFound("input path does not exist", source=str(src))
    if manifest is None and src.is_file() and src.suffix.lower() == ".csv":
        manifest, src = src, src.parent
    if dataset:
        scan = scan_dataset(dataset, src)
    elif manifest is not None:
        mpath = Path(manifest)
        if not mpath.is_file():
            raise InputNotFound("manifest CSV does not exist", source=str(mpath))
        scan = scan_dataset("csv", mpath, root=src, allow_outside_root=allow_outside_root)
    elif src.is_file():
        return Inputs([WorkItem(path=str(src), attack_type="unknown", video_id=src.stem)], [], str(src.parent))
    else:
        scan = scan_dataset("folder", src)
    rejected = [{"path": str(p), "reason": "rejected", "message": str(why)} for p, why in scan.rejected]
    items = list(scan.items)
    if protocol:
        items = preprocess_items(protocol, items, str(src))
    return Inputs(items, rejected, str(src if src.is_dir() else src.parent))
