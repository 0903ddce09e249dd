"""Face detection and landmark backends.

Real data: BlazeFace and dlib find the face in every shared portrait and PAD sample, and dlib's
68 landmarks fall on it. Backends whose weights cannot be shipped (S3FD, FAN, insightface) are
checked through their real loading code (weights files written here, tiny ONNX graphs built
here) and with stand-in networks injected into the adapters that "see" a marked spot, so the
adapters' geometry, channel order and decoding are checked end to end.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pipeline.face.crop import transform_points
from pipeline.face.detect import (
    DETECTORS,
    DetectorConfig,
    FaceDetector,
    InsightFaceDetector,
    SFDDetector,
    create_detector,
    detect_batch,
    pick_face,
)
from pipeline.base.errors import ConfigError, ModelAssetMissing, NoFaceDetected
from pipeline.io.frames import read_image
from pipeline.face.landmarks import (
    LANDMARKERS,
    FanLandmarker,
    InsightFace68Landmarker,
    LandmarkConfig,
    LandmarkDetector,
    create_landmarker,
    decode_heatmaps,
    fan_crop_affine,
    landmarks_batch,
)
from pipeline.base.types import FaceBox
from tests.conftest import SHARED
from tests.helpers.face_standins import (
    FakeFan,
    FakeLandmarkSession,
    FakeS3FD,
    FakeScrfdSession,
    dot_image,
    red_square_image,
)

SAMPLES = sorted((SHARED / "data" / "faces").glob("*.jpg")) + sorted((SHARED / "data" / "pad-samples").glob("*.jpg"))
PAD_SAMPLES = sorted((SHARED / "data" / "pad-samples").glob("*.jpg"))


@pytest.fixture(scope="module")
def images() -> dict[str, np.ndarray]:
    return {p.name: read_image(p) for p in SAMPLES}


@pytest.fixture(scope="module")
def blazeface():
    return create_detector("blazeface")


@pytest.fixture(scope="module")
def hog():
    return create_detector("dlib-hog", max_side=640)  # HOG at full 1080p/2204px is slow


@pytest.fixture(scope="module")
def dlib68():
    return create_landmarker("dlib68")


def test_sample_set_is_complete():
    assert len(SAMPLES) == 8


def _inside(box: FaceBox, x: float, y: float) -> bool:
    return box.x0 <= x <= box.x1 and box.y0 <= y <= box.y1


def _centre(box: FaceBox) -> tuple[float, float]:
    return (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2


# --------------------------------------------------------------------------- real detection


@pytest.mark.parametrize("name", [p.name for p in SAMPLES])
def test_blazeface_and_hog_find_the_same_face(images, blazeface, hog, name):
    img = images[name]
    h, w = img.shape[:2]
    bf = blazeface.detect(img)
    hg = hog.detect(img)
    assert bf and hg, f"{name}: blazeface found {len(bf)}, dlib-hog {len(hg)}"
    a, b = pick_face(bf), pick_face(hg)
    assert all(0.5 <= f.score <= 1.0 for f in bf)
    # a real face: a sizeable part of the picture, and both detectors agree on where it is
    assert a.size > 0.05 * min(h, w)
    assert _inside(a, *_centre(b)) and _inside(b, *_centre(a))
    assert 0.6 < a.size / b.size < 1.6


def test_blazeface_back_model(images, blazeface):
    det = create_detector("blazeface-back")
    assert det.input_size == 256
    for name in ("obama.jpg", "image_T1.jpg", "obama-1080p.jpg"):
        boxes = det.detect(images[name])
        assert boxes, name
        front = pick_face(blazeface.detect(images[name]))
        assert _inside(front, *_centre(pick_face(boxes)))


def test_blazeface_searches_the_whole_frame(images, blazeface):
    """A face near the edge of a wide frame is found where it is (letterbox, not centre crop)."""
    face = cv2.resize(images["obama.jpg"], (320, 400), interpolation=cv2.INTER_AREA)
    ref = pick_face(blazeface.detect(face))
    canvas = np.zeros((420, 1000, 3), np.uint8)
    ox, oy = 670, 10
    canvas[oy : oy + 400, ox : ox + 320] = face
    got = pick_face(blazeface.detect(canvas))
    cx, cy = _centre(ref)
    gx, gy = _centre(got)
    assert abs(gx - (cx + ox)) < 0.08 * ref.width and abs(gy - (cy + oy)) < 0.08 * ref.height
    assert 0.8 < got.size / ref.size < 1.25


def test_detect_batch_matches_single_images(images, blazeface):
    names = ["obama-240p.jpg", "image_F2.jpg", "biden.jpg"]
    batch = detect_batch(blazeface, [images[n] for n in names])
    for n, boxes in zip(names, batch):
        single = blazeface.detect(images[n])
        assert len(boxes) == len(single)
        for p, q in zip(boxes, single):
            np.testing.assert_allclose(p.as_array(), q.as_array(), atol=1e-3)


@pytest.mark.slow  # >= 2.5 s on an idle 2-core machine
def test_dlib_cnn_on_pad_samples(images):
    det = create_detector("dlib-cnn", max_side=320)  # MMOD on the CPU: keep the frames small
    ref = create_detector("blazeface")
    for p in PAD_SAMPLES:
        img = images[p.name]
        boxes = det.detect(img)
        assert boxes, p.name
        assert _inside(pick_face(ref.detect(img)), *_centre(pick_face(boxes)))


def test_min_face_size_and_threshold_filter(images):
    img = images["image_T1.jpg"]
    big = create_detector("blazeface", min_face_size=5000).detect(img)
    assert big == []
    strict = create_detector("blazeface", score_threshold=0.999).detect(img)
    assert all(b.score >= 0.999 for b in strict)


def test_no_face_in_a_blank_frame(blazeface):
    blank = np.full((480, 640, 3), 127, np.uint8)
    assert blazeface.detect(blank) == []
    with pytest.raises(NoFaceDetected, match="frame_7"):
        pick_face(blazeface.detect(blank), source="frame_7")


def test_pick_face_rules():
    small_sure = FaceBox(0, 0, 10, 10, score=0.99)
    big_unsure = FaceBox(0, 0, 50, 50, score=0.6)
    assert pick_face([small_sure, big_unsure], DetectorConfig(pick="largest")) is big_unsure
    assert pick_face([small_sure, big_unsure], DetectorConfig(pick="best")) is small_sure
    with pytest.raises(ConfigError, match="pick"):
        DetectorConfig(pick="first")


def test_create_detector_splits_config_and_options():
    det = create_detector("dlib-hog", upsample=0, min_face_size=50, max_side=320)
    assert det.upsample == 0
    assert det.cfg.min_face_size == 50 and det.cfg.max_side == 320 and det.cfg.name == "dlib-hog"
    assert det.threshold == 0.0  # dlib's own score scale
    assert isinstance(det, FaceDetector)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(KeyError) as e:
        create_detector("retinaface-xl")
    for name in ("blazeface", "blazeface-back", "dlib-hog", "dlib-cnn", "sfd", "insightface"):
        assert name in str(e.value) and name in DETECTORS
    with pytest.raises(KeyError) as e:
        create_landmarker("pfld")
    for name in ("dlib68", "fan2d", "fan3d", "insightface68", "mediapipe68"):
        assert name in str(e.value) and name in LANDMARKERS


# --------------------------------------------------------------------------- real landmarks


@pytest.mark.parametrize("name", [p.name for p in SAMPLES])
def test_dlib68_landmarks_on_the_face(images, blazeface, dlib68, name):
    img = images[name]
    box = pick_face(blazeface.detect(img))
    lm = dlib68.landmarks(img, box)
    pts = lm.points
    assert pts.shape == (68, 2) and pts.dtype == np.float32
    # inside the box enlarged by 25% about its centre
    cx, cy = _centre(box)
    assert np.all(np.abs(pts[:, 0] - cx) <= 1.25 * box.width / 2)
    assert np.all(np.abs(pts[:, 1] - cy) <= 1.25 * box.height / 2)
    # iBUG anatomy: brows above eyes above nose tip above mouth above chin; subject's right on image left
    brows = pts[17:27, 1].mean()
    eyes = pts[36:48, 1].mean()
    assert brows < eyes < pts[30, 1] < pts[48:68, 1].mean() < pts[8, 1]
    assert pts[0, 0] < pts[30, 0] < pts[16, 0]
    assert pts[36:42, 0].mean() < pts[42:48, 0].mean()


def test_dlib68_batch_equals_single(images, blazeface, dlib68):
    names = ["obama.jpg", "image_F1.jpg"]
    boxes = [pick_face(blazeface.detect(images[n])) for n in names]
    batch = landmarks_batch(dlib68, [images[n] for n in names], boxes)
    for n, b, lm in zip(names, boxes, batch):
        np.testing.assert_array_equal(lm.points, dlib68.landmarks(images[n], b).points)
    assert isinstance(dlib68, LandmarkDetector)


@pytest.mark.parametrize("name", ["obama.jpg", "biden.jpg", "image_F1.jpg", "obama2.jpg"])
def test_dlib68_predictor_box_depends_on_the_face_not_on_the_given_box(images, blazeface, dlib68, name):
    """The predictor was trained on dlib HOG boxes: another detector's box is replaced by the
    HOG box of the same face, re-found in a region round it (issue 13), so moving the given box
    by a fifth of the face (box IoU 0.67) moves the predictor's box by a HOG cell at most."""
    img = images[name]
    bf = pick_face(blazeface.detect(img))
    got = dlib68.predictor_box(img, bf)
    assert got != (bf.x0, bf.y0, bf.x1, bf.y1)
    d = 0.2 * bf.width
    for moved in (FaceBox(bf.x0 + d, bf.y0, bf.x1 + d, bf.y1), FaceBox(bf.x0, bf.y0 - d, bf.x1, bf.y1 - d)):
        assert moved.iou(bf) < 0.7
        assert FaceBox(*dlib68.predictor_box(img, moved)).iou(FaceBox(*got)) >= 0.8  # HOG boxes lie on its 8 px cell grid
    given = create_landmarker("dlib68", box="given")
    assert given.predictor_box(img, bf) == (bf.x0, bf.y0, bf.x1, bf.y1)


