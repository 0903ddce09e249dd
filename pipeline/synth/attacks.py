"""Print and replay attacks: the identity's picture on a bent sheet or its live video on a screen,
hand-held in a synthetic room."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.reconstruct.raster import interpolate, rasterize
from pipeline.synth.geometry import (
    PreparedIdentity,
    gauss_blur,
    noise_field,
    pixel_grid,
    rotation_matrix,
    smooth_noise,
    hand_tremor,
    upsample_map,
)
from pipeline.synth.live import clean_live
from pipeline.synth.plan import MARGIN, SynthConfig, clip_rng


def synthetic_room(rng: np.random.Generator, height: int, width: int, device="cpu") -> torch.Tensor:
    """A plausible out-of-focus indoor background, ``(3, H, W)`` float in ``[0, 1]``.

    Wall with a lighting gradient, floor, doors / frames / windows / shelves as rectangles, a
    lamp glow, slight texture; drawn at a quarter of the resolution and upsampled, which blurs it
    as a background behind the subject would be.
    """
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    full_h, full_w = height, width
    height, width = (height + 3) // 4, (width + 3) // 4
    yy = torch.linspace(0, 1, height).view(-1, 1).expand(height, width)
    xx = torch.linspace(0, 1, width).view(1, -1).expand(height, width)
    palette = np.array([[0.78, 0.72, 0.62], [0.62, 0.66, 0.70], [0.70, 0.74, 0.66], [0.80, 0.78, 0.75],
                        [0.58, 0.52, 0.48], [0.72, 0.64, 0.70], [0.45, 0.50, 0.55]])
    wall = palette[rng.integers(len(palette))] * rng.uniform(0.8, 1.1, 3)
    img = torch.tensor(wall, dtype=torch.float32).view(3, 1, 1).expand(3, height, width).clone()
    ang = rng.uniform(0, 2 * np.pi)
    grad = (math.cos(ang) * (xx - 0.5) + math.sin(ang) * (yy - 0.5))
    img = img * (1.0 + rng.uniform(0.2, 0.5) * grad)
    floor_y = rng.uniform(0.7, 0.95)
    floor_col = torch.tensor(np.array([0.45, 0.33, 0.22]) * rng.uniform(0.6, 1.3, 3), dtype=torch.float32)
    planks = 0.06 * torch.sin(xx * rng.uniform(30, 80) + 3 * yy)
    fmask = (yy > floor_y).float()
    img = img * (1 - fmask) + (floor_col.view(3, 1, 1) * (1 + planks)) * fmask
    for _ in range(int(rng.integers(3, 7))):
        kind = rng.choice(["door", "frame", "window", "shelf"])
        if kind == "door":
            w_, h_ = rng.uniform(0.12, 0.22), rng.uniform(0.5, 0.8)
            x0, y0 = rng.uniform(0, 1 - w_), floor_y - h_
        elif kind == "shelf":
            w_, h_ = rng.uniform(0.2, 0.5), rng.uniform(0.02, 0.05)
            x0, y0 = rng.uniform(0, 1 - w_), rng.uniform(0.1, 0.7)
        else:
            w_, h_ = rng.uniform(0.08, 0.3), rng.uniform(0.08, 0.3)
            x0, y0 = rng.uniform(0, 1 - w_), rng.uniform(0.02, 0.6)
        m = ((xx >= x0) & (xx < x0 + w_) & (yy >= y0) & (yy < y0 + h_)).float()
        if kind == "window":
            col = torch.tensor(rng.uniform(0.85, 1.0, 3) * [0.95, 0.98, 1.0], dtype=torch.float32)
            bars = (((xx - x0 - w_ / 2).abs() < 0.006) | ((yy - y0 - h_ / 2).abs() < 0.008)).float()
            fill = col.view(3, 1, 1) * (1 - 0.6 * bars)
        elif kind == "frame":
            col = torch.tensor(rng.uniform(0.05, 0.9, 3), dtype=torch.float32)
            col2 = torch.tensor(rng.uniform(0.1, 0.9, 3), dtype=torch.float32)
            inner = ((xx >= x0 + 0.012) & (xx < x0 + w_ - 0.012) & (yy >= y0 + 0.015) & (yy < y0 + h_ - 0.015)).float()
            t = ((xx - x0) / w_).clamp(0, 1)
            fill = col.view(3, 1, 1) * (1 - inner) + inner * (col2.view(3, 1, 1) * (0.6 + 0.4 * t))
        else:
            col = torch.tensor(rng.uniform(0.15, 0.8, 3), dtype=torch.float32)
            fill = col.view(3, 1, 1).expand(3, height, width)
        img = img * (1 - m) + fill * m
    lx, ly = rng.uniform(0.1, 0.9), rng.uniform(0.05, 0.4)
    glow = torch.exp(-((xx - lx) ** 2 + (yy - ly) ** 2) / (2 * rng.uniform(0.01, 0.04)))
    img = img + rng.uniform(0.1, 0.35) * glow
    img = img * (1 + 0.03 * noise_field(gen, height, width, 2, "cpu")[0])
    img = gauss_blur(img[None], float(rng.uniform(0.3, 0.6)))
    img = F.interpolate(img, size=(full_h, full_w), mode="bilinear", align_corners=False)[0]
    return img.clamp(0, 1).to(device)




def _sheet_mesh(width: float, height: float, nx: int, ny: int, bend: float, ext: float, dev
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A vertex grid over a ``width x height`` sheet (extended by ``ext`` of its size on every
    side), bent about its vertical axis.

    Returns ``(local (V, 3) positions: X right, Y down, Z away from the camera; normals (V, 3)
    towards the camera; uv (V, 2) sheet pixel coordinates; triangles (T, 3))``. ``bend`` is the
    curvature in 1/px (0: flat; > 0: edges bent away from the camera).
    """
    u = torch.linspace(-ext * width, (1 + ext) * width - 1, nx, device=dev)
    v = torch.linspace(-ext * height, (1 + ext) * height - 1, ny, device=dev)
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    uc = uu - (width - 1) / 2
    if abs(bend) < 1e-7:
        x, zz = uc, torch.zeros_like(uc)
        n = torch.stack([torch.zeros_like(uc), torch.zeros_like(uc), -torch.ones_like(uc)], -1)
    else:
        phi = uc * bend
        x = torch.sin(phi) / bend
        zz = (1 - torch.cos(phi)) / bend
        n = torch.stack([torch.sin(phi), torch.zeros_like(phi), -torch.cos(phi)], -1)
    pos = torch.stack([x, vv - (height - 1) / 2, zz], -1).reshape(-1, 3)
    uv = torch.stack([uu, vv], -1).reshape(-1, 2)
    i = torch.arange(ny - 1, device=dev).view(-1, 1) * nx + torch.arange(nx - 1, device=dev).view(1, -1)
    i = i.reshape(-1)
    tris = torch.cat([torch.stack([i, i + 1, i + nx], 1), torch.stack([i + 1, i + nx + 1, i + nx], 1)], 0)
    return pos, n.reshape(-1, 3), uv, tris


