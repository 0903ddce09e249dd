"""Evaluate a checkpoint on a split of a store (ISO/IEC 30107-3 metrics, frame and video level).

``evaluate(checkpoint, store, split="test", dev_split="dev", out_dir=...)``:

1. the decision thresholds (frame and video level) are fixed on the development set - the
   EER point of the model's scores on ``dev_split`` of ``dev_store`` (default: the same
   store). For a cross-dataset test pass the *source* dataset as ``dev_store``: the HTER
   reported is then the source-threshold HTER on the target. Without dev data the
   thresholds saved in the checkpoint (training's dev set) are used; ``threshold`` overrides
   the frame-level one;
2. the test split is scored and every metric of :func:`depthseg.metrics.pad_metrics` is
   computed at both levels. A test split with one class only (e.g. an attack-only set) is
   evaluated with a loud warning: the metrics that need the other class are null in
   ``metrics.json``; an empty one is a :class:`~depthseg.trainer.SplitError`.

Files written to ``out_dir``: ``metrics.json``, ``scores_video.csv``, ``scores_frame.csv``,
``roc_det.png`` (ROC and DET curves, frame and video) and ``depth_grid.png`` (input crops with
predicted and target depth, bona fide and attacks).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

import storage

from .data import FrameDataset, prepare_batch
from .labels import class_centres
from .metrics import dev_thresholds, error_curves, frame_and_video_metrics, non_response_rates, video_level
from .models import DepthSegNet
from .predict import autocast_for, model_device, predict_dataset
from .roles import protocol_split
from .score import frame_scores
from .trainer import SplitError, json_safe, load_checkpoint

log = logging.getLogger(__name__)


def evaluate(
    checkpoint: str | os.PathLike,
    store: str | os.PathLike,
    split: str = "test",
    dev_split: str | None = "dev",
    out_dir: str | os.PathLike = "eval",
    *,
    dev_store: str | os.PathLike | None = None,
    threshold: float | None = None,
    device: str = "auto",
    batch_size: int = 64,
    num_workers: int = 0,
    amp: bool = True,
    grid_samples: int = 8,
    protocol: str | None = None,
    include_flagged: bool = False,
) -> dict[str, Any]:
    """Evaluate ``checkpoint`` on ``split`` of ``store``; returns the metrics written to
    ``metrics.json`` (keys ``frame``, ``video``, ``non_response``, ``thresholds``,
    ``threshold_source``, ``dev``, ``files`` ...). With ``protocol`` (a fold, ``oulu-npu-p3:fold=2``)
    ``split`` and ``dev_split`` name its roles (:mod:`depthseg.roles`).

    QC-flagged frames are not scored unless ``include_flagged``; they, and the sampled frames
    preprocessing found no (confirmed) face in or dropped, are non-responses
    (:func:`depthseg.metrics.non_response_rates`, from each part's recorded frame counts)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, meta = load_checkpoint(checkpoint, device=device)
    reader = storage.open_dataset(store)
    test = _test_split(reader, store, split, protocol, include_flagged)

    thresholds, source, dev_summary = _thresholds(model, meta, reader, store, dev_store,
                                                  protocol_split(protocol, dev_split), batch_size,
                                                  num_workers, amp, include_flagged)
    if threshold is not None:
        thresholds["frame"], source = float(threshold), f"{source}; frame threshold given"

    pred = predict_dataset(model, test, batch_size=batch_size, num_workers=num_workers, amp=amp)
    usable = {k: v for k, v in thresholds.items() if not math.isnan(v)}
    metrics = frame_and_video_metrics(pred.scores, test.is_live, test.attack_type, test.video_id,
                                      usable)
    files = _write_outputs(out, model, test, pred.scores, thresholds, grid_samples, amp)

    result = {
        "checkpoint": str(checkpoint),
        "store": str(store),
        "split": split,
        "dev_store": str(dev_store or store),
        "dev_split": dev_split,
        "protocol": protocol,
        "thresholds": thresholds,
        "threshold_source": source,
        "decision_rule": "score >= threshold -> live (bona fide)",
        "frame": metrics["frame"],
        "video": metrics["video"],
        "non_response": split_non_responses(test),
        "dev": dev_summary,
        "model": meta["model_kwargs"],
        "epoch": meta.get("epoch"),
        "files": {k: str(v) for k, v in files.items()},
    }
    result = json_safe(result)
    files["metrics"].write_text(json.dumps(result, indent=2))
    f, v = result["frame"], result["video"]
    log.info("%s %s: frame ACER %s HTER %s EER %s AUC %s | video ACER %s", store, split, f["acer"],
             f["hter"], f["eer"], f["auc"], v["acer"])
    return result


def _test_split(reader: Any, store: str | os.PathLike, split: str, protocol: str | None,
                include_flagged: bool) -> FrameDataset:
    """The frames of ``split`` (a role of ``protocol`` when given) to evaluate; an empty split is a
    :class:`SplitError`, a one-class split a warning (the metrics that need the other class are null)."""
    test = FrameDataset(reader, protocol_split(protocol, split), include_flagged=include_flagged)
    if len(test) == 0:
        raise SplitError(f"{store}: split {split!r} has no live/spoof frames to evaluate")
    if test.is_live.all() or not test.is_live.any():
        log.warning("%s: split %r has only %s frames (%d): BPCER/APCER, ACER, HTER, EER and AUC that "
                    "need the missing class are undefined (null in metrics.json)", store, split,
                    "live" if test.is_live.all() else "spoof", len(test))
    return test


def _write_outputs(out: Path, model: DepthSegNet, test: FrameDataset, scores: np.ndarray,
                   thresholds: dict[str, float], grid_samples: int, amp: bool) -> dict[str, Path]:
    """The score tables, ROC/DET curves and depth grid of the test split; returns every output
    file by name (``metrics`` is written last, by :func:`evaluate`)."""
    files = {
        "metrics": out / "metrics.json",
        "scores_video": out / "scores_video.csv",
        "scores_frame": out / "scores_frame.csv",
        "roc_det": out / "roc_det.png",
        "depth_grid": out / "depth_grid.png",
    }
    _write_scores(files["scores_frame"], files["scores_video"], test, scores, thresholds)
    plot_roc_det(scores, test.is_live, test.attack_type, test.video_id, files["roc_det"])
    depth_grid(model, test, files["depth_grid"], n=grid_samples, amp=amp)
    return files


def split_non_responses(test: FrameDataset) -> dict[str, Any]:
    """Non-response rates of ``test``'s videos: sampled frames against frames scored.

    A video's sampled frames are its part's recorded ``decoded`` count when the part is that
    one video, all in this split (what preprocessing writes); else its stored frames. Videos
    that failed as a whole (no face in any frame) have no part in the store and are listed in
    the preprocessing run report, not here.
    """
    full = test.all_frames
    if len(full) == 0:
        return non_response_rates(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, bool))
    scored = Counter(zip(test.reader.part_ids, test.video_id))
    keys = list(zip(full.part_ids, np.asarray(full.meta["video_id"]).astype(str)))
    stored = Counter(keys)
    live = dict(zip(keys, np.asarray(full.meta["label"]).astype(str) == "live"))
    info = {p.part_id: p for p in full.parts}
    attempted, evaluated, is_live = [], [], []
    for key, n in stored.items():
        part = info[key[0]]
        whole = part.frames == n  # the part is this one video, all in this split
        attempted.append(max(int(part.extra.get("decoded", n)), n) if whole else n)
        evaluated.append(scored.get(key, 0))
        is_live.append(live[key])
    rates = non_response_rates(np.array(attempted, np.int64), np.array(evaluated, np.int64), np.array(is_live, bool))
    log.info("non-responses: frame BPNRR %s APNRR %s | video BPNRR %s APNRR %s", rates["frame"]["bpnrr"],
             rates["frame"]["apnrr"], rates["video"]["bpnrr"], rates["video"]["apnrr"])
    return rates


