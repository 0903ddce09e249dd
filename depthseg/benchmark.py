"""Protocol benchmarks: every fold of a protocol trained and evaluated, and the table papers print.

``benchmark(cfg)``: the datasets are scanned and the items any fold uses are preprocessed once
into one shared store (``OUT/store.zarr``, which keeps official splits; each fold's roles are
worked out from it, :mod:`depthseg.roles`); then each fold trains in ``OUT/folds/<fold>/train``
and is evaluated on its test role at the dev-role EER threshold (``.../eval/metrics.json``);
then ``OUT/table.csv`` and ``OUT/table.md`` are written. The folds of a protocol with folds
(``oulu-npu-p3``, ``siw-p2``, ``cross-dataset`` = the four O/C/I/M targets) all run unless the
spec names one.

Resuming: a fold whose ``metrics.json`` records this fold's configuration hash (everything that
changes its numbers: fold, preprocessing, training) is not rerun; an interrupted fold continues
from its ``last.pt``. A fold folder that holds another configuration is refused (never mixed
or deleted): a benchmark with other settings needs another ``OUT``. When no fold is left to
run, preprocessing is skipped too.

The table, as papers print it: per fold APCER (the maximum over attack types, ISO/IEC 30107-3),
BPCER and ACER, or HTER and AUC for cross-dataset targets, in %, then mean ± std over the
folds. **std is the sample standard deviation (n - 1 denominator)**, stated under the table.
Both levels are written: video (a video's score is the mean of its frame scores; what
OULU-NPU and SiW papers report) and frame.

Folds may run in parallel (the Prefect ``benchmark`` flow submits one task each): ``threads``
pins torch's intra-op threads per fold (default: the CPU count divided by ``parallel``), so
parallel folds do not oversubscribe the machine and a fold's numbers do not depend on how many
ran beside it.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.base.errors import ConfigError
from pipeline.datasets import scan_dataset
from pipeline.datasets.roles import fold_specs, preprocess_items, protocol_for
from pipeline.run.config import PreprocessConfig
from pipeline.run.runners import run_preprocess

from .evaluate import evaluate
from .trainer import RESUME_MUTABLE, TrainConfig, train

log = logging.getLogger(__name__)

#: (column, metrics.json key, header) of the table, per protocol kind
PAD_COLUMNS = (("apcer", "apcer_max", "APCER"), ("bpcer", "bpcer", "BPCER"), ("acer", "acer", "ACER"))
CROSS_COLUMNS = (("hter", "hter", "HTER"), ("auc", "auc", "AUC"))
LEVELS = ("video", "frame")
STD_NOTE = "std: sample standard deviation over the folds (n - 1 denominator)"


@dataclass
class BenchmarkConfig:
    """One benchmark: the protocol (all its folds, or one), the datasets, and the settings.

    ``datasets``: ``[(adapter name, dataset root), ...]`` (cross-dataset needs all four).
    ``preprocess``: :class:`pipeline.run.config.PreprocessConfig` flat option names; ``train``:
    :class:`~depthseg.trainer.TrainConfig` fields (not ``store``/``out_dir``/``protocol``).
    """

    protocol: str
    datasets: list[tuple[str, str]]
    out_dir: str
    preprocess: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    #: torch threads per fold (None: CPU count // parallel)
    threads: int | None = None
    #: folds meant to run at once (only sizes the default ``threads``)
    parallel: int = 1

    def __post_init__(self) -> None:
        self.datasets = [(str(n), str(r)) for n, r in self.datasets]
        if not self.datasets:
            raise ConfigError("benchmark: no dataset given")
        bad = sorted(set(self.train) & {"store", "out_dir", "protocol"})
        if bad:
            raise ConfigError(f"benchmark: train settings may not set {bad} (the benchmark sets them)")
        if self.threads is not None and self.threads < 1 or self.parallel < 1:
            raise ConfigError(f"benchmark: threads and parallel must be >= 1, got {self.threads}, {self.parallel}")
        fold_specs(self.protocol)  # unknown protocols and bad options fail here, before any work

    @property
    def folds(self) -> list[str]:
        return fold_specs(self.protocol)

    @property
    def cross(self) -> bool:
        return self.protocol.split(":", 1)[0].strip() == "cross-dataset"

    @property
    def store(self) -> str:
        return str(Path(self.out_dir) / "store.zarr")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BenchmarkConfig:
        return cls(**{**d, "datasets": [tuple(x) for x in d["datasets"]]})

    def preprocess_config(self):
        return PreprocessConfig.flat(**self.preprocess)

    def train_config(self, fold: str) -> TrainConfig:
        out = fold_dir(self.out_dir, fold) / "train"
        return TrainConfig(store=self.store, out_dir=str(out), protocol=fold, progress=False, **self.train)

    def fold_threads(self) -> int:
        return self.threads or max(1, (os.cpu_count() or 1) // self.parallel)


def fold_dir(out_dir: str | os.PathLike, fold: str) -> Path:
    """``OUT/folds/<protocol name with / as _>``, e.g. ``folds/oulu-npu-p3_fold2``."""
    return Path(out_dir) / "folds" / protocol_for(fold).name.replace("/", "_")


def fold_hash(cfg: BenchmarkConfig, fold: str) -> str:
    """Hash of what decides a fold's numbers: the fold, the store's preprocessing config and
    the training config (less what may change on resume: device, workers, paths)."""
    train = {k: v for k, v in cfg.train_config(fold).to_dict().items() if k not in RESUME_MUTABLE}
    record = {"fold": fold, "datasets": [n for n, _ in cfg.datasets],
              "preprocess": cfg.preprocess_config().output_config(), "train": train}
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _metrics_path(cfg: BenchmarkConfig, fold: str) -> Path:
    return fold_dir(cfg.out_dir, fold) / "eval" / "metrics.json"


def finished(cfg: BenchmarkConfig, fold: str) -> dict[str, Any] | None:
    """The fold's ``metrics.json`` when it records this configuration, else None."""
    path = _metrics_path(cfg, fold)
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    done = (metrics.get("benchmark") or {}).get("config_hash") == fold_hash(cfg, fold)
    return metrics if done else None


