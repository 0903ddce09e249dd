"""Training edge cases: single-class splits, no dev set, a failed checkpoint write, Ctrl-C.

* A training or dev split with only live (or only spoof) frames is refused before training
  starts (one line, exit 2, no checkpoint written): with one class the dev EER threshold and
  ACER are NaN and used to end up in ``best.pt`` with exit 0.
* Without a dev set no threshold is saved (None / empty), never NaN.
* A checkpoint write that fails half-way (disk full) leaves no temporary file and the previous
  ``last.pt`` intact, and ends in a ``CheckpointError``.
* Ctrl-C (SIGINT to the process group of a ``depthseg-fas train`` subprocess) after the first
  epoch: one line, exit 130, ``last.pt`` intact and loadable, no temporary file; ``--resume``
  completes the run.

Stores are written by the real writer from the shared face images (tests/helpers); models are
PSPNet-ResNet18 on 64x64 inputs, a few steps per epoch.
"""

from __future__ import annotations

import errno
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from depthseg.trainer import CheckpointError, TrainConfig, TrainingError, load_checkpoint_dict, train
from pipeline.cli import main as cli
from tests.conftest import REPO
from tests.helpers.signals import sigint_default
from tests.helpers.stores import write_store
from tests.helpers.train_store import make_store

torch.set_num_threads(2)

ENV = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}
ENV.pop("DEPTHSEG_DEBUG", None)


def _store(path: Path, parts) -> str:
    write_store(str(path), parts=parts)
    return str(path)


def _config(store: str, out: Path, **kw) -> TrainConfig:
    base = dict(store=store, out_dir=str(out), arch="pspnet", encoder="resnet18", input_size=64,
                label_size=32, num_classes=8, batch_size=8, epochs=1, max_steps_per_epoch=2,
                device="cpu", progress=False, augment=None)
    return TrainConfig(**{**base, **kw})


def _train_args(store: str, out: Path, epochs: int = 1) -> list[str]:
    return ["train", "--store", store, "--out-dir", str(out), "--arch", "pspnet", "--input-size", "64",
            "--label-size", "32", "--epochs", str(epochs), "--batch-size", "8", "--max-steps-per-epoch", "2",
            "--device", "cpu"]


def _temp_files(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if ".tmp" in p.name) if out.exists() else []


def _floats(obj, path="") -> list[tuple[str, float]]:
    """Every float in a checkpoint's plain containers (tensors aside)."""
    if isinstance(obj, dict):
        return [x for k, v in obj.items() for x in _floats(v, f"{path}/{k}")]
    if isinstance(obj, (list, tuple)):
        return [x for i, v in enumerate(obj) for x in _floats(v, f"{path}/{i}")]
    return [(path, obj)] if isinstance(obj, float) else []


def test_dev_split_with_one_class_is_refused_before_training(tmp_path, capsys):
    # dev frames are all live (vid-a); the spoof part is training-only
    store = _store(tmp_path / "s.zarr", [("vid-a", 6, "live", ("train", "dev"), "obama.jpg"),
                                         ("vid-b", 6, "spoof", ("train",), "biden.jpg")])
    out = tmp_path / "train"
    capsys.readouterr()
    rc = cli(_train_args(store, out))
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("depthseg-fas train:")]
    assert rc == 2 and len(lines) == 1, (rc, err[-2000:])
    assert "dev split 'dev'" in lines[0] and "only live frames" in lines[0] and store in lines[0]
    assert "Traceback" not in err
    assert not (out / "best.pt").exists() and not (out / "last.pt").exists()


def test_training_split_with_one_class_is_refused(tmp_path):
    store = _store(tmp_path / "s.zarr", [("vid-a", 6, "live", ("train", "dev"), "obama.jpg"),
                                         ("vid-b", 6, "spoof", ("dev",), "biden.jpg")])
    with pytest.raises(TrainingError, match="training split 'train' has only live frames"):
        train(_config(store, tmp_path / "train"))
    assert not (tmp_path / "train" / "last.pt").exists()


@pytest.mark.slow  # >= 2.5 s on an idle 2-core machine
def test_no_dev_set_stores_no_nan(tmp_path, caplog):
    store = _store(tmp_path / "s.zarr", [("vid-a", 6, "live", ("train",), "obama.jpg"),
                                         ("vid-b", 6, "spoof", ("train",), "biden.jpg")])
    res = train(_config(store, tmp_path / "train"))
    assert "dev split 'dev' is empty" in caplog.text
    for name in ("best.pt", "last.pt"):
        ckpt = load_checkpoint_dict(tmp_path / "train" / name)
        assert ckpt["threshold"] is None and ckpt["thresholds"] == {} and ckpt["best"]["thresholds"] == {}
        bad = [(k, v) for k, v in _floats({k: v for k, v in ckpt.items() if k != "rng"}) if math.isnan(v)]
        assert not bad, f"{name}: NaN values {bad}"
    assert res.metrics["thresholds"] == {}


