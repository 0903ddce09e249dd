"""The run report's figures, drawn with OpenCV on numpy canvases.

* :func:`crop_cell` blends the depth label into the crop only where the label is non-zero,
  leaves the background pixels as they are, scales the crop to the cell and puts the landmarks
  (cyan) where they lie in the crop.
* :func:`histogram_image` draws bars whose heights follow the counts.
* :func:`grid_image` places the cells row by row under their captions.
* The report never imports matplotlib (its import and layout cost ~3 s at the end of every flow
  run before); tested in a subprocess on a real store in ``test_qc_report.py``.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.run.html_report import CELL, crop_cell, grid_image, histogram_image
from tests.conftest import FACES, load_rgb


@pytest.fixture(scope="module")
def crop() -> np.ndarray:
    """A real 96-px face crop (obama.jpg scaled), RGB uint8."""
    img = load_rgb(FACES / "obama.jpg")
    return cv2.resize(img, (96, 96), interpolation=cv2.INTER_AREA)


def test_depth_is_blended_only_inside_the_label(crop):
    depth = np.zeros((96, 96), np.uint8)
    depth[24:72, 30:66] = np.linspace(40, 250, 36, dtype=np.uint8)[None, :]
    cell = crop_cell(crop, depth, np.zeros((0, 2)), size=96)
    assert cell.shape == (96, 96, 3) and cell.dtype == np.uint8
    outside = depth == 0
    assert np.array_equal(cell[outside], crop[outside])  # background untouched
    colour = cv2.applyColorMap(depth, cv2.COLORMAP_INFERNO)[..., ::-1].astype(np.float32)
    expected = np.round(0.55 * crop.astype(np.float32) + 0.45 * colour).astype(np.uint8)
    inside = ~outside
    assert np.abs(cell[inside].astype(int) - expected[inside].astype(int)).max() <= 1
    assert (cell[inside] != crop[inside]).any(axis=1).mean() > 0.9


def test_cell_is_scaled_and_landmarks_land_where_they_are(crop):
    uv = np.array([[10.0, 20.0], [48.0, 48.0], [90.0, 5.0], [-3.0, 50.0]])  # the last lies outside
    cell = crop_cell(crop, np.zeros((96, 96), np.uint8), uv, size=CELL)
    assert cell.shape == (CELL, CELL, 3)
    s = CELL / 96
    cyan = (cell[..., 0] < 40) & (cell[..., 1] > 215) & (cell[..., 2] > 215)
    for x, y in uv[:3]:
        cx, cy = int(round((x + 0.5) * s - 0.5)), int(round((y + 0.5) * s - 0.5))
        assert cyan[cy, cx], (x, y)
    assert cyan.sum() <= 3 * 9  # three dots of radius 1, nothing drawn for the point outside
    # the rest is the crop scaled: compare away from the dots
    ref = cv2.resize(crop, (CELL, CELL), interpolation=cv2.INTER_LINEAR)
    far = ~cv2.dilate(cyan.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert np.array_equal(cell[far], ref[far])


def test_histogram_bars_follow_the_counts():
    values = np.concatenate([np.zeros(10), np.full(40, 1.0), np.full(20, 2.0), [np.nan, np.inf]])
    img = histogram_image(values, "t", bins=3, w=200, h=160)
    bar = (img[..., 2] > 150) & (img[..., 0] < 100)  # the bar colour (68, 119, 170)
    cols = bar.sum(axis=0)
    # three bars left to right: heights in the ratio 10 : 40 : 20
    runs = np.split(cols, np.flatnonzero(np.diff((cols > 0).astype(int))) + 1)
    heights = [int(r.max()) for r in runs if r.max() > 0]
    assert len(heights) == 3
    assert heights[1] == max(heights)
    assert abs(heights[0] / heights[1] - 0.25) < 0.05 and abs(heights[2] / heights[1] - 0.5) < 0.05
    empty = histogram_image(np.array([np.nan]), "t", bins=3, w=200, h=160)
    assert not ((empty[..., 2] > 150) & (empty[..., 0] < 100)).any()


def test_grid_places_cells_under_their_captions(crop):
    red = np.zeros((CELL, CELL, 3), np.uint8)
    red[..., 0] = 255
    blue = np.zeros_like(red)
    blue[..., 2] = 255
    img = grid_image([[(red, "a #1"), (blue, "b #2\nflag")], [(blue, "c #3")]], columns=3, title="grid")
    is_red = (img[..., 0] == 255) & (img[..., 1] == 0) & (img[..., 2] == 0)
    is_blue = (img[..., 2] == 255) & (img[..., 0] == 0) & (img[..., 1] == 0)
    assert is_red.sum() == CELL * CELL and is_blue.sum() == 2 * CELL * CELL
    ry, rx = np.argwhere(is_red).min(0)
    blue_at = np.argwhere(is_blue)
    first, second = blue_at[blue_at[:, 0] < ry + CELL], blue_at[blue_at[:, 0] >= ry + CELL]
    assert len(first) == len(second) == CELL * CELL
    assert first[:, 0].min() == ry and first[:, 1].min() > rx + CELL - 1  # right of the red cell
    assert second[:, 0].min() > ry + CELL and second[:, 1].min() == rx  # next row, first column
    assert (img[:ry, rx:rx + CELL] < 128).any()  # caption text above the first cell
