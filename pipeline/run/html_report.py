"""Run report (one self-contained HTML file, PNGs embedded) and sample grids of a store.

These are edge functions: they read a store and write files; the numbers come from the run
report dict of :func:`pipeline.run.report.RunReport.to_dict` and the store's metadata columns.
The figures are drawn with OpenCV on numpy canvases (:func:`crop_cell`, :func:`grid_image`,
:func:`histogram_image`: pure functions), not matplotlib: the report is written at the end of
every flow run, and matplotlib's import and layout took ~3 s of it.
"""

from __future__ import annotations

import base64
import html
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

import storage
from pipeline.face.crop import transform_points
from pipeline.face.qc import FLAG_NAMES, describe_flags
from storage.layout import safe_text

CLASS_ORDER = ("live", "print", "replay", "spoof", "unknown")


CELL = 144          # px of one crop in the grids (the crops are scaled to it)
_TEXT = cv2.FONT_HERSHEY_SIMPLEX
_INK, _PAPER, _BAR = (20, 20, 20), (255, 255, 255), (68, 119, 170)  # RGB


def _png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 3-channel image
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def _text(img: np.ndarray, lines: list[str], x: int, y: int, scale: float = 0.36, line_h: int = 12) -> None:
    """Draw ``lines`` (ASCII; other characters as ``?``) with their first baseline at ``y``."""
    for k, line in enumerate(lines):
        line = line.encode("ascii", "replace").decode()
        cv2.putText(img, line, (x, y + k * line_h), _TEXT, scale, _INK, 1, cv2.LINE_AA)


def crop_cell(image: np.ndarray, depth: np.ndarray, uv: np.ndarray, size: int = CELL) -> np.ndarray:
    """One crop for the grids: RGB ``image`` (H×W×3 uint8) scaled to ``size``, the depth label
    (H×W uint8, 0 = background) blended in (inferno, 45 %) where it is non-zero, and the landmarks
    ``uv`` (N×2, crop pixels, x right / y down) as cyan dots. Returns ``size``×``size``×3 uint8."""
    h = image.shape[0]
    s = size / h
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    img = cv2.resize(np.ascontiguousarray(image[..., :3]), (size, size), interpolation=interp).astype(np.float32)
    dep = cv2.resize(depth, (size, size), interpolation=cv2.INTER_NEAREST)
    colour = cv2.applyColorMap(dep, cv2.COLORMAP_INFERNO)[..., ::-1].astype(np.float32)
    on = (dep > 0)[..., None]
    out = np.where(on, 0.55 * img + 0.45 * colour, img).round().astype(np.uint8)
    pts = np.round((np.asarray(uv, np.float64) + 0.5) * s - 0.5).astype(int)
    keep = (pts >= 0).all(1) & (pts < size).all(1)
    for x, y in pts[keep]:
        cv2.circle(out, (int(x), int(y)), 1, (0, 255, 255), -1)
    return out


def grid_image(cells: list[list[tuple[np.ndarray, str]]], columns: int, title: str, size: int = CELL) -> np.ndarray:
    """White RGB canvas: ``title`` on top, then one row per list of ``(cell, caption)`` (captions
    may hold ``\\n``), ``columns`` cells wide."""
    pad, cap_h, head = 6, 26, 24
    rows = max(len(cells), 1)
    w = pad + columns * (size + pad)
    img = np.full((head + rows * (cap_h + size + pad), w, 3), _PAPER, np.uint8)
    _text(img, [title], pad, 16, scale=0.45)
    for r, row in enumerate(cells):
        y0 = head + r * (cap_h + size + pad)
        for c, (cell, caption) in enumerate(row[:columns]):
            x0 = pad + c * (size + pad)
            _text(img, caption.split("\n")[:2], x0, y0 + 10)
            img[y0 + cap_h: y0 + cap_h + size, x0: x0 + size] = cell
    return img


def histogram_image(values: np.ndarray, title: str, bins: int = 30, w: int = 290, h: int = 220) -> np.ndarray:
    """White RGB panel: a histogram of the finite ``values`` (``bins`` bars) with its title, the
    range of the x axis under it and the largest count at the top left."""
    img = np.full((h, w, 3), _PAPER, np.uint8)
    _text(img, [title], 6, 14, scale=0.4)
    left, right, top, bottom = 34, w - 10, 24, h - 22
    cv2.line(img, (left, bottom), (right, bottom), _INK, 1)
    cv2.line(img, (left, top), (left, bottom), _INK, 1)
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        _text(img, ["no value"], left + 8, (top + bottom) // 2)
        return img
    lo, hi = float(v.min()), float(v.max())
    counts, edges = np.histogram(v, bins=bins, range=(lo, hi) if hi > lo else (lo - 0.5, lo + 0.5))
    peak = max(int(counts.max()), 1)
    bw = (right - left) / bins
    for k, n in enumerate(counts):
        if n:
            x0 = int(round(left + 1 + k * bw))
            x1 = max(x0, int(round(left + (k + 1) * bw)) - 1)
            cv2.rectangle(img, (x0, int(round(bottom - (bottom - top) * n / peak))), (x1, bottom - 1), _BAR, -1)
    _text(img, [f"{peak}"], 4, top + 8, scale=0.33)
    _text(img, ["0"], 20, bottom, scale=0.33)
    _text(img, [f"{edges[0]:.3g}"], left, bottom + 14, scale=0.33)
    label = f"{edges[-1]:.3g}"
    (tw, _), _ = cv2.getTextSize(label, _TEXT, 0.33, 1)
    _text(img, [label], right - tw, bottom + 14, scale=0.33)
    return img


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
    cells = []
    for row in rows:
        batch = reader.read_batch([i for i, _ in row], fields=("image", "depth", "landmarks", "affine"))
        uv = transform_points(batch["affine"], batch["landmarks"])  # frame -> crop pixels
        cells.append([(crop_cell(batch["image"][c], np.asarray(batch["depth"][c], np.uint8), uv[c]), name)
                      for c, (_, name) in enumerate(row)])
    return _png(grid_image(cells, columns, title))


def _histograms_png(meta: dict) -> bytes:
    cols = [("face_size", "face size (px)"), ("fit_residual", "fit residual (RMS / face size)"),
            ("yaw", "yaw (deg)"), ("pitch", "pitch (deg)")]
    return _png(np.concatenate([histogram_image(np.asarray(meta.get(k, []), dtype=np.float64), t)
                                for k, t in cols], axis=1))


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
    mix = report.get("version_mix") or {}
    if mix:
        parts.append("<h2>Package versions differ between parts</h2><p>The store's parts were made with "
                     "other versions of these packages than this run's; their crops and labels may differ "
                     "slightly.</p>" + _table([(name, v, n) for name, found in sorted(mix.items())
                                                for v, n in sorted(found.items())], ("package", "version", "parts")))
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