@pytest.mark.slow  # the group photo's faces found by dlib HOG, a few seconds
def test_dlib68_follows_real_turned_heads_from_another_detectors_box(blazeface, dlib68):
    """insightface's bundled group photo has heads turned up to 47 deg. From BlazeFace's box
    dlib's predictor put the landmarks of a frontal face on them (fitted yaw +2 deg for a head at
    -47); from the box its HOG detector re-finds, the fitted yaw is the one of dlib's landmarks
    on the HOG box of the full photo (the synthetic set's source landmarks)."""
    import importlib.util

    from pipeline.reconstruct.fit import FitConfig, fit_landmarks
    from pipeline.reconstruct.sfm import load_sfm
    from pipeline.synth.plan import SynthConfig
    from pipeline.synth.sources import load_sources

    if importlib.util.find_spec("insightface") is None:
        pytest.skip("insightface (its bundled photos) not installed")
    sfm = load_sfm(None).to_torch("cpu", torch.float32)

    def yaw(points) -> float:
        return float(fit_landmarks(sfm, torch.tensor(np.asarray(points, np.float32)[None]), FitConfig()).yaw[0])

    faces = [s for s in load_sources(SynthConfig(width=640, height=360, extra_sources=True)) if s.name.startswith("t1")]
    assert len(faces) >= 5
    given = create_landmarker("dlib68", box="given")
    err_hog, err_given = [], []
    for face in faces:
        c = face.landmarks.mean(0)
        box = min(blazeface.detect(face.image), key=lambda b: np.hypot(*(np.array(_centre(b)) - c)))
        truth = yaw(face.landmarks)
        err_hog.append(abs(yaw(dlib68.landmarks(face.image, box).points) - truth))
        err_given.append(abs(yaw(given.landmarks(face.image, box).points) - truth))
    assert max(err_hog) <= 8.0, err_hog  # measured: 0.5-5.7 deg (HOG boxes at two scales differ by a cell)
    assert max(err_given) >= 20.0, (err_given, err_hog)


