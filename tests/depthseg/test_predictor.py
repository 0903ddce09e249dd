"""``depthseg.Predictor``: images (files and arrays) and videos through face detection + crop + model;
the ``predict`` command's output is what the pre-Predictor path (extract_faces + predict_crops) gave;
the README example runs."""

from __future__ import annotations

import contextlib
import io
import math
import re
import shutil

import cv2
import numpy as np
import pytest
import torch

import storage
from depthseg import MediaPrediction, Predictor
from depthseg.inference import depth_panel
from depthseg.predict import predict_crops
from depthseg.trainer import load_checkpoint
from pipeline.base.errors import ConfigError, NoFaceDetected, UnsupportedInput
from pipeline.cli import main as cli
from pipeline.io.frames import read_image
from pipeline.io.items import WorkItem
from pipeline.run.config import PreprocessConfig
from pipeline.run.engines import get_engines
from pipeline.run.stages import extract_faces
from pipeline.run.timing import StageTimer

from tests.conftest import FACES, REPO, load_rgb
from tests.helpers.media import make_face_video
from tests.helpers.train_store import make_store, train_tiny

# slow: trains a tiny model, runs face detection and landmarks on real images and a video
pytestmark = pytest.mark.slow

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("predictor")
    return train_tiny(make_store(root, size=64), root / "train")


@pytest.fixture(scope="module")
def predictor(checkpoint, model_dir):
    return Predictor.from_checkpoint(checkpoint, device="cpu", model_dir=model_dir)


def _old_predict(checkpoint, path, model_dir) -> tuple[str, np.ndarray]:
    """The ``predict`` command's line and depth panel as computed before Predictor existed."""
    model, meta = load_checkpoint(checkpoint)
    # the test store records no face settings: the Predictor falls back to the preprocessing defaults
    pcfg = PreprocessConfig.flat(detector="blazeface", landmarks=PreprocessConfig().detect.landmarks, every_n=1, max_frames=64,
                            size=max(int(meta["config"]["input_size"]), 64), device="cpu", model_dir=str(model_dir))
    faces, counts = extract_faces(WorkItem(path=str(path)), pcfg, get_engines(pcfg), StageTimer())
    crops = faces.image
    pred = predict_crops(model, crops, batch_size=32)
    score = float(np.mean(pred.scores))
    thr = float(meta["thresholds"]["video" if len(crops) > 1 else "frame"])
    decision = "live" if score >= thr else "spoof"
    line = f"{path}: score {score:.4f} (threshold {thr:.4f}) -> {decision.upper()} over {len(crops)} face frame(s)"
    old = MediaPrediction(str(path), score, thr, decision, pred.scores, faces.frame_index,
                          pred.depth, crops, counts.no_face)
    return line, depth_panel(old)


def test_predict_command_output_unchanged(checkpoint, model_dir, pad_samples, tmp_path, capsys):
    for kind, path in sorted(pad_samples.items()):
        png = tmp_path / f"{kind}.depth.png"
        assert cli(["predict", str(path), "--checkpoint", str(checkpoint), "--out", str(png),
                    "--model-dir", str(model_dir)]) == 0
        line, panel = _old_predict(checkpoint, path, model_dir)
        assert capsys.readouterr().out.splitlines() == [line, f"depth: {png}"]
        np.testing.assert_array_equal(cv2.cvtColor(cv2.imread(str(png)), cv2.COLOR_BGR2RGB), panel)


def test_predict_image_file_and_array(predictor, pad_samples):
    path = pad_samples["live"]
    by_path = predictor.predict_image(path)
    # image_T1.jpg has an EXIF rotation, applied when the file is read: the array is the upright image
    upright = read_image(path)
    assert upright.shape != load_rgb(path).shape
    by_array = predictor.predict_image(upright)
    assert by_array.path == "<array>" and by_path.path == str(path)
    assert by_path.frame_scores.shape == (1,) and by_path.depth.shape == (1, 32, 32)
    assert by_path.crops.shape == (1, 64, 64, 3)
    np.testing.assert_allclose(by_array.frame_scores, by_path.frame_scores, atol=1e-6)
    meta = predictor.meta
    assert by_path.threshold == pytest.approx(meta["thresholds"]["frame"])
    assert by_path.decision == ("live" if by_path.score >= by_path.threshold else "spoof")
    assert 0.0 <= by_path.score <= 1.0 and np.all((by_path.depth >= 0) & (by_path.depth <= 1))


