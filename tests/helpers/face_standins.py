"""Stand-ins for the face backends whose weights cannot be shipped (S3FD, SCRFD, 1k3d68, FAN)
and the marked images they "see": each stand-in finds a red mark in its input exactly as the
real network's pre-processing hands it over, and answers with the raw outputs that the adapter's
decoding turns into the mark's position. Used by the backend tests and the backend contract suite.
"""

from __future__ import annotations

import numpy as np
import torch


def red_square_image(h: int, w: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """Black RGB image with a pure red square on pixels [x0, x1) x [y0, y1) and a blue decoy."""
    img = np.zeros((h, w, 3), np.uint8)
    img[y0:y1, x0:x1, 0] = 255
    img[10:40, 10:40, 2] = 255  # seen only by a backend that swaps R and B
    return img


def dot_image(h: int, w: int, x: float, y: float, sigma: float) -> np.ndarray:
    """Black RGB image with a red Gaussian dot centred at ``(x, y)`` (pixel-centre coordinates)
    and a blue decoy dot elsewhere."""
    yy, xx = np.mgrid[:h, :w]
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = np.round(255 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2)))
    img[..., 2] = np.round(255 * np.exp(-((xx - (w - 1 - x)) ** 2 + (yy - y) ** 2) / (2 * sigma**2)))
    return img


class FakeS3FD(torch.nn.Module):
    """Stands in for face-alignment's ``s3fd``: six (cls, reg) output pairs for strides 4..128.

    It finds the red square in its (BGR, mean-subtracted) input and, at stride 16, puts a
    confident score in the cell holding the square's centre with the regression that decodes
    (S3FD's prior/variance rule) to the square's edges.
    """

    def forward(self, x):
        b, _, h, w = x.shape
        outs = []
        red = x[:, 2] + 123.0 > 128  # face-alignment made it BGR and subtracted (104, 117, 123)
        for i in range(6):
            s = 2 ** (i + 2)
            hh, ww = h // s, w // s
            cls = torch.zeros(b, 2, hh, ww)
            cls[:, 0] = 5.0  # background
            reg = torch.zeros(b, 4, hh, ww)
            if s == 16:
                for k in range(b):
                    ys, xs = torch.nonzero(red[k], as_tuple=True)
                    x0, x1 = xs.min().item(), xs.max().item() + 1  # edges
                    y0, y1 = ys.min().item(), ys.max().item() + 1
                    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
                    j, i_ = int(cx // s), int(cy // s)
                    px, py, ps = s / 2 + j * s, s / 2 + i_ * s, 4 * s
                    cls[k, 1, i_, j] = 10.0
                    reg[k, :, i_, j] = torch.tensor(
                        [(cx - px) / (0.1 * ps), (cy - py) / (0.1 * ps),
                         np.log((x1 - x0) / ps) / 0.2, np.log((y1 - y0) / ps) / 0.2]
                    )
            outs += [cls, reg]
        return outs


class _Meta:
    def __init__(self, name, shape):
        self.name, self.shape = name, shape


class FakeScrfdSession:
    """Stands in for the onnxruntime session of ``det_10g.onnx`` (3 strides x 2 anchors, with
    keypoints: 9 outputs). It finds the red square in the RGB input blob and answers at stride 32
    with the distances that SCRFD's ``distance2bbox`` turns into the square's edges."""

    strides = (8, 16, 32)

    def __init__(self):
        self.blobs = []

    def get_inputs(self):
        return [_Meta("input.1", [1, 3, "?", "?"])]

    def get_outputs(self):
        return [_Meta(f"o{i}", ["?", 1 if i < 3 else 4 if i < 6 else 10]) for i in range(9)]

    def run(self, names, feeds):
        blob = feeds["input.1"]
        self.blobs.append(blob)
        _, _, h, w = blob.shape
        red = blob[0, 0] > 0.5  # (255 - 127.5) / 128 ~ 1 where red, after SCRFD's swapRB
        ys, xs = np.nonzero(red)
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
        scores, boxes, kps = [], [], []
        for s in self.strides:
            n = (h // s) * (w // s) * 2
            sc = np.zeros((n, 1), np.float32)
            bb = np.zeros((n, 4), np.float32)
            if s == 32:
                cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
                j, i = int(round(cx / s)), int(round(cy / s))
                k = (i * (w // s) + j) * 2
                sc[k] = 0.9
                bb[k] = [(j * s - x0) / s, (i * s - y0) / s, (x1 - j * s) / s, (y1 - i * s) / s]
            scores.append(sc)
            boxes.append(bb)
            kps.append(np.zeros((n, 10), np.float32))
        return scores + boxes + kps


class FakeLandmarkSession:
    """Stands in for ``1k3d68.onnx``: every one of its 1103 3D points at the red dot it finds in
    each RGB crop of the batch (in insightface's ``[-1, 1]`` crop units)."""

    def __init__(self):
        self.batch_sizes = []

    def get_inputs(self):
        return [_Meta("data", ["None", 3, 192, 192])]

    def run(self, names, feeds):
        blob = feeds["data"]
        self.batch_sizes.append(blob.shape[0])
        out = np.zeros((blob.shape[0], 3309), np.float32)
        for k in range(blob.shape[0]):
            red = np.clip(blob[k, 0] * 128 + 127.5, 0, 255)
            red = np.where(red > 0.3 * red.max(), red, 0)
            v, u = np.mgrid[:192, :192]
            cu, cv = (red * u).sum() / red.sum(), (red * v).sum() / red.sum()
            pts = np.tile([cu / 96 - 1, cv / 96 - 1, 0.0], 1103)
            out[k] = pts
        return [out]


class FakeFan(torch.nn.Module):
    """Stands in for FAN: 68 identical 64x64 heatmaps, the red channel of the 256 px crop averaged
    over 4x4 cells (a list of stacks, like FAN)."""

    def forward(self, x):
        hm = torch.nn.functional.avg_pool2d(x[:, :1], 4)
        return [hm.repeat(1, 68, 1, 1) * 0.5, hm.repeat(1, 68, 1, 1)]
