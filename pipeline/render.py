"""Batched z-buffer rasterisation of triangle meshes in torch (CPU and CUDA, same code).

Conventions (see :mod:`pipeline.types`): vertices are ``(B, V, 3)`` with ``x, y`` in output
pixels (x right, y down; pixel ``(row=i, col=j)`` has its centre at ``x = j, y = i``) and
``z`` in the same units, **larger z = closer**. A pixel is covered by a triangle when its
centre lies inside or on the border of the triangle's 2D projection; the depth buffer keeps the
largest (nearest) interpolated ``z`` over all covering triangles (no back-face culling).

Algorithm (no per-triangle or per-face Python loop):

1. every (face, triangle) pair gets the integer box of pixel centres its projection can cover,
   clipped to the image; pairs whose box is empty are dropped, boxes larger than
   ``max_window`` are cut into ``max_window``-sized tiles;
2. entries are grouped by their power-of-two rounded box size ``(kh, kw)`` with one stable sort
   on a small integer key, and each entry's barycentrics b0, b1, b2 and z are written as affine
   functions of the candidate offset ``(i, j)`` from its box origin (an ``(4, 3)`` table; the
   gradients of ill-conditioned triangles are recomputed in float64 so z stays within ~1e-5 of
   exact);
3. per size class, in chunks, all ``kh * kw`` candidates of all entries are evaluated with one
   batched matmul, the ones outside their triangle get ``-inf``, and the rest are max-reduced
   into a flat z-buffer with ``scatter_reduce(reduce="amax")``. The buffer is padded by
   ``max_window - 1`` rows / columns so candidates past the image border need no mask.

The Python loops run over the (at most 36) size classes and the chunks only.
"""

from __future__ import annotations

import logging

import torch

from .errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["rasterize_depth"]

#: power-of-two window sizes used for the candidate enumeration
_SIZES = (1, 2, 4, 8, 16, 32)
#: triangles whose float32 z error estimate exceeds this times eps (~1e-5 in z) are set up in
#: float64
_REFINE_AMP = 100.0


