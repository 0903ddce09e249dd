"""Run report (one self-contained HTML file, PNGs embedded) and sample grids of a store.

These are edge functions: they read a store and write files; the numbers come from the run
report dict of :func:`pipeline.run.report.RunReport.to_dict` and the store's metadata columns.
"""

from __future__ import annotations

import base64
import html
import io
from collections import Counter
from pathlib import Path

import numpy as np

import storage
from pipeline.face.qc import FLAG_NAMES, describe_flags
from storage.layout import safe_text

CLASS_ORDER = ("live", "print", "replay", "spoof", "unknown")


def _fig_png(fig) -> bytes:
    import matplotlib.pyplot as plt  # on use, after choosing the headless Agg backend

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _class_of(label: str, attack: str) -> str:
    if label == "spoof":
        return attack if attack in ("print", "replay") else "spoof"
    return label


def sample_grid_png(reader, per_class: int = 6, seed: int = 0) -> bytes:
    """PNG of random crops per class (rows), each with its landmarks and depth overlay."""
    meta = reader.meta
    n = len(reader)
    classes = np.array([_class_of(l, a) for l, a in zip(meta["label"], meta["attack_type"])]) if n else np.array([])
    rng = np.random.default_rng(seed)
    rows = []
    for cls in CLASS_ORDER:
        idx = np.flatnonzero(classes == cls)
        if len(idx):
            rows.append([(int(i), f"{cls} #{i}") for i in np.sort(rng.choice(idx, size=min(per_class, len(idx)),
                                                                              replace=False))])
    return _crop_grid_png(reader, rows, per_class,
                          "random crops per class: image, landmarks (cyan), depth overlay")


def flagged_grid_png(reader, per_flag: int = 6, seed: int = 0) -> bytes | None:
    """PNG of random QC-flagged crops, one row per flag (title: class and every flag of the
    frame), or None when no frame is flagged."""
    meta = reader.meta
    flags = np.asarray(meta.get("qc_flags", np.zeros(len(reader), np.uint8))).astype(int)
    rng = np.random.default_rng(seed)
    rows = []
    for bit in FLAG_NAMES:
        idx = np.flatnonzero(flags & bit)
        if len(idx):
            pick = np.sort(rng.choice(idx, size=min(per_flag, len(idx)), replace=False))
            rows.append([(int(i), f"{_class_of(str(meta['label'][i]), str(meta['attack_type'][i]))} #{i}\n"
                                  + ",".join(describe_flags(int(flags[i])))) for i in pick])
    if not rows:
        return None
    return _crop_grid_png(reader, rows, per_flag, "QC-flagged crops, one row per flag (not trained on by default)")


def flag_counts(meta: dict) -> list[tuple[str, int, int]]:
    """``(flag name, live frames, spoof frames)`` carrying each QC flag (plus ``any``)."""
    flags = np.asarray(meta.get("qc_flags", np.zeros(len(meta["label"]), np.uint8))).astype(int)
    label = np.asarray(meta["label"]).astype(str)
    rows = [(name, int(((flags & bit) != 0)[label == "live"].sum()), int(((flags & bit) != 0)[label == "spoof"].sum()))
            for bit, name in FLAG_NAMES.items()]
    return rows + [("any", int((flags[label == "live"] != 0).sum()), int((flags[label == "spoof"] != 0).sum()))]


def _crop_grid_png(reader, rows: list[list[tuple[int, str]]], columns: int, title: str) -> bytes:
    """PNG grid: one row per list of ``(frame index, title)``, each crop with its landmarks and depth."""
    import matplotlib  # on use, after choosing the headless Agg backend

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # on use, after choosing the headless Agg backend

    fig, axes = plt.subplots(max(len(rows), 1), columns, figsize=(1.6 * columns, 1.8 * max(len(rows), 1)),
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for r, row in enumerate(rows):
        batch = reader.read_batch([i for i, _ in row], fields=("image", "depth", "landmarks", "affine"))
        for c, (_, name) in enumerate(row):
            ax = axes[r, c]
            dep = batch["depth"][c].astype(np.float32) / 255.0
            ax.imshow(batch["image"][c])
            ax.imshow(np.ma.masked_where(dep <= 0, dep), cmap="inferno", alpha=0.45, vmin=0, vmax=1)
            a = batch["affine"][c]
            uv = batch["landmarks"][c] @ a[:, :2].T + a[:, 2]
            ax.scatter(uv[:, 0], uv[:, 1], s=1.5, c="cyan")
            ax.set_title(name, fontsize=6)
    fig.suptitle(title, fontsize=9)
    return _fig_png(fig)


def _histograms_png(meta: dict) -> bytes:
    import matplotlib  # on use, after choosing the headless Agg backend

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # on use, after choosing the headless Agg backend

    cols = [("face_size", "face size (px)"), ("fit_residual", "fit residual (RMS / face size)"),
            ("yaw", "yaw (deg)"), ("pitch", "pitch (deg)")]
    fig, axes = plt.subplots(1, len(cols), figsize=(3.2 * len(cols), 2.6))
    for ax, (key, title) in zip(axes, cols):
        v = np.asarray(meta.get(key, []), dtype=np.float64)
        v = v[np.isfinite(v)]
        if len(v):
            ax.hist(v, bins=30, color="#4477aa")
        ax.set_title(title, fontsize=9)
    return _fig_png(fig)


def _table(rows: list[tuple], header: tuple) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def build_html_report(report: dict, reader=None) -> str:
    """The run report as one HTML string (no external resources)."""
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>depthseg-fas run report</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;"
             "margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}"
             "img{max-width:100%}h2{margin-top:1.5em}</style></head><body>",
             f"<h1>Preprocessing run report</h1><p>store: <code>{html.escape(str(report.get('output')))}</code></p>"]
    counts = report.get("counts", {})
    parts.append("<h2>Counts</h2>" + _table(sorted(counts.items()), ("what", "count")))
    if reader is not None and len(reader):
        meta = reader.meta
        for key in ("label", "attack_type", "split"):
            c = Counter(str(v) for v in meta[key])
            parts.append(f"<h3>frames by {key}</h3>" + _table(sorted(c.items()), (key, "frames")))
    secs = report.get("seconds_per_stage", {})
    parts.append("<h2>Seconds per stage</h2>" + _table(sorted(secs.items()), ("stage", "seconds")))
    failures = report.get("failures", [])
    parts.append(f"<h2>Failed items ({len(failures)})</h2>")
    parts.append(_table([(f.get("path"), f.get("reason"), f.get("message")) for f in failures],
                        ("path", "reason", "message")) if failures else "<p>none</p>")
    if reader is not None and len(reader):
        parts.append("<h2>Distributions</h2>" + _img(_histograms_png(reader.meta), "histograms"))
        parts.append("<h2>Samples</h2>" + _img(sample_grid_png(reader), "sample grid"))
        parts.append("<h2>QC flags</h2>" + _table(flag_counts(reader.meta), ("flag", "live frames", "spoof frames")))
        flagged = flagged_grid_png(reader)
        parts.append(_img(flagged, "flagged crops") if flagged is not None else "<p>no flagged frame</p>")
    parts.append("</body></html>")
    return "".join(parts)


def write_html_report(report: dict, store: str, out_path: str | Path) -> Path:
    """Write the HTML report of a run over ``store`` to ``out_path``."""
    try:
        reader = storage.open_dataset(store)
    except storage.StoreError:
        reader = None
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    # file names that are not UTF-8 (surrogate-escaped) are written as \xNN escapes
    out.write_text(safe_text(build_html_report(report, reader)), encoding="utf-8")
    return out
