"""Checks of a benchmark's paper table against the folds' own ``metrics.json`` (CLI and flow tests)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

#: the six folds of OULU-NPU protocol 3, as the benchmark names their folders
P3_FOLDS = [f"oulu-npu-p3_fold{k}" for k in range(1, 7)]


def fold_metrics(out: Path, folds: list[str] = P3_FOLDS) -> dict[str, dict]:
    return {f: json.loads((out / "folds" / f / "eval" / "metrics.json").read_text()) for f in folds}


def read_table(out: Path) -> list[dict]:
    with open(out / "table.csv") as f:
        return list(csv.DictReader(f))


def check_table(out: Path, folds: list[str] = P3_FOLDS) -> None:
    """The table rows are the folds' values, their mean and sample std (n - 1), per level."""
    metrics = fold_metrics(out, folds)
    rows = read_table(out)
    for level in ("video", "frame"):
        mine = [r for r in rows if r["level"] == level]
        fold_rows = [r for r in mine if r["kind"] == "fold"]
        assert [r["fold"] for r in fold_rows] == [f.replace("_", "/") for f in folds]
        for col, key in (("apcer", "apcer_max"), ("bpcer", "bpcer"), ("acer", "acer")):
            per_fold = np.array([metrics[f][level][key] for f in folds], dtype=np.float64)
            assert [float(r[col]) for r in fold_rows] == per_fold.tolist()
            mean = next(r for r in mine if r["kind"] == "mean")
            std = next(r for r in mine if r["kind"] == "std")
            assert float(mean[col]) == pytest.approx(per_fold.mean(), abs=1e-12)
            if len(per_fold) > 1:
                sample_std = math.sqrt(((per_fold - per_fold.mean()) ** 2).sum() / (len(per_fold) - 1))
                assert float(std[col]) == pytest.approx(sample_std, abs=1e-12)
            else:  # one fold: no sample std
                assert math.isnan(float(std[col]))
        for f, r in zip(folds, fold_rows):
            assert r["apcer_type"] == metrics[f][level]["apcer_max_type"]


def file_times(out: Path) -> dict[Path, int]:
    """Modification times of every file under ``out`` but the table (a rerun rewrites only it)."""
    return {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and "table" not in p.name}