def rasterize_depth(
    vertices: torch.Tensor,
    triangles: torch.Tensor,
    size: int,
    *,
    max_window: int = 16,
    chunk_candidates: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rasterise ``B`` meshes sharing one triangle list into ``S x S`` depth buffers.

    Args:
        vertices: ``(B, V, 3)`` float tensor, ``x, y`` in pixels of the ``S x S`` output
            (pixel centres at integer coordinates), ``z`` larger = closer.
        triangles: ``(T, 3)`` integer vertex indices (shared by all ``B`` meshes).
        size: output side ``S`` in pixels.
        max_window: largest candidate window side (one of ``_SIZES``); bigger boxes are tiled.
        chunk_candidates: candidate pixels evaluated per tensor op (memory/speed trade-off);
            default ``2**19`` on CPU, ``2**23`` on CUDA.

    float16 / bfloat16 vertices are rasterised in float32 (z returned in their dtype).

    Returns:
        ``(z, mask)``: ``z`` ``(B, S, S)`` in the dtype of ``vertices`` - the largest ``z`` of
        the triangles covering each pixel centre, ``0`` where nothing is covered; ``mask``
        ``(B, S, S)`` bool, True where a triangle covers the pixel centre.
        Triangles with a non-finite vertex or zero projected area are skipped.
    """
    name = "rasterize_depth"
    if vertices.ndim != 3 or vertices.shape[-1] != 3:
        raise ConfigError(f"{name}: vertices must be (B, V, 3), got {tuple(vertices.shape)}")
    if triangles.ndim != 2 or triangles.shape[-1] != 3:
        raise ConfigError(f"{name}: triangles must be (T, 3), got {tuple(triangles.shape)}")
    if int(size) < 1:
        raise ConfigError(f"{name}: size must be >= 1, got {size}")
    if max_window not in _SIZES:
        raise ConfigError(f"{name}: max_window must be one of {_SIZES}, got {max_window}")
    if not vertices.dtype.is_floating_point:
        raise ConfigError(f"{name}: vertices must be floating point, got {vertices.dtype}")
    if vertices.dtype in (torch.float16, torch.bfloat16):
        z, mask = rasterize_depth(
            vertices.float(), triangles, size, max_window=max_window,
            chunk_candidates=chunk_candidates,
        )
        return z.to(vertices.dtype), mask
    size = int(size)
    dev, dtype = vertices.device, vertices.dtype
    if chunk_candidates is None:
        chunk_candidates = 2**23 if dev.type == "cuda" else 2**19
    bsz = vertices.shape[0]
    tris = triangles.to(device=dev, dtype=torch.long)
    n_tri = tris.shape[0]
    # the z-buffer has max_window - 1 extra columns / rows so that candidates beyond the image
    # border land in padding (cropped at the end) instead of needing a mask
    pad = size + max_window - 1
    zbuf = torch.full((bsz * pad * pad,), float("-inf"), dtype=dtype, device=dev)
    if bsz == 0 or n_tri == 0:
        return _finish(zbuf, bsz, size, pad)

    # ---- per-(face, triangle) setup on contiguous (B, T) planes -------------------------
    finite_v = torch.isfinite(vertices).all(-1)  # (B, V)
    all_finite = bool(finite_v.all())
    verts = vertices if all_finite else torch.where(finite_v.unsqueeze(-1), vertices, 0.0)
    planes = verts.transpose(1, 2).contiguous()  # (B, 3, V)
    g = planes.index_select(2, tris.t().reshape(-1)).view(bsz, 3, 3, n_tri)  # coord, corner
    (x0, x1, x2), (y0, y1, y2), (z0, z1, z2) = (g[:, c].unbind(1) for c in range(3))
    lim = float(4 * size + 8)  # clamp before the int conversion
    lox = torch.ceil(torch.minimum(torch.minimum(x0, x1), x2).clamp_(-lim, lim)).clamp_(min=0)
    loy = torch.ceil(torch.minimum(torch.minimum(y0, y1), y2).clamp_(-lim, lim)).clamp_(min=0)
    hix = torch.floor(torch.maximum(torch.maximum(x0, x1), x2).clamp_(-lim, lim))
    hiy = torch.floor(torch.maximum(torch.maximum(y0, y1), y2).clamp_(-lim, lim))
    hix.clamp_(max=size - 1)
    hiy.clamp_(max=size - 1)
    keep = (hix >= lox) & (hiy >= loy)  # the box holds at least one pixel centre
    if not all_finite:
        keep &= finite_v[:, tris].all(-1)
    ent = keep.view(-1).nonzero().squeeze(1)  # kept (face, triangle) pairs, flat b * T + t
    if ent.numel() == 0:
        return _finish(zbuf, bsz, size, pad)
    few = ent.numel() * 2 < bsz * n_tri  # e.g. small outputs: most triangles hit no centre
    box = torch.stack([lox, loy, hix, hiy]).view(4, bsz * n_tri).index_select(1, ent).long()
    tiled = False

    # ---- tile boxes larger than max_window ----------------------------------------------
    wh = box[2:] - box[:2] + 1  # (2, N)
    large = (wh > max_window).any(0)
    if bool(large.any()):
        li = large.nonzero().squeeze(1)
        nt = (wh[:, li] + max_window - 1) // max_window  # (2, L) tiles in x, y
        reps = nt[0] * nt[1]
        src = torch.repeat_interleave(li, reps)
        start = torch.cumsum(reps, 0) - reps
        local = torch.arange(src.numel(), device=dev) - torch.repeat_interleave(start, reps)
        ntx = torch.repeat_interleave(nt[0], reps)
        tlo = box[:2, src] + torch.stack([local % ntx, local // ntx]) * max_window  # (2, Lt)
        thi = torch.minimum(tlo + max_window - 1, box[2:, src])
        small = (~large).nonzero().squeeze(1)
        ent = torch.cat([ent[small], ent[src]])
        box = torch.cat([box[:, small], torch.cat([tlo, thi])], 1)
        wh = box[2:] - box[:2] + 1
        tiled = True

    # ---- group by power-of-two window size: one stable sort on a small key, then every
    # per-entry quantity is gathered once, already in class order ------------------------------
    sizes = [s for s in _SIZES if s <= max_window]
    ns = len(sizes)
    lut = torch.zeros(max_window + 1, dtype=torch.uint8, device=dev)
    for k, s in enumerate(sizes):  # side in (sizes[k-1], sizes[k]] -> class k
        lut[(sizes[k - 1] + 1 if k else 0) : s + 1] = k
    cls = lut[wh[1]] * ns + lut[wh[0]]  # uint8 class key < ns * ns <= 36
    cls_sorted, order = torch.sort(cls, stable=True)
    counts = torch.bincount(cls_sorted.long(), minlength=ns * ns).tolist()
    ent = ent.index_select(0, order)
    box = box.index_select(1, order)
    face = _floor_div(ent, n_tri)
    k_off = torch.arange(9, device=dev).view(9, 1) * n_tri
    if few or tiled:  # gather the corners, then set up at each entry's own box origin
        corners = g.reshape(-1).index_select(0, (k_off + (ent + face * (8 * n_tri))).view(-1))
        table, _ = _plane_table(*corners.view(9, -1), box[0].to(dtype), box[1].to(dtype))
        table = table.view(12, -1)
    else:  # most kept: set up on the contiguous planes, then gather
        table, _ = _plane_table(x0, x1, x2, y0, y1, y2, z0, z1, z2, lox, loy)
        table = table.view(12, bsz * n_tri).index_select(1, ent)
    base = (face * pad + box[1]) * pad + box[0]  # linear index of each box origin
    if dtype == torch.float32:
        # The gradients come from a 2x2 inverse that cancels for thin / large triangles: where
        # the float z error could exceed ~1e-5 (``_REFINE_AMP`` * eps), redo them in float64.
        a1, c1, a2, c2, az, cz = table[4], table[5], table[7], table[8], table[10], table[11]
        q1, q2 = (a1 * c2).abs(), (a2 * c1).abs()
        kappa = (q1 + q2) / (q1 - q2).abs().clamp(min=1e-30)  # = (|p1| + |p2|) / |det|
        span = (box[2:] - box[:2]).to(dtype) * 2 + 2  # bounds |origin - corner 0| + box size
        amp = kappa * (az.abs() * span[0] + cz.abs() * span[1])
        risky = (amp > _REFINE_AMP).nonzero().squeeze(1)
        if risky.numel():
            flat = ent[risky] + face[risky] * (8 * n_tri)  # b*9T + t
            c = g.reshape(-1).index_select(0, (k_off + flat).view(-1)).view(9, -1).double()
            fine, _ = _plane_table(*c, box[0, risky].double(), box[1, risky].double())
            table.index_copy_(1, risky, fine.view(12, -1).to(dtype))
    table = table.view(4, 3, -1)  # zero-area triangles have b0 = -1, zero gradients: no cover

    pos = 0
    for c_idx, cnt in enumerate(counts):
        if cnt == 0:
            continue
        kh, kw = sizes[c_idx // ns], sizes[c_idx % ns]
        jl, il = torch.meshgrid(
            torch.arange(kh, device=dev), torch.arange(kw, device=dev), indexing="ij"
        )
        jl, il = jl.reshape(-1), il.reshape(-1)  # (K,) candidate offsets, K = kh * kw
        grid = torch.stack([torch.ones_like(il), il, jl]).to(dtype)  # (3, K)
        offset = (jl * pad + il).view(1, -1)  # (1, K)
        per_chunk = max(1, chunk_candidates // (kh * kw))
        for c0 in range(pos, pos + cnt, per_chunk):
            c1 = min(c0 + per_chunk, pos + cnt)
            _eval_chunk(zbuf, table[:, :, c0:c1], base[c0:c1], grid, offset)
        pos += cnt
    return _finish(zbuf, bsz, size, pad)


def _floor_div(x: torch.Tensor, n: int) -> torch.Tensor:
    """``x // n`` for non-negative int64 ``x`` < 2**50 via float64 (integer division is slow on
    CPU). Exact: (x + 0.5) / n lies at least 0.5 / n away from an integer, far more than the
    float64 rounding error."""
    return torch.floor((x.double() + 0.5) * (1.0 / n)).long()


def _plane_table(
    x0: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor,
    y0: torch.Tensor, y1: torch.Tensor, y2: torch.Tensor,
    z0: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor,
    lox: torch.Tensor, loy: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Affine tables of triangles (any common shape ``...``, computed in their dtype).

    Returns ``table`` ``(4, 3, ...)``: rows b0, b1, b2 (barycentrics) and z, each as
    ``[value at the box origin (lox, loy), d/di, d/dj]``, and ``denom`` (twice the signed
    area). Triangles with ``|denom| <= 1e-12`` get b0 = -1 and zero gradients (they never
    cover a pixel).
    """
    e1x, e1y, e2x, e2y = x1 - x0, y1 - y0, x2 - x0, y2 - y0
    denom = e1x * e2y - e1y * e2x
    ok = denom.abs() > 1e-12  # (near) zero-area triangles cover nothing
    inv = torch.where(ok, 1.0 / torch.where(ok, denom, 1.0), 0.0)
    # b1, b2 are linear in p - corner0 with gradients (a, c) = (d/dx, d/dy)
    a1, c1 = e2y * inv, -e2x * inv
    a2, c2 = -e1y * inv, e1x * inv
    dz1, dz2 = z1 - z0, z2 - z0
    az, cz = a1 * dz1 + a2 * dz2, c1 * dz1 + c2 * dz2
    ox, oy = lox - x0, loy - y0  # box origin relative to corner 0
    b1o, b2o = a1 * ox + c1 * oy, a2 * ox + c2 * oy
    b0o = torch.where(ok, 1.0 - b1o - b2o, -1.0)
    table = torch.stack(
        [b0o, -(a1 + a2), -(c1 + c2), b1o, a1, c1, b2o, a2, c2, z0 + az * ox + cz * oy, az, cz]
    ).view(4, 3, *x0.shape)
    return table, denom


