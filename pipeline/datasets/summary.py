"""Plain-text summaries of scans and protocol splits (``depthseg-fas datasets``)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence

from pipeline.io.items import WorkItem
from .base import ScanResult, attack_family, scan_dataset
from .protocols import (
    ProtocolSplit,
    SubjectOverlapError,
    check_subject_disjoint,
    fold_options,
    make_protocol,
)


def _table(groups: dict[str, Sequence[WorkItem]], first: str) -> list[str]:
    """Rows of a live/spoof/unknown/total/subjects/attack-type table, one per group."""
    head = f"  {first:<8} {'live':>7} {'spoof':>7} {'unknown':>7} {'total':>7} {'subjects':>8}  attack types"
    lines = [head]
    total: list[WorkItem] = []
    for name, items in groups.items():
        total += items
        lines.append(_row(name, items))
    if len(groups) > 1:
        lines.append(_row("all", total))
    return lines


def _row(name: str, items: Sequence[WorkItem]) -> str:
    labels = Counter(i.label for i in items)
    subjects = len({(i.extra.get("dataset", ""), i.subject) for i in items if i.subject})
    attacks = Counter(i.attack_type for i in items)
    att = ", ".join(f"{k} {v}" for k, v in sorted(attacks.items()))
    return (
        f"  {name:<8} {labels['live']:>7} {labels['spoof']:>7} {labels['unknown']:>7} "
        f"{len(items):>7} {subjects:>8}  {att}"
    )


def format_scan_summary(scan: ScanResult, max_listed: int = 50) -> str:
    """Counts per split x label, subjects, attack types and families, then the rejected
    paths with their reasons (the names the adapter could not parse) and the ignored files.

    At most ``max_listed`` rejected paths are listed (the total is always given).
    """
    lines = [
        f"dataset {scan.dataset or '?'} at {scan.root or '?'}: {len(scan.items)} items, "
        f"{len(scan.rejected)} rejected, {len(scan.ignored)} other files ignored"
    ]
    groups: dict[str, list[WorkItem]] = {}
    order = {"train": 0, "dev": 1, "test": 2}
    for it in sorted(scan.items, key=lambda i: (order.get(i.split, 3), i.split)):
        groups.setdefault(it.split or "(none)", []).append(it)
    if groups:
        lines += _table(groups, "split")
        fams = Counter(attack_family(i) for i in scan.items)
        lines.append("  attack families: " + ", ".join(f"{k} {v}" for k, v in sorted(fams.items())))
        kinds = Counter(i.extra.get("kind", "?") for i in scan.items)
        lines.append("  inputs: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
    if scan.rejected:
        lines.append(f"rejected ({len(scan.rejected)}):")
        for path, why in scan.rejected[:max_listed]:
            shown = os.path.relpath(path, scan.root) if scan.root and os.path.isabs(path) else path
            lines.append(f"  {shown}: {why}")
        if len(scan.rejected) > max_listed:
            lines.append(f"  ... and {len(scan.rejected) - max_listed} more")
    if scan.ignored:
        exts = Counter(os.path.splitext(p)[1].lower() or "(no extension)" for p in scan.ignored)
        lines.append(
            f"ignored ({len(scan.ignored)} non-input files): " + ", ".join(f"{k} {v}" for k, v in exts.most_common(8))
        )
    return "\n".join(lines)


def format_protocol_split(split: ProtocolSplit, description: str = "") -> str:
    """Per-role table of a protocol split plus the subject-disjointness verdict."""
    lines = [f"protocol {split.protocol}" + (f": {description}" if description else "")]
    lines += _table(split.roles(), "role")
    if split.excluded:
        lines.append(f"  not used by the protocol: {split.excluded} items")
    try:
        check_subject_disjoint(split)
        lines.append("  subjects disjoint across train/dev/test: yes")
    except SubjectOverlapError as exc:
        lines.append(f"  subjects disjoint across train/dev/test: NO - {exc}")
    return "\n".join(lines)


def datasets_command(root: str | os.PathLike, dataset: str, protocol: str | None = None) -> str:
    """Text of ``depthseg-fas datasets ROOT --dataset NAME [--protocol P]``.

    ``protocol`` is a name with optional options, e.g. ``oulu-npu-p3``, ``oulu-npu-p3:fold=2``
    or ``siw-p1:dev_holdout=0.2``; without a fold every fold is shown. Raises KeyError for an
    unknown adapter or protocol and ConfigError when the protocol cannot use this dataset.
    """
    scan = scan_dataset(dataset, root)
    parts = [format_scan_summary(scan)]
    if protocol:
        name, folds = fold_options(protocol)
        for kw in folds:
            p = make_protocol(name, **kw)
            parts.append(format_protocol_split(p.split(scan.items), p.description))
    return "\n\n".join(parts)


__all__ = ["datasets_command", "format_protocol_split", "format_scan_summary"]
