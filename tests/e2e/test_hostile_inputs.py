"""Hostile inputs end to end: one preprocess run over a CSV manifest and one over a folder.

Every input below is made here from the shared portraits (real faces): broken and empty
files, a video under a wrong extension, an audio-only ``.mp4``, variable frame rate, 4K,
grayscale, a phone video stored sideways with display-matrix rotation, an EXIF-rotated JPEG,
CMYK, alpha and 16-bit images, a file name that is not UTF-8 and has spaces, a symlink loop,
and CSV rows that are outside the input root, have an unknown label or a missing file.

Each gives its documented outcome — stored, upright, with the same face crop as the plain
portrait; or a per-item failure / rejection naming the file — and never stops the run.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from PIL import Image

import storage
from pipeline.cli import main as cli
from pipeline.face.crop import transform_points
from tests.conftest import REPO, load_rgb
from tests.helpers.media import moving_face_frames

SIZE = 64
MAX_FRAMES = 3
VFR_PTS_MS = [0, 40, 200, 230, 600, 610]
WEIRD_VIDEO = b"caf\xff face clip.mp4"  # not UTF-8, with spaces
WEIRD_BROKEN = b"broken \xff.mp4"
LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601, as PIL's "L"

# slow: whole CLI runs over dozens of hostile media files
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


# --------------------------------------------------------------------------- media


def encode(path: Path, frames: list[np.ndarray], *, codec: str = "libx264", pix_fmt: str = "yuv420p",
           fmt: str = "rgb24", rate: int = 10, pts_ms: list[int] | None = None,
           rotation: float | None = None) -> Path:
    """Encode ``frames`` with PyAV (``pts_ms``: variable timestamps; ``rotation``: display matrix)."""
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=rate)
        s.width, s.height, s.pix_fmt = w, h, pix_fmt
        if pts_ms is not None:
            s.time_base = Fraction(1, 1000)
            s.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            s.set_display_rotation(rotation)
        for i, a in enumerate(frames):
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(a), format=fmt)
            if pts_ms is not None:
                f.pts, f.time_base = pts_ms[i], Fraction(1, 1000)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def write_audio_only(path: Path) -> Path:
    """One second of a 440 Hz tone, AAC in an ``.mp4`` container (no video stream)."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=16000)
        t = np.arange(16000) / 16000
        frame = av.AudioFrame.from_ndarray((np.sin(2 * np.pi * 440 * t) * 0.3).astype(np.float32)[None],
                                           format="fltp", layout="mono")
        frame.sample_rate = 16000
        for p in s.encode(frame):
            c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def write_manifest(path: Path, rows: list[dict], cols=("path", "label", "attack_type", "subject", "split")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(cols))
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in cols})
    return path