def test_dlib68_keeps_the_given_box_where_hog_finds_no_face(dlib68):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (360, 640, 3), dtype=np.uint8)
    box = FaceBox(200.0, 100.0, 360.0, 260.0)
    assert dlib68.predictor_box(noise, box) == (box.x0, box.y0, box.x1, box.y1)
    with pytest.raises(ConfigError, match="box must be"):
        create_landmarker("dlib68", box="largest")


# --------------------------------------------------------------------------- S3FD


def test_sfd_adapter_with_stand_in_net():
    img = red_square_image(480, 640, 200, 120, 320, 260)
    det = SFDDetector(FakeS3FD(), DetectorConfig(name="sfd", max_side=320))  # detected at half size
    (box,) = det.detect(img)
    # pixels 200..319 have edges at 199.5 and 319.5 in pixel-centre coordinates
    np.testing.assert_allclose(box.as_array(), [199.5, 119.5, 319.5, 259.5], atol=0.6)
    assert box.score > 0.99
    assert detect_batch(det, [img, img[:, ::-1].copy()])[1][0].x0 == pytest.approx(640 - 320 - 0.5, abs=0.6)


def test_sfd_loads_user_weights(tmp_path):
    from face_alignment.detection.sfd.net_s3fd import s3fd

    torch.manual_seed(0)
    net = s3fd()
    (tmp_path / "sfd").mkdir()
    torch.save(net.state_dict(), tmp_path / "sfd" / "s3fd-619a316812.pth")
    det = create_detector("sfd", model_dir=str(tmp_path), max_side=160)
    assert isinstance(det.net, s3fd) and not det.net.training
    torch.testing.assert_close(det.net.conv1_1.weight, net.conv1_1.weight)
    boxes = det.detect(np.full((120, 160, 3), 90, np.uint8))  # random weights: any boxes, well-formed
    assert all(isinstance(b, FaceBox) and b.x1 > b.x0 and b.score >= 0.5 for b in boxes)


