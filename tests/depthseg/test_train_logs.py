"""Training logs: TensorBoard asked for but not installed gives one notice (log warning and CLI line),
never silently nothing; the metrics history is plotted to ``metrics.png`` beside the checkpoints."""

from __future__ import annotations

import json
import logging
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.cli import main as cli

from tests.helpers.train_store import make_store, train_tiny

# slow: two tiny training runs
pytestmark = pytest.mark.slow

torch.set_num_threads(2)
NOTICE = "TensorBoard logging was asked for but tensorboard is not installed"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return make_store(tmp_path_factory.mktemp("logs-store"), size=64)


def test_tensorboard_missing_is_one_notice_and_history_png(store, tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as where it is not installed
    out = tmp_path / "train"
    with caplog.at_level(logging.WARNING, logger="depthseg.trainer"):
        assert cli(["train", "--store", store, "--out-dir", str(out), "--arch", "pspnet", "--input-size", "64",
                    "--label-size", "32", "--epochs", "3", "--max-steps-per-epoch", "2", "--batch-size", "8",
                    "--device", "cpu", "--tensorboard"]) == 0
    stdout = capsys.readouterr().out
    assert [line for line in stdout.splitlines() if NOTICE in line] == [
        f"notice: {NOTICE} (pip install 'depthseg-fas[tensorboard]'); training goes on with metrics.jsonl/csv/png only"]
    assert len([r for r in caplog.records if NOTICE in r.getMessage()]) == 1
    assert not (out / "tensorboard").exists()

    png = out / "metrics.png"
    assert png.parent == (out / "best.pt").parent and png.stat().st_size > 10_000
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width >= 600 and im.height >= 200
        pixels = np.asarray(im.convert("RGB"))
    # lines and text in several colours over the white background, not a blank canvas
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50
    assert (pixels.min(axis=2) < 128).mean() > 0.01
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3


def test_no_notice_when_not_asked(store, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="depthseg.trainer"):
        best = train_tiny(store, tmp_path / "train")
    assert not [r for r in caplog.records if "tensorboard" in r.getMessage().lower()]
    assert (best.parent / "metrics.png").stat().st_size > 0