def test_predict_video(predictor, tmp_path):
    video = make_face_video(tmp_path / "v.mp4", load_rgb(FACES / "obama2.jpg"), n=6, gap=(2, 3))  # frame 2: no face
    res = predictor.predict_video(video)
    assert res.frame_index.tolist() == [0, 1, 3, 4, 5] and res.frames_no_face == 1
    assert res.frame_scores.shape == (5,) and res.depth.shape == (5, 32, 32) and res.crops.shape == (5, 64, 64, 3)
    assert res.score == pytest.approx(float(np.mean(res.frame_scores)))
    assert res.threshold == pytest.approx(predictor.meta["thresholds"]["video"])
    assert math.isfinite(res.threshold) and res.decision in ("live", "spoof")


def test_wrong_inputs_fail_loudly(predictor, pad_samples, portraits, tmp_path):
    with pytest.raises(ConfigError, match="is an image"):
        predictor.predict_video(pad_samples["live"])
    video = make_face_video(tmp_path / "v.mp4", load_rgb(portraits[0]), n=2, gap=(6, 6))
    with pytest.raises(ConfigError, match="not an image"):
        predictor.predict_image(video)
    with pytest.raises(UnsupportedInput, match=r"\(H, W, 3\) uint8"):
        predictor.predict_image(np.zeros((40, 40), np.uint8))
    with pytest.raises(NoFaceDetected):
        predictor.predict_image(np.full((240, 320, 3), 128, np.uint8))


def test_readme_example_runs(checkpoint, predictor, pad_samples, tmp_path, monkeypatch):
    text = (REPO / "README.md").read_text()
    code = re.search(r"<!-- example: predictor -->\n```python\n(.*?)```", text, re.S).group(1)
    project = tmp_path / "project"
    (project / "runs/sample/train").mkdir(parents=True)
    shutil.copy(checkpoint, project / "runs/sample/train/best.pt")
    (tmp_path / "shared").symlink_to(pad_samples["live"].parent.parent.parent)
    monkeypatch.chdir(project)
    monkeypatch.setenv("DEPTHSEG_MODEL_DIR", str(predictor.preprocess.model_dir))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    expected = predictor.predict_image(pad_samples["live"])
    assert out.getvalue().splitlines() == [f"score {expected.score:.4f} -> {expected.decision}",
                                           "(1,) (1, 32, 32)"]


def _with_data_store(checkpoint, tmp_path, **data_store):
    ckpt = torch.load(checkpoint, weights_only=True)
    ckpt["data_store"] = {k: v for k, v in {**ckpt["data_store"], **data_store}.items() if v is not None}
    out = tmp_path / "ckpt.pt"
    torch.save(ckpt, out)
    return out


def test_predictor_crops_as_the_training_store_did(checkpoint, model_dir, tmp_path, caplog):
    """The model learnt on crops placed by the store's detector, landmarks and crop scale: the
    Predictor uses those (recorded in the checkpoint), not the current defaults, and says so when
    told otherwise or when the checkpoint does not know."""
    face = {"detector": "blazeface", "landmarks": "dlib68", "crop_scale": 1.5}
    assert PreprocessConfig().detect.landmarks != "dlib68"  # else this test shows nothing
    ckpt = _with_data_store(checkpoint, tmp_path, preprocess=face)
    with caplog.at_level("WARNING", logger="depthseg.inference"):
        p = Predictor.from_checkpoint(ckpt, model_dir=model_dir)
    assert (p.preprocess.detect.detector, p.preprocess.detect.landmarks, p.preprocess.crop.crop_scale) == \
        ("blazeface", "dlib68", 1.5)
    assert caplog.text == ""
    with caplog.at_level("WARNING", logger="depthseg.inference"):
        p = Predictor.from_checkpoint(ckpt, model_dir=model_dir, landmarks="mediapipe68")
    assert p.preprocess.detect.landmarks == "mediapipe68"
    assert "trained on crops made with landmarks dlib68; scoring with landmarks mediapipe68" in caplog.text

    # a checkpoint from before the face settings were recorded: read from its store when that is
    # still there with the same config hash ...
    store = make_store(tmp_path / "s", size=64, config={"crop_size": 64, **face})
    old = _with_data_store(checkpoint, tmp_path, path=store, preprocess=None,
                           config_hash=storage.open_dataset(store).config_hash)
    caplog.clear()
    with caplog.at_level("WARNING", logger="depthseg.inference"):
        p = Predictor.from_checkpoint(old, model_dir=model_dir)
    assert (p.preprocess.detect.landmarks, p.preprocess.crop.crop_scale) == ("dlib68", 1.5) and caplog.text == ""
    # ... else the defaults, named in a warning
    gone = _with_data_store(checkpoint, tmp_path, path=str(tmp_path / "gone"), preprocess=None)
    with caplog.at_level("WARNING", logger="depthseg.inference"):
        p = Predictor.from_checkpoint(gone, model_dir=model_dir)
    assert p.preprocess.detect.landmarks == PreprocessConfig().detect.landmarks
    assert "does not say which landmarks its training crops were made with" in caplog.text
