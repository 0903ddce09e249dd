"""Checkpoints record the data they were trained on (issue 13, item 8): the store, its config
hash and the label version of its depth labels (1 for a store written before labels had one), and
the detector / landmarks / crop scale its crops were made with (what inference crops with)."""

from __future__ import annotations

import pytest
import torch

import storage
from depthseg.trainer import TrainConfig, train
from tests.helpers.train_store import make_store

pytestmark = pytest.mark.slow  # two one-epoch trainings of a small PSPNet

torch.set_num_threads(2)


@pytest.mark.parametrize("config, version, face", [
    ({"crop_size": 128, "label_version": 2, "detector": "blazeface", "landmarks": "dlib68", "crop_scale": 1.3},
     2, {"detector": "blazeface", "landmarks": "dlib68", "crop_scale": 1.3}),
    ({"crop_size": 128}, 1, {})])
def test_checkpoint_records_store_hash_and_label_version(tmp_path, config, version, face):
    store = make_store(tmp_path, config=config)
    cfg = TrainConfig(store=store, out_dir=str(tmp_path / "run"), arch="pspnet", encoder="resnet18",
                      input_size=64, label_size=32, num_classes=8, batch_size=16, epochs=1, device="cpu",
                      progress=False, seed=0, augment=None)
    result = train(cfg)
    for path in (result.last_checkpoint, result.best_checkpoint):
        ckpt = torch.load(path, weights_only=True)
        assert ckpt["data_store"] == {"path": store, "config_hash": storage.open_dataset(store).config_hash,
                                      "label_version": version, "preprocess": face}