def check_folders(cfg: BenchmarkConfig, folds: Sequence[str]) -> None:
    """Refuse (:class:`ConfigError`) when a fold's folder holds another configuration's run."""
    for fold in folds:
        marker = fold_dir(cfg.out_dir, fold) / "fold.json"
        if marker.is_file():
            have = json.loads(marker.read_text())
            if have.get("config_hash") != fold_hash(cfg, fold):
                raise ConfigError(f"{marker.parent}: holds fold {have.get('fold')} of another benchmark "
                                  f"configuration; use another output folder (or remove that one)")


def _claim(cfg: BenchmarkConfig, fold: str) -> None:
    """Record the fold's configuration in its folder (refusing a folder of another one)."""
    check_folders(cfg, [fold])
    marker = fold_dir(cfg.out_dir, fold) / "fold.json"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"fold": fold, "config_hash": fold_hash(cfg, fold), "config": cfg.to_dict()},
                                 indent=2))


@contextlib.contextmanager
def pinned_threads(n: int) -> Iterator[None]:
    """torch intra-op threads set to ``n`` for the block, restored after. With torch's OpenMP
    backend (the CPU wheels) the count belongs to the calling thread, so folds running on the
    threads of one task runner each keep their own; in a process pool each process has its own."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def prepare_store(cfg: BenchmarkConfig) -> dict[str, Any]:
    """Scan the datasets and preprocess the items any fold uses into ``cfg.store`` (parts
    already committed are skipped). Returns counts per dataset."""
    scans = [(name, scan_dataset(name, root)) for name, root in cfg.datasets]
    where = ", ".join(f"{name} at {root}" for name, root in cfg.datasets)
    used = {it.video_id for it in preprocess_items(cfg.protocol, [i for _, s in scans for i in s.items], where)}
    pcfg = cfg.preprocess_config()
    counts: dict[str, Any] = {}
    for name, scan in scans:
        items = [it for it in scan.items if it.video_id in used]
        report = run_preprocess(items, cfg.store, pcfg, input_root=scan.root).to_dict()
        counts[name] = report["counts"]
        for f in report["failures"]:
            log.warning("benchmark: %s failed (%s: %s)", f["path"], f["reason"], f["message"])
    return counts


def run_fold(cfg: BenchmarkConfig, fold: str) -> dict[str, Any]:
    """Train and evaluate one fold (unless finished); returns its ``metrics.json``."""
    done = finished(cfg, fold)
    if done is not None:
        log.info("benchmark: fold %s finished earlier (%s), not rerun", fold, _metrics_path(cfg, fold))
        return done
    _claim(cfg, fold)
    tcfg = cfg.train_config(fold)
    with pinned_threads(cfg.fold_threads()):
        res = train(tcfg, resume=True)
        metrics = evaluate(res.best_checkpoint, cfg.store, split="test", dev_split="dev",
                           out_dir=_metrics_path(cfg, fold).parent, device=tcfg.device, protocol=fold,
                           include_flagged=tcfg.include_flagged)
    metrics["benchmark"] = {"fold": fold, "config_hash": fold_hash(cfg, fold)}
    path = _metrics_path(cfg, fold)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(metrics, indent=2))
    os.replace(tmp, path)
    return metrics


def table_rows(cfg: BenchmarkConfig, results: Sequence[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per fold and level, then a ``mean`` and a ``std`` row per level (no I/O).

    Values are fractions as ``metrics.json`` holds them (NaN where undefined); ``fold`` is the
    protocol's name of the fold, ``kind`` is ``fold``, ``mean`` or ``std``.
    """
    columns = CROSS_COLUMNS if cfg.cross else PAD_COLUMNS
    rows: list[dict[str, Any]] = []
    for level in LEVELS:
        per_fold = []
        for fold, metrics in results:
            m = metrics[level]
            row = {"level": level, "kind": "fold", "fold": protocol_for(fold).name,
                   **{col: _num(m.get(key)) for col, key, _ in columns}}
            if not cfg.cross:
                row["apcer_type"] = m.get("apcer_max_type") or ""
            per_fold.append(row)
        rows += per_fold
        values = {col: np.array([r[col] for r in per_fold], dtype=np.float64) for col, _, _ in columns}
        n = len(per_fold)
        rows.append({"level": level, "kind": "mean", "fold": f"mean of {n}",
                     **{c: float(np.mean(v)) for c, v in values.items()}})
        rows.append({"level": level, "kind": "std", "fold": f"std of {n} (n-1)",
                     **{c: float(np.std(v, ddof=1)) if n > 1 else math.nan for c, v in values.items()}})
    return rows


