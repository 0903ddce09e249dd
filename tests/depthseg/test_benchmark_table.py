"""The benchmark table from fold metrics: cross-dataset HTER/AUC, mean and sample std, single
folds, Markdown cells (the end-to-end run is tests/e2e/test_benchmark.py)."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from depthseg.benchmark import BenchmarkConfig, fold_dir, fold_hash, table_rows, write_table
from depthseg.metrics import frame_and_video_metrics
from pipeline.base.errors import ConfigError

OCIM = [("oulu-npu", "/o"), ("casia-fasd", "/c"), ("replay-attack", "/i"), ("msu-mfsd", "/m")]


def fold_result(seed: int) -> dict:
    """Metrics of random scores (separable to a seed-dependent degree) at a fixed threshold."""
    rng = np.random.default_rng(seed)
    live = np.repeat([True, False, False], 20)
    scores = rng.normal(0, 1, live.size) + live * (0.5 + seed)
    types = np.repeat(["none", "print", "replay"], 20)
    videos = np.repeat([f"v{k}" for k in range(12)], 5)
    return frame_and_video_metrics(scores, live, types, videos, {"frame": 0.4, "video": 0.4})


def test_cross_dataset_table_is_hter_and_auc_with_sample_std(tmp_path):
    cfg = BenchmarkConfig("cross-dataset", OCIM, str(tmp_path))
    assert cfg.folds == [f"cross-dataset:target={t}" for t in "OCIM"]
    results = [(f, fold_result(k)) for k, f in enumerate(cfg.folds)]
    rows = table_rows(cfg, results)
    for level in ("video", "frame"):
        mine = {r["kind"]: r for r in rows if r["level"] == level and r["kind"] != "fold"}
        for col in ("hter", "auc"):
            vals = np.array([m[level][col] for _, m in results])
            assert mine["mean"][col] == pytest.approx(vals.mean())
            assert mine["std"][col] == pytest.approx(math.sqrt(((vals - vals.mean()) ** 2).sum() / 3))
        assert "acer" not in mine["mean"]
    files = write_table(cfg, rows)
    with open(files["csv"]) as f:
        back = list(csv.DictReader(f))
    assert [float(r["hter"]) for r in back] == [r["hter"] for r in rows]  # full precision
    md = open(files["markdown"]).read()
    assert "| Target | HTER (%) | AUC (%) |" in md and "| cross-dataset/CIM-to-O |" in md
    assert "n - 1 denominator" in md


def test_single_fold_has_no_std(tmp_path):
    cfg = BenchmarkConfig("oulu-npu-p1", [("oulu-npu", "/o")], str(tmp_path))
    rows = table_rows(cfg, [(cfg.folds[0], fold_result(1))])
    std = next(r for r in rows if r["kind"] == "std" and r["level"] == "video")
    assert all(math.isnan(std[c]) for c in ("apcer", "bpcer", "acer"))
    assert "± n/a |" in open(write_table(cfg, rows)["markdown"]).read()


def test_fold_identity_and_config_checks(tmp_path):
    cfg = BenchmarkConfig("oulu-npu-p3", [("oulu-npu", "/o")], str(tmp_path), train={"epochs": 1})
    assert len(cfg.folds) == 6 and fold_dir(tmp_path, cfg.folds[1]).name == "oulu-npu-p3_fold2"
    other = BenchmarkConfig("oulu-npu-p3", [("oulu-npu", "/o")], str(tmp_path), train={"epochs": 2})
    moved = BenchmarkConfig("oulu-npu-p3", [("oulu-npu", "/o")], str(tmp_path / "x"), train={"epochs": 1,
                                                                                           "device": "cuda"})
    assert fold_hash(cfg, cfg.folds[0]) != fold_hash(other, cfg.folds[0])
    assert fold_hash(cfg, cfg.folds[0]) != fold_hash(cfg, cfg.folds[1])
    assert fold_hash(cfg, cfg.folds[0]) == fold_hash(moved, cfg.folds[0])  # paths and device: same numbers
    with pytest.raises(KeyError, match="oulu-npu-p9"):
        BenchmarkConfig("oulu-npu-p9", [("oulu-npu", "/o")], str(tmp_path))
    with pytest.raises(ConfigError, match=r"may not set \['store'\]"):
        BenchmarkConfig("oulu-npu-p3", [("oulu-npu", "/o")], str(tmp_path), train={"store": "x"})
