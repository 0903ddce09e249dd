"""FaceBatch records of real detections, and the one cutter of device batches (Rebatcher)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from pipeline.base.types import Frame
from pipeline.face.batch import FaceBatch, Rebatcher, rebatch
from pipeline.face.crop import CropConfig, crop_face, transform_points
from pipeline.face.detect import create_detector, pick_face
from pipeline.face.landmarks import create_landmarker
from pipeline.io.frames import read_image
from tests.conftest import FACES, MODELS


@pytest.fixture(scope="module")
def faces() -> list[FaceBatch]:
    """One-face batches of the shared portraits (real detector, landmarks and crops)."""
    det = create_detector("blazeface", model_dir=str(MODELS))
    lmk = create_landmarker("dlib68", model_dir=str(MODELS))
    out = []
    for i, path in enumerate(sorted(FACES.glob("*.jpg"))):
        img = read_image(path)
        box = pick_face(det.detect(img), det.cfg)
        out.append(FaceBatch.single(Frame(img, i, i / 10, str(path)), box, lmk.landmarks(img, box),
                                    crop_face(img, box, CropConfig(size=64))))
    assert len(out) >= 3
    return out


def test_single_face_batch_holds_the_detection_in_frame_and_crop_pixels(faces):
    b = faces[0]
    assert len(b) == 1
    assert b.image.shape == (1, 64, 64, 3) and b.image.dtype == np.uint8
    assert b.landmarks.dtype == np.float32 and b.affine.dtype == np.float32
    assert b.frame_index.dtype == np.int64 and b.timestamp.dtype == np.float64
    # landmarks lie in the box (frame pixels); in crop pixels they lie in the crop
    x0, y0, x1, y1 = b.bbox[0]
    w, h = x1 - x0, y1 - y0
    lm = b.landmarks[0]
    assert (lm[:, 0] > x0 - 0.2 * w).all() and (lm[:, 0] < x1 + 0.2 * w).all()
    assert (lm[:, 1] > y0 - 0.2 * h).all() and (lm[:, 1] < y1 + 0.2 * h).all()
    crop_lm = b.crop_landmarks()
    assert crop_lm.dtype == np.float32
    np.testing.assert_array_equal(crop_lm, transform_points(b.affine, b.landmarks))
    assert (crop_lm > 0).all() and (crop_lm < 64).all()


def test_concat_take_and_pickle_keep_every_field(faces):
    both = FaceBatch.concat(faces)
    assert len(both) == len(faces)
    np.testing.assert_array_equal(both.take(slice(1, 2)).image, faces[1].image)
    assert list(both.source) == [str(f.source[0]) for f in faces]
    back = pickle.loads(pickle.dumps(both))  # what a worker process sends
    for name in ("image", "landmarks", "bbox", "affine", "det_score", "face_size", "frame_index", "timestamp"):
        np.testing.assert_array_equal(getattr(back, name), getattr(both, name))


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_rebatch_cuts_the_same_batches_whatever_the_chunks(faces, size):
    stream = FaceBatch.concat(faces * 3)  # more faces than one batch
    n = len(stream)
    whole = list(rebatch([stream], size))
    singles = list(rebatch([stream.take(slice(i, i + 1)) for i in range(n)], size))
    uneven = list(rebatch([stream.take(slice(0, 2)), stream.take(slice(2, n - 1)), stream.take(slice(n - 1, n))], size))
    expected = [min(size, n - s) for s in range(0, n, size)]
    for got in (whole, singles, uneven):
        assert [len(b) for b in got] == expected
        np.testing.assert_array_equal(np.concatenate([b.image for b in got]), stream.image)
        np.testing.assert_array_equal(np.concatenate([b.frame_index for b in got]), stream.frame_index)


def test_rebatcher_push_returns_only_whole_batches(faces):
    cutter = Rebatcher(4)
    assert cutter.push(faces[0]) == [] and len(cutter) == 1
    got = []
    for f in faces * 2:
        got += cutter.push(f)
    assert all(len(b) == 4 for b in got)
    rest = cutter.flush()
    assert len(cutter) == 0 and cutter.flush() == []
    assert sum(map(len, got + rest)) == 1 + 2 * len(faces)