def _thresholds(model: DepthSegNet, meta: dict[str, Any], reader: storage.DatasetReader,
                store: Any, dev_store: Any, dev_split: Any, batch_size: int,
                num_workers: int, amp: bool, include_flagged: bool = False
                ) -> tuple[dict[str, float], str, dict[str, Any]]:
    """Decision thresholds: the EER of the dev split (its QC-flagged frames left out like the
    test split's unless ``include_flagged``), else the checkpoint's."""
    saved = {k: float(v) for k, v in (meta.get("thresholds") or {}).items()}
    if dev_split is not None:
        dev_reader = reader if dev_store is None else storage.open_dataset(dev_store)
        dev = FrameDataset(dev_reader, dev_split, include_flagged=include_flagged)
        if len(dev) and dev.is_live.any() and (~dev.is_live).any():
            pred = predict_dataset(model, dev, batch_size=batch_size, num_workers=num_workers, amp=amp)
            thr = dev_thresholds(pred.scores, dev.is_live, dev.video_id)
            dev_metrics = frame_and_video_metrics(pred.scores, dev.is_live, dev.attack_type,
                                                  dev.video_id, thr)
            return thr, f"EER of {dev_store or store} split {dev_split}", dev_metrics
        log.warning("%s split %r lacks bona-fide or attack frames: using the checkpoint's thresholds",
                    dev_store or store, dev_split)
    if not saved or any(math.isnan(v) for v in saved.values()):
        log.warning("no dev thresholds available: each level uses its own EER threshold")
        return {"frame": math.nan, "video": math.nan}, "test EER (no dev set)", {}
    return saved, "checkpoint (training dev set)", {}


