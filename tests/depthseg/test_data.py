"""DepthSeg data path: store -> FrameDataset -> sorted batches -> device batches (+ augmentation).

The store is written through ``storage.DatasetWriter`` from the real shared images: square
face crops (a few jittered crops per image = one "video"), synthetic ellipsoid depth for
live faces. Spoof frames are deliberately stored with a *non-zero* depth map, to check that
the loader gives them zero depth regardless of what is on disk.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import storage
from depthseg.augment import AugmentConfig, augment_batch
from depthseg.data import FrameDataset, SortedBatchSampler, make_loader, prepare_batch
from depthseg.labels import quantize
from tests.helpers.train_store import SOURCES, SPLIT_FRAMES, make_store


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return make_store(tmp_path_factory.mktemp("depthseg-data"))


def test_split_selection_and_spoof_depth(store):
    reader = storage.open_dataset(store)
    train = FrameDataset(store, "train")
    n_train = len(SOURCES) * SPLIT_FRAMES["train"]
    assert len(train) == n_train
    assert set(np.unique(train.video_id)) == {f"{Path(k).stem}-train" for k in SOURCES}
    # criteria mapping and protocol callable select the same kinds of views
    print_dev = FrameDataset(store, {"split": "dev", "attack_type": "print"})
    assert len(print_dev) == SPLIT_FRAMES["dev"] and not print_dev.is_live.any()
    assert len(FrameDataset(reader, lambda r: r.filter(subject="biden"))) == sum(SPLIT_FRAMES.values())

    batch = train.read_batch(list(range(n_train)))
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (n_train, 128, 128, 3)
    live = batch["is_live"].numpy()
    assert live.sum() == 6 * SPLIT_FRAMES["train"]
    stored = reader.filter(split="train").read_batch(np.arange(n_train), fields=("depth",))["depth"]
    assert stored[~live].max() > 0  # non-zero on disk ...
    assert batch["depth"][~live].max() == 0  # ... zero in the loader
    np.testing.assert_array_equal(batch["depth"][live].numpy(), stored[live])


def test_sorted_batch_sampler():
    g = torch.Generator().manual_seed(3)
    sampler = SortedBatchSampler(21, 5, shuffle=True, generator=g)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 4  # the final single frame joins the last batch
    assert sorted(i for b in batches for i in b) == list(range(21))
    assert all(b == sorted(b) for b in batches)
    assert list(sampler) != batches  # the generator advanced: a new epoch order
    again = list(SortedBatchSampler(21, 5, shuffle=True, generator=torch.Generator().manual_seed(3)))
    assert again == batches


def test_loader_workers_match_main_process(store):
    ds = FrameDataset(store, "dev")
    pickle.loads(pickle.dumps(ds))  # picklable: each worker opens the store itself
    main = list(make_loader(ds, 5))
    workers = list(make_loader(ds, 5, num_workers=1))
    assert len(main) == len(workers) == 3
    for a, b in zip(main, workers):
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_prepare_batch_labels(store):
    ds = FrameDataset(store, "train")
    raw = ds.read_batch([0, 5, 9, 31])
    b = prepare_batch(raw, "cpu", input_size=64, label_size=32, num_classes=8)
    assert b.image.shape == (4, 3, 64, 64) and b.image.dtype == torch.float32
    assert 0 <= float(b.image.min()) and float(b.image.max()) <= 1
    # area resize of the uint8 map = mean of each 4x4 block, then quantize
    blocks = raw["depth"].numpy().astype(np.float64).reshape(4, 32, 4, 32, 4).mean(axis=(2, 4)) / 255
    np.testing.assert_allclose(b.depth.numpy(), blocks, atol=1e-6)
    torch.testing.assert_close(b.target, quantize(torch.from_numpy(blocks).float(), 8))
    spoof = ~raw["is_live"]
    assert spoof.any() and int(b.target[spoof].max()) == 0


def _flat_cfg(**kw) -> AugmentConfig:
    base = dict(hflip_p=0.0, scale=(1.0, 1.0), translate=0.0, rotate_deg=0.0, brightness=0.0,
                contrast=0.0, saturation=0.0, erase_p=0.0)
    return AugmentConfig(**{**base, **kw})


def test_augment_geometry_shared_and_photometric_image_only(store):
    ds = FrameDataset(store, "train")
    b = prepare_batch(ds.read_batch(list(range(8))), "cpu", input_size=64, label_size=32, num_classes=8)

    # flip with p=1 is an exact mirror of both
    img, dep = augment_batch(b.image, b.depth, _flat_cfg(hflip_p=1.0), torch.Generator().manual_seed(0))
    torch.testing.assert_close(img, b.image.flip(-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(dep, b.depth.flip(-1), atol=1e-5, rtol=0)

    # random zoom/shift/rotation moves image and depth alike: put the depth into the image's
    # first channel (at image resolution) and compare after augmentation
    geo = _flat_cfg(hflip_p=0.5, scale=(0.8, 1.25), translate=0.1, rotate_deg=10)
    probe = b.image.clone()
    probe[:, 0] = F.interpolate(b.depth[:, None], size=64, mode="bilinear", align_corners=False)[:, 0]
    img, dep = augment_batch(probe, b.depth, geo, torch.Generator().manual_seed(1))
    moved = F.interpolate(img[:, :1], size=32, mode="area")[:, 0]
    assert float((moved - dep).abs().mean()) < 0.02
    assert float((dep - b.depth).abs().mean()) > 0.05  # and it did move

    # same seed -> same result; photometric transforms leave depth untouched
    full = AugmentConfig(erase_p=1.0)
    a1 = augment_batch(b.image, b.depth, full, torch.Generator().manual_seed(5))
    a2 = augment_batch(b.image, b.depth, full, torch.Generator().manual_seed(5))
    torch.testing.assert_close(a1, a2, rtol=0, atol=0)
    photo = _flat_cfg(brightness=0.4, contrast=0.4, saturation=0.4, erase_p=1.0)
    img, dep = augment_batch(b.image, b.depth, photo, torch.Generator().manual_seed(2))
    torch.testing.assert_close(dep, b.depth, rtol=0, atol=0)
    assert float((img - b.image).abs().mean()) > 0.01
    assert 0 <= float(img.min()) and float(img.max()) <= 1
    # random erasing fills one constant rectangle per image
    img, _ = augment_batch(b.image, b.depth, _flat_cfg(erase_p=1.0), torch.Generator().manual_seed(4))
    changed = (img != b.image).any(dim=1)
    for m in changed:
        rows, cols = torch.nonzero(m.any(1)).flatten(), torch.nonzero(m.any(0)).flatten()
        assert len(rows) and len(cols)
        assert len(rows) == int(rows.max() - rows.min() + 1) and len(cols) == int(cols.max() - cols.min() + 1)