def test_sfd_missing_weights_names_file_and_source(tmp_path):
    with pytest.raises(ModelAssetMissing) as e:
        create_detector("sfd", model_dir=str(tmp_path))
    msg = str(e.value)
    assert "s3fd-619a316812.pth" in msg and "adrianbulat.com" in msg and str(tmp_path) in msg


# --------------------------------------------------------------------------- insightface SCRFD


def test_insightface_adapter_with_stand_in_session():
    from insightface.model_zoo.scrfd import SCRFD

    session = FakeScrfdSession()
    model = SCRFD(model_file=None, session=session)  # insightface's own pre/post-processing
    det = InsightFaceDetector(model, DetectorConfig(name="insightface"), input_size=(640, 640))
    img = red_square_image(960, 1280, 400, 240, 640, 520)  # letterboxed at half size by SCRFD
    (box,) = det.detect(img)
    np.testing.assert_allclose(box.as_array(), [400, 240, 640, 520], atol=2.5)
    assert box.score == pytest.approx(0.9)
    assert session.blobs[0].shape == (1, 3, 640, 640)


def _onnx_model(nodes, inputs, outputs, initializers):
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, "g", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def tiny_scrfd_onnx(path: Path) -> None:
    """An ONNX graph with SCRFD's interface (input ``(1, 3, H, W)``; per stride 8/16/32 scores
    ``(N, 1)``, boxes ``(N, 4)``, keypoints ``(N, 10)``) whose scores are all ~0."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, outs, inits = [], [], []
    groups = {"score": [], "bbox": [], "kps": []}
    for s in (8, 16, 32):
        nodes.append(helper.make_node("AveragePool", ["input.1"], [f"p{s}"], kernel_shape=[s, s], strides=[s, s]))
        for kind, ch in (("score", 2), ("bbox", 8), ("kps", 20)):
            w = numpy_helper.from_array(np.zeros((ch, 3, 1, 1), np.float32), f"w_{kind}{s}")
            bias = np.full(ch, -12.0 if kind == "score" else 0.0, np.float32)
            b = numpy_helper.from_array(bias, f"b_{kind}{s}")
            shape = numpy_helper.from_array(np.array([-1, ch // 2], np.int64), f"shape_{kind}{s}")
            inits += [w, b, shape]
            nodes += [
                helper.make_node("Conv", [f"p{s}", f"w_{kind}{s}", f"b_{kind}{s}"], [f"c_{kind}{s}"]),
                helper.make_node("Transpose", [f"c_{kind}{s}"], [f"t_{kind}{s}"], perm=[0, 2, 3, 1]),
            ]
            last = f"r_{kind}{s}"
            nodes.append(helper.make_node("Reshape", [f"t_{kind}{s}", f"shape_{kind}{s}"], [last]))
            if kind == "score":
                nodes.append(helper.make_node("Sigmoid", [last], [f"out_{kind}{s}"]))
            else:
                nodes.append(helper.make_node("Identity", [last], [f"out_{kind}{s}"]))
            groups[kind].append(helper.make_tensor_value_info(f"out_{kind}{s}", TensorProto.FLOAT, ["n", ch // 2]))
    outs = groups["score"] + groups["bbox"] + groups["kps"]
    inp = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "h", "w"])
    import onnx

    onnx.save(_onnx_model(nodes, [inp], outs, inits), str(path))


def tiny_1k3d68_onnx(path: Path) -> None:
    """An ONNX graph with 1k3d68's interface (``(N, 3, 192, 192)`` -> ``(N, 3309)``) that puts
    every point at the crop centre (normalised 0, 0)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.zeros((3, 3309), np.float32), "w")
    b = numpy_helper.from_array(np.zeros((3309,), np.float32), "b")
    nodes = [
        helper.make_node("GlobalAveragePool", ["data"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w", "b"], ["fc1"]),
    ]
    inp = helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3, 192, 192])
    out = helper.make_tensor_value_info("fc1", TensorProto.FLOAT, ["N", 3309])
    onnx.save(_onnx_model(nodes, [inp], [out], [w, b]), str(path))


