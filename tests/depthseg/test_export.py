"""``depthseg-fas export``: ONNX (run with onnxruntime) and TorchScript files of checkpoints trained
by the real trainer score face crops like the torch model, and carry what a user needs as metadata."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import storage
from depthseg.data import FrameDataset
from depthseg.export import pool_matrix, read_metadata
from depthseg.models import IMAGENET_MEAN, IMAGENET_STD
from depthseg.predict import predict_crops
from depthseg.trainer import load_checkpoint
from pipeline.cli import main as cli

from tests.helpers.train_store import make_store, train_tiny

# slow: trains three tiny models, exports each twice
pytestmark = pytest.mark.slow

torch.set_num_threads(2)
ARCHS = ("pspnet", "deeplabv3plus", "unet")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return make_store(tmp_path_factory.mktemp("export-store"), size=64)


@pytest.fixture(scope="module")
def checkpoints(store, tmp_path_factory) -> dict:
    return {arch: train_tiny(store, tmp_path_factory.mktemp(f"export-{arch}"), arch) for arch in ARCHS}


@pytest.fixture(scope="module")
def crops(store) -> np.ndarray:
    """Real face crops of the store's test split, (N, 64, 64, 3) uint8."""
    ds = FrameDataset(storage.open_dataset(store), "test")
    return ds.read_batch(list(range(len(ds))))["image"].numpy()


def test_pool_matrix_is_adaptive_avg_pool():
    x = torch.rand(2, 3, 8, 13, dtype=torch.float64)
    for oh, ow in ((1, 1), (2, 3), (3, 6), (6, 5), (8, 13)):
        mine = pool_matrix(8, oh, x.dtype) @ x @ pool_matrix(13, ow, x.dtype).t()
        torch.testing.assert_close(mine, F.adaptive_avg_pool2d(x, (oh, ow)), rtol=0, atol=1e-12)


def _run_exported(path, fmt: str, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if fmt == "onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [o.name for o in sess.get_outputs()] == ["score", "depth"]
        score, depth = sess.run(None, {"image": image})
        return score, depth
    module = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        score, depth = module(torch.from_numpy(image))
    return score.numpy(), depth.numpy()


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("arch", ARCHS)
def test_export_scores_like_torch(arch, fmt, checkpoints, crops, tmp_path, capsys):
    out = tmp_path / f"{arch}.{'onnx' if fmt == 'onnx' else 'pt'}"
    assert cli(["export", "--checkpoint", str(checkpoints[arch]), "--format", fmt, "--output", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    model, meta = load_checkpoint(checkpoints[arch])
    ref = predict_crops(model, crops, amp=False)

    md = read_metadata(out)
    size = md["input_size"]
    assert size == model.arch_kwargs["in_size"] == 64 and md["label_size"] == 32 and md["num_classes"] == 8
    assert md["mean"] == list(IMAGENET_MEAN) and md["std"] == list(IMAGENET_STD)
    assert md["threshold_frame"] == pytest.approx(meta["thresholds"]["frame"])
    assert md["threshold_video"] == pytest.approx(meta["thresholds"]["video"])
    assert md["class_centres"] == pytest.approx(meta["class_centres"])
    assert md["arch"] == arch

    # what a user does with the metadata alone: NHWC uint8 -> NCHW float in [0, 1]
    image = np.ascontiguousarray(crops.transpose(0, 3, 1, 2)).astype(np.float32) / 255.0
    for part in (image[:1], image):  # the batch size is free
        score, depth = _run_exported(out, fmt, part)
        np.testing.assert_allclose(score, ref.scores[:len(part)], rtol=0, atol=1e-4)
        np.testing.assert_allclose(depth, ref.depth[:len(part)], rtol=0, atol=1e-4)
    assert len(score) == len(crops) >= 8
    assert (score >= md["threshold_frame"]).tolist() == (ref.scores >= meta["threshold"]).tolist()


def test_export_refuses_unknown_format_and_bad_checkpoint(checkpoints, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli(["export", "--checkpoint", str(checkpoints["unet"]), "--format", "tflite"])
    assert exc.value.code == 2
    assert "parameter 'format': unknown value 'tflite'; valid: ['onnx', 'torchscript']" in capsys.readouterr().err
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    rc = cli(["export", "--checkpoint", str(bad), "--format", "onnx", "--output", str(tmp_path / "x.onnx")])
    assert rc != 0 and not (tmp_path / "x.onnx").exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.pt" in err[0]
