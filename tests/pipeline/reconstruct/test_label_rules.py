"""Rules of the depth labels (issue 13) on small generated cases from a real face.

The landmarks are those of the real portrait ``obama.jpg`` (BlazeFace + dlib68, in a 128 px crop);
the open-mouth case moves its lower lip and jaw points down, as a face does when it opens its mouth.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import binary_fill_holes

from pipeline.face.crop import CropConfig, crop_face, transform_points
from pipeline.face.detect import create_detector
from pipeline.face.landmarks import create_landmarker
from pipeline.reconstruct.depth import DepthConfig, depth_label, render_depth
from pipeline.reconstruct.raster import rasterize_depth
from pipeline.reconstruct.sfm import load_sfm
from tests.conftest import FACES, MODELS, load_rgb

S = 128
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="module")
def model_t():
    return load_sfm(MODELS).to_torch("cpu", torch.float32)


@pytest.fixture(scope="module")
def face_landmarks() -> np.ndarray:
    """(68, 2) landmarks of obama.jpg in the pixels of its S x S crop."""
    image = load_rgb(FACES / "obama.jpg")
    box = create_detector("blazeface").detect(image)[0]
    points = create_landmarker("dlib68").landmarks(image, box).points
    crop = crop_face(image, box, CropConfig(size=S))
    return transform_points(crop.affine, points)


def open_mouth(lm: np.ndarray, amount: float = 0.18) -> np.ndarray:
    """The landmarks with the mouth opened by ``amount`` face heights (lower lip, chin, lower jaw)."""
    out = lm.copy()
    d = amount * float(lm[8, 1] - lm[27, 1])
    lower = [55, 56, 57, 58, 59, 65, 66, 67] + list(range(4, 13))
    weight = {j: 1.0 - abs(j - 8) / 6.0 for j in range(4, 13)}  # the jaw opens less towards the ears
    for j in lower:
        out[j, 1] += d * weight.get(j, 1.0)
    return out


def test_open_mouth_leaves_no_hole_in_the_face(model_t, face_landmarks):
    lm = torch.as_tensor(np.stack([face_landmarks, open_mouth(face_landmarks)]), dtype=torch.float32)
    res = render_depth(model_t, lm, S, depth_cfg=DepthConfig(size=S))
    # the case is real: the fitted open-mouth mesh, drawn with the model's own triangles, has a gap
    _, raw = rasterize_depth(res.fit.vertices[1:], model_t.triangles, S)
    raw = raw[0].numpy()
    assert (binary_fill_holes(raw) & ~raw).sum() > 20
    for i, name in enumerate(("closed", "open")):
        mask = res.mask[i].numpy()
        holes = binary_fill_holes(mask) & ~mask
        assert holes.sum() == 0, f"{name} mouth: {holes.sum()} background pixels inside the face contour"
        assert (res.depth[i].numpy()[mask] > 0).all()


def test_far_reference_ignores_a_single_pixel(model_t, face_landmarks):
    """One stray far pixel at the silhouette must not move the rest of the map (issue 13 item 7)."""
    lm = torch.as_tensor(face_landmarks[None], dtype=torch.float32)
    res = render_depth(model_t, lm, S, depth_cfg=DepthConfig(size=S))
    z, mask = res.z.clone(), res.mask.clone()
    row = S // 2
    cols = np.flatnonzero(mask[0, row].numpy())
    j = int(cols[0]) - 1  # the background pixel left of the silhouette on the middle row
    assert j >= 0 and not mask[0, row, j]
    zf = z[0][mask[0]]
    z[0, row, j] = zf.min() - 0.5 * (zf.max() - zf.min())
    mask[0, row, j] = True
    moved = depth_label(z, mask, DepthConfig(size=S))
    diff = (moved[0] - res.depth[0])[res.mask[0]].abs().max().item()
    assert diff <= 1.0 / 255, f"one far pixel moved the face's labels by up to {diff:.3f}"