def _num(v: Any) -> float:
    return math.nan if v is None else float(v)


def _pct(v: float) -> str:
    return "n/a" if not math.isfinite(v) else f"{100 * v:.2f}"


def format_markdown(cfg: BenchmarkConfig, rows: Sequence[dict[str, Any]]) -> str:
    """The table as papers print it (values in %), one section per level."""
    columns = CROSS_COLUMNS if cfg.cross else PAD_COLUMNS
    first = "Target" if cfg.cross else "Fold"
    lines = [f"# Benchmark {cfg.protocol}", "",
             f"Datasets: {', '.join(f'{n} ({r})' for n, r in cfg.datasets)}. Threshold: EER of each fold's dev "
             f"role. APCER: maximum over attack types (ISO/IEC 30107-3). Values in %. {STD_NOTE}."]
    for level in LEVELS:
        lines += ["", f"## {level} level", "",
                  "| " + " | ".join([first, *(f"{h} (%)" for _, _, h in columns)]) + " |",
                  "|" + "---|" * (len(columns) + 1)]
        mine = [r for r in rows if r["level"] == level]
        for r in (r for r in mine if r["kind"] == "fold"):
            cells = [_pct(r[c]) + (f" ({r['apcer_type']})" if c == "apcer" and r[c] > 0 else "")
                     for c, _, _ in columns]
            lines.append("| " + " | ".join([r["fold"], *cells]) + " |")
        mean = next(r for r in mine if r["kind"] == "mean")
        std = next(r for r in mine if r["kind"] == "std")
        cells = [f"{_pct(mean[c])} ± {_pct(std[c])}" for c, _, _ in columns]
        lines.append("| " + " | ".join([f"**Mean ± Std** ({mean['fold'].split()[-1]} folds)", *cells]) + " |")
    return "\n".join(lines) + "\n"


def write_table(cfg: BenchmarkConfig, rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    """``OUT/table.csv`` (fractions, full precision, with the std convention in its ``fold``
    cell) and ``OUT/table.md``; returns their paths."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    paths = {"csv": out / "table.csv", "markdown": out / "table.md"}
    with open(paths["csv"], "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows({k: repr(v) if isinstance(v, float) else v for k, v in r.items()} for r in rows)
    paths["markdown"].write_text(format_markdown(cfg, rows))
    return {k: str(v) for k, v in paths.items()}


def pending_folds(cfg: BenchmarkConfig) -> list[str]:
    """The folds still to run (not :func:`finished`)."""
    return [f for f in cfg.folds if finished(cfg, f) is None]


def benchmark(cfg: BenchmarkConfig, *, run: Callable[[BenchmarkConfig, str], dict] = run_fold) -> dict[str, Any]:
    """Every fold of ``cfg.protocol`` (see the module docstring); returns ``{"folds": {fold:
    metrics}, "skipped": [finished folds], "rows": table rows, "files": {csv, markdown},
    "preprocess": counts}``."""
    folds, pending = cfg.folds, pending_folds(cfg)
    skipped = [f for f in folds if f not in pending]
    check_folders(cfg, pending)
    counts = prepare_store(cfg) if pending else {}
    results = [(fold, run(cfg, fold)) for fold in folds]
    rows = table_rows(cfg, results)
    return {"folds": dict(results), "skipped": skipped, "rows": rows, "files": write_table(cfg, rows),
            "preprocess": counts}