def _handheld_pose(rng: np.random.Generator, T: int, fps: float, rot_deg: float, shift_px: float,
                   tremor: float, dev) -> tuple[torch.Tensor, torch.Tensor]:
    """``(T, 3, 3)`` rotations and ``(T, 2)`` image-plane shifts of a hand-held flat object."""
    deg = math.pi / 180

    def sig(amp):
        return smooth_noise(rng, T, fps, amp, 0.15, 0.45) + hand_tremor(rng, T, fps, amp * tremor)

    base = rng.uniform(-0.5, 0.5, 3) * rot_deg * deg
    yaw = base[0] + sig(rot_deg * deg)
    pitch = base[1] + sig(rot_deg * deg)
    roll = base[2] * 0.5 + sig(0.4 * rot_deg * deg)
    r = rotation_matrix(*(torch.as_tensor(x, dtype=torch.float32, device=dev) for x in (yaw, pitch, roll)))
    shift = np.stack([sig(shift_px), sig(shift_px * 0.7)], -1)
    return r, torch.as_tensor(shift, dtype=torch.float32, device=dev)


def _light_dirs(rng: np.random.Generator, T: int, fps: float, dev) -> torch.Tensor:
    """``(T, 3)`` unit directions towards a light in front of the object (OpenCV camera axes)."""
    az = math.radians(rng.uniform(-35, 35)) + smooth_noise(rng, T, fps, math.radians(8))
    el = math.radians(rng.uniform(-35, -10))
    v = np.stack([np.sin(az) * math.cos(el), np.full(T, math.sin(el)), -np.cos(az) * math.cos(el)], -1)
    return torch.as_tensor(v, dtype=torch.float32, device=dev)


def _rect_distance(uv: torch.Tensor, x0: float, y0: float, x1: float, y1: float) -> torch.Tensor:
    """Signed distance (object px, > 0 inside) of points ``(..., 2)`` to a rectangle's border."""
    return torch.minimum(torch.minimum(uv[..., 0] - x0, x1 - uv[..., 0]),
                         torch.minimum(uv[..., 1] - y0, y1 - uv[..., 1]))


