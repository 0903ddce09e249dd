"""Pseudo-depth labels: the batched "depth engine" (3D fit + z-buffer + normalisation).

Label convention (see :mod:`pipeline.base.types`), :data:`LABEL_VERSION` 2: an ``(S, S)`` float
map in ``[0, 1]``; ``0`` is background (and every pixel of a spoof face, which callers set to
zeros), face pixels are mapped **per face** linearly in z: the nearest visible point -> ``1.0``,
the ``far_percentile``-th percentile (5th) of the visible face's z -> ``far_value``; the farther
pixels (the last 5% towards the silhouette) are clamped to ``far_value``. Face pixels therefore
lie in ``[far_value, 1]`` and never collide with the background value 0 (``far_value`` must be
in ``(0, 1)``).

Why a percentile: with the farthest visible pixel as the far end (label version 1) a half-pixel
change of the silhouette (one more pixel of ear or jaw edge) rescaled the whole map (one
in-the-wild frame: difference to an eos reference 0.007 -> 0.022). A percentile moves by one rank
when one pixel comes or goes. The near end stays the maximum: it is the nose tip, inside the
face, where the z-buffer is smooth. The mesh's inner hole (the mouth) is closed by a fan
(:mod:`pipeline.reconstruct.mesh`), so an open mouth has the depth of the lips around it, not a
background hole.

:data:`LABEL_VERSION` is stored in every store's config (``label_version``, see
:meth:`pipeline.run.config.PreprocessConfig.output_config`): a change of what a label means
bumps it, so resume and the flow cache never mix labels of two versions in one store. Version 1
(no ``label_version`` key): min-max over the visible face, mouth open, crop placed by the
detector box, depth drawn also where the crop lies outside the source image.

Reproducibility: for given landmarks and batches the engine's output does not depend on torch's
thread count (measured: 72 real-face landmark sets, S = 64 and 256, 1 vs 2 threads: identical
depth and fit residuals). What does depend on it is the CNN detector upstream: its boxes move by
float rounding (<= 1e-4 px), which moves a crop by one level on a few pixels. So stored parts are
bit-identical for a given thread count (the pipelined runner's workers detect with 1 thread; give
the sequential path 1 thread to get the same bytes); across thread counts frames, landmarks and
records agree and image / depth agree to within 1 uint8 level on at most 0.1% of pixels (measured,
4 real-face videos, S = 64, 1 vs 2 threads: depth 13 of 253,952 pixels, no face-mask change).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields

import torch

from pipeline.base.errors import ConfigError
from pipeline.base.options import check_fields, opt
from pipeline.reconstruct import LABEL_VERSION
from pipeline.reconstruct.fit import FitConfig, FitResult, fit_landmarks
from pipeline.reconstruct.mesh import append_hole_centres
from pipeline.reconstruct.raster import rasterize_depth
from pipeline.reconstruct.sfm import SFMTensors

logger = logging.getLogger(__name__)

__all__ = ["DepthConfig", "DepthResult", "LABEL_VERSION", "depth_label", "render_depth", "to_uint8"]


@dataclass(frozen=True)
class DepthConfig:
    """Parameters of the depth labels.

    Attributes:
        size: side ``S`` of the output depth map in pixels.
        far_value: label of the far reference (the nearest point is 1.0, background 0).
        far_percentile: percentile of the visible face's z that is the far reference (farther
            pixels are clamped to ``far_value``); 0 = the farthest pixel (label version 1).
        max_window: rasteriser candidate window (see :func:`pipeline.reconstruct.raster.rasterize_depth`).
        chunk_size: faces fitted + rendered per internal batch (each chunk is one batched
            fit and one batched render); 0 = automatic: 64 on CPU, where larger batches were
            not faster per face, the whole batch on CUDA.
    """

    size: int = 256
    far_value: float = opt(0.1, help="depth of the farthest visible face point (0-1)", gt=0, lt=1)
    far_percentile: float = 5.0
    max_window: int = 16
    chunk_size: int = 0

    def __post_init__(self) -> None:
        check_fields(self)
        if int(self.size) < 1:
            raise ConfigError(f"DepthConfig.size must be >= 1, got {self.size}")
        if not 0.0 <= float(self.far_percentile) < 50.0:
            raise ConfigError(f"DepthConfig.far_percentile must be in [0, 50), got {self.far_percentile}")
        if int(self.chunk_size) < 0:
            raise ConfigError(f"DepthConfig.chunk_size must be >= 0, got {self.chunk_size}")


@dataclass
class DepthResult:
    """Output of :func:`render_depth` for ``B`` faces.

    ``depth`` ``(B, S, S)`` float in ``[0, 1]`` (see :func:`depth_label`), ``mask`` ``(B, S, S)``
    bool (face pixels), ``z`` ``(B, S, S)`` raw z-buffer in output pixels (larger = closer, 0 off
    the face), ``fit`` the :class:`pipeline.reconstruct.fit.FitResult` (in crop pixels).
    """

    depth: torch.Tensor
    mask: torch.Tensor
    z: torch.Tensor
    fit: FitResult


def depth_label(
    z: torch.Tensor, mask: torch.Tensor, cfg: DepthConfig | None = None
) -> torch.Tensor:
    """Normalise z-buffers to depth labels.

    Args:
        z: ``(B, S, S)`` float, larger = closer (values off the mask are ignored).
        mask: ``(B, S, S)`` bool, True on the face.
        cfg: supplies ``far_value``.

    Returns:
        ``(B, S, S)`` float in ``[0, 1]``: 0 off the mask; on the mask
        ``far + (1 - far) * (z - zfar) / (zmax - zfar)`` clamped to ``[far, 1]``, with zmax the
        largest z of that face's mask and zfar its ``far_percentile``-th percentile (the
        ``ceil(p / 100 * n)``-th smallest of its ``n`` pixels; the smallest for ``p = 0``); a face
        whose z range is 0 gets 1.0 everywhere on its mask.
    """
    cfg = cfg or DepthConfig()
    if z.shape != mask.shape or z.ndim != 3:
        raise ConfigError(
            "depth_label: z and mask must both be (B, S, S), got "
            f"{tuple(z.shape)} / {tuple(mask.shape)}"
        )
    far = float(cfg.far_value)
    off = ~mask
    zmax = z.masked_fill(off, float("-inf")).amax((1, 2), keepdim=True)
    zmin = _far_reference(z, mask, float(cfg.far_percentile))
    rng = zmax - zmin
    ok = rng > 0  # False for an empty mask (-inf - inf) or a flat face
    scale = torch.where(ok, (1.0 - far) / torch.where(ok, rng, 1.0), 0.0)
    offset = torch.where(ok, far - zmin * scale, 1.0)  # flat faces -> 1.0
    out = torch.addcmul(offset, z, scale)
    return out.clamp_(far, 1.0).masked_fill_(off, 0.0)


def _far_reference(z: torch.Tensor, mask: torch.Tensor, percentile: float) -> torch.Tensor:
    """``(B, 1, 1)`` the ``ceil(percentile / 100 * n)``-th smallest z on each face's mask (``n``
    its pixels; at least the 1st); ``+inf`` for an empty mask."""
    flat = z.masked_fill(~mask, float("inf")).flatten(1)
    if percentile <= 0 or flat.shape[0] == 0:
        return flat.amin(1).view(-1, 1, 1)
    n = mask.flatten(1).sum(1)
    k = torch.ceil(n.to(torch.float64) * (percentile / 100.0)).long().clamp(min=1) - 1
    # the k-th smallest of each row: a top-k of the k + 1 smallest (5% of the face) is cheaper
    # than sorting all S * S pixels of every face
    kmax = int(k.max()) + 1
    low = torch.topk(flat, kmax, dim=1, largest=False, sorted=True).values
    return low.gather(1, k.clamp(max=kmax - 1)[:, None]).view(-1, 1, 1)


def to_uint8(depth: torch.Tensor) -> torch.Tensor:
    """``[0, 1]`` float depth -> uint8 ``round(255 * depth)`` (same shape and device)."""
    return (depth.clamp(0.0, 1.0) * 255.0).round_().to(torch.uint8)


def render_depth(
    model: SFMTensors,
    landmarks_crop: torch.Tensor,
    crop_size: int | None = None,
    fit_cfg: FitConfig | None = None,
    depth_cfg: DepthConfig | None = None,
) -> DepthResult:
    """The depth engine: fit ``B`` faces and render their depth labels in one batch.

    Args:
        model: SFM tensors (:meth:`pipeline.reconstruct.sfm.SFMModel.to_torch`); computation runs on their
            device.
        landmarks_crop: ``(B, 68, 2)`` iBUG landmarks in the pixels of a square crop of side
            ``crop_size`` (x right, y down, pixel centres at integers).
        crop_size: side of that crop; default ``depth_cfg.size``. The fit runs in crop pixels;
            the mesh is then scaled by ``depth_cfg.size / crop_size`` (pixel-centre aware:
            ``u = (x + 0.5) * S / crop_size - 0.5``) and rendered at ``S x S``.
        fit_cfg: :class:`pipeline.reconstruct.fit.FitConfig`.
        depth_cfg: :class:`DepthConfig`.

    Returns:
        :class:`DepthResult` with ``depth`` ``(B, S, S)`` in ``[0, 1]``.
    """
    depth_cfg = depth_cfg or DepthConfig()
    out = int(depth_cfg.size)
    crop = out if crop_size is None else int(crop_size)
    if crop < 1:
        raise ConfigError(f"render_depth: crop_size must be >= 1, got {crop_size}")
    if landmarks_crop.ndim != 3 or landmarks_crop.shape[1:] != (68, 2):
        raise ConfigError(
            f"render_depth: landmarks_crop must be (B, 68, 2), got {tuple(landmarks_crop.shape)}"
        )
    bsz = landmarks_crop.shape[0]
    chunk = int(depth_cfg.chunk_size) or (bsz if model.device.type == "cuda" else 64)
    chunk = max(chunk, 1)
    if bsz <= chunk:
        return _render_chunk(model, landmarks_crop, crop, out, fit_cfg, depth_cfg)
    # chunks are written into outputs allocated once (no list of parts + concatenation: for
    # hundreds of 256 px faces that doubled the memory touched)
    result: DepthResult | None = None
    fits = []
    for s in range(0, bsz, chunk):
        part = _render_chunk(model, landmarks_crop[s : s + chunk], crop, out, fit_cfg, depth_cfg)
        if result is None:
            result = DepthResult(
                **{k: getattr(part, k).new_empty((bsz, *getattr(part, k).shape[1:]))
                   for k in ("depth", "mask", "z")},
                fit=part.fit,
            )
        n = part.depth.shape[0]
        for k in ("depth", "mask", "z"):
            getattr(result, k)[s : s + n] = getattr(part, k)
        fits.append(part.fit)
        del part
    assert result is not None
    result.fit = FitResult(
        **{f.name: torch.cat([getattr(r, f.name) for r in fits]) for f in fields(FitResult)}
    )
    return result


def _render_chunk(
    model: SFMTensors,
    landmarks_crop: torch.Tensor,
    crop: int,
    out: int,
    fit_cfg: FitConfig | None,
    depth_cfg: DepthConfig,
) -> DepthResult:
    fit = fit_landmarks(model, landmarks_crop, fit_cfg)
    verts = fit.vertices
    if crop != out:
        k = out / crop
        verts = torch.cat([(verts[..., :2] + 0.5) * k - 0.5, verts[..., 2:] * k], -1)
    tris = model.triangles
    if model.closed_triangles is not None:  # the mouth closed (see the module docstring)
        verts, tris = append_hole_centres(verts, model.holes), model.closed_triangles
    z, mask = rasterize_depth(verts, tris, out, max_window=depth_cfg.max_window)
    depth = depth_label(z, mask, depth_cfg)
    return DepthResult(depth=depth, mask=mask, z=z, fit=fit)
