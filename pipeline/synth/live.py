"""The live clip: the identity's textured 3D fit re-rendered with head motion, expressions and
moving light."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.reconstruct.raster import interpolate, rasterize
from pipeline.synth.geometry import (
    HOLE_DEPTH,
    PreparedIdentity,
    pixel_grid,
    project_fit,
    rotation_matrix,
    sample_image,
    smooth_noise,
    upsample_map,
    vertex_normals,
)
from pipeline.synth.plan import MARGIN, clip_rng


#: head rotation pivot in model space (mm): behind the face, at the upper neck
_PIVOT = (0.0, -30.0, -95.0)
#: blendshape amplitude limits (SFM order: anger, disgust, fear, happiness, sadness, surprise)
_EXPR_MAX = (0.5, 0.4, 0.3, 0.45, 0.5, 0.2)


class _Motion(NamedTuple):
    """The clip's random motion and light, per frame ``(T, ...)`` on the rendering device:
    head rotation (radians), expression weights, head sway (canvas px), camera drift (px,
    radians, scale), light azimuth; plus the light elevation and the ambient share ``ka``."""

    yaw: torch.Tensor
    pitch: torch.Tensor
    roll: torch.Tensor
    expr: torch.Tensor
    sway: torch.Tensor
    cam_t: torch.Tensor
    cam_r: torch.Tensor
    cam_s: torch.Tensor
    light_az: torch.Tensor
    light_el: float
    ka: float


def render_live(prep: PreparedIdentity, sfm) -> torch.Tensor:
    """The identity's live clip before the camera model: ``(T, 3, H, W)`` float in [0, 1]."""
    cfg = prep.cfg
    T, H, W = cfg.num_frames, cfg.height, cfg.width
    m = _draw_motion(prep, sfm)
    cam, canvas_xyz, frame_xyz, a, cc = _place_head(prep, sfm, m)
    tris = prep.topo.triangles
    ras = rasterize(frame_xyz, tris, H, W, front=prep.front)
    st, col, shade = _shade_face(prep, sfm, m, cam, ras)
    out = _background(prep, m, canvas_xyz, a, cc)
    # composite the face at the covered pixels only
    ov = out.view(T, 3, H * W)
    f, pix = ras.face, ras.pix % (H * W)
    cur = ov[f, :, pix]
    ov[f, :, pix] = cur + st[:, 2:3] * ((col * shade[:, None]).clamp(0, 1) - cur)
    return out


def _draw_motion(prep: PreparedIdentity, sfm) -> _Motion:
    """Every random draw of the live clip, in one fixed order from the clip's own generator
    (the same seed gives the same clip)."""
    cfg = prep.cfg
    dev = prep.canvas.device
    T, fps = cfg.num_frames, cfg.fps
    rng = clip_rng(cfg.seed, prep.plan.index, "live")
    deg = math.pi / 180

    def sig(amp, lo=0.18, hi=0.4):
        return torch.as_tensor(smooth_noise(rng, T, fps, amp, lo, hi), dtype=torch.float32, device=dev)

    yaw = sig(rng.uniform(14, 20) * deg, 0.2, 0.4)
    pitch = sig(rng.uniform(6, 10) * deg)
    roll = sig(rng.uniform(2, 4) * deg)
    e = sfm.num_blendshapes
    t = np.arange(T) / fps
    expr = np.zeros((T, e))
    lim = np.resize(np.array(_EXPR_MAX), e)
    for j in rng.choice(e, size=min(2, e), replace=False):  # two expressions rise and fall
        f = rng.uniform(0.2, 0.5)
        expr[:, j] = lim[j] * rng.uniform(0.6, 1.0) * (0.5 - 0.5 * np.cos(2 * np.pi * f * t + rng.uniform(0, np.pi)))
    expr_t = (prep.expr0[None] + torch.as_tensor(expr, dtype=torch.float32, device=dev)).clamp(max=1.0)
    # sway of the head against the background and camera drift (canvas px / radians / scale)
    sway = torch.stack([sig(rng.uniform(2, 5)), sig(rng.uniform(1, 3))], -1)
    cam_t = torch.stack([sig(rng.uniform(2, 4)), sig(rng.uniform(1.5, 3))], -1)
    cam_r = sig(rng.uniform(0.3, 1.0) * deg)
    cam_s = 1.0 + sig(rng.uniform(0.01, 0.03))
    light_az = sig(rng.uniform(25, 45) * deg)
    light_el = float(rng.uniform(10, 30)) * deg
    ka = float(rng.uniform(0.5, 0.65))
    return _Motion(yaw, pitch, roll, expr_t, sway, cam_t, cam_r, cam_s, light_az, light_el, ka)


