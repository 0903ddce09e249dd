"""The contract every face detector and landmark backend meets, run against each registry name.

One parametrized suite (as segmentation-models-pytorch's per-model testers): every name in
``DETECTORS`` / ``LANDMARKERS`` maps to a case that builds the backend (the real model where its
files ship with the project or its packages, else the real adapter around a stand-in network
from :mod:`tests.helpers.face_standins`) and an image with a known face. Checked for each:

* the Protocol (``FaceDetector`` / ``LandmarkDetector``) and the registry name;
* output record types: ``FaceBox`` floats, best score first, ``x1 > x0``, ``y1 > y0``;
  ``Landmarks`` ``(68, 2)`` float32, finite;
* coordinates in frame pixels (pixel centres at integer coordinates): the box holds the known
  face, mirroring the frame mirrors the answer (``x -> W - 1 - x``), landmarks lie on the face;
* the batched path equals one call per image;
* error types: ``ValueError`` on a non-RGB-uint8 image or mismatched lengths, ``LandmarkError``
  on an empty box, ``ModelAssetMissing`` naming the file when the model directory lacks it.

A backend registered without a case here fails :func:`test_every_backend_has_a_case`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
from insightface.model_zoo.scrfd import SCRFD

from pipeline.base.errors import LandmarkError, ModelAssetMissing
from pipeline.base.types import FaceBox, Landmarks
from pipeline.face.detect import (
    DETECTORS,
    DetectorConfig,
    FaceDetector,
    InsightFaceDetector,
    SFDDetector,
    create_detector,
    detect_batch,
)
from pipeline.face.landmarks import (
    LANDMARKERS,
    FanLandmarker,
    InsightFace68Landmarker,
    LandmarkConfig,
    LandmarkDetector,
    create_landmarker,
    landmarks_batch,
)
from pipeline.io.frames import read_image
from tests.conftest import FACES, MODELS
from tests.helpers.face_standins import (
    FakeFan,
    FakeLandmarkSession,
    FakeS3FD,
    FakeScrfdSession,
    dot_image,
    red_square_image,
)

PORTRAIT = FACES / "obama.jpg"


@dataclass
class Case:
    """A backend and an image whose face (box ``face``, centre ``mark``) is known."""

    build: Callable[[], object]
    image: Callable[[], np.ndarray]
    region: Callable[[], tuple[float, float, float, float]]  # x0, y0, x1, y1 the answer must lie in
    tol: float  # pixels: mirror symmetry and mark position
    rel: float = 0.0  # real networks on a discrete grid: mirror tolerance, fraction of the box width
    mark: tuple[float, float] | None = None  # stand-ins: where every landmark must land
    asset: str | None = None  # file named by ModelAssetMissing for an empty model dir
    face: tuple[float, ...] = ()  # region(), resolved by the fixture


def _portrait() -> np.ndarray:
    return read_image(PORTRAIT)


@functools.cache
def _portrait_face() -> tuple[float, float, float, float]:
    """The face of the portrait per dlib's HOG detector, grown by 25 % each way: a reference
    independent of the backend under test."""
    b = create_detector("dlib-hog").detect(_portrait())[0]
    gw, gh = 0.25 * b.width, 0.25 * b.height
    return (b.x0 - gw, b.y0 - gh, b.x1 + gw, b.y1 + gh)


SQUARE = (200, 120, 320, 260)  # red square pixels [x0, x1) x [y0, y1) for the detector stand-ins


def _square() -> np.ndarray:
    return red_square_image(480, 640, *SQUARE)


def _square_face() -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = SQUARE
    return (x0 - 3.0, y0 - 3.0, x1 + 2.0, y1 + 2.0)  # edges at x0 - 0.5, x1 - 0.5, +-2.5


def _insightface_detector():
    return InsightFaceDetector(SCRFD(model_file=None, session=FakeScrfdSession()),
                               DetectorConfig(name="insightface"), input_size=(640, 640))


def _real_detector(name: str):
    # dlib's CNN at full size takes a minute per frame on two CPU cores; max_side also puts the
    # map-back-to-frame-pixels path under the contract
    max_side = 320 if name == "dlib-cnn" else None
    return lambda: create_detector(name, model_dir=str(MODELS), max_side=max_side)


def _detector_cases() -> dict[str, Callable[[], Case]]:
    assets = {"blazeface": "blazeface.pth", "blazeface-back": "blazefaceback.pth"}  # dlib: package data
    real = {n: (lambda n=n: Case(_real_detector(n), _portrait, _portrait_face, tol=2.0, rel=0.1, asset=assets.get(n)))
            for n in ("blazeface", "blazeface-back", "dlib-hog", "dlib-cnn")}
    return {
        **real,
        "sfd": lambda: Case(lambda: SFDDetector(FakeS3FD(), DetectorConfig(name="sfd")), _square,
                            _square_face, tol=1.0, asset="s3fd-619a316812.pth"),
        "insightface": lambda: Case(_insightface_detector, _square, _square_face, tol=2.5,
                                    asset="det_10g.onnx"),
    }


DOT = (352.3, 205.6)


def _dot() -> np.ndarray:
    return dot_image(480, 640, *DOT, 4.0)


DOT_BOX = (240.0, 150.0, 380.0, 290.0)


def _landmark_cases() -> dict[str, Callable[[], Case]]:
    def fan(kind: str) -> Callable[[], Case]:
        return lambda: Case(lambda: FanLandmarker(FakeFan(), LandmarkConfig(name=kind), name=kind), _dot, lambda: DOT_BOX,
                            tol=1.5, mark=DOT, asset=kind[3:].upper() + "FAN4")

    return {
        "dlib68": lambda: Case(lambda: create_landmarker("dlib68"), _portrait, _portrait_face, tol=4.0),
        # the real model, installed by `make setup` (scripts/fetch_mediapipe_model.py)
        "mediapipe68": lambda: Case(lambda: create_landmarker("mediapipe68"), _portrait, _portrait_face, tol=4.0),
        "fan2d": fan("fan2d"),
        "fan3d": fan("fan3d"),
        "insightface68": lambda: Case(
            lambda: InsightFace68Landmarker(FakeLandmarkSession(), LandmarkConfig(name="insightface68")),
            _dot, lambda: DOT_BOX, tol=0.5, mark=DOT, asset="1k3d68.onnx"),
    }


DETECTOR_CASES = _detector_cases()
LANDMARK_CASES = _landmark_cases()
#: dlib's CNN takes seconds per frame on two CPU cores, even at max_side 320
DETECTOR_PARAMS = [pytest.param(n, marks=pytest.mark.slow) if n == "dlib-cnn" else n for n in sorted(DETECTOR_CASES)]


def test_every_backend_has_a_case():
    assert sorted(DETECTOR_CASES) == DETECTORS.names()
    assert sorted(LANDMARK_CASES) == LANDMARKERS.names()


@pytest.fixture(scope="module")
def detector_case(request) -> tuple[Case, object]:
    case = DETECTOR_CASES[request.param]()
    case.face = case.region()
    return case, case.build()


@pytest.fixture(scope="module")
def landmark_case(request) -> tuple[Case, object]:
    case = LANDMARK_CASES[request.param]()
    case.face = case.region()
    return case, case.build()


def _inside(box: FaceBox, region: tuple[float, float, float, float]) -> bool:
    x0, y0, x1, y1 = region
    return x0 <= box.x0 < box.x1 <= x1 and y0 <= box.y0 < box.y1 <= y1


# --------------------------------------------------------------------------- detectors


@pytest.mark.parametrize("detector_case", DETECTOR_PARAMS, indirect=True)
def test_detector_protocol_and_records(detector_case, request):
    case, det = detector_case
    name = request.node.callspec.params["detector_case"]
    assert isinstance(det, FaceDetector) and det.name == name
    img = case.image()
    boxes = det.detect(img)
    assert boxes and all(type(b) is FaceBox for b in boxes)
    assert all(isinstance(v, float) for b in boxes for v in (b.x0, b.y0, b.x1, b.y1, b.score))
    assert [b.score for b in boxes] == sorted((b.score for b in boxes), reverse=True)
    assert all(b.x1 > b.x0 and b.y1 > b.y0 for b in boxes)
    best = max(boxes, key=lambda b: b.area)
    assert _inside(best, case.face), (best, case.face)
    # a box that is as large as the face, not a speck inside it
    assert best.width > 0.4 * (case.face[2] - case.face[0])


@pytest.mark.parametrize("detector_case", DETECTOR_PARAMS, indirect=True)
def test_detector_pixel_centre_convention_under_mirroring(detector_case):
    case, det = detector_case
    img = case.image()
    w = img.shape[1]
    a = max(det.detect(img), key=lambda b: b.area)
    b = max(det.detect(np.ascontiguousarray(img[:, ::-1])), key=lambda b: b.area)
    # pixel j <-> W - 1 - j: box edges map to W - 1 - x (not W - x, not mirrored twice)
    tol = max(case.tol, case.rel * a.width)
    np.testing.assert_allclose([b.x0, b.x1], [w - 1 - a.x1, w - 1 - a.x0], atol=tol)
    np.testing.assert_allclose([b.y0, b.y1], [a.y0, a.y1], atol=tol)


@pytest.mark.parametrize("detector_case", DETECTOR_PARAMS, indirect=True)
def test_detector_batch_equals_single(detector_case):
    case, det = detector_case
    img = case.image()
    small = np.ascontiguousarray(img[::2, ::2])
    if small.shape[0] % 32 or small.shape[1] % 32:  # keep both sizes usable by every stand-in
        small = np.ascontiguousarray(img)
    assert detect_batch(det, [img, small]) == [det.detect(img), det.detect(small)]
    assert detect_batch(det, []) == []


@pytest.mark.parametrize("detector_case", DETECTOR_PARAMS, indirect=True)
@pytest.mark.parametrize("bad", [np.zeros((64, 64), np.uint8), np.zeros((64, 64, 3), np.float32),
                                 np.zeros((64, 64, 4), np.uint8), [[0, 0, 0]]], ids=["grey", "float", "rgba", "list"])
def test_detector_rejects_non_rgb_uint8(detector_case, bad):
    _, det = detector_case
    with pytest.raises(ValueError, match="uint8"):
        det.detect(bad)


@pytest.mark.parametrize("name", sorted(n for n in DETECTOR_CASES if DETECTOR_CASES[n]().asset))
def test_detector_missing_asset_names_the_file(name, tmp_path):
    asset = DETECTOR_CASES[name]().asset
    with pytest.raises(ModelAssetMissing, match=asset):
        create_detector(name, model_dir=str(tmp_path))


def test_unknown_detector_and_landmarker_names_list_the_valid_ones():
    with pytest.raises(KeyError, match="blazeface"):
        create_detector("no-such-detector")
    with pytest.raises(KeyError, match="dlib68"):
        create_landmarker("no-such-landmarker")


# --------------------------------------------------------------------------- landmarks


def _box(region: tuple[float, float, float, float], case: Case) -> FaceBox:
    if case.mark is not None:
        return FaceBox(*region)
    x0, y0, x1, y1 = region  # the grown reference box: shrink back to the detector's box
    gw, gh = (x1 - x0) * 0.1, (y1 - y0) * 0.1
    return FaceBox(x0 + gw, y0 + gh, x1 - gw, y1 - gh)


@pytest.mark.parametrize("landmark_case", sorted(LANDMARK_CASES), indirect=True)
def test_landmarker_protocol_and_records(landmark_case, request):
    case, lm = landmark_case
    name = request.node.callspec.params["landmark_case"]
    assert isinstance(lm, LandmarkDetector) and lm.name == name
    out = lm.landmarks(case.image(), _box(case.face, case))
    assert type(out) is Landmarks
    assert out.points.shape == (68, 2) and out.points.dtype == np.float32 and np.isfinite(out.points).all()
    assert out.scores is None or (out.scores.shape == (68,) and out.scores.dtype == np.float32)
    x0, y0, x1, y1 = case.face
    assert (out.points[:, 0] >= x0).all() and (out.points[:, 0] <= x1).all()
    assert (out.points[:, 1] >= y0).all() and (out.points[:, 1] <= y1).all()
    if case.mark is not None:  # stand-ins: every point on the mark, in frame pixels
        np.testing.assert_allclose(out.points, np.tile([case.mark], (68, 1)), atol=case.tol)


@pytest.mark.parametrize("landmark_case", sorted(LANDMARK_CASES), indirect=True)
def test_landmarker_pixel_centre_convention_under_mirroring(landmark_case):
    case, lm = landmark_case
    img = case.image()
    w = img.shape[1]
    box = _box(case.face, case)
    a = lm.landmarks(img, box).points
    mbox = FaceBox(w - 1 - box.x1, box.y0, w - 1 - box.x0, box.y1)
    b = lm.landmarks(np.ascontiguousarray(img[:, ::-1]), mbox).points
    # the mirrored face's points, as a set (mirroring swaps left/right iBUG indices)
    ma = np.stack([w - 1 - a[:, 0], a[:, 1]], 1)
    dist = np.linalg.norm(ma[:, None] - b[None], axis=-1).min(1)
    assert np.median(dist) < case.tol, np.median(dist)


@pytest.mark.parametrize("landmark_case", sorted(LANDMARK_CASES), indirect=True)
def test_landmarker_batch_equals_single(landmark_case):
    case, lm = landmark_case
    img = case.image()
    box = _box(case.face, case)
    shifted = FaceBox(box.x0 - 0.2 * box.width, box.y0, box.x1 - 0.2 * box.width, box.y1)
    imgs, boxes = [img, img, img], [box, shifted, box]
    batch = landmarks_batch(lm, imgs, boxes)
    for im, b, r in zip(imgs, boxes, batch):
        np.testing.assert_array_equal(r.points, lm.landmarks(im, b).points)


@pytest.mark.parametrize("landmark_case", sorted(LANDMARK_CASES), indirect=True)
def test_landmarker_error_types(landmark_case):
    case, lm = landmark_case
    img, box = case.image(), _box(case.face, case)
    with pytest.raises(ValueError, match="uint8"):
        lm.landmarks(img.astype(np.float32), box)
    with pytest.raises(ValueError, match="2 images but 1 boxes"):
        landmarks_batch(lm, [img, img], [box])
    with pytest.raises(LandmarkError, match="empty face box"):
        lm.landmarks(img, FaceBox(10.0, 10.0, 10.0, 30.0))


@pytest.mark.parametrize("name", sorted(n for n in LANDMARK_CASES if LANDMARK_CASES[n]().asset))
def test_landmarker_missing_asset_names_the_file(name, tmp_path):
    asset = LANDMARK_CASES[name]().asset
    with pytest.raises(ModelAssetMissing, match=asset):
        create_landmarker(name, model_dir=str(tmp_path))
