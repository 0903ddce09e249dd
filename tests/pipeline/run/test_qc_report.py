"""Label QC flags perturbed landmarks; the HTML run report shows failures, samples and counts.

* The 3D fit of real dlib landmarks of a shared portrait has a small residual; the same
  landmarks with six points moved far fit badly: the residual rises above
  ``QCConfig.max_residual`` and ``qc_flags`` sets ``HIGH_RESIDUAL``.
* A whole preprocess run whose landmarker (wrapped) perturbs the landmarks of every third
  frame: exactly those frames carry the flag in the store's ``qc_flags`` column; with
  ``QCConfig(drop=("high-residual",))`` they are dropped and counted instead.
* ``depthseg-fas preprocess --html-report`` writes one self-contained HTML file naming the
  failed inputs, with the per-label counts of the store and the sample grid as an embedded PNG;
  ``scripts/screenshot_report.sh`` renders it with headless Chromium (skipped without it).
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import storage
from pipeline.cli import main as cli
from pipeline.face.crop import crop_face, transform_points
from pipeline.face.detect import pick_face
from pipeline.io.frames import read_image
from pipeline.io.items import WorkItem
from pipeline.run.engines import get_engines
from pipeline.run.config import PreprocessConfig
from pipeline.run.runners import run_preprocess
from pipeline.run.stages import fit_and_render
from pipeline.face.qc import FLAG_NAMES, HIGH_RESIDUAL, QCConfig, blur_measure, describe_flags, qc_flags
from pipeline.run.timing import StageTimer
from tests.conftest import REPO, load_rgb
from tests.helpers.media import make_face_video

SIZE = 64
#: mouth corners, upper / lower lip middle, outer eye corners (iBUG 68 numbering, 0-based)
MOVED = [48, 54, 51, 57, 36, 45]
SHIFT = 0.3  # of the face size (sqrt of the landmark box area)

pytestmark = pytest.mark.timeout(300)


def perturb(points: np.ndarray) -> np.ndarray:
    """``(68, 2)`` landmarks with the ``MOVED`` points shifted right and up by ``SHIFT`` face sizes."""
    span = points.max(0) - points.min(0)
    d = SHIFT * float(np.sqrt(span[0] * span[1]))
    out = points.astype(np.float32).copy()
    out[MOVED, 0] += d
    out[MOVED, 1] -= d / 2
    return out


# --------------------------------------------------------------------------- fit residual


def test_perturbed_landmarks_raise_the_residual_and_the_flag(portraits):
    cfg = PreprocessConfig.flat(size=128)
    eng = get_engines(cfg)
    qc = QCConfig()
    for name in ("obama.jpg", "biden.jpg"):
        img = read_image(next(p for p in portraits if p.name == name))
        box = pick_face(eng.detector.detect(img), eng.detector.cfg)
        lm = eng.landmarker.landmarks(img, box).points  # real dlib landmarks, frame pixels
        crop = crop_face(img, box, cfg.crop)
        both = np.stack([lm, perturb(lm)])
        lm_crop = transform_points(np.stack([crop.affine] * 2), both).astype(np.float32)
        depth, meas = fit_and_render(lm_crop, cfg, eng, StageTimer())
        clean, bad = meas["fit_residual"]
        assert clean < qc.max_residual / 1.5, (name, clean)
        assert bad > qc.max_residual and bad > 2 * clean, (name, clean, bad)
        flags = qc_flags(qc, face_size=np.full(2, box.size, np.float32), residual=meas["fit_residual"],
                         yaw=meas["yaw"], pitch=meas["pitch"], blur=blur_measure(np.stack([crop.image] * 2)),
                         det_score=np.full(2, box.score, np.float32))
        assert not flags[0] & HIGH_RESIDUAL and flags[1] & HIGH_RESIDUAL, (name, flags)
        assert "high-residual" in describe_flags(int(flags[1]))
        # the flag decision follows the threshold, not the landmarks: a looser limit keeps it
        loose = qc_flags(replace(qc, max_residual=float(bad) * 1.1), face_size=np.full(2, box.size, np.float32),
                         residual=meas["fit_residual"], yaw=meas["yaw"], pitch=meas["pitch"],
                         blur=np.full(2, 100.0, np.float32), det_score=np.ones(2, np.float32))
        assert not (loose & HIGH_RESIDUAL).any()


# --------------------------------------------------------------------------- whole run


class PerturbEveryThird:
    """Wraps the real landmarker; the landmarks of frames 1, 4, 7, ... (0-based) are perturbed.

    ``calls`` counts frames: a repeated call on the same frame (the crop-placement pass) is
    passed through unperturbed and uncounted."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = 0
        self.perturbed: list[np.ndarray] = []
        self._last = None

    def landmarks(self, image, box):
        lm = self.inner.landmarks(image, box)
        if image is self._last:
            return lm
        self._last = image
        k = self.calls
        self.calls += 1
        if k % 3 != 1:
            return lm
        pts = perturb(lm.points)
        self.perturbed.append(pts)
        return replace(lm, points=pts)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture(scope="module")
