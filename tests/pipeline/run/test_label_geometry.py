"""Label geometry through the real preprocessing core (issue 13, item 9), on the real portrait
``obama.jpg`` placed in generated canvases:

* the crop depends only on the face: the same face pixels in two canvases of different size
  and surroundings give crops within 2 px of each other and depth maps with IoU >= 0.95;
* a face cut by the image border gets zero depth wherever its crop lies outside the image, and
  the ``border-cut`` QC flag (``qc/face_outside`` over ``QCConfig.max_face_outside``); the same
  face whole in a canvas does not.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.face.crop import invert_affine
from pipeline.face.qc import BORDER_CUT, QCConfig, describe_flags, face_outside, qc_flags
from pipeline.io.items import WorkItem
from pipeline.run.config import PreprocessConfig
from pipeline.run.engines import get_engines
from pipeline.run.stages import process_item
from tests.conftest import FACES, load_rgb

S = 128


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """obama.jpg's face and shoulders at ~140 px face height (a 320 px wide patch)."""
    img = load_rgb(FACES / "obama.jpg")
    small = cv2.resize(img, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)  # 455 x 568
    return np.ascontiguousarray(small[40:440, 60:400])


@pytest.fixture(scope="module")
def run():
    cfg = PreprocessConfig.flat(size=S)
    eng = get_engines(cfg)

    def go(path):
        part, _ = process_item(WorkItem(str(path)), cfg, eng)
        return part

    return go


def canvas(face: np.ndarray, hw: tuple[int, int], at: tuple[int, int], seed: int) -> np.ndarray:
    """``face`` pasted at ``at`` (x, y) into an ``hw`` canvas of smooth random texture."""
    rng = np.random.default_rng(seed)
    out = cv2.GaussianBlur(rng.integers(0, 256, (*hw, 3), dtype=np.uint8), (0, 0), 8)
    x, y = at
    out[y : y + face.shape[0], x : x + face.shape[1]] = face
    return out


def save(tmp_path, name: str, image: np.ndarray):
    path = tmp_path / f"{name}.png"
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return path


@pytest.mark.slow  # >= 2.5 s on an idle 2-core machine
def test_crop_depends_only_on_the_face(face, run, tmp_path):
    placements = {"narrow": ((420, 420), (40, 10)), "wide": ((720, 1280), (700, 250))}
    corners, depth = {}, {}
    for name, (hw, at) in placements.items():
        part = run(save(tmp_path, name, canvas(face, hw, at, seed=len(name))))
        assert part.frames == 1, name
        inv = invert_affine(part.affine[0]).astype(np.float64)
        c = np.array([[0, 0, 1], [S - 1, 0, 1], [0, S - 1, 1], [S - 1, S - 1, 1]], np.float64)
        corners[name] = c @ inv.T - np.asarray(at)  # the crop's corners in face-patch pixels
        depth[name] = part.depth[0]
    shift = np.abs(corners["narrow"] - corners["wide"]).max()
    assert shift <= 2.0, f"the crop moved by {shift:.1f} px with the canvas around the face"
    a, b = depth["narrow"] > 0, depth["wide"] > 0
    iou = (a & b).sum() / (a | b).sum()
    assert iou >= 0.95, f"depth IoU between the two canvases {iou:.3f}"


def test_no_depth_outside_the_source_image(face, run, tmp_path):
    cut = np.ascontiguousarray(face[:, 135:])  # the face's right part (image left) cut away
    part = run(save(tmp_path, "cut", cut))
    assert part.frames == 1
    inv = invert_affine(part.affine[0]).astype(np.float64)
    v, u = np.mgrid[0:S, 0:S]
    x = inv[0, 0] * u + inv[0, 1] * v + inv[0, 2]
    y = inv[1, 0] * u + inv[1, 1] * v + inv[1, 2]
    h, w = cut.shape[:2]
    outside = (x < -0.5) | (x > w - 0.5) | (y < -0.5) | (y > h - 0.5)
    assert outside.sum() > 0.05 * S * S, "the case must put part of the crop outside the image"
    painted = (part.depth[0] > 0) & outside
    assert painted.sum() == 0, f"{painted.sum()} crop pixels outside the image carry depth"
    assert (part.depth[0] > 0).sum() > 0.1 * S * S  # the face inside still has its depth


def test_a_face_cut_by_the_border_is_flagged_and_a_whole_one_is_not(face, run, tmp_path):
    qc = QCConfig()
    whole = run(save(tmp_path, "whole", canvas(face, (420, 420), (40, 10), seed=1)))
    cut = run(save(tmp_path, "cut", np.ascontiguousarray(face[:, 135:])))  # a third of the face cut away
    assert whole.qc["face_outside"][0] == 0.0
    assert not whole.qc["qc_flags"][0] & BORDER_CUT
    assert cut.qc["face_outside"][0] > qc.max_face_outside, cut.qc["face_outside"][0]
    assert cut.qc["qc_flags"][0] & BORDER_CUT, describe_flags(int(cut.qc["qc_flags"][0]))


def test_face_outside_is_the_larger_cut_fraction_of_the_two_boxes():
    hw = np.array([[100, 200]] * 3, np.int32)  # H 100, W 200: the image is [-0.5, 199.5] x [-0.5, 99.5]
    lm = np.zeros((3, 68, 2), np.float32)
    lm[:, :34] = [50.0, 20.0]
    lm[:, 34:] = [90.0, 60.0]  # landmarks' box (50, 20)-(90, 60): inside
    lm[1, 34:] = [209.5, 60.0]  # frame 1: box (50, 20)-(209.5, 60), 10 of its 159.5 px wide beyond x = 199.5
    bbox = np.array([[40, 10, 100, 70], [40, 10, 100, 70], [-30.5, 10, 29.5, 70]], np.float32)  # frame 2: half out
    out = face_outside(lm, bbox, hw)
    np.testing.assert_allclose(out, [0.0, 10 / 159.5, 0.5], rtol=1e-5)
    flags = qc_flags(QCConfig(), face_size=np.full(3, 100.0), residual=np.zeros(3), yaw=np.zeros(3),
                     pitch=np.zeros(3), blur=np.full(3, 100.0), det_score=np.ones(3), face_outside=out)
    assert (flags & BORDER_CUT).tolist() == [0, 0, BORDER_CUT]  # 6% out: under the 10% default