def _write_scores(frame_path: Path, video_path: Path, ds: FrameDataset, scores: np.ndarray,
                  thresholds: dict[str, float]) -> None:
    meta = ds.reader.meta
    frame_index = meta.get("frame_index", np.arange(len(ds)))
    with open(frame_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "video_id", "frame_index", "label", "attack_type", "score"])
        for row in zip(range(len(ds)), ds.video_id, frame_index, ds.label, ds.attack_type, scores):
            w.writerow([*row[:5], f"{row[5]:.6f}"])
    ids, vs, live, types = video_level(scores, ds.is_live, ds.attack_type, ds.video_id)
    counts = np.unique(ds.video_id, return_counts=True)[1]
    t = thresholds.get("video", math.nan)
    with open(video_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video_id", "label", "attack_type", "n_frames", "score", "decision"])
        for vid, s, lv, at, n in zip(ids, vs, live, types, counts):
            decision = "" if math.isnan(t) else ("live" if s >= t else "attack")
            w.writerow([vid, "live" if lv else "spoof", at, int(n), f"{s:.6f}", decision])


def plot_roc_det(scores: np.ndarray, is_live: np.ndarray, attack_types: np.ndarray,
                 video_ids: np.ndarray, path: Path) -> None:
    """ROC (1 - BPCER vs APCER) and DET (BPCER vs APCER, log axes) at frame and video level."""
    # on use: keeps every `depthseg-fas` call (the CLI imports this module) from importing matplotlib (~1 s)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.5))
    FigureCanvasAgg(fig)
    roc, det = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    _, vs, vl, _ = video_level(scores, is_live, attack_types, video_ids)
    eps = 1e-4
    for name, s, y in (("frame", scores, is_live), ("video", vs, vl)):
        if not (np.any(y) and np.any(~np.asarray(y, bool))):
            continue
        _, apcer, bpcer = error_curves(s, y)
        roc.plot(apcer, 1 - bpcer, label=name)
        det.plot(np.clip(apcer, eps, 1), np.clip(bpcer, eps, 1), label=name)
    roc.plot([0, 1], [0, 1], "k:", lw=0.8)
    roc.set(xlabel="APCER (pooled)", ylabel="1 - BPCER", title="ROC", xlim=(0, 1), ylim=(0, 1.01))
    det.set(xscale="log", yscale="log", xlabel="APCER (pooled)", ylabel="BPCER", title="DET",
            xlim=(eps, 1), ylim=(eps, 1))
    for ax in (roc, det):
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


@torch.no_grad()
def depth_grid(model: DepthSegNet, ds: FrameDataset, path: Path, *, n: int = 8, amp: bool = True) -> None:
    """A PNG grid: one row per sample (half bona fide, half attacks, evenly spread), columns
    input crop / predicted expected depth / target depth."""
    # on use: keeps every `depthseg-fas` call (the CLI imports this module) from importing matplotlib (~1 s)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    picks: list[int] = []
    for mask in (ds.is_live, ~ds.is_live):
        where = np.flatnonzero(mask)
        k = min(len(where), max(1, n // 2))
        if len(where):
            picks += where[np.linspace(0, len(where) - 1, k).round().astype(int)].tolist()
    picks = sorted(set(picks))
    device = model_device(model)
    kw = model.arch_kwargs
    b = prepare_batch(ds.read_batch(picks), device, input_size=kw["in_size"],
                      label_size=kw["label_size"], num_classes=kw["num_classes"])
    model.eval()
    with autocast_for(device, amp):
        logits = model(b.image)
    scores, pred = frame_scores(logits.float(), class_centres(model.num_classes, device=device))
    images = b.image.permute(0, 2, 3, 1).cpu().numpy()
    fig = Figure(figsize=(6, 2 * len(picks)))
    FigureCanvasAgg(fig)
    for r, i in enumerate(picks):
        cells = ((images[r], f"{ds.label[i]} {ds.attack_type[i]}\n{ds.video_id[i]}"),
                 (pred[r].cpu().numpy(), f"predicted (score {float(scores[r]):.3f})"),
                 (b.depth[r].cpu().numpy(), "target"))
        for c, (img, title) in enumerate(cells):
            ax = fig.add_subplot(len(picks), 3, 3 * r + c + 1)
            ax.imshow(img, cmap=None if img.ndim == 3 else "inferno", vmin=0, vmax=1)
            ax.set_title(title, fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