@dataclass
class _PlanarMaps:
    """Full-resolution maps of a rendered flat/bent object (all ``(T, ., H, W)``)."""

    grid: torch.Tensor  # (T, H, W, 2) grid_sample coordinates into the object's texture
    alpha: torch.Tensor  # (T, 1, H, W) coverage with a 1 px anti-aliased edge
    diffuse: torch.Tensor  # (T, 1, H, W) Lambertian factor
    specular: torch.Tensor  # (T, 1, H, W) additive highlight
    extra: torch.Tensor  # (T, k, H, W) further interpolated channels


def _planar_maps(obj_w: int, obj_h: int, bend: float, rot: torch.Tensor, shift: torch.Tensor,
                 px_scale: float, cfg: SynthConfig, light: torch.Tensor, ka: float, spec: float,
                 shininess: float, extra_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                 down: int = 4) -> _PlanarMaps:
    """Perspective rendering of a ``obj_w x obj_h`` sheet / screen, hand-held.

    The object (extended by a quarter of its size on every side, so that maps stay defined
    beyond its border) is rasterised at ``1/down`` resolution - its texture coordinates, shading
    and ``extra_fn(uv (T, Nl, 2) object px, frame index (Nl,)) -> (Nl, k)`` channels are smooth -
    and bilinearly upsampled; the border's anti-aliasing comes from the upsampled signed
    distance. Camera: pinhole, focal ``1.6 W``, the object at the distance where one object pixel
    is ``px_scale`` frame pixels; ``rot`` ``(T, 3, 3)`` / ``shift`` ``(T, 2)`` its motion.
    """
    T, H, W = cfg.num_frames, cfg.height, cfg.width
    dev = rot.device
    pos, nrm, uv, tris = _sheet_mesh(obj_w, obj_h, 15, 11, bend, 0.25, dev)
    f = 1.6 * W
    d = f / px_scale
    cam = pos[None] @ rot.transpose(1, 2)  # (T, V, 3), OpenCV camera axes
    zc = cam[..., 2] + d
    x = (f * cam[..., 0] / zc + W / 2 + shift[:, None, 0]) / down
    y = (f * cam[..., 1] / zc + H / 2 + shift[:, None, 1]) / down
    hl, wl = (H - 1) // down + 2, (W - 1) // down + 2
    ras = rasterize(torch.stack([x, y, -zc], -1), tris, hl, wl)
    n_c = nrm[None] @ rot.transpose(1, 2)
    view = -F.normalize(torch.stack([cam[..., 0], cam[..., 1], zc], -1), dim=-1)
    half = F.normalize(light[:, None] + view, dim=-1)
    lam = ka + (1 - ka) * (n_c * light[:, None]).sum(-1).clamp(min=0)
    spc = spec * (n_c * half).sum(-1).clamp(min=0) ** shininess
    vals = interpolate(ras, tris, torch.cat([uv[None].expand(T, -1, -1), lam[..., None], spc[..., None]], -1))
    uvp = vals[:, :2]
    chans = [uvp[:, 0:1] * (2.0 / (obj_w - 1)) - 1, uvp[:, 1:2] * (2.0 / (obj_h - 1)) - 1,
             _rect_distance(uvp, -0.5, -0.5, obj_w - 0.5, obj_h - 0.5)[:, None] * px_scale, vals[:, 2:4]]
    if extra_fn is not None:
        chans.append(extra_fn(uvp, ras.face))
    vals = torch.cat(chans, 1)
    c = vals.shape[1]
    low = torch.zeros(T * hl * wl, c, device=dev)
    low[:, 2] = -1e3  # uncovered: far outside
    low[ras.pix] = vals
    up = upsample_map(low.view(T, hl, wl, c).permute(0, 3, 1, 2), down, H, W)
    return _PlanarMaps(up[:, :2].permute(0, 2, 3, 1), (up[:, 2:3] + 0.5).clamp(0, 1), up[:, 3:4], up[:, 4:5],
                       up[:, 5:])


def _room_frames(rng: np.random.Generator, cfg: SynthConfig, dev) -> torch.Tensor:
    """A static synthetic room seen by the camera: ``(1, 3, H, W)``."""
    room = synthetic_room(rng, cfg.height + 2 * MARGIN, cfg.width + 2 * MARGIN, dev)
    dx, dy = (int(v) for v in rng.integers(0, 2 * MARGIN, 2))
    return room[None, :, dy : dy + cfg.height, dx : dx + cfg.width]