def test_insightface_loads_model_pack(tmp_path, images):
    pack = tmp_path / "insightface" / "mypack"
    pack.mkdir(parents=True)
    tiny_scrfd_onnx(pack / "det_10g.onnx")
    tiny_1k3d68_onnx(pack / "1k3d68.onnx")
    det = create_detector("insightface", model_dir=str(tmp_path), pack="mypack", input_size=(320, 320))
    assert det.detect(images["image_T1.jpg"]) == []  # all scores ~0
    lm = create_landmarker("insightface68", model_dir=str(tmp_path), pack="mypack")
    box = FaceBox(100, 150, 300, 380)
    out = landmarks_batch(lm, [images["image_T1.jpg"], images["obama.jpg"]], [box, box])
    for r in out:  # every point at the crop centre, i.e. the box centre
        np.testing.assert_allclose(r.points, np.tile([[200.0, 265.0]], (68, 1)), atol=1e-3)


def test_insightface_missing_pack_names_file_and_source(tmp_path):
    with pytest.raises(ModelAssetMissing) as e:
        create_detector("insightface", model_dir=str(tmp_path))
    assert "insightface/buffalo_l/det_10g.onnx" in str(e.value) and "deepinsight/insightface" in str(e.value)
    with pytest.raises(ModelAssetMissing, match="1k3d68.onnx"):
        create_landmarker("insightface68", model_dir=str(tmp_path), pack="antelopev2")


# --------------------------------------------------------------------------- insightface 1k3d68


def test_insightface68_adapter_with_stand_in_session():
    session = FakeLandmarkSession()
    lm = InsightFace68Landmarker(session, LandmarkConfig(name="insightface68", batch_size=2))
    cases = [(dot_image(480, 640, 310.3, 205.6, 3.0), FaceBox(250, 150, 370, 280)),
             (dot_image(300, 400, 120.8, 140.2, 2.0), FaceBox(60, 90, 180, 200)),
             (dot_image(300, 400, 55.0, 71.5, 2.0), FaceBox(-20, 0, 130, 140))]  # box off the frame
    out = lm.landmarks_batch([c[0] for c in cases], [c[1] for c in cases])
    assert session.batch_sizes == [2, 1]
    for (img, _), r, xy in zip(cases, out, [(310.3, 205.6), (120.8, 140.2), (55.0, 71.5)]):
        assert r.points.shape == (68, 2) and r.points.dtype == np.float32
        np.testing.assert_allclose(r.points, np.tile([xy], (68, 1)), atol=0.3)


# --------------------------------------------------------------------------- FAN


@pytest.mark.parametrize("flip", [False, True])
def test_fan_adapter_with_stand_in_net(flip):
    lm = FanLandmarker(FakeFan(), LandmarkConfig(name="fan2d"), flip=flip)
    # dots off the crop's vertical midline, so a mirrored answer would be caught
    cases = [(dot_image(480, 640, 352.3, 205.6, 4.0), FaceBox(240, 150, 380, 290)),
             (dot_image(360, 360, 40.0, 300.0, 3.0), FaceBox(10, 230, 130, 350))]
    out = lm.landmarks_batch([c[0] for c in cases], [c[1] for c in cases])
    for (img, box), r, xy in zip(cases, out, [(352.3, 205.6), (40.0, 300.0)]):
        cell = 4 * 200.0 * (box.width + box.height) / 195.0 / 256  # one heatmap pixel in frame px
        assert np.abs(r.points - np.array(xy)).max() < 0.5 * cell
        assert r.scores.shape == (68,) and np.all(r.scores > 0)


