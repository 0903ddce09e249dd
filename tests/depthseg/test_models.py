"""Depth labels, DepthSeg networks, losses and scores."""

from __future__ import annotations


import numpy as np
import pytest
import torch
import torch.nn.functional as F

from depthseg.labels import class_centres, depth_to_labels, expected_depth, quantize
from depthseg.losses import build_loss
from depthseg.models import build_model, resolve_encoder_weights
from depthseg.score import frame_scores
from pipeline.base.errors import ConfigError, ModelAssetMissing

torch.set_num_threads(2)


def test_class_centres_and_quantize_bins():
    k = 8
    w = 1 / 7
    c = class_centres(k)
    assert c[0] == 0 and torch.allclose(c[1:], (torch.arange(1, 8) - 0.5) * w)
    d = torch.tensor([0.0, 1e-4, 1 / 255, w, w + 1e-5, 0.5, 1 - 1e-6, 1.0, 1.3, -0.2])
    assert quantize(d, k).tolist() == [0, 0, 1, 1, 2, 4, 7, 7, 7, 0]
    assert quantize(c, k).tolist() == list(range(k))  # every centre falls in its own class
    # for any positive depth the class centre is within half a bin
    x = torch.rand(10_000, dtype=torch.float64) * 0.99 + 0.01
    assert float((c.double()[quantize(x, k)] - x).abs().max()) <= w / 2 + 1e-9
    with pytest.raises(ConfigError):
        quantize(d, 1)
    with pytest.raises(ConfigError):
        quantize(torch.tensor([3]), 8)  # uint8/int maps must be converted to [0, 1] first


def test_depth_to_labels_is_area_resize_then_quantize():
    rng = np.random.default_rng(0)
    stored = rng.integers(0, 256, (3, 256, 256)).astype(np.uint8)
    stored[0] = 0  # a spoof/background map
    depth, labels = depth_to_labels(torch.from_numpy(stored), num_classes=5, label_size=32)
    blocks = stored.astype(np.float64).reshape(3, 32, 8, 32, 8).mean(axis=(2, 4)) / 255
    np.testing.assert_allclose(depth.numpy(), blocks, atol=1e-6)
    expected = np.where(blocks < 0.5 / 255, 0, np.clip(np.ceil(blocks * 4 - 1e-9), 1, 4))
    np.testing.assert_array_equal(labels.numpy(), expected)
    assert labels[0].max() == 0
    d256, _ = depth_to_labels(torch.from_numpy(stored), label_size=256)
    np.testing.assert_allclose(d256.numpy(), stored / 255, atol=1e-7)


@pytest.mark.parametrize("arch", ["pspnet", "deeplabv3plus", "unet"])
@pytest.mark.parametrize("in_size,label_size", [(64, 32), (128, 32), (64, 64)])
def test_models_output_logits_at_label_size(arch, in_size, label_size):
    torch.manual_seed(0)
    model = build_model(arch, "resnet18", num_classes=6, label_size=label_size, in_size=in_size).eval()
    with torch.no_grad():
        y = model(torch.rand(2, 3, in_size, in_size))
    assert y.shape == (2, 6, label_size, label_size) and torch.isfinite(y).all()
    assert model.arch_kwargs == {"arch": arch, "encoder": "resnet18", "num_classes": 6,
                                 "label_size": label_size, "in_size": in_size}


@pytest.mark.parametrize("encoder", ["mobilenet_v2", "efficientnet-b0", "resnet34"])
def test_other_encoders(encoder):
    model = build_model("pspnet", encoder, in_size=64).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64)).shape == (1, 8, 32, 32)


def test_bad_names_and_sizes():
    with pytest.raises(KeyError, match="pspnet") as e:
        build_model("segformer")
    assert "deeplabv3plus" in str(e.value) and "unet" in str(e.value)
    with pytest.raises(KeyError, match="encoder"):
        build_model("pspnet", "resnet7")
    with pytest.raises(ConfigError, match="in_size"):
        build_model("unet", in_size=100)