def render_print(prep: PreparedIdentity, sfm, variant: int) -> torch.Tensor:
    """A printed photo of the identity, hand-held over a room: ``(T, 3, H, W)``."""
    cfg = prep.cfg
    rng = clip_rng(cfg.seed, prep.plan.index, f"print{variant}")
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    dev = prep.canvas.device
    T, H, W, fps = cfg.num_frames, cfg.height, cfg.width, cfg.fps
    content = clean_live(prep, sfm)[int(rng.integers(T))]  # (3, H, W): a still of the identity
    glossy = variant == 1
    # ---- the printed sheet texture: colour loss, halftone, paper
    border = rng.random() < 0.6
    mx = int(round(W * rng.uniform(0.04, 0.08))) if border else 0
    my = int(round(H * rng.uniform(0.04, 0.08))) if border else 0
    paper = torch.tensor([1.0, 0.985, 0.95] if glossy else [0.97, 0.96, 0.9], device=dev)
    paper = paper * float(rng.uniform(0.92, 1.0))
    gray = (content * torch.tensor([0.299, 0.587, 0.114], device=dev).view(3, 1, 1)).sum(0, keepdim=True)
    c = gray + float(rng.uniform(0.65, 0.85) if glossy else rng.uniform(0.5, 0.75)) * (content - gray)
    black = float(rng.uniform(0.04, 0.09) if glossy else rng.uniform(0.08, 0.14))
    c = black + (paper.view(3, 1, 1) - black) * c.clamp(0, 1) ** float(rng.uniform(1.05, 1.25))
    xs, ys = pixel_grid(H, W, dev)
    period = float(rng.uniform(1.6, 2.6))
    ht = []
    for ch, ang in enumerate((15.0, 75.0, 45.0)):  # C, M, Y screens
        a = math.radians(ang + rng.uniform(-3, 3))
        u = (xs * math.cos(a) + ys * math.sin(a)) / period
        v = (-xs * math.sin(a) + ys * math.cos(a)) / period
        dots = 0.5 + 0.25 * (torch.cos(2 * math.pi * u) + torch.cos(2 * math.pi * v))
        ink = torch.sigmoid(((1 - c[ch]) - dots) * 10)
        ht.append(paper[ch] * (1 - ink) + black * ink)
    c = torch.lerp(c, torch.stack(ht), float(rng.uniform(0.25, 0.5)))
    sheet = paper.view(3, 1, 1).expand(3, H + 2 * my, W + 2 * mx).clone()
    sheet[:, my : my + H, mx : mx + W] = c
    hs, ws = sheet.shape[1:]
    amp = 0.012 if glossy else 0.025
    grain = amp * noise_field(gen, hs, ws, 5, dev)[0] + 0.4 * amp * torch.randn(1, hs, ws, generator=gen).to(dev)
    sheet = (sheet * (1 + grain)).clamp(0, 1)
    # ---- geometry, motion, light
    bend = float(rng.uniform(0.0, 0.001) if glossy else rng.uniform(0.001, 0.0025)) * float(rng.choice([-1, 1]))
    fill = float(rng.uniform(1.0, 1.12)) if not border else float(rng.uniform(0.88, 0.95))
    rot, shift = _handheld_pose(rng, T, fps, float(rng.uniform(4, 8)), float(rng.uniform(3, 8)), 0.25, dev)
    light = _light_dirs(rng, T, fps, dev)
    spec, shin = (float(rng.uniform(0.25, 0.5)), float(rng.uniform(20, 60))) if glossy else (0.03, 4.0)
    maps = _planar_maps(ws, hs, bend, rot, shift, fill, cfg, light, float(rng.uniform(0.7, 0.85)), spec, shin)
    room = _room_frames(rng, cfg, dev)
    obj = F.grid_sample(sheet[None].expand(T, -1, -1, -1), maps.grid, mode="bilinear", padding_mode="border",
                        align_corners=True)
    obj = torch.addcmul(maps.specular, obj, maps.diffuse)
    return torch.lerp(room.expand(T, -1, -1, -1), obj, maps.alpha)