def face_video(tmp_path_factory, portraits) -> Path:
    root = tmp_path_factory.mktemp("qcvid")
    face = load_rgb(next(p for p in portraits if p.name == "obama.jpg"))
    return make_face_video(root / "live.mp4", face, n=9, gap=(9, 9))


def _run(tmp_path: Path, face_video: Path, cfg: PreprocessConfig, monkeypatch, name: str):
    eng = get_engines(cfg)
    wrapper = PerturbEveryThird(eng.landmarker)
    monkeypatch.setattr(eng, "landmarker", wrapper)
    store = tmp_path / f"{name}.zarr"
    item = WorkItem(path=str(face_video), label="live", attack_type="none", video_id="qc/live")
    report = run_preprocess([item], str(store), cfg)
    monkeypatch.setattr(eng, "landmarker", wrapper.inner)
    return store, report.to_dict(), wrapper


@pytest.mark.slow  # >= 2.5 s on an idle 2-core machine
def test_run_flags_perturbed_frames_in_the_store(tmp_path, face_video, monkeypatch):
    store, rep, wrapper = _run(tmp_path, face_video, PreprocessConfig.flat(size=SIZE), monkeypatch, "flag")
    (unit,) = rep["units"]
    assert unit["status"] == "written" and unit["frames_decoded"] == 9 and unit["frames_no_face"] == 0
    assert wrapper.calls == 9 and len(wrapper.perturbed) == 3
    ds = storage.open_dataset(str(store))
    assert len(ds) == 9 and storage.verify(str(store)) == []
    lm = ds.read_batch(np.arange(9), fields=("landmarks",))["landmarks"]
    # the frames whose stored landmarks are the perturbed ones
    hit = np.array([any(np.allclose(row, p, atol=1e-3) for p in wrapper.perturbed) for row in lm])
    assert hit.sum() == 3
    flags = ds.meta["qc_flags"].astype(int)
    high = (flags & HIGH_RESIDUAL) != 0
    np.testing.assert_array_equal(high, hit)
    res = ds.meta["fit_residual"]
    assert (res[hit] > QCConfig().max_residual).all() and (res[~hit] < QCConfig().max_residual).all(), res
    assert sorted(ds.meta["frame_index"][hit]) == [1, 4, 7]  # one face per frame: call k is frame k
    assert unit["frames_flagged_qc"] >= 3 and unit["frames_dropped_qc"] == 0
    assert rep["counts"]["frames_flagged_qc"] == unit["frames_flagged_qc"]


@pytest.mark.slow  # >= 2.5 s on an idle 2-core machine
def test_run_drops_perturbed_frames_when_asked(tmp_path, face_video, monkeypatch):
    cfg = PreprocessConfig.flat(size=SIZE, qc=QCConfig(drop=("high-residual",)))
    assert cfg.output_config()["qc"]["drop"] == ["high-residual"]  # part of the store's config
    store, rep, wrapper = _run(tmp_path, face_video, cfg, monkeypatch, "drop")
    (unit,) = rep["units"]
    assert len(wrapper.perturbed) == 3
    assert unit["status"] == "written" and unit["frames_dropped_qc"] == 3 and unit["frames_stored"] == 6
    assert rep["counts"]["frames_dropped_qc"] == 3
    ds = storage.open_dataset(str(store))
    assert len(ds) == 6
    assert not (ds.meta["qc_flags"].astype(int) & HIGH_RESIDUAL).any()
    assert sorted(ds.meta["frame_index"]) == [0, 2, 3, 5, 6, 8]
    extra = ds.parts[0].extra
    assert extra["dropped_qc"] == 3 and extra["decoded"] == 9
    # a drop list with an unknown flag is a config error naming the valid ones
    with pytest.raises(ValueError, match="unknown value.*valid"):
        PreprocessConfig.flat(qc=QCConfig(drop=("wobbly",)))
    assert set(FLAG_NAMES.values()) >= {"high-residual"}


# --------------------------------------------------------------------------- HTML report


def _manifest(path: Path, rows: list[dict]) -> Path:
    cols = ["path", "label", "attack_type", "subject", "split"]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in cols})
    return path


def _table_after(html_text: str, heading: str) -> dict[str, str]:
    """``{first cell: second cell}`` of the table right after ``heading``."""
    m = re.search(re.escape(heading) + r"</h\d>\s*<table>(.*?)</table>", html_text, re.S)
    assert m, heading
    return dict(re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td>", m.group(1)))


@pytest.fixture(scope="module")
def html_report(tmp_path_factory, portraits, pad_samples) -> tuple[Path, Path, dict]:
    """One CLI run with live / print / replay stills, a corrupt file and a faceless image."""
    root = tmp_path_factory.mktemp("report")
    data = root / "in"
    data.mkdir()
    for p in portraits:
        if p.name in ("obama.jpg", "biden.jpg"):
            shutil.copy(p, data / p.name)
    for p in pad_samples.values():
        shutil.copy(p, data / p.name)
    (data / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 3)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(90, 110, (200, 200, 3), dtype=np.uint8)).save(data / "wall.png")
    rows = [
        {"path": "obama.jpg", "label": "live", "subject": "obama", "split": "train"},
        {"path": "biden.jpg", "label": "live", "subject": "biden", "split": "train"},
        {"path": "image_T1.jpg", "label": "live", "subject": "s1", "split": "test"},
        {"path": "image_F1.jpg", "label": "spoof", "attack_type": "print", "subject": "s1", "split": "test"},
        {"path": "image_F2.jpg", "label": "spoof", "attack_type": "replay", "subject": "s1", "split": "test"},
        {"path": "broken.jpg", "label": "live"},
        {"path": "wall.png", "label": "live"},
    ]
    manifest = _manifest(data / "m.csv", rows)
    store, html = root / "r.zarr", root / "report.html"
    rc = cli(["preprocess", "--input", str(data), "--manifest", str(manifest), "--output", str(store),
              "--size", str(SIZE), "--html-report", str(html)])
    assert rc == 0
    rep = json.loads((root / "r.zarr.report.json").read_text())
    return html, store, rep


