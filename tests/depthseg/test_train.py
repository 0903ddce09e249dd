"""DepthSeg end to end on a small real-image store: overfit, evaluate, exact resume, predict.

Small on purpose (PSPNet-ResNet18, 64x64 inputs, 32x32 labels, 32 training frames) so the
file runs in about a minute or two on two CPU cores.
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import storage
from depthseg.data import FrameDataset
from depthseg.evaluate import evaluate
from depthseg.predict import predict_crops, predict_dataset
from depthseg.trainer import TIMING_KEYS, TrainConfig, load_checkpoint, train
from pipeline.base.errors import ConfigError

from tests.helpers.train_store import SOURCES, SPLIT_FRAMES, make_store

# slow: trains PSPNet-ResNet18 several times (a minute or two)
pytestmark = pytest.mark.slow

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return make_store(tmp_path_factory.mktemp("depthseg-train"))


def small_config(store: str, out_dir, **kw) -> TrainConfig:
    base = dict(store=store, out_dir=str(out_dir), arch="pspnet", encoder="resnet18", input_size=64,
                label_size=32, num_classes=8, batch_size=8, lr=3e-3, warmup_epochs=1, device="cpu",
                progress=False, seed=0)
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def overfit(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("overfit")
    cfg = small_config(store, out, epochs=24, augment=None, dev_split="train")
    return cfg, train(cfg)


def test_overfits_training_set(overfit):
    cfg, result = overfit
    first, last = result.history[0]["train_loss"], result.history[-1]["train_loss"]
    assert first / last >= 5, (first, last)
    assert result.history[-1]["dev_acer"] == 0.0  # dev split = training split here
    assert result.metrics["best"]["frame"]["acer"] == 0.0
    assert result.metrics["best"]["frame"]["n_live"] == 6 * SPLIT_FRAMES["train"]
    assert len(result.history) == cfg.epochs
    out = result.last_checkpoint.parent
    for k in range(1, cfg.epochs + 1):
        assert (out / f"epoch_{k}.pt").is_file()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, cfg.epochs + 1))
    with open(out / "metrics.csv") as f:
        assert len(list(csv.DictReader(f))) == cfg.epochs


def test_checkpoints_load_weights_only(overfit):
    cfg, result = overfit
    for path in (result.best_checkpoint, result.last_checkpoint):
        ckpt = torch.load(path, weights_only=True)
        assert ckpt["model_kwargs"]["arch"] == "pspnet" and ckpt["config"]["epochs"] == cfg.epochs
        assert len(ckpt["class_centres"]) == 8 and math.isfinite(ckpt["threshold"])
    model, meta = load_checkpoint(result.last_checkpoint)
    sd = torch.load(result.last_checkpoint, weights_only=True)["model_state"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), k
    assert meta["epoch"] == cfg.epochs and "optimizer_state" not in meta


def test_evaluate_writes_every_output(overfit, store, tmp_path):
    _, result = overfit
    out = tmp_path / "eval"
    m = evaluate(result.best_checkpoint, store, split="test", dev_split="dev", out_dir=out, device="cpu")
    for name in ("metrics.json", "scores_video.csv", "scores_frame.csv", "roc_det.png", "depth_grid.png"):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["frame"]["n_live"] == 6 * SPLIT_FRAMES["test"] and saved["video"]["n_attack"] == 2
    assert saved["threshold_source"].startswith("EER of") and saved["dev"]["frame"]["n_live"] > 0
    for level in ("frame", "video"):
        for key in ("apcer_by_type", "apcer_max", "apcer_pooled", "bpcer", "acer", "hter", "eer", "auc",
                    "bpcer@apcer=1%", "bpcer@apcer=5%", "bpcer@apcer=10%"):
            assert key in saved[level], (level, key)
    assert set(saved["frame"]["apcer_by_type"]) == {"print", "replay"}
    with open(out / "scores_video.csv") as f:
        videos = list(csv.DictReader(f))
    assert len(videos) == len(SOURCES) and {v["decision"] for v in videos} <= {"live", "attack"}
    with open(out / "scores_frame.csv") as f:
        assert len(list(csv.DictReader(f))) == len(SOURCES) * SPLIT_FRAMES["test"]
    for png in ("roc_det.png", "depth_grid.png"):
        with Image.open(out / png) as im:
            assert im.size[0] > 100 and im.size[1] > 100
    # on the training split with its own dev threshold the overfit model makes no error
    m = evaluate(result.best_checkpoint, store, split="train", dev_split="train", out_dir=tmp_path / "e2",
                 device="cpu")
    assert m["frame"]["acer"] == 0.0 and m["video"]["acer"] == 0.0


def test_predict_crops_matches_dataset_scores(overfit, store):
    _, result = overfit
    model, _ = load_checkpoint(result.best_checkpoint)
    ds = FrameDataset(store, "test")
    crops = storage.open_dataset(store).filter(split="test").read_batch(np.arange(len(ds)), ("image",))["image"]
    pred = predict_crops(model, crops, batch_size=5)
    assert pred.scores.shape == (len(ds),) and pred.depth.shape == (len(ds), 32, 32)
    assert pred.classes.dtype == np.uint8 and pred.classes.max() < 8
    assert 0 <= pred.scores.min() and pred.scores.max() <= 1
    np.testing.assert_allclose(pred.scores, pred.depth.mean(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(pred.scores, predict_dataset(model, ds, batch_size=7).scores, atol=1e-5)


class Interrupt(Exception):
    pass


def test_resume_is_exact(store, tmp_path):
    kw = dict(epochs=3, max_steps_per_epoch=2, batch_size=6, dev_split="dev")  # augmentation on
    full = train(small_config(store, tmp_path / "full", **kw))

    def stop_after_first(epoch, row):
        if epoch == 1:
            raise Interrupt

    cut = small_config(store, tmp_path / "cut", **kw)
    with pytest.raises(Interrupt):
        train(cut, on_epoch_end=stop_after_first)
    assert not (tmp_path / "cut" / "epoch_2.pt").exists()
    with pytest.raises(ConfigError, match="lr"):
        train(small_config(store, tmp_path / "cut", **{**kw, "lr": 1e-3}), resume=True)
    resumed = train(cut, resume=True)

    def strip(history):
        return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in history]

    assert strip(resumed.history) == strip(full.history)
    assert resumed.metrics == full.metrics
    a = torch.load(full.last_checkpoint, weights_only=True)
    b = torch.load(resumed.last_checkpoint, weights_only=True)
    for k, v in a["model_state"].items():
        assert torch.equal(v, b["model_state"][k]), k
    for pid, st in a["optimizer_state"]["state"].items():
        for k, v in st.items():
            assert torch.equal(v, b["optimizer_state"]["state"][pid][k]), (pid, k)
    assert a["scheduler_state"]["last_epoch"] == b["scheduler_state"]["last_epoch"] == 6
    assert torch.equal(a["rng"]["generators"]["augment"], b["rng"]["generators"]["augment"])
    with open(tmp_path / "cut" / "metrics.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2, 3]
    # resuming a finished run trains nothing and reports the same result
    again = train(TrainConfig.from_dict(cut.to_dict()), resume=True)
    assert again.history == resumed.history and again.metrics == resumed.metrics


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_amp_training_and_prediction(store, tmp_path):
    cfg = small_config(store, tmp_path / "cuda", epochs=2, device="cuda", amp=True, channels_last=True,
                       dev_split="dev")
    result = train(cfg)
    assert all(math.isfinite(r["train_loss"]) for r in result.history)
    ckpt = torch.load(result.last_checkpoint, weights_only=True)  # CUDA RNG states included
    assert "cuda" in ckpt["rng"]
    gpu, _ = load_checkpoint(result.last_checkpoint, device="cuda")
    cpu, _ = load_checkpoint(result.last_checkpoint, device="cpu")
    ds = FrameDataset(store, "test")
    crops = storage.open_dataset(store).filter(split="test").read_batch(np.arange(len(ds)), ("image",))["image"]
    a = predict_crops(gpu, crops, amp=True).scores
    b = predict_crops(cpu, crops).scores
    np.testing.assert_allclose(a, b, atol=0.05)
    resumed = train(TrainConfig(**{**cfg.to_dict(), "epochs": 2}), resume=True)  # nothing left to do
    assert len(resumed.history) == 2