def _place_head(prep: PreparedIdentity, sfm, m: _Motion):
    """The posed, expressive head per frame: ``cam`` (camera-space vertices, model units),
    ``canvas_xyz`` (canvas px, depth), ``frame_xyz`` (frame px after the camera drift) and the
    drift's ``(T, 2, 2)`` matrix ``a`` about the canvas centre ``cc``."""
    cfg, fit, dev = prep.cfg, prep.fit, prep.canvas.device
    T, H, W = cfg.num_frames, cfg.height, cfg.width
    verts = prep.shape[None] + torch.einsum("vce,te->tvc", sfm.blendshapes, m.expr)  # (T, V, 3)
    r_d = rotation_matrix(m.yaw, m.pitch, m.roll)  # camera-space head rotation (x right, y up, z to viewer)
    pivot = fit.rotation @ torch.tensor(_PIVOT, device=dev)
    back = torch.tensor([0.0, 0.0, -HOLE_DEPTH], device=dev)
    verts = prep.topo.extend(verts, back)  # (T, V + holes, 3): the mouth closed, set back
    cam = (verts @ fit.rotation.T - pivot) @ r_d.transpose(1, 2) + pivot  # (T, V', 3) model units
    canvas_xyz = torch.stack([fit.scale * cam[..., 0] + fit.t[0] + m.sway[:, None, 0],
                              -fit.scale * cam[..., 1] + fit.t[1] + m.sway[:, None, 1],
                              fit.scale * cam[..., 2]], -1)
    # canvas -> frame: rotate/scale about the canvas centre, shift, drop the margin
    cc = torch.tensor([(W + 2 * MARGIN) / 2, (H + 2 * MARGIN) / 2], device=dev)
    cs, sn = torch.cos(m.cam_r), torch.sin(m.cam_r)
    a = torch.stack([cs, -sn, sn, cs], -1).view(T, 2, 2) * m.cam_s.view(T, 1, 1)
    xy = (canvas_xyz[..., :2] - cc) @ a.transpose(1, 2) + cc + m.cam_t[:, None] - MARGIN
    frame_xyz = torch.cat([xy, canvas_xyz[..., 2:] * m.cam_s.view(T, 1, 1)], -1)
    return cam, canvas_xyz, frame_xyz, a, cc


def _shade_face(prep: PreparedIdentity, sfm, m: _Motion, cam: torch.Tensor, ras):
    """The face's covered pixels: texture coordinate and edge alpha ``st`` (barycentric), colour
    ``col`` and the Lambertian relighting factor ``shade`` (moving light against a frontal one,
    roughly the photo's)."""
    tris = prep.topo.triangles
    st = interpolate(ras, tris, torch.cat([prep.uv, prep.topo.edge_alpha], 1))
    col = sample_image(prep.canvas, st[:, :2])  # (N, 3)
    normals = vertex_normals(cam, tris) * _normal_sign(sfm)
    n_pix = F.normalize(interpolate(ras, tris, normals), dim=-1)
    light_az, light_el = m.light_az, m.light_el
    light = torch.stack([torch.sin(light_az) * math.cos(light_el), torch.full_like(light_az, math.sin(light_el)),
                         torch.cos(light_az) * math.cos(light_el)], -1)  # (T, 3)
    lam = (n_pix * light[ras.face]).sum(-1).clamp(min=0)
    lam_ref = n_pix[:, 2].clamp(min=0)  # frontal light, roughly the photo's
    shade = (1 + (1 - m.ka) * (lam - lam_ref)).clamp(0.75, 1.15)
    return st, col, shade


def _background(prep: PreparedIdentity, m: _Motion, canvas_xyz: torch.Tensor, a: torch.Tensor,
                cc: torch.Tensor) -> torch.Tensor:
    """The background frames ``(T, 3, H, W)``: the inverse camera transform on a coarse grid
    (upsampled), the area around the head following the head's motion."""
    cfg, fit, dev = prep.cfg, prep.fit, prep.canvas.device
    T, H, W = cfg.num_frames, cfg.height, cfg.width
    down = 8
    hl, wl = (H - 1) // down + 2, (W - 1) // down + 2
    xs, ys = pixel_grid(hl, wl, dev)
    q = torch.stack([xs, ys], -1).view(1, -1, 2) * down + MARGIN - cc - m.cam_t[:, None]
    p = q @ torch.linalg.inv(a).transpose(1, 2) + cc  # (T, hl*wl, 2) canvas px
    rest = project_fit(prep.shape[None], fit)[0, :, :2].mean(0)
    follow = canvas_xyz[..., : prep.shape.shape[0], :2].mean(1) - rest  # (T, 2) head centroid displacement
    wgt = torch.exp(-((p - rest) ** 2).sum(-1, keepdim=True) / (2 * (0.9 * prep.face_px) ** 2))
    p = p - wgt * follow[:, None]
    hc, wc = prep.background.shape[1:]
    g = torch.stack([p[..., 0] * (2.0 / (wc - 1)) - 1, p[..., 1] * (2.0 / (hc - 1)) - 1], 1).view(T, 2, hl, wl)
    grid = upsample_map(g, down, H, W).permute(0, 2, 3, 1)
    return F.grid_sample(prep.background[None].expand(T, -1, -1, -1), grid, mode="bilinear",
                         padding_mode="border", align_corners=True)  # (T, 3, H, W)


def _normal_sign(sfm) -> float:
    """+1 when the triangle winding gives normals towards the viewer for a frontal face."""
    n = vertex_normals(sfm.mean[None], sfm.triangles)[0]
    return 1.0 if float(n[:, 2].sum()) >= 0 else -1.0


def clean_live(prep: PreparedIdentity, sfm) -> torch.Tensor:
    """The live clip of ``prep`` before the camera model, ``(T, 3, H, W)`` float (computed once:
    the replay attacks play it too)."""
    if prep._clean_live is None:
        prep._clean_live = render_live(prep, sfm)
    return prep._clean_live