def test_html_report_has_failures_grid_and_label_counts(html_report):
    html, store, rep = html_report
    text = html.read_text(encoding="utf-8")
    assert text.startswith("<!doctype html>") and text.rstrip().endswith("</html>")
    assert "http://" not in text and "https://" not in text  # self-contained
    # failures: the corrupt file and the faceless image, each with its reason
    failed = {Path(f["path"]).name: f for f in rep["failures"]}
    assert set(failed) == {"broken.jpg", "wall.png"}, failed
    assert failed["broken.jpg"]["reason"] == "unreadable-image" and failed["wall.png"]["reason"] == "no-face"
    assert "Failed items (2)" in text
    for name, f in failed.items():
        row = re.search(r"<tr><td>[^<]*" + re.escape(name) + r"</td><td>(.*?)</td>", text)
        assert row and row.group(1) == f["reason"], name
    # per-label (and attack type, split) counts equal the store's
    ds = storage.open_dataset(str(store))
    for key in ("label", "attack_type", "split"):
        table = _table_after(text, f"frames by {key}")
        assert {k: int(v) for k, v in table.items()} == dict(Counter(str(v) for v in ds.meta[key])), key
    assert _table_after(text, "frames by label") == {"live": "3", "spoof": "2"}
    counts = _table_after(text, "Counts")
    assert counts["written"] == "5" and counts["failed"] == "2" and counts["frames_stored"] == str(len(ds))
    # embedded PNGs: the histograms and the sample grid, decodable, sized like a grid of crops
    pngs = {alt: base64.b64decode(b64) for alt, b64 in
            re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)}
    flagged = np.asarray(ds.meta["qc_flags"]) != 0
    assert set(pngs) == {"histograms", "sample grid"} | ({"flagged crops"} if flagged.any() else set())
    # the QC flag table: frames carrying any flag, per class, as in the store
    label = np.asarray(ds.meta["label"]).astype(str)
    assert _table_after(text, "QC flags")["any"] == str(int(flagged[label == "live"].sum()))
    grid = Image.open(io.BytesIO(pngs["sample grid"]))
    grid.load()
    assert grid.format == "PNG" and grid.width > 400 and grid.height > 150
    px = np.asarray(grid.convert("RGB"), dtype=np.float32)
    assert px.std() > 20  # crops, not an empty figure


@pytest.mark.slow  # >= 2.5 s on an idle 2-core machine (a subprocess)
def test_report_does_not_import_matplotlib(html_report, tmp_path):
    """The report is written at the end of every flow run: matplotlib's import and figure layout
    took ~3 s of it (a 960-frame store: 3.7 s -> 0.45 s with the OpenCV figures)."""
    _, store, rep = html_report
    out = tmp_path / "again.html"
    code = ("import json, sys; from pipeline.run.html_report import write_html_report; "
            f"write_html_report(json.loads(sys.argv[1]), {str(store)!r}, {str(out)!r}); "
            "print('matplotlib' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(rep, default=str)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "False"
    assert '<img alt="sample grid"' in out.read_text(encoding="utf-8")


def test_screenshot_script_renders_the_report(html_report, tmp_path):
    html, _, _ = html_report
    if not (shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")):
        pytest.skip("no chromium on this machine")
    out = tmp_path / "shot.png"
    proc = subprocess.run(["bash", str(REPO / "scripts" / "screenshot_report.sh"), str(html), str(out)],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == str(out)
    shot = Image.open(out)
    assert shot.size == (1200, 2000)
    px = np.asarray(shot.convert("RGB"), dtype=np.float32)
    grey = px.mean(axis=2)
    # rendered: a white page with dark text and coloured figures, not a blank or an error page
    assert (grey > 240).mean() > 0.3 and (grey < 100).mean() > 0.002
    colour = (px.max(axis=2) - px.min(axis=2)) > 60  # histogram bars, crops, depth overlay
    assert colour.mean() > 0.002
    assert colour[: 2000 // 3].mean() < colour[2000 // 2:].mean()  # tables on top, figures below
    # a missing report is a clear error
    bad = subprocess.run(["bash", str(REPO / "scripts" / "screenshot_report.sh"), str(tmp_path / "nope.html"),
                          str(tmp_path / "x.png")], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "nope.html" in bad.stderr
