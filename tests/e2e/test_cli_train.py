"""CLI: preprocess → train → evaluate → predict, on a store built from the shared images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline.cli import main as cli
from tests.conftest import load_rgb
from tests.helpers.media import make_face_video
from tests.helpers.csv_manifest import write_manifest

# slow: CLI preprocess, train, evaluate, predict in subprocesses
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small_store(tmp_path_factory, portraits, pad_samples):
    root = tmp_path_factory.mktemp("cli_train")
    data = root / "in"
    data.mkdir()
    rows = []
    for i, p in enumerate(sorted(portraits)[:4]):
        make_face_video(data / f"live{i}.mp4", load_rgb(p), n=6, gap=(6, 6))
        rows.append({"path": f"live{i}.mp4", "label": "live", "subject": f"p{i}", "split": ("train", "dev")[i % 2]})
    for kind in ("print", "replay"):
        shutil.copy(pad_samples[kind], data / f"{kind}.jpg")
    for i, p in enumerate(sorted(portraits)[:4]):
        shutil.copy(p, data / f"spoof{i}.jpg")
        rows.append({"path": f"spoof{i}.jpg", "label": "spoof", "attack_type": ("print", "replay")[i % 2],
                     "subject": f"p{i}", "split": ("train", "dev")[i % 2]})
    rows += [{"path": "print.jpg", "label": "spoof", "attack_type": "print", "subject": "s", "split": "test"},
             {"path": "replay.jpg", "label": "spoof", "attack_type": "replay", "subject": "s", "split": "test"}]
    write_manifest(data / "m.csv", rows)
    store = root / "store.zarr"
    assert cli(["preprocess", "--input", str(data), "--manifest", str(data / "m.csv"), "--output", str(store),
                "--size", "64"]) == 0
    return store


def test_train_evaluate_predict(tmp_path, small_store, pad_samples, capsys):
    out = tmp_path / "train"
    # the test clips' faces are small (most live frames carry the small-face flag): train and
    # evaluate on flagged frames too, as a user would with --include-flagged
    assert cli(["train", "--store", str(small_store), "--out-dir", str(out), "--arch", "pspnet",
                "--input-size", "64", "--epochs", "2", "--batch-size", "8", "--device", "cpu",
                "--include-flagged"]) == 0
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file()
    ev = tmp_path / "eval"
    assert cli(["evaluate", "--checkpoint", str(out / "best.pt"), "--store", str(small_store),
                "--split", "dev", "--dev-split", "dev", "--out-dir", str(ev), "--device", "cpu",
                "--include-flagged"]) == 0
    metrics = json.loads((ev / "metrics.json").read_text())
    assert "acer" in json.dumps(metrics).lower()
    for name in ("scores_video.csv", "roc_det.png", "depth_grid.png"):
        assert (ev / name).stat().st_size > 0
    capsys.readouterr()
    for kind, path in pad_samples.items():
        png = tmp_path / f"{kind}.depth.png"
        assert cli(["predict", str(path), "--checkpoint", str(out / "best.pt"), "--out", str(png)]) == 0
        text = capsys.readouterr().out
        assert "score" in text and ("LIVE" in text or "SPOOF" in text or "UNDECIDED" in text)
        assert png.stat().st_size > 0