def test_fan_crop_follows_face_alignment():
    box = FaceBox(100, 200, 300, 420)
    a = fan_crop_affine(box)
    side = 200.0 * (200 + 220) / 195.0
    centre = np.array([[200.0, 310.0 - 0.12 * 220]])
    np.testing.assert_allclose(transform_points(a, centre), [[127.5, 127.5]], atol=1e-3)
    np.testing.assert_allclose(a[0, 0], 256 / side, rtol=1e-6)


def test_heatmap_decoding_matches_face_alignment():
    from face_alignment import utils as fa_utils

    hm = np.random.default_rng(1).random((2, 68, 64, 64)).astype(np.float32)
    hm[0, 5] = 0
    hm[0, 5, 0, 63] = 1  # a peak on the border gets no quarter-pixel shift
    idx = np.argmax(hm.reshape(2, 68, -1), axis=-1)
    ref, _ = fa_utils._get_preds_fromhm.py_func(hm, idx.copy(), None, None)  # numba's Python source
    pts, scores = decode_heatmaps(torch.from_numpy(hm))
    np.testing.assert_allclose(pts, ref - 0.5, atol=1e-6)  # theirs: edge coordinates
    np.testing.assert_allclose(scores, hm.reshape(2, 68, -1).max(-1))
    assert tuple(pts[0, 5]) == (63.0, 0.0)


def test_fan_loads_user_state_dict(tmp_path):
    from face_alignment.models import FAN

    torch.manual_seed(0)
    net = FAN(4)
    (tmp_path / "fan").mkdir()
    torch.save(net.state_dict(), tmp_path / "fan" / "2DFAN4-11f355bf06.pth.tar")
    lm = create_landmarker("fan2d", model_dir=str(tmp_path))
    assert isinstance(lm.net, FAN) and not lm.net.training
    torch.testing.assert_close(lm.net.conv1.weight, net.conv1.weight)
    # (a forward pass of the real 4-stack FAN takes seconds on a CPU; FakeFan covers inference)


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_fan_loads_torchscript_zip(tmp_path):
    (tmp_path / "fan").mkdir()
    torch.jit.script(FakeFan()).save(str(tmp_path / "fan" / "3DFAN4-4a694010b9.zip"))
    lm = create_landmarker("fan3d", model_dir=str(tmp_path))
    assert lm.name == "fan3d"
    r = lm.landmarks(dot_image(300, 300, 150.0, 140.0, 3.0), FaceBox(100, 100, 200, 200))
    assert np.abs(r.points - np.array([150.0, 140.0])).max() < 2.0


def test_fan_missing_weights_names_file_and_source(tmp_path):
    with pytest.raises(ModelAssetMissing) as e:
        create_landmarker("fan2d", model_dir=str(tmp_path))
    assert "2DFAN4" in str(e.value) and "adrianbulat.com" in str(e.value)
    with pytest.raises(ModelAssetMissing, match="3DFAN4"):
        create_landmarker("fan3d", model_dir=str(tmp_path))


# --------------------------------------------------------------------------- CUDA


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_same_results_on_cuda(images):
    """The torch backends run unchanged on a GPU and agree with the CPU."""
    img = images["image_T1.jpg"]
    cpu = pick_face(create_detector("blazeface").detect(img))
    gpu = pick_face(create_detector("blazeface", device="cuda").detect(img))
    np.testing.assert_allclose(gpu.as_array(), cpu.as_array(), atol=1.0)
    square = red_square_image(480, 640, 200, 120, 320, 260)
    (sfd,) = SFDDetector(FakeS3FD(), DetectorConfig(name="sfd", device="cuda")).detect(square)
    np.testing.assert_allclose(sfd.as_array(), [199.5, 119.5, 319.5, 259.5], atol=0.6)
    dot, box = dot_image(480, 640, 352.3, 205.6, 4.0), FaceBox(240, 150, 380, 290)
    on_cpu = FanLandmarker(FakeFan(), LandmarkConfig(name="fan2d")).landmarks(dot, box)
    on_gpu = FanLandmarker(FakeFan(), LandmarkConfig(name="fan2d", device="cuda")).landmarks(dot, box)
    np.testing.assert_allclose(on_gpu.points, on_cpu.points, atol=1e-3)
