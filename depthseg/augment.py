"""Batched training augmentation on the device, identical geometry for image and depth.

Inputs are already on the device:

* ``image``: ``(B, 3, H, W)`` float RGB in ``[0, 1]``;
* ``depth``: ``(B, L, L)`` float depth in ``[0, 1]`` (any ``L``; typically the label size).

Geometry (horizontal flip, zoom / crop, small shift and rotation) is one affine per sample,
applied with :func:`torch.nn.functional.affine_grid` / ``grid_sample`` in normalised
coordinates, so the *same* parameters move image and depth even at different resolutions.
Pixels coming from outside the crop are zero: black in the image and zero depth (background,
class 0) in the label.

Photometric changes touch the image only: colour jitter (brightness, contrast, saturation)
and random erasing. Random erasing follows the standard practice of leaving the depth label
unchanged: the erased patch is an occluder in front of the face, whose depth the network
must still infer from context. The patch is filled with one random grey level per sample.

All random numbers come from the ``torch.Generator`` passed in (a CPU generator; only ``B``
numbers per parameter are drawn, then moved to the device), so a seeded generator gives the
same augmentation on CPU and CUDA and its state can be checkpointed for exact resume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pipeline.base.errors import ConfigError


@dataclass
class AugmentConfig:
    """Augmentation parameters (a probability of 0 or a zero range disables a transform)."""

    hflip_p: float = 0.5
    #: zoom factor range (> 1 zooms in, i.e. a random crop; < 1 zooms out)
    scale: tuple[float, float] = (0.9, 1.15)
    #: maximum shift, as a fraction of the image side
    translate: float = 0.05
    #: maximum rotation in degrees (either way)
    rotate_deg: float = 5.0
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    erase_p: float = 0.25
    #: erased area, as a fraction of the image
    erase_area: tuple[float, float] = (0.02, 0.15)
    #: erased patch aspect ratio (h / w), sampled log-uniformly
    erase_aspect: tuple[float, float] = (0.3, 3.3)

    def __post_init__(self) -> None:
        self.scale = tuple(float(v) for v in self.scale)  # type: ignore[assignment]
        self.erase_area = tuple(float(v) for v in self.erase_area)  # type: ignore[assignment]
        self.erase_aspect = tuple(float(v) for v in self.erase_aspect)  # type: ignore[assignment]
        for name in ("hflip_p", "erase_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"augment.{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("scale", "erase_area", "erase_aspect"):
            lo, hi = getattr(self, name)
            if not 0.0 < lo <= hi:
                raise ConfigError(f"augment.{name} must be 0 < low <= high, got {(lo, hi)}")
        for name in ("translate", "rotate_deg", "brightness", "contrast", "saturation"):
            if getattr(self, name) < 0:
                raise ConfigError(f"augment.{name} must be >= 0, got {getattr(self, name)}")


def _uniform(n: int, lo: float, hi: float, g: torch.Generator, device: torch.device) -> torch.Tensor:
    return (lo + (hi - lo) * torch.rand(n, generator=g, device=g.device)).to(device)


def _gray(image: torch.Tensor) -> torch.Tensor:
    w = torch.tensor([0.299, 0.587, 0.114], device=image.device, dtype=image.dtype)
    return torch.einsum("bchw,c->bhw", image, w)[:, None]


def random_affine(n: int, cfg: AugmentConfig, g: torch.Generator, device: torch.device) -> torch.Tensor:
    """``(n, 2, 3)`` affine_grid matrices (output -> input normalised coordinates)."""
    flip = torch.where(_uniform(n, 0, 1, g, device) < cfg.hflip_p, -1.0, 1.0)
    zoom = torch.exp(_uniform(n, math.log(cfg.scale[0]), math.log(cfg.scale[1]), g, device))
    angle = _uniform(n, -cfg.rotate_deg, cfg.rotate_deg, g, device) * (math.pi / 180.0)
    tx = _uniform(n, -2 * cfg.translate, 2 * cfg.translate, g, device)
    ty = _uniform(n, -2 * cfg.translate, 2 * cfg.translate, g, device)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    # input = R(angle) / zoom @ diag(flip, 1) @ output + t
    row0 = torch.stack([cos * flip, -sin, tx], dim=1)
    row1 = torch.stack([sin * flip, cos, ty], dim=1)
    return torch.stack([row0, row1], dim=1)


def warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Warp ``(B, C, H, W)`` by ``theta`` (bilinear, zeros outside)."""
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def colour_jitter(image: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """Brightness, contrast and saturation factors in ``[1 - a, 1 + a]`` per sample."""
    n, dev = image.shape[0], image.device
    shape = (n, 1, 1, 1)
    b = _uniform(n, 1 - cfg.brightness, 1 + cfg.brightness, g, dev).view(shape)
    c = _uniform(n, 1 - cfg.contrast, 1 + cfg.contrast, g, dev).view(shape)
    s = _uniform(n, 1 - cfg.saturation, 1 + cfg.saturation, g, dev).view(shape)
    x = image * b
    mean = _gray(x).mean(dim=(2, 3), keepdim=True)
    x = (x - mean) * c + mean
    gray = _gray(x)
    x = (x - gray) * s + gray
    return x.clamp(0.0, 1.0)


def random_erase(image: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """Fill one random rectangle per selected sample with a random grey level."""
    n, _, h, w = image.shape
    dev = image.device
    apply = _uniform(n, 0, 1, g, dev) < cfg.erase_p
    area = _uniform(n, cfg.erase_area[0], cfg.erase_area[1], g, dev)
    aspect = torch.exp(_uniform(n, math.log(cfg.erase_aspect[0]), math.log(cfg.erase_aspect[1]), g, dev))
    eh = (torch.sqrt(area * aspect) * h).clamp(1, h)
    ew = (torch.sqrt(area / aspect) * w).clamp(1, w)
    y0 = _uniform(n, 0, 1, g, dev) * (h - eh)
    x0 = _uniform(n, 0, 1, g, dev) * (w - ew)
    fill = _uniform(n, 0, 1, g, dev).view(n, 1, 1, 1).to(image.dtype)
    ys = torch.arange(h, device=dev, dtype=torch.float32).view(1, h, 1)
    xs = torch.arange(w, device=dev, dtype=torch.float32).view(1, 1, w)
    inside = ((ys >= y0.view(n, 1, 1)) & (ys < (y0 + eh).view(n, 1, 1))
              & (xs >= x0.view(n, 1, 1)) & (xs < (x0 + ew).view(n, 1, 1))
              & apply.view(n, 1, 1))
    return torch.where(inside[:, None], fill, image)


def augment_batch(
    image: torch.Tensor, depth: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment a batch: same geometry for image and depth, colour/erasing on the image only.

    Args:
        image: ``(B, 3, H, W)`` float in [0, 1] (on any device).
        depth: ``(B, L, L)`` float depth in [0, 1] on the same device.
        cfg: the parameters.
        generator: a seeded CPU ``torch.Generator`` (its state advances).

    Returns:
        ``(image, depth)`` with the input shapes.
    """
    if image.ndim != 4 or depth.ndim != 3 or image.shape[0] != depth.shape[0]:
        raise ConfigError(
            f"augment_batch expects image (B,3,H,W) and depth (B,L,L), got "
            f"{tuple(image.shape)} and {tuple(depth.shape)}"
        )
    theta = random_affine(image.shape[0], cfg, generator, image.device)
    image = warp(image, theta)
    depth = warp(depth[:, None].float(), theta)[:, 0]
    image = colour_jitter(image, cfg, generator)
    image = random_erase(image, cfg, generator)
    return image, depth