@pytest.mark.slow  # >= 2.5 s on an idle 2-core machine
def test_evaluate_single_class_split_warns_loudly(tmp_path, caplog):
    store = make_store(tmp_path, size=64)
    train(_config(store, tmp_path / "train"))
    with caplog.at_level("WARNING"):
        from depthseg.evaluate import evaluate

        m = evaluate(tmp_path / "train" / "best.pt", store, split={"split": "test", "label": "spoof"},
                     out_dir=tmp_path / "ev", device="cpu")
    assert "has only spoof frames" in caplog.text
    assert m["frame"]["bpcer"] is None and m["frame"]["acer"] is None  # null, not NaN, in metrics.json
    assert m["frame"]["apcer_pooled"] is not None


@pytest.mark.slow  # >= 2.5 s on an idle 2-core machine
def test_failed_checkpoint_write_leaves_no_temp_file(tmp_path, monkeypatch):
    """Disk full while writing epoch 2's checkpoint: CheckpointError naming the file, no temp
    file anywhere in the output folder, last.pt still epoch 1's and loadable."""
    store = make_store(tmp_path, size=64)
    out = tmp_path / "train"
    real_save = torch.save
    calls = []

    def save(obj, f, *a, **kw):
        calls.append(Path(f).name)
        if isinstance(obj, dict) and obj.get("epoch") == 2:
            with open(f, "wb") as fh:  # some bytes reach the disk, then it is full
                fh.write(b"PK\x03\x04" + bytes(4096))
            raise OSError(errno.ENOSPC, "No space left on device", str(f))
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(CheckpointError, match=r"epoch_2\.pt: could not write the checkpoint \(No space left"):
        train(_config(store, out, epochs=2))
    assert calls and calls[-1].startswith(".epoch_2.pt.tmp")
    assert _temp_files(out) == [], _temp_files(out)
    assert not (out / "epoch_2.pt").exists()
    assert load_checkpoint_dict(out / "last.pt")["epoch"] == 1


@pytest.mark.slow  # >= 2.5 s on an idle 2-core machine
def test_failed_checkpoint_write_is_one_line_exit_1(tmp_path, monkeypatch, capsys):
    store = make_store(tmp_path, size=64)
    out = tmp_path / "train"

    def save(obj, f, *a, **kw):
        Path(f).write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device", str(f))

    monkeypatch.setattr(torch, "save", save)
    capsys.readouterr()
    rc = cli(_train_args(store, out))
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("depthseg-fas train:")]
    assert rc == 1 and len(lines) == 1 and "epoch_1.pt" in lines[0] and "No space left" in lines[0], err[-2000:]
    assert "Traceback" not in err
    assert _temp_files(out) == []


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ctrl_c_training_keeps_last_checkpoint_and_resumes(tmp_path):
    store = make_store(tmp_path, size=64)
    epochs = 4
    for attempt in range(3):  # a SIGINT landing after the run ended (fast machine) is redone
        out = tmp_path / f"train{attempt}"
        log = tmp_path / f"train{attempt}.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", *_train_args(store, out, epochs)],
                                    cwd=REPO, env=ENV, stdout=fh, stderr=subprocess.STDOUT,
                                    start_new_session=True, preexec_fn=sigint_default)
            deadline = time.monotonic() + 400
            # epoch 1 complete: its metrics row is written after its checkpoints
            while proc.poll() is None and not (out / "metrics.jsonl").exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
            rc = proc.wait(timeout=120)
        if rc != 0:
            break
    text = log.read_text(errors="replace")
    assert rc == 130, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    lines = [ln for ln in text.splitlines() if ln.startswith("depthseg-fas train:")]
    assert len(lines) == 1 and "interrupted" in lines[0] and "--resume" in lines[0], text[-3000:]
    done = load_checkpoint_dict(out / "last.pt")["epoch"]
    assert 1 <= done < epochs
    assert _temp_files(out) == [], _temp_files(out)

    resumed = subprocess.run([sys.executable, "-m", "pipeline.cli", *_train_args(store, out, epochs), "--resume"],
                             cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stderr
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, epochs + 1))
    assert load_checkpoint_dict(out / "last.pt")["epoch"] == epochs
    assert np.isfinite([r["train_loss"] for r in rows]).all()