def _eval_chunk(
    zbuf: torch.Tensor,
    table: torch.Tensor,
    base: torch.Tensor,
    grid: torch.Tensor,
    offset: torch.Tensor,
) -> None:
    """Evaluate ``K`` candidate pixels of ``n`` boxes and max-reduce them into ``zbuf``.

    ``table`` ``(4, 3, n)``: barycentrics b0, b1, b2 and z as affine functions
    ``[value at the box origin, d/di, d/dj]`` of the candidate offset ``(i, j)``; ``base``
    ``(n,)`` linear index of each box origin in the padded buffer; ``grid`` ``(3, K)`` rows
    ``1, i, j``; ``offset`` ``(1, K)`` linear offsets of the candidates.
    Candidates beyond a box are outside its triangle, in the padding, or repeat a pixel of the
    neighbouring tile with the same z, so no box mask is needed.
    """
    vals = torch.matmul(table.transpose(1, 2), grid)  # (4, n, K)
    bmin = torch.minimum(vals[0], vals[1])
    torch.minimum(bmin, vals[2], out=bmin)
    zc = vals[3].masked_fill_(bmin < 0, float("-inf"))
    zbuf.scatter_reduce_(
        0, (base.view(-1, 1) + offset).view(-1), zc.view(-1), reduce="amax", include_self=True
    )


def _finish(
    zbuf: torch.Tensor, bsz: int, size: int, pad: int
) -> tuple[torch.Tensor, torch.Tensor]:
    zb = zbuf.view(bsz, pad, pad)[:, :size, :size]
    mask = zb > float("-inf")
    return torch.nan_to_num(zb, neginf=0.0), mask
