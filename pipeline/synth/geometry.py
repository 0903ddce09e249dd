"""3D geometry of one identity: the SFM fit to its landmarks, the textured mesh, smooth motion and
sampling helpers."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from pipeline.reconstruct.fit import FitConfig, fit_landmarks
from pipeline.reconstruct.mesh import append_hole_centres, hole_fans
from pipeline.reconstruct.raster import rasterize
from pipeline.synth.plan import IBUG_FLIP, MARGIN, IdentityPlan, SourcePhoto, SynthConfig, clip_rng


def smooth_noise(rng: np.random.Generator, n: int, fps: float, amp: float,
            f_lo: float = 0.18, f_hi: float = 0.4) -> np.ndarray:
    """``(n,)`` smooth random signal within ``[-amp, amp]`` (three sinusoids, dominant slow one)."""
    t = np.arange(n) / fps
    f = rng.uniform(f_lo, f_hi) * np.array([1.0, 1.9, 3.1])
    ph = rng.uniform(0, 2 * np.pi, 3)
    wts = np.array([1.0, 0.35, 0.15])
    s = (wts[:, None] * np.sin(2 * np.pi * f[:, None] * t[None] + ph[:, None])).sum(0)
    return amp * s / wts.sum()


def hand_tremor(rng: np.random.Generator, n: int, fps: float, amp: float) -> np.ndarray:
    """Hand tremor: a few 1.5-4 Hz sinusoids, ``(n,)`` within ``[-amp, amp]``."""
    t = np.arange(n) / fps
    f = rng.uniform(1.5, 4.0, 3)
    ph = rng.uniform(0, 2 * np.pi, 3)
    return amp * np.sin(2 * np.pi * f[:, None] * t[None] + ph[:, None]).sum(0) / 3


def rotation_matrix(yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """``(T, 3, 3)`` rotations ``Rz(roll) @ Ry(yaw) @ Rx(pitch)`` (radians)."""
    cy, sy = torch.cos(yaw), torch.sin(yaw)
    cp, sp = torch.cos(pitch), torch.sin(pitch)
    cr, sr = torch.cos(roll), torch.sin(roll)
    o, z = torch.ones_like(yaw), torch.zeros_like(yaw)
    ry = torch.stack([cy, z, sy, z, o, z, -sy, z, cy], -1).view(-1, 3, 3)
    rx = torch.stack([o, z, z, z, cp, -sp, z, sp, cp], -1).view(-1, 3, 3)
    rz = torch.stack([cr, -sr, z, sr, cr, z, z, z, o], -1).view(-1, 3, 3)
    return rz @ ry @ rx


def gauss_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(N, C, H, W)`` (replicate border)."""
    if sigma <= 0.05:
        return img
    r = max(1, int(math.ceil(2.5 * sigma)))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, device=img.device, dtype=img.dtype) / sigma) ** 2)
    k = k / k.sum()
    c = img.shape[1]
    x = F.pad(img, (r, r, r, r), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def noise_field(gen: torch.Generator, h: int, w: int, cell: int, device) -> torch.Tensor:
    """``(1, 1, h, w)`` smooth noise (~N(0,1)): random grid every ``cell`` px, bicubic-upsampled."""
    g = torch.randn(1, 1, h // cell + 3, w // cell + 3, generator=gen)
    up = F.interpolate(g, scale_factor=cell, mode="bicubic", align_corners=False)
    return up[..., cell : cell + h, cell : cell + w].to(device)


def sample_image(img: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of ``img`` ``(C, H, W)`` at pixel coordinates ``xy`` ``(N, 2)`` -> ``(N, C)``
    (border pixels repeat outside)."""
    c, h, w = img.shape
    g = torch.stack([xy[:, 0] * (2.0 / max(w - 1, 1)) - 1, xy[:, 1] * (2.0 / max(h - 1, 1)) - 1], -1)
    out = F.grid_sample(img[None], g.view(1, 1, -1, 2).to(img.dtype), mode="bilinear",
                        padding_mode="border", align_corners=True)
    return out[0, :, 0].T




@dataclass(frozen=True)
class _Fit:
    """SFM fit in canvas pixels: ``x = s (R X)_x + tx``, ``y = -s (R X)_y + ty``, ``z = s (R X)_z``
    (:mod:`pipeline.reconstruct.fit`'s camera)."""

    shape_coeffs: torch.Tensor  # (K,)
    expr_coeffs: torch.Tensor  # (E,)
    rotation: torch.Tensor  # (3, 3) model -> camera (x right, y up, z towards the viewer)
    scale: float
    t: torch.Tensor  # (2,)


def _fit_landmarks(sfm, landmarks: torch.Tensor) -> _Fit:
    """Fit the SFM to one face's 68 canvas-pixel landmarks with :func:`pipeline.reconstruct.fit.fit_landmarks`."""
    res = fit_landmarks(sfm, landmarks[None], FitConfig())
    return _Fit(res.shape_coeffs[0], res.expr_coeffs[0], res.rotation[0], float(res.scale[0]),
                res.translation[0])




@dataclass
class PreparedIdentity:
    """Everything rendering needs for one identity (compute only; built by :func:`prepare_identity`).

    ``canvas`` / ``background`` ``(3, Hc, Wc)`` float: the scene at frame scale with a
    :data:`MARGIN` border, with and without (blurred away) the original face; ``uv`` ``(V, 2)``
    canvas-pixel texture coordinate of every vertex (hole centres included, see ``topo``);
    ``shape`` ``(V, 3)`` neutral model-space shape
    (derivative offset included), ``expr0`` ``(E,)`` fitted expression; ``fit`` the pose;
    ``face_px`` the landmark extent (eyebrows to chin) in frame pixels; ``front`` the projected
    triangle orientation of the visible side (for back-face culling, see :func:`pipeline.reconstruct.raster.rasterize`).
    """

    plan: IdentityPlan
    cfg: SynthConfig
    canvas: torch.Tensor
    background: torch.Tensor
    uv: torch.Tensor
    topo: "_Topology"
    shape: torch.Tensor
    expr0: torch.Tensor
    fit: _Fit
    face_px: float
    front: int
    _clean_live: torch.Tensor | None = field(default=None, repr=False)


def _hue_shift(img: np.ndarray, degrees: float, sat: float) -> np.ndarray:
    hsv = cv2.cvtColor(img.astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0] + degrees) % 360.0
    hsv[..., 1] = np.clip(hsv[..., 1] * sat, 0, 1)
    return np.clip(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0, 0, 255)


@dataclass(frozen=True)
class _Topology:
    """The face mesh with its inner holes (the SFM's open mouth) closed by a fan to one extra
    vertex per hole (the mean of the hole's border, set back by ``HOLE_DEPTH`` model units).

    ``triangles`` ``(T', 3)`` over ``V + len(holes)`` vertices; ``holes`` the border vertex
    lists; ``edge_alpha`` ``(V + len(holes), 1)``: 0 on the outer border, 0.35 / 0.7 one / two
    rings in, 1 elsewhere (a soft composite edge).
    """

    triangles: torch.Tensor
    holes: tuple[torch.Tensor, ...]
    edge_alpha: torch.Tensor

    def extend(self, x: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
        """Append the hole-centre vertices to ``(..., V, C)`` per-vertex values (their mean over
        each hole border, plus ``offset`` ``(C,)`` if given)."""
        out = append_hole_centres(x, self.holes)
        if offset is not None and self.holes:
            out = torch.cat([x, out[..., x.shape[-2]:, :] + offset], -2)
        return out


HOLE_DEPTH = 4.0


def _topology(triangles: torch.Tensor, num_vertices: int) -> _Topology:
    dev = triangles.device
    t = triangles.cpu().numpy()
    tri, holes, outer = hole_fans(t, num_vertices)
    nv = num_vertices + len(holes)
    a = np.ones(nv, np.float32)
    marked = np.zeros(nv, bool)
    marked[outer] = True
    for level in (0.0, 0.35, 0.7):  # the border, then two rings of neighbours inwards
        ring = marked.copy()
        if level > 0:
            ring[t[marked[t].any(1)].reshape(-1)] = True
        a[ring & ~marked] = level
        a[outer] = 0.0
        marked = ring
    return _Topology(torch.as_tensor(tri, device=dev), tuple(torch.as_tensor(h, device=dev) for h in holes),
                     torch.as_tensor(a, device=dev)[:, None])


def prepare_identity(plan: IdentityPlan, source: SourcePhoto, sfm, cfg: SynthConfig) -> PreparedIdentity:
    """Compose the identity's scene and fit the SFM to its face (no I/O).

    ``sfm`` is :class:`pipeline.reconstruct.sfm.SFMTensors` on ``cfg.device``.
    """
    rng = clip_rng(cfg.seed, plan.index, "scene")
    dev = torch.device(cfg.device)
    H, W = cfg.height, cfg.width
    hc, wc = H + 2 * MARGIN, W + 2 * MARGIN
    img = source.image
    pts = source.landmarks.astype(np.float64)
    if plan.mirrored:
        img = np.ascontiguousarray(img[:, ::-1])
        pts = pts[list(IBUG_FLIP)].copy()
        pts[:, 0] = img.shape[1] - 1 - pts[:, 0]
    # similarity photo -> canvas: landmark extent to 42-48% of the frame height, face centred
    face_px = float(rng.uniform(0.42, 0.48) * H)
    s = face_px / float(np.ptp(pts[:, 1]))
    if s < 1:  # area-downscale first (a bilinear warp would alias), then warp at scale 1
        img = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        pts = (pts + 0.5) * s - 0.5
        s = 1.0
    ang = math.radians(rng.uniform(-3, 3))
    c_src = np.array([pts[:, 0].mean(), (pts[:, 1].min() + pts[:, 1].max()) / 2])
    c_dst = np.array([wc / 2 + rng.uniform(-0.05, 0.05) * W, hc / 2 + rng.uniform(0.0, 0.06) * H])
    rmat = s * np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
    aff = np.concatenate([rmat, (c_dst - rmat @ c_src)[:, None]], 1)
    canvas_np = cv2.warpAffine(img, aff, (wc, hc), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    canvas_np = canvas_np.astype(np.float32)
    lm = (pts @ aff[:, :2].T + aff[:, 2]).astype(np.float32)
    if plan.hue_shift or plan.sat_scale != 1.0:  # derivative: recolour skin and hair
        c = lm.mean(0)
        m = np.zeros((hc, wc), np.float32)
        cv2.ellipse(m, (int(c[0]), int(c[1] - 0.25 * face_px)), (int(0.85 * face_px), int(1.15 * face_px)),
                    0, 0, 360, 1.0, -1)
        m = cv2.GaussianBlur(m, (0, 0), face_px / 10)[..., None]
        canvas_np = canvas_np * (1 - m) + _hue_shift(canvas_np, plan.hue_shift, plan.sat_scale) * m
    canvas_u8 = np.clip(canvas_np, 0, 255).astype(np.uint8)

    fit = _fit_landmarks(sfm, torch.as_tensor(lm, device=dev))
    topo = _topology(sfm.triangles, sfm.num_vertices)
    shape_fit = sfm.mean + sfm.basis_rescaled @ fit.shape_coeffs
    verts_fit = project_fit(topo.extend((shape_fit + sfm.blendshapes @ fit.expr_coeffs)[None]), fit)
    uv = verts_fit[0, :, :2]  # (V + holes, 2) canvas px: the texture coordinates
    tv = verts_fit[0, topo.triangles, :2]
    area = (tv[:, 1, 0] - tv[:, 0, 0]) * (tv[:, 2, 1] - tv[:, 0, 1]) - (tv[:, 1, 1] - tv[:, 0, 1]) * (tv[:, 2, 0] - tv[:, 0, 0])
    front = 1 if float(area.sum()) > 0 else -1  # the fitted face shows its front
    coeffs = fit.shape_coeffs.clone()
    if plan.shape_offset:
        off = torch.as_tensor(plan.shape_offset, dtype=coeffs.dtype, device=dev)
        coeffs[: off.numel()] += off
    shape = sfm.mean + sfm.basis_rescaled @ coeffs

    # background: the scene with the original face region smoothed away (what shows when the
    # re-rendered head turns is blurred skin / hair, not a second set of features)
    mask = rasterize(verts_fit, topo.triangles, hc, wc).mask()[0].cpu().numpy().astype(np.float32)
    mask = cv2.GaussianBlur(cv2.dilate(mask, np.ones((9, 9), np.uint8)), (0, 0), 3)[..., None]
    blurred = cv2.GaussianBlur(canvas_u8, (0, 0), face_px / 8).astype(np.float32)
    bg_u8 = np.clip(canvas_u8 * (1 - mask) + blurred * mask, 0, 255).astype(np.uint8)

    def to_t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).to(dev).permute(2, 0, 1).float().div_(255.0).contiguous()

    return PreparedIdentity(plan, cfg, to_t(canvas_u8), to_t(bg_u8), uv, topo, shape,
                            fit.expr_coeffs.clone(), fit, face_px, front)


def project_fit(verts: torch.Tensor, fit: _Fit) -> torch.Tensor:
    """Model-space ``(B, V, 3)`` -> canvas pixels (x right, y down, z larger = closer)."""
    cam = fit.scale * verts @ fit.rotation.T
    return torch.stack([cam[..., 0] + fit.t[0], -cam[..., 1] + fit.t[1], cam[..., 2]], -1)


def vertex_normals(verts: torch.Tensor, tris: torch.Tensor) -> torch.Tensor:
    """``(B, V, 3)`` unit vertex normals (area-weighted) in the frame of ``verts``."""
    v0, v1, v2 = verts[:, tris[:, 0]], verts[:, tris[:, 1]], verts[:, tris[:, 2]]
    fn = torch.linalg.cross(v1 - v0, v2 - v0)
    vn = torch.zeros_like(verts)
    for k in range(3):
        vn.index_add_(1, tris[:, k], fn)
    return F.normalize(vn, dim=-1)


def pixel_grid(h: int, w: int, dev) -> tuple[torch.Tensor, torch.Tensor]:
    ys, xs = torch.meshgrid(torch.arange(h, device=dev, dtype=torch.float32),
                            torch.arange(w, device=dev, dtype=torch.float32), indexing="ij")
    return xs, ys


def upsample_map(low: torch.Tensor, down: int, height: int, width: int) -> torch.Tensor:
    """``(T, C, Hl, Wl)`` maps sampled at full-res pixels ``(i * down, j * down)`` -> ``(T, C, H, W)``."""
    hl, wl = low.shape[-2:]
    up = F.interpolate(low, size=((hl - 1) * down + 1, (wl - 1) * down + 1), mode="bilinear", align_corners=True)
    return up[..., :height, :width]