def test_encoder_weights_offline(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))  # nothing cached
    with pytest.raises(ModelAssetMissing, match="imagenet.*resnet18.*not cached") as e:
        build_model("pspnet", encoder_weights="imagenet", model_dir=tmp_path)
    assert str(tmp_path / "smp" / "resnet18.imagenet.safetensors") in str(e.value)
    with pytest.raises(KeyError, match="imagenet"):
        resolve_encoder_weights("resnet18", "instagram-1b")
    # weights from a local file (here: another model's encoder) are loaded
    torch.manual_seed(1)
    donor = build_model("unet", "resnet18", in_size=64)
    from safetensors.torch import save_file

    path = tmp_path / "smp" / "resnet18.imagenet.safetensors"
    path.parent.mkdir()
    save_file({k: v.contiguous() for k, v in donor.net.encoder.state_dict().items()}, str(path))
    torch.manual_seed(2)
    for weights in ("imagenet", path):  # by name from the model dir, or by path
        model = build_model("pspnet", "resnet18", encoder_weights=weights, in_size=64, model_dir=tmp_path)
        theirs = donor.net.encoder.state_dict()
        for k, v in model.net.encoder.state_dict().items():
            assert torch.equal(v, theirs[k]), k
    with pytest.raises(ModelAssetMissing):
        build_model("pspnet", encoder_weights=tmp_path / "nope.safetensors")


def _targets(seed=0, k=8, size=8):
    g = torch.Generator().manual_seed(seed)
    depth = torch.rand(2, size, size, generator=g)
    depth[0, :3] = 0
    return depth, quantize(depth, k)


def test_cross_entropy_losses():
    depth, target = _targets()
    logits = torch.randn(2, 8, 8, 8, generator=torch.Generator().manual_seed(1))
    assert build_loss("ce", 8)(logits, target, depth) == pytest.approx(float(F.cross_entropy(logits, target)))
    w = torch.linspace(0.5, 2, 8)
    ce_w = build_loss("ce", 8, class_weights=w.tolist())(logits, target, depth)
    assert float(ce_w) == pytest.approx(float(F.cross_entropy(logits, target, weight=w)), rel=1e-6)
    # ce+l1 = CE + lambda * mean |sum_k p_k c_k - depth|
    c = class_centres(8)
    e = (logits.softmax(1) * c.view(1, 8, 1, 1)).sum(1)
    expected = F.cross_entropy(logits, target) + 0.7 * (e - depth).abs().mean()
    assert float(build_loss("ce+l1", 8, l1_weight=0.7)(logits, target, depth)) == pytest.approx(float(expected), rel=1e-6)
    # without a continuous depth the class centres are the target
    expected = F.cross_entropy(logits, target) + (e - c[target]).abs().mean()
    assert float(build_loss("ce+l1", 8)(logits, target)) == pytest.approx(float(expected), rel=1e-6)
    with pytest.raises(KeyError, match="ce\\+l1"):
        build_loss("focal")
    with pytest.raises(ConfigError):
        build_loss("ce", 8, class_weights=[1, 2])


def test_ordinal_losses_prefer_near_bins():
    """CE scores a near miss and a far miss alike; the ordinal-aware losses do not."""
    target = torch.full((1, 4, 4), 4)
    depth = class_centres(8)[target]

    def confident(cls: int) -> torch.Tensor:
        return F.one_hot(torch.full((1, 4, 4), cls), 8).permute(0, 3, 1, 2).float() * 6

    near, far = confident(5), confident(1)
    ce = build_loss("ce", 8)
    assert float(ce(near, target, depth)) == pytest.approx(float(ce(far, target, depth)))
    for loss in (build_loss("ce+l1", 8), build_loss("soft", 8, sigma=1.0)):
        assert float(loss(near, target, depth)) < float(loss(far, target, depth))
    # soft labels with a tiny sigma are one-hot: the loss is plain CE
    logits = torch.randn(2, 8, 8, 8, generator=torch.Generator().manual_seed(3))
    d, t = _targets(4)
    assert float(build_loss("soft", 8, sigma=0.05)(logits, t, d)) == pytest.approx(float(F.cross_entropy(logits, t)), rel=1e-5)
    soft = build_loss("soft", 8, sigma=1.5)
    assert torch.allclose(soft.table.sum(1), torch.ones(8))
    assert soft.table[3].argmax() == 3 and soft.table[3, 2] == pytest.approx(float(soft.table[3, 4]))


def test_frame_score_is_mean_expected_depth():
    c = class_centres(8)
    logits = torch.full((3, 8, 4, 4), -20.0)
    logits[0, 0] = 20  # all class 0: a spoof map, score 0
    logits[1, 7] = 20  # all nearest: score = centre of class 7
    logits[2] = torch.randn(8, 4, 4, generator=torch.Generator().manual_seed(0))
    scores, depth = frame_scores(logits, c)
    assert scores[0] == pytest.approx(0.0, abs=1e-6)
    assert scores[1] == pytest.approx(float(c[7]), abs=1e-6)
    e = (logits[2].softmax(0) * c.view(8, 1, 1)).sum(0)
    assert scores[2] == pytest.approx(float(e.mean()), rel=1e-6)
    torch.testing.assert_close(depth, expected_depth(logits, c))
