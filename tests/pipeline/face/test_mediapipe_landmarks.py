"""The ``mediapipe68`` landmark backend (issue 13, item 5: a pose-robust landmark backend).

With the real model (``make setup`` installs it from the mediapipe 0.10.21 wheel):
* on frontal portraits its 68 points agree with dlib's;
* a rolled face (the photo rotated 30 deg) gives the same points as the upright one, rotated:
  the crop is turned upright by the detector's eye keypoints;
* on a generated face turned 45 deg either way (the label benchmark's renderer, true depth
  known) the depth labels made from its points match the truth far better than dlib's, which
  slide off a turned face;
* a missing model file or runtime stops the run with the way to get it; the fetch script refuses
  a model whose checksum is not the pinned one and writes nothing.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile

import cv2
import numpy as np
import pytest
import torch

import storage
from pipeline.base.errors import ModelAssetMissing, SetupError
from pipeline.base.types import FaceBox
from pipeline.face import mediapipe_model
from pipeline.face.detect import create_detector
from pipeline.face.landmarks import (
    MEDIAPIPE_TO_IBUG68,
    create_landmarker,
    mediapipe_crop_affine,
    mesh_to_ibug68,
)
from tests.conftest import FACES, MODELS, REPO

try:
    mediapipe_model.model_file()
    import ai_edge_litert  # noqa: F401

    HAVE_MODEL = ""
except (ModelAssetMissing, ImportError) as e:  # pragma: no cover - `make setup` installs both
    HAVE_MODEL = f"MediaPipe model or LiteRT not installed (run `make setup`): {e}"
needs_model = pytest.mark.skipif(bool(HAVE_MODEL), reason=HAVE_MODEL or "-")


def _rgb(name: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(FACES / name)), cv2.COLOR_BGR2RGB)


def _face(detector, image) -> FaceBox:
    return max(detector.detect(image), key=lambda b: b.score)


def test_mapping_covers_ibug68_with_mesh_vertices():
    assert len(MEDIAPIPE_TO_IBUG68) == 68
    flat = [i for idx in MEDIAPIPE_TO_IBUG68 for i in idx]
    assert all(0 <= i < 468 for i in flat)
    mesh = np.arange(468 * 2, dtype=np.float64).reshape(468, 2)
    out = mesh_to_ibug68(mesh[None])[0]
    assert out.shape == (68, 2)
    np.testing.assert_allclose(out[3], (mesh[132] + mesh[58]) / 2)  # a pair is averaged
    np.testing.assert_allclose(out[36], mesh[33])  # right eye outer corner


def test_crop_affine_turns_the_eye_line_horizontal():
    kp = np.array([[100.0, 100.0], [140.0, 140.0]] + [[0.0, 0.0]] * 4)
    box = FaceBox(80, 80, 160, 160, 0.9, keypoints=kp)
    a = mediapipe_crop_affine(box)
    eyes = kp[:2] @ a[:, :2].T + a[:, 2]
    # level within the 1 mrad grid of the angle (eye distance here ~90 px in the crop)
    assert abs(eyes[0, 1] - eyes[1, 1]) < 0.05 and eyes[1, 0] > eyes[0, 0]
    centre = np.array([120.0, 120.0]) @ a[:, :2].T + a[:, 2]
    np.testing.assert_allclose(centre, [96, 96], atol=1e-3)
    np.testing.assert_allclose(np.sqrt(abs(np.linalg.det(a[:, :2]))), 192 / (1.5 * 80), rtol=1e-5)


def test_crop_ignores_float_noise_of_the_box():
    """A box that moved by float noise (the detector at another torch thread count) gives the same
    crop, so the same landmarks and stored images (failed before the crop was put on a grid)."""
    kp = np.array([[101.3, 99.7], [140.6, 112.2]] + [[0.0, 0.0]] * 4)
    box = FaceBox(80.37, 79.81, 160.52, 161.13, 0.9, keypoints=kp)
    noisy = FaceBox(80.37 + 3e-5, 79.81 - 2e-5, 160.52 + 4e-5, 161.13, 0.9, keypoints=kp + 1e-5)
    np.testing.assert_array_equal(mediapipe_crop_affine(noisy), mediapipe_crop_affine(box))


@needs_model
def test_agrees_with_dlib_on_frontal_portraits():
    det = create_detector("blazeface", model_dir=str(MODELS))
    dlib68, mp68 = create_landmarker("dlib68"), create_landmarker("mediapipe68")
    for name in ("obama.jpg", "biden.jpg", "obama2.jpg"):
        im = _rgb(name)
        box = _face(det, im)
        a, m = dlib68.landmarks(im, box).points, mp68.landmarks(im, box)
        io = np.linalg.norm(a[36] - a[45])
        err = np.linalg.norm(a - m.points, axis=1) / io
        assert err[17:].mean() < 0.06, (name, err[17:].mean())  # brows, nose, eyes, mouth
        assert m.scores is not None and m.scores.min() > 0.9  # face presence


@needs_model
def test_a_rolled_face_gives_the_rotated_points():
    det = create_detector("blazeface", model_dir=str(MODELS))
    mp68 = create_landmarker("mediapipe68")
    im = _rgb("biden.jpg")
    h, w = im.shape[:2]
    pad = cv2.copyMakeBorder(im, h // 2, h // 2, w // 2, w // 2, cv2.BORDER_REFLECT_101)
    rot = cv2.getRotationMatrix2D((pad.shape[1] / 2, pad.shape[0] / 2), 30, 1.0)
    rolled = cv2.warpAffine(pad, rot, (pad.shape[1], pad.shape[0]), flags=cv2.INTER_LINEAR)
    upright = mp68.landmarks(pad, _face(det, pad)).points
    turned = mp68.landmarks(rolled, _face(det, rolled)).points
    expected = upright @ rot[:, :2].T + rot[:, 2]
    io = np.linalg.norm(expected[36] - expected[45])
    assert (np.linalg.norm(turned - expected, axis=1) / io).mean() < 0.05


@pytest.fixture(scope="module")
def turned_faces():
    """One generated identity at yaw -45 and +45 deg in 640x360 frames (true mesh known)."""
    from bench.bench_labels import Scene
    from pipeline.reconstruct.sfm import load_sfm
    from pipeline.synth.geometry import prepare_identity
    from pipeline.synth.plan import SynthConfig, plan_identities
    from pipeline.synth.sources import load_sources

    sfm = load_sfm(None).to_torch("cpu", torch.float32)
    scfg = SynthConfig(width=640, height=360, extra_sources=False)
    sources = {s.name: s for s in load_sources(scfg)}
    plan = next(p for p in plan_identities(list(sources.values()), len(sources), 0) if p.source == "obama")
    with torch.inference_mode():
        scene = Scene(prepare_identity(plan, sources[plan.source], sfm, scfg), sfm)
        return [scene.shot("pose", yaw=y) for y in (-45, 45)], sfm.triangles


@needs_model
@pytest.mark.slow  # a generated identity and the preprocessing core three times
def test_labels_of_a_turned_face_follow_it(turned_faces, tmp_path):
    from dataclasses import replace

    from bench.bench_labels import frame_errors, run_case, truth
    from pipeline.run.config import PreprocessConfig
    from pipeline.run.engines import get_engines

    shots, tris = turned_faces
    iou = {}
    for name, box in (("dlib68", "given"), ("dlib68", "hog"), ("mediapipe68", None)):
        cfg = PreprocessConfig.flat(landmarks=name, size=128, qc_drop=())
        eng = get_engines(cfg)
        if box is not None:  # dlib's predictor on the detector's box, or on the box dlib's HOG re-finds
            eng = replace(eng, landmarker=create_landmarker("dlib68", box=box))
        with torch.inference_mode():
            part, _ = run_case(shots, cfg, eng, tmp_path / f"{name}-{box}")
            assert part is not None and len(part.depth) == 2
            mask, depth = truth([shots[i] for i in np.asarray(part.meta["frame_index"])], part.affine, tris, cfg)
        iou[name if box is None else f"{name}/{box}"] = frame_errors(part.depth, mask, depth, part.affine)[0]
    # measured here (size 128): dlib68 on BlazeFace's box 0.81 / 0.83, on the HOG box 0.89 / 0.86,
    # mediapipe68 0.90 / 0.91 (the label benchmark: bench/RESULTS.md)
    assert iou["mediapipe68"].min() >= 0.85, iou
    assert iou["mediapipe68"].mean() > iou["dlib68/hog"].mean(), iou
    # the predictor slides back towards a frontal face from another detector's box (issue 13)
    assert iou["dlib68/hog"].mean() >= iou["dlib68/given"].mean() + 0.03, iou


def test_missing_model_is_a_setup_error_naming_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(mediapipe_model, "installed_dir", lambda: tmp_path / "env")
    with pytest.raises(ModelAssetMissing) as err:
        create_landmarker("mediapipe68", model_dir=str(tmp_path / "models"))
    assert isinstance(err.value, SetupError)
    assert "fetch_mediapipe_model.py" in str(err.value) and str(tmp_path / "models") in str(err.value)


def _wheel(folder, payload: bytes):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(mediapipe_model.WHEEL_MEMBER, payload)
    return path


def test_fetch_script_refuses_a_wrong_model_and_writes_nothing(tmp_path):
    _wheel(tmp_path / "wheels", b"not the model")
    dest = tmp_path / "models"
    res = subprocess.run([sys.executable, str(REPO / "scripts" / "fetch_mediapipe_model.py"), "--dest", str(dest),
                          "--wheel-dir", str(tmp_path / "wheels")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "expected " + mediapipe_model.SHA256 in res.stderr, res.stderr
    assert not dest.exists() or not any(dest.rglob("*"))


@needs_model
def test_fetch_script_installs_the_pinned_model_from_a_wheel(tmp_path):
    _wheel(tmp_path / "wheels", mediapipe_model.model_file().read_bytes())
    dest = tmp_path / "models"
    cmd = [sys.executable, str(REPO / "scripts" / "fetch_mediapipe_model.py"), "--dest", str(dest),
           "--wheel-dir", str(tmp_path / "wheels")]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    target = dest / mediapipe_model.RELATIVE
    assert storage.file_checksum(target) == mediapipe_model.SHA256
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "present" in again.stdout
    assert mediapipe_model.model_file(str(dest)) == target  # the model directory comes first


@needs_model
def test_threads_sharing_the_backend_get_their_own_faces():
    """The flow's thread runner shares a process's backends; one LiteRT interpreter holds one
    input/output state, so concurrent calls must not read each other's results."""
    from concurrent.futures import ThreadPoolExecutor

    det = create_detector("blazeface", model_dir=str(MODELS))
    mp68 = create_landmarker("mediapipe68")
    faces = [(im, _face(det, im)) for im in (_rgb("biden.jpg"), _rgb("obama.jpg"))]
    alone = [mp68.landmarks(im, box).points for im, box in faces]

    def run(k: int) -> bool:
        im, box = faces[k % 2]
        return np.array_equal(mp68.landmarks(im, box).points, alone[k % 2])

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(run, range(200)))