def render_replay(prep: PreparedIdentity, sfm, variant: int) -> torch.Tensor:
    """The identity's live video played on a tablet (1) / phone (2), hand-held: ``(T, 3, H, W)``."""
    cfg = prep.cfg
    rng = clip_rng(cfg.seed, prep.plan.index, f"replay{variant}")
    dev = prep.canvas.device
    T, H, W, fps = cfg.num_frames, cfg.height, cfg.width, cfg.fps
    phone = variant == 2
    # playback order: ping-pong from a random offset (reversed on the phone)
    k = (np.arange(T) + int(rng.integers(T))) % max(1, 2 * T - 2)
    k = np.where(k >= T, 2 * T - 2 - k, k)
    if phone:
        k = k[::-1].copy()
    video = clean_live(prep, sfm)[torch.as_tensor(k, device=dev)]
    # display: gamma, white balance, lifted blacks, rolling refresh bands
    wb = np.array([0.92, 0.98, 1.1]) if phone else np.array([1.05, 1.0, 0.92])
    wb = torch.as_tensor(wb * rng.uniform(0.95, 1.05, 3), dtype=torch.float32, device=dev).view(1, 3, 1, 1)
    lift = float(rng.uniform(0.03, 0.08))
    period = float(rng.uniform(40, 120))
    rows = torch.arange(H, device=dev, dtype=torch.float32).view(1, 1, -1, 1)
    ph = torch.arange(T, device=dev, dtype=torch.float32).view(-1, 1, 1, 1) * float(rng.uniform(-0.4, 0.4)) * period
    band = 1 - float(rng.uniform(0.03, 0.08)) * (0.5 + 0.5 * torch.cos(2 * math.pi * (rows + ph) / period))
    gain = (1 - lift) * wb * band  # (T, 3, H, 1)
    screen = torch.addcmul(torch.full((1,), lift, device=dev), video.clamp(min=1e-4).pow(float(rng.uniform(0.8, 1.25))),
                           gain)
    sw = int(round(H * 16 / 9)) if phone else W  # the phone's 16:9 screen pillar-boxes the video
    padx = (sw - W) // 2
    bez = int(round(H * (rng.uniform(0.04, 0.07) if phone else rng.uniform(0.06, 0.1))))
    bezel_col = float(rng.uniform(0.03, 0.12))
    dev_tex = torch.full((T, 3, H + 2 * bez, sw + 2 * bez), bezel_col, device=dev)
    if sw > W:
        dev_tex[:, :, bez : bez + H, bez : bez + sw] = lift * 0.6
    dev_tex[:, :, bez : bez + H, bez + padx : bez + padx + W] = screen
    hd, wd = dev_tex.shape[2:]
    pitch = float(rng.uniform(0.45, 0.8))  # screen pixel pitch in video pixels
    moire = float(rng.uniform(0.05, 0.11) if phone else rng.uniform(0.03, 0.08))
    g_amp = float(rng.uniform(0.12, 0.3))
    g_r = float(rng.uniform(0.12, 0.3)) * hd
    g_c = np.stack([smooth_noise(rng, T, fps, 0.05 * wd), smooth_noise(rng, T, fps, 0.03 * hd)], -1)
    g_c = torch.as_tensor(g_c + rng.uniform([0.15, 0.1], [0.85, 0.6]) * [wd, hd], dtype=torch.float32, device=dev)

    def extra(uvp: torch.Tensor, fr: torch.Tensor) -> torch.Tensor:
        on = _rect_distance(uvp, bez - 0.5, bez - 0.5, wd - bez - 0.5, hd - bez - 0.5)
        glare = g_amp * torch.exp(-((uvp - g_c[fr]) ** 2).sum(-1) / (2 * g_r**2))
        return torch.stack([on, glare], 1)

    fill = float(rng.uniform(0.92, 1.05))  # video pixels -> frame pixels
    rot, shift = _handheld_pose(rng, T, fps, float(rng.uniform(3, 7) if phone else rng.uniform(2, 5)),
                                float(rng.uniform(3, 8)), 0.5 if phone else 0.2, dev)
    light = _light_dirs(rng, T, fps, dev)
    # a screen emits its light: little shading; its glass gives a weak sheen
    maps = _planar_maps(wd, hd, 0.0, rot, shift, fill, cfg, light, 0.92, 0.06, 30.0, extra_fn=extra)
    room = _room_frames(rng, cfg, dev)
    obj = F.grid_sample(dev_tex, maps.grid, mode="bilinear", padding_mode="border", align_corners=True)
    # moire: the screen's pixel grid evaluated at every camera pixel's screen position (it
    # aliases into moving fringes, as a filmed screen does); only on the lit screen area
    g = maps.grid
    k = 2 * math.pi / (2 * pitch)
    cu = torch.cos((g[..., 0] + 1) * (k * (wd - 1)))
    cv_ = torch.cos((g[..., 1] + 1) * (k * (hd - 1)))
    on = (maps.extra[:, 0] * fill + 0.5).clamp_(0, 1)
    factor = cv_.mul_(0.25).add_(0.75).mul_(cu).mul_(on).mul_(moire).add_(1)[:, None] * maps.diffuse
    obj = torch.addcmul(maps.specular + maps.extra[:, 1:2], obj, factor)
    return torch.lerp(room.expand(T, -1, -1, -1), obj, maps.alpha)