@pytest.fixture(scope="module")
def portrait(portraits) -> np.ndarray:
    """obama.jpg at 240x300: a still big enough for a face of ~150 px."""
    face = load_rgb(next(p for p in portraits if p.name == "obama.jpg"))
    return cv2.resize(face, (240, 300), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def media(tmp_path_factory, portraits, portrait) -> dict[str, Path]:
    """Every hostile input, written once; ``data/`` is the input root, ``outside/`` lies beside it."""
    root = tmp_path_factory.mktemp("hostile")
    data, outside = root / "data", root / "outside"
    data.mkdir()
    outside.mkdir()
    face = load_rgb(next(p for p in portraits if p.name == "obama.jpg"))
    frames = list(moving_face_frames(face, n=6, size=(320, 240), gap=(0, 0)))
    m: dict[str, Path] = {"root": root, "data": data, "outside": outside}
    m["good"] = encode(data / "good.mp4", frames)
    m["empty"] = data / "empty.mp4"
    m["empty"].write_bytes(b"")
    full = m["good"].read_bytes()
    m["truncated"] = data / "truncated.mp4"
    m["truncated"].write_bytes(full[: len(full) // 3])
    m["mp4_as_avi"] = data / "real_mp4.avi"
    m["mp4_as_avi"].write_bytes(full)
    m["mp4_as_jpg"] = data / "video_named.jpg"
    m["mp4_as_jpg"].write_bytes(full)
    m["audio"] = write_audio_only(data / "audio_only.mp4")
    m["vfr"] = encode(data / "vfr.mkv", frames, pts_ms=VFR_PTS_MS)
    m["uhd"] = encode(data / "uhd.mp4", list(moving_face_frames(face, n=2, size=(3840, 2160), gap=(0, 0))))
    m["gray"] = encode(data / "gray.mkv", [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames],
                       codec="ffv1", pix_fmt="gray", fmt="gray")
    # a phone held upright: frames stored sideways, display matrix says rotate 90 deg
    m["rotated"] = encode(data / "rotated.mp4", [np.ascontiguousarray(np.rot90(f, -1)) for f in frames],
                          rotation=90)
    # stills: the plain portrait (space in the name) and the same picture in hostile encodings
    m["plain"] = data / "plain portrait.jpg"
    Image.fromarray(portrait).save(m["plain"], quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated 90 deg counter-clockwise; display: rotate 90 deg clockwise
    m["exif"] = data / "exif6.jpg"
    Image.fromarray(np.ascontiguousarray(np.rot90(portrait, 1))).save(m["exif"], exif=exif.tobytes(), quality=95)
    m["cmyk"] = data / "cmyk.jpg"
    Image.fromarray(portrait).convert("CMYK").save(m["cmyk"], quality=95)
    rgba = np.dstack([portrait, np.full(portrait.shape[:2], 255, np.uint8)])
    rgba[-12:, :, 3] = 0  # a transparent strip along the bottom edge
    m["alpha"] = data / "alpha.png"
    Image.fromarray(rgba, "RGBA").save(m["alpha"])
    m["rgb16"] = data / "rgb16.png"
    cv2.imwrite(str(m["rgb16"]), (portrait.astype(np.uint16) * 257)[..., ::-1])
    m["gray16"] = data / "gray16.png"
    cv2.imwrite(str(m["gray16"]), cv2.cvtColor(portrait, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257)
    assert Image.open(m["cmyk"]).mode == "CMYK" and Image.open(m["alpha"]).mode == "RGBA"
    assert Image.open(m["gray16"]).mode.startswith("I;16") and Image.open(m["exif"]).getexif()[0x0112] == 6
    m["outside_jpg"] = outside / "elsewhere.jpg"
    shutil.copy(m["plain"], m["outside_jpg"])
    return m


# --------------------------------------------------------------------------- checks


def unit_by_name(report: dict) -> dict[str, dict]:
    return {Path(u["path"]).name: u for u in report["units"]}


def rows_of(ds, video_id: str) -> np.ndarray:
    return np.flatnonzero(ds.meta["video_id"] == video_id)


def assert_upright_faces(ds, rows: np.ndarray, what: str) -> None:
    """Stored crops of ``rows`` show an upright face: eyes above nose above mouth, small roll."""
    assert len(rows), f"{what}: no frame stored"
    b = ds.read_batch(rows, fields=("image", "landmarks", "affine"))
    assert b["image"].shape[1:] == (SIZE, SIZE, 3) and b["image"].dtype == np.uint8, what
    pts = transform_points(b["affine"], b["landmarks"])  # (N, 68, 2) crop pixels, y down
    eyes = pts[:, 36:48, 1].mean(1)
    nose = pts[:, 30, 1]
    mouth = pts[:, 48:68, 1].mean(1)
    assert (eyes < nose).all() and (nose < mouth).all(), (what, eyes, nose, mouth)
    # landmarks inside the crop and the face filling a good part of it
    assert ((pts > -2) & (pts < SIZE + 2)).mean() > 0.95, what
    roll = ds.meta["roll"][rows]
    assert np.all(np.abs(roll) < 20), (what, roll)


def crop_diff(ds, rows_a: np.ndarray, rows_b: np.ndarray) -> float:
    """Mean absolute difference (0..255) of the first stored crop of two items."""
    a = ds.read_batch(rows_a[:1], fields=("image",))["image"][0].astype(np.float32)
    b = ds.read_batch(rows_b[:1], fields=("image",))["image"][0].astype(np.float32)
    return float(np.abs(a - b).mean())


# --------------------------------------------------------------------------- CSV run


def test_csv_run_hostile_inputs(tmp_path, media, capsys):
    data = media["data"]
    names = {key: media[key].name for key in (
        "good", "empty", "truncated", "mp4_as_avi", "mp4_as_jpg", "audio", "vfr", "uhd", "gray", "rotated",
        "plain", "exif", "cmyk", "alpha", "rgb16", "gray16")}
    rows = [{"path": n, "label": "live", "subject": key} for key, n in names.items()]
    rows += [
        {"path": "../outside/elsewhere.jpg", "label": "live"},  # outside the input root
        {"path": "good.mp4", "label": "genuine"},  # unknown label (row rejected before the duplicate check)
        {"path": "missing.mp4", "label": "live"},  # no such file
    ]
    manifest = write_manifest(data / "manifest.csv", rows)
    store = tmp_path / "s.zarr"
    html = tmp_path / "report.html"
    rc = cli(["preprocess", "--input", str(data), "--manifest", str(manifest), "--output", str(store),
              "--size", str(SIZE), "--max-frames", str(MAX_FRAMES), "--html-report", str(html)])
    out = capsys.readouterr().out
    assert rc == 0, out
    rep = json.loads((tmp_path / "s.zarr.report.json").read_text())
    units = unit_by_name(rep)

    # every listed existing file was attempted; bad rows were rejected, not attempted
    assert set(units) == set(names.values()), sorted(units)
    failed = {n for n, u in units.items() if u["status"] == "failed"}
    assert failed == {"empty.mp4", "truncated.mp4", "audio_only.mp4"}, {n: units[n]["message"] for n in failed}
    for name in failed:
        u = units[name]
        assert name in u["message"] and f"FAILED {data / name}" in out, u
    assert units["empty.mp4"]["reason"] == "corrupt-video" and "0 bytes" in units["empty.mp4"]["message"]
    assert units["truncated.mp4"]["reason"] == "corrupt-video"
    assert units["audio_only.mp4"]["reason"] == "unsupported-input"
    assert "audio only" in units["audio_only.mp4"]["message"]

    rejected = [f for f in rep["failures"] if f["reason"] == "rejected"]
    assert len(rejected) == 3, rejected
    msg = {Path(f["path"]).name: f["message"] for f in rejected}
    assert "outside the input root" in msg["elsewhere.jpg"] and "../outside/elsewhere.jpg" in msg["elsewhere.jpg"]
    assert "unknown label 'genuine'" in msg["good.mp4"]
    assert "file not found" in msg["missing.mp4"] and "missing.mp4" in msg["missing.mp4"]
    assert rep["counts"]["rejected"] == 3 and rep["counts"]["failed"] == 3

    # the store holds exactly the written items, intact
    ds = storage.open_dataset(str(store))
    assert storage.verify(str(store)) == []
    written = {n: u for n, u in units.items() if u["status"] == "written"}
    assert len(written) == len(names) - 3
    assert len(ds) == sum(u["frames_stored"] for u in written.values()) == rep["counts"]["frames_stored"]
    assert set(ds.meta["video_id"]) == {f"csv/{n}" for n in written}

    # videos: every decoded frame has a face; at most MAX_FRAMES per video, upright crops
    for key in ("good", "mp4_as_avi", "mp4_as_jpg", "vfr", "uhd", "gray", "rotated"):
        n = names[key]
        r = rows_of(ds, f"csv/{n}")
        expect = 2 if key == "uhd" else MAX_FRAMES
        assert units[n]["frames_decoded"] == expect, (n, units[n])
        assert len(r) == units[n]["frames_stored"] >= expect - 1, (n, units[n])
        assert_upright_faces(ds, r, n)
    # the mp4 under .jpg and .avi names is the very same video: same frames, same crops
    for key in ("mp4_as_avi", "mp4_as_jpg"):
        assert crop_diff(ds, rows_of(ds, "csv/good.mp4"), rows_of(ds, f"csv/{names[key]}")) < 1.0
    # variable frame rate: stored timestamps are the written presentation times
    vfr = rows_of(ds, "csv/vfr.mkv")
    np.testing.assert_allclose(np.sort(ds.meta["timestamp"][vfr]),
                               np.asarray(VFR_PTS_MS[:len(vfr)]) / 1000, atol=2e-3)
    # 4K: the same scene 9x larger (2160 vs 240 lines): a face that many times bigger, same S x S crop
    fs = ds.meta["face_size"]
    assert fs[rows_of(ds, "csv/uhd.mp4")].min() > 5 * fs[rows_of(ds, "csv/good.mp4")].max()
    # grayscale: crops are grey (equal channels)
    g = ds.read_batch(rows_of(ds, "csv/gray.mkv"), fields=("image",))["image"].astype(int)
    assert np.abs(g[..., 0] - g[..., 1]).max() <= 2 and np.abs(g[..., 1] - g[..., 2]).max() <= 2

    # stills: one face each, the same crop as the plain portrait once decoded upright / to RGB
    plain = rows_of(ds, f"csv/{names['plain']}")
    assert len(plain) == 1
    for key in ("plain", "exif", "cmyk", "alpha", "rgb16", "gray16"):
        r = rows_of(ds, f"csv/{names[key]}")
        assert len(r) == 1 and units[names[key]]["frames_decoded"] == 1, key
        assert_upright_faces(ds, r, names[key])
    other = rows_of(ds, "csv/good.mp4")  # a different picture of the same man: farther than any re-encoding
    unlike = crop_diff(ds, plain, other)  # (labels v2 place both crops by landmarks: only ~8 apart)
    for key in ("exif", "cmyk"):  # JPEG like the plain portrait
        d = crop_diff(ds, plain, rows_of(ds, f"csv/{names[key]}"))
        assert d < 6.0 and d < 0.7 * unlike, (key, d, unlike)
    # the lossless PNGs (alpha composited, 16-bit) decode to the same face: the same crop as each
    # other; against the JPEG portrait they lie ~8.4 apart, as far as another picture, because the
    # labels-v2 crop is placed by a second landmark pass that JPEG noise moves (open in issue 13)
    alpha, rgb16 = (rows_of(ds, f"csv/{names[k]}") for k in ("alpha", "rgb16"))
    assert crop_diff(ds, alpha, rgb16) < 6.0
    assert max(crop_diff(ds, plain, alpha), crop_diff(ds, plain, rgb16)) < 1.5 * unlike
    # 16-bit grey: grey crops at the portrait's brightness (scaled to 8 bits, not clipped to white)
    g16 = ds.read_batch(rows_of(ds, f"csv/{names['gray16']}"), fields=("image",))["image"][0].astype(np.float32)
    ref = ds.read_batch(plain, fields=("image",))["image"][0].astype(np.float32) @ LUMA
    assert np.abs(g16[..., 0] - g16[..., 2]).max() <= 1
    assert abs(g16[..., 0].mean() - ref.mean()) < 5 and abs(g16[..., 0].std() - ref.std()) < 5

    # the HTML report lists the failures and rejections
    text = html.read_text(encoding="utf-8")
    for name in ("empty.mp4", "truncated.mp4", "audio_only.mp4", "elsewhere.jpg", "missing.mp4"):
        assert name in text, name

    # the outside row is accepted with --allow-outside-root (same store, same config)
    outside_csv = write_manifest(data / "outside.csv", [{"path": "../outside/elsewhere.jpg", "label": "live"}])
    rc = cli(["preprocess", "--input", str(data), "--manifest", str(outside_csv), "--output", str(store),
              "--size", str(SIZE), "--max-frames", str(MAX_FRAMES), "--allow-outside-root",
              "--report", str(tmp_path / "outside.json")])
    assert rc == 0
    rep2 = json.loads((tmp_path / "outside.json").read_text())
    assert rep2["counts"]["written"] == 1 and rep2["counts"]["rejected"] == 0, rep2["failures"]
    ds = storage.open_dataset(str(store))
    vid = [v for v in set(ds.meta["video_id"]) if v.endswith("elsewhere.jpg")]
    assert len(vid) == 1
    assert crop_diff(ds, plain, rows_of(ds, vid[0])) < 1.0  # byte-identical copy of the plain portrait
    assert len(ds.parts) == len(written) + 1 and storage.verify(str(store)) == []


def test_csv_missing_columns_named(tmp_path, media, capsys):
    bad = write_manifest(tmp_path / "bad.csv", [{"path": "good.mp4", "subject": "x"}], cols=("path", "subject"))
    rc = cli(["preprocess", "--input", str(media["data"]), "--manifest", str(bad), "--output",
              str(tmp_path / "never.zarr"), "--size", str(SIZE)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "missing required column(s): label" in err and "bad.csv" in err, err
    assert not (tmp_path / "never.zarr").exists()
    both = write_manifest(tmp_path / "none.csv", [{"file": "good.mp4"}], cols=("file", "kind"))
    rc = cli(["preprocess", "--input", str(media["data"]), "--manifest", str(both), "--output",
              str(tmp_path / "never.zarr"), "--size", str(SIZE)])
    err = capsys.readouterr().err
    assert rc == 2 and "missing required column(s): path, label" in err, err


# --------------------------------------------------------------------------- folder run


def test_folder_run_weird_names_links_and_wrong_extensions(tmp_path, media):
    """The folder adapter over a tree with a non-UTF-8 name, a symlink loop and a video named .jpg.

    Runs the real CLI in a subprocess with a strict UTF-8 stdout, as a user's terminal has.
    """
    root = tmp_path / "tree"
    root.mkdir()
    shutil.copy(media["good"], root / "good.mp4")
    weird = os.fsencode(str(root)) + b"/" + WEIRD_VIDEO
    shutil.copy(media["good"], weird)
    broken = os.fsencode(str(root)) + b"/" + WEIRD_BROKEN
    with open(broken, "wb") as fh:
        fh.write(b"\x00" * 64)
    (root / "clips").mkdir()
    shutil.copy(media["good"], root / "clips" / "actually a video.jpg")
    stills = root / "stills"
    stills.mkdir()
    for key in ("exif", "cmyk", "alpha", "rgb16", "gray16"):
        shutil.copy(media[key], stills / media[key].name)
    shutil.copy(media["plain"], os.fsencode(str(stills)) + b"/portrait \xfe.jpg")
    os.symlink(root, root / "stills" / "loop")  # a loop back to the root
    store = tmp_path / "f.zarr"
    html = tmp_path / "f.html"
    # a UTF-8 terminal as in en_US.UTF-8: strict stdout (C.UTF-8 alone would make it lenient)
    env = dict(os.environ, LANG="C.UTF-8", LC_ALL="C.UTF-8", PYTHONIOENCODING="utf-8:strict")
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "preprocess", "--input", str(root), "--output", str(store),
         "--size", str(SIZE), "--max-frames", "6", "--html-report", str(html)],
        cwd=REPO, env=env, capture_output=True, timeout=240,
    )
    out, err = proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 0, out + err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    rep = json.loads((tmp_path / "f.zarr.report.json").read_text())
    units = {os.fsencode(u["path"]): u for u in rep["units"]}
    status = {k.rsplit(b"/", 1)[-1]: u["status"] for k, u in units.items()}
    assert status == {
        b"good.mp4": "written", WEIRD_VIDEO: "written", WEIRD_BROKEN: "failed",
        b"actually a video.jpg": "written", b"stills": "written",
    }, status
    # the broken non-UTF-8 file is named (its bytes survive the JSON report) and the run went on
    assert "corrupt" in units[broken]["reason"] or units[broken]["reason"] == "unsupported-input"
    assert os.fsencode(units[broken]["path"]) == broken
    assert f"FAILED {root}/broken \\xff.mp4" in out, out  # printed, the odd byte escaped
    # the loop is reported, not followed
    loops = [f for f in rep["failures"] if f["reason"] == "rejected" and "loop" in f["path"]]
    assert len(loops) == 1 and "not followed" in loops[0]["message"], rep["failures"]

    ds = storage.open_dataset(str(store))
    assert storage.verify(str(store)) == []
    vids = set(ds.meta["video_id"])
    # the non-UTF-8 byte is kept visibly (escaped) in the stored video id
    assert "folder/caf\\xff face clip.mp4" in vids, vids
    for vid, n in (("folder/good.mp4", 6), ("folder/caf\\xff face clip.mp4", 6),
                   ("folder/clips/actually a video.jpg", 6)):
        assert_upright_faces(ds, rows_of(ds, vid), vid)
        assert len(rows_of(ds, vid)) >= n - 1
    # the image folder: every still (six, one with a non-UTF-8 name) gives an upright face
    st = rows_of(ds, "folder/stills")
    assert len(st) == 6 and units[os.fsencode(str(stills))]["frames_decoded"] == 6
    assert_upright_faces(ds, st, "stills")
    text = html.read_text(encoding="utf-8")
    assert "broken \\xff.mp4" in text and "Failed items (2)" in text
