"""Batched z-buffer rasterisation of triangle meshes in torch (CPU and CUDA, same code): the one
rasterizer of the project. :func:`rasterize_depth` gives depth buffers (the labels);
:func:`rasterize` the same buffer on any ``H x W`` with the visible triangle and barycentrics per
pixel (the textured re-rendering of :mod:`pipeline.synth`), optionally back-face culled.

Conventions (see :mod:`pipeline.base.types`): vertices are ``(B, V, 3)`` with ``x, y`` in output
pixels (x right, y down; pixel ``(row=i, col=j)`` has its centre at ``x = j, y = i``) and
``z`` in the same units, **larger z = closer**. A pixel is covered by a triangle when its
centre lies inside or on the border of the triangle's 2D projection; the depth buffer keeps the
largest (nearest) interpolated ``z`` over all covering triangles.

Algorithm (no per-triangle or per-face Python loop):

1. every (face, triangle) pair gets the integer box of pixel centres its projection can cover,
   clipped to the image; pairs whose box is empty are dropped (when most are, e.g. at small
   outputs, the rest is set up on the kept pairs only), boxes larger than ``max_window`` are
   cut into ``max_window``-sized tiles;
2. each pair's barycentrics b0, b1, b2 and z are written as affine functions of the candidate
   offset ``(i, j)`` from its box origin (a ``(4, 3)`` table, set up on contiguous planes; the
   gradients of ill-conditioned triangles are recomputed in float64 so z stays within ~1e-5 of
   exact); every box gets a window class ``(kh, kw)``, the smallest sides in ``_SIZES`` that
   hold it, and one stable sort on that small key orders the pairs by class (the tables are
   then gathered as one 12-value row per pair);
3. per class, in chunks, all ``kh * kw`` candidates of all entries are evaluated with one
   matmul, the ones outside their triangle get ``-inf``, and the rest are max-reduced into a
   flat z-buffer with ``scatter_reduce(reduce="amax")``. The buffer is padded by
   ``max_window - 1`` rows / columns so candidates past the image border need no mask.

The Python loops run over the (at most 64 with the default ``max_window`` 16) window classes and
the chunks only. On CPU the set-up and the candidate passes are memory bound: the code keeps the
number of passes over per-pair and per-candidate arrays low and gathers whole rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from pipeline.base.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["Raster", "interpolate", "rasterize", "rasterize_depth"]

#: candidate window sides: a box is evaluated on the smallest window holding it (sides between
#: powers of two waste fewer candidates than power-of-two windows alone)
_SIZES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)
#: sort key of (face, triangle) pairs that cover no pixel centre or are tiled
_SKIP = 255
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
    _check("rasterize_depth", vertices, triangles, size, size, max_window)
    if vertices.dtype in (torch.float16, torch.bfloat16):
        z, mask = rasterize_depth(
            vertices.float(), triangles, size, max_window=max_window,
            chunk_candidates=chunk_candidates,
        )
        return z.to(vertices.dtype), mask
    size = int(size)
    zbuf, _ = _zbuffer(vertices, triangles, size, size, max_window, chunk_candidates)
    return _finish(zbuf, vertices.shape[0], size, size, max_window)


def _check(name: str, vertices: torch.Tensor, triangles: torch.Tensor, height: int, width: int,
           max_window: int) -> None:
    if vertices.ndim != 3 or vertices.shape[-1] != 3:
        raise ConfigError(f"{name}: vertices must be (B, V, 3), got {tuple(vertices.shape)}")
    if triangles.ndim != 2 or triangles.shape[-1] != 3:
        raise ConfigError(f"{name}: triangles must be (T, 3), got {tuple(triangles.shape)}")
    if int(height) < 1 or int(width) < 1:
        raise ConfigError(f"{name}: output size must be >= 1, got {height} x {width}")
    if max_window not in _SIZES:
        raise ConfigError(f"{name}: max_window must be one of {_SIZES}, got {max_window}")
    if not vertices.dtype.is_floating_point:
        raise ConfigError(f"{name}: vertices must be floating point, got {vertices.dtype}")


def _zbuffer(
    vertices: torch.Tensor,
    triangles: torch.Tensor,
    height: int,
    width: int,
    max_window: int,
    chunk_candidates: int | None,
    *,
    front: int = 0,
    winners: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Steps 1-3 of the module docstring into a flat z-buffer of ``B`` padded
    ``(height + max_window - 1, width + max_window - 1)`` images (``-inf`` = uncovered); the
    padding takes candidates beyond the image border, so they need no mask.

    ``front`` = +1 / -1 keeps only triangles whose projected signed area
    ``(v1 - v0) x (v2 - v0)`` has that sign (back-face culling), 0 keeps all. With ``winners``,
    a second pass over the same candidates also returns, per buffer pixel, the flat pair id
    ``b * T + t`` of the nearest covering triangle (ties: the larger id), -1 where none.
    """
    dev, dtype = vertices.device, vertices.dtype
    if chunk_candidates is None:
        chunk_candidates = 2**23 if dev.type == "cuda" else 2**19
    bsz = vertices.shape[0]
    tris = triangles.to(device=dev, dtype=torch.long)
    pad = (height + max_window - 1, width + max_window - 1)
    zbuf = torch.full((bsz * pad[0] * pad[1],), float("-inf"), dtype=dtype, device=dev)
    ids = torch.full_like(zbuf, -1, dtype=torch.long) if winners else None
    if bsz == 0 or tris.shape[0] == 0:
        return zbuf, ids
    boxes = _boxes(vertices, tris, height, width, front)
    ent = _entries(boxes, tris, max_window, pad, winners)
    if ent is None:
        return zbuf, ids
    table, base, pair, counts, sizes = ent
    chunks = list(_class_chunks(counts, sizes, pad[1], chunk_candidates, dev, dtype))
    for c0, c1, grid, offset in chunks:
        _eval_chunk(zbuf, table[c0:c1], base[c0:c1], grid, offset)
    if winners:
        for c0, c1, grid, offset in chunks:
            _win_chunk(zbuf, ids, table[c0:c1], base[c0:c1], pair[c0:c1], grid, offset)
    return zbuf, ids


def _boxes(vertices: torch.Tensor, tris: torch.Tensor, height: int, width: int, front: int) -> dict:
    """Step 1: per-(face, triangle) boxes of candidate pixel centres, on contiguous ``(B, T)``
    planes (x, y only); when fewer than half the pairs can cover a pixel centre (e.g. small
    outputs), only those are kept (``pair_id``, else None: pair ``i`` is ``b * T + t = i``)."""
    bsz, n_tri = vertices.shape[0], tris.shape[0]
    finite_v = torch.isfinite(vertices).all(-1)  # (B, V)
    all_finite = bool(finite_v.all())
    verts = vertices if all_finite else torch.where(finite_v.unsqueeze(-1), vertices, 0.0)
    planes = verts[..., :2].transpose(1, 2).contiguous()  # (B, 2, V)
    g = planes.index_select(2, tris.t().reshape(-1)).view(bsz, 2, 3, n_tri)  # coord, corner
    (x0, x1, x2), (y0, y1, y2) = g[:, 0].unbind(1), g[:, 1].unbind(1)
    lim = float(4 * max(height, width) + 8)  # clamp before the int conversion
    lox = torch.ceil(torch.minimum(torch.minimum(x0, x1), x2).clamp_(-lim, lim)).clamp_(min=0)
    loy = torch.ceil(torch.minimum(torch.minimum(y0, y1), y2).clamp_(-lim, lim)).clamp_(min=0)
    hix = torch.floor(torch.maximum(torch.maximum(x0, x1), x2).clamp_(-lim, lim))
    hiy = torch.floor(torch.maximum(torch.maximum(y0, y1), y2).clamp_(-lim, lim))
    hix.clamp_(max=width - 1)
    hiy.clamp_(max=height - 1)
    keep = (hix >= lox) & (hiy >= loy)  # the box holds at least one pixel centre
    if not all_finite:
        keep &= finite_v[:, tris].all(-1)
    if front:
        keep &= ((x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)) * front > 0
    pair_id = None
    if int(keep.sum()) * 2 < bsz * n_tri:
        pair_id = keep.view(-1).nonzero().squeeze(1)
        x0, x1, x2, y0, y1, y2, lox, loy, hix, hiy = (
            t.reshape(-1).index_select(0, pair_id)
            for t in (x0, x1, x2, y0, y1, y2, lox, loy, hix, hiy)
        )
        zf = verts[..., 2].reshape(-1)
        face = _floor_div(pair_id, n_tri)
        vz = (face.view(-1, 1) * verts.shape[1] + tris.index_select(0, pair_id - face * n_tri)).t()
        zp = [zf.index_select(0, v) for v in vz]
        keep = None
    else:
        zp = verts[..., 2].index_select(1, tris.t().reshape(-1)).view(bsz, 3, n_tri).unbind(1)
    return dict(verts=verts, corners=(x0, x1, x2, y0, y1, y2, *zp), box=(lox, loy, hix, hiy),
                keep=keep, pair_id=pair_id)


def _entries(boxes: dict, tris: torch.Tensor, max_window: int, pad: tuple[int, int], winners: bool):
    """Step 2: plane tables ``(N, 4, 3)``, box origins ``(N,)`` (linear, padded buffer) and, with
    ``winners``, flat pair ids ``(N,)`` of the boxes and tiles, grouped by window class in class
    order; with the per-class counts and the window sides. None when no box covers a pixel."""
    verts, keep, pair_id = boxes["verts"], boxes["keep"], boxes["pair_id"]
    lox, loy, hix, hiy = boxes["box"]
    dev, dtype = verts.device, verts.dtype
    bsz, n_tri = verts.shape[0], tris.shape[0]
    w, h = hix - lox + 1, hiy - loy + 1
    large = (w > max_window) | (h > max_window)
    if keep is not None:
        large &= keep

    # size classes: a box of side in (sizes[k-1], sizes[k]] is evaluated on a sizes[k] window;
    # key = class_h * ns + class_w, _SKIP for pairs that cover no pixel centre or are tiled
    sizes = [s for s in _SIZES if s <= max_window]
    ns = len(sizes)
    lut = torch.zeros(max_window + 1, dtype=torch.uint8, device=dev)
    for k, s in enumerate(sizes):
        lut[(sizes[k - 1] + 1 if k else 0) : s + 1] = k
    cap = float(max_window)
    key = lut.index_select(0, h.clamp(0, cap).long().view(-1)).mul_(ns)
    key += lut.index_select(0, w.clamp(0, cap).long().view(-1))
    skip = large if keep is None else large | ~keep
    key = key.masked_fill_(skip.view(-1), _SKIP)

    # plane tables set up at the box origins on contiguous planes, then laid out as one
    # 12-value row per pair so the class-ordered gather moves whole rows
    refine = dtype == torch.float32
    table, risky = _plane_table(*boxes["corners"], lox, loy, span=(w - 1, h - 1) if refine else None)
    n_set = key.numel()
    table = table.view(12, n_set)
    if refine:
        # the z gradients of ill-conditioned (thin / large) triangles are redone in float64
        fix = (risky & ~skip).view(-1).nonzero().squeeze(1)
        if fix.numel():
            pid = fix if pair_id is None else pair_id.index_select(0, fix)
            lo = [t.reshape(-1).index_select(0, fix) for t in (lox, loy)]
            table.index_copy_(1, fix, _pair_table64(verts, tris, pid, *lo).to(dtype))
    rows = table.t()  # (n_set, 12), strided: made contiguous by the cat / copy below
    face_origin = (torch.arange(bsz, device=dev).view(-1, 1) if pair_id is None
                   else _floor_div(pair_id, n_tri)) * (pad[0] * pad[1])
    base = (face_origin + loy.long() * pad[1] + lox.long()).view(-1)  # linear box origins
    pair = None
    if winners:
        pair = torch.arange(n_set, device=dev) if pair_id is None else pair_id
    if bool(large.any()):
        tkey, tile_rows, tbase, src = _tiles(verts, tris, (lox, loy, hix, hiy), large, pair_id,
                                             max_window, pad, lut, ns)
        key, rows, base = torch.cat([key, tkey]), torch.cat([rows, tile_rows]), torch.cat([base, tbase])
        pair = None if pair is None else torch.cat([pair, src])
    else:
        rows = rows.contiguous()

    # group by class with one stable sort on the small key, then gather the rows and the box
    # origins once, already in class order (zero-area triangles have b0 = -1, zero gradients:
    # they cover nothing)
    key_sorted, order = torch.sort(key, stable=True)
    counts = torch.bincount(key_sorted, minlength=_SKIP + 1)[: ns * ns].tolist()
    n_ent = sum(counts)
    if n_ent == 0:
        return None
    sel = order[:n_ent]
    pair = None if pair is None else pair.index_select(0, sel)
    return rows.index_select(0, sel).view(-1, 4, 3), base.index_select(0, sel), pair, counts, sizes


def _tiles(verts, tris, box, large, pair_id, max_window, pad, lut, ns):
    """Boxes larger than ``max_window`` cut into ``max_window`` tiles: their class keys, plane
    rows (few: set up in float64 at the tile origins), linear origins and flat pair ids."""
    lox, loy, hix, hiy = box
    dev, n_tri = verts.device, tris.shape[0]
    li = large.view(-1).nonzero().squeeze(1)
    lbox = torch.stack([v.reshape(-1).index_select(0, li) for v in (lox, loy, hix, hiy)]).long()
    nt = (lbox[2:] - lbox[:2] + max_window) // max_window  # (2, L) tiles in x, y
    reps = nt[0] * nt[1]
    src = torch.repeat_interleave(li if pair_id is None else pair_id.index_select(0, li), reps)
    start = torch.cumsum(reps, 0) - reps
    local = torch.arange(src.numel(), device=dev) - torch.repeat_interleave(start, reps)
    ntx = torch.repeat_interleave(nt[0], reps)
    lbox = torch.repeat_interleave(lbox, reps, dim=1)
    tlo = lbox[:2] + torch.stack([local % ntx, local // ntx]) * max_window  # (2, Lt)
    thi = torch.minimum(tlo + max_window - 1, lbox[2:])
    twh = thi - tlo + 1
    key = lut[twh[1]] * ns + lut[twh[0]]
    rows = _pair_table64(verts, tris, src, tlo[0], tlo[1]).to(verts.dtype).t()
    base = (_floor_div(src, n_tri) * pad[0] + tlo[1]) * pad[1] + tlo[0]
    return key, rows, base, src


def _class_chunks(counts: list[int], sizes: list[int], row: int, chunk_candidates: int, dev, dtype):
    """Step 3's loop: per window class ``(kh, kw)``, slices ``[c0, c1)`` of the class-ordered
    entries of about ``chunk_candidates`` candidates, with the class's candidate grid ``(3, K)``
    (rows ``1, i, j``) and linear offsets ``(1, K)`` in a buffer of ``row`` columns."""
    ns = len(sizes)
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
        offset = (jl * row + il).view(1, -1)  # (1, K)
        per_chunk = max(1, chunk_candidates // (kh * kw))
        for c0 in range(pos, pos + cnt, per_chunk):
            yield c0, min(c0 + per_chunk, pos + cnt), grid, offset
        pos += cnt


def _pair_table64(
    verts: torch.Tensor,
    tris: torch.Tensor,
    pairs: torch.Tensor,
    lox: torch.Tensor,
    loy: torch.Tensor,
) -> torch.Tensor:
    """float64 plane tables ``(12, n)`` of the (face, triangle) ``pairs`` (flat ``b * T + t``),
    set up at the box origins ``lox``, ``loy`` ``(n,)``."""
    n_tri = tris.shape[0]
    face = _floor_div(pairs, n_tri)
    vid = face.view(-1, 1) * verts.shape[1] + tris.index_select(0, pairs - face * n_tri)  # (n, 3)
    c = verts.reshape(-1, 3).index_select(0, vid.view(-1)).view(-1, 9).t().double()
    fine, _ = _plane_table(*c[0::3], *c[1::3], *c[2::3], lox.double(), loy.double())
    return fine.view(12, -1)


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
    span: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Affine tables of triangles (inputs of one common shape ``...``, computed in their dtype).

    Returns ``table`` ``(4, 3, ...)``: rows b0, b1, b2 (barycentrics) and z, each as
    ``[value at the box origin (lox, loy), d/di, d/dj]``; triangles with twice the signed area
    ``|denom| <= 1e-12`` get b0 = -1 and zero gradients (they never cover a pixel).
    With ``span`` (the box extents ``hix - lox``, ``hiy - loy``), also a bool ``(...)`` flag of the
    triangles whose float z could be off by more than ``_REFINE_AMP`` * eps: the z gradients
    come from a 2x2 inverse with condition ``(|p1| + |p2|) / |denom|`` (``denom = p1 - p2``), and
    the error grows with that times ``|dz/dx| * (2 * span_x + 2) + |dz/dy| * (2 * span_y + 2)``
    (origin-to-corner distance plus box size). Written with few passes over the ``N`` values
    (on CPU this step is memory bound).
    """
    table = torch.empty(4, 3, *x0.shape, dtype=x0.dtype, device=x0.device)
    b0o, db0i, db0j = table[0]
    b1o, a1, c1 = table[1]
    b2o, a2, c2 = table[2]
    zo, az, cz = table[3]
    e1x, e1y, e2x, e2y = x1 - x0, y1 - y0, x2 - x0, y2 - y0
    p1, p2 = e1x * e2y, e1y * e2x
    denom = p1 - p2
    ok = denom.abs() > 1e-12  # (near) zero-area triangles cover nothing
    inv = torch.reciprocal(denom).masked_fill_(~ok, 0.0)
    # b1, b2 are linear in p - corner0 with gradients (a, c) = (d/dx, d/dy)
    torch.mul(e2y, inv, out=a1)
    torch.mul(e2x, inv, out=c1).neg_()
    torch.mul(e1y, inv, out=a2).neg_()
    torch.mul(e1x, inv, out=c2)
    dz1, dz2 = z1 - z0, z2 - z0
    torch.mul(a1, dz1, out=az).addcmul_(a2, dz2)
    torch.mul(c1, dz1, out=cz).addcmul_(c2, dz2)
    ox, oy = lox - x0, loy - y0  # box origin relative to corner 0
    torch.mul(a1, ox, out=b1o).addcmul_(c1, oy)
    torch.mul(a2, ox, out=b2o).addcmul_(c2, oy)
    torch.add(b1o, b2o, out=b0o).neg_().add_(1.0).masked_fill_(~ok, -1.0)
    torch.add(a1, a2, out=db0i).neg_()
    torch.add(c1, c2, out=db0j).neg_()
    torch.addcmul(z0, az, ox, out=zo).addcmul_(cz, oy)
    if span is None:
        return table, None
    err = p1.abs_().add_(p2.abs_())  # |p1| + |p2|
    reach = (span[0] * 2 + 2).mul_(az.abs()).addcmul_(span[1] * 2 + 2, cz.abs())
    risky = err.mul_(reach) > denom.abs_().mul_(_REFINE_AMP)
    return table, risky


def _eval_chunk(
    zbuf: torch.Tensor,
    table: torch.Tensor,
    base: torch.Tensor,
    grid: torch.Tensor,
    offset: torch.Tensor,
) -> None:
    """Evaluate ``K`` candidate pixels of ``n`` boxes and max-reduce them into ``zbuf``.

    ``table`` ``(n, 4, 3)``: barycentrics b0, b1, b2 and z as affine functions
    ``[value at the box origin, d/di, d/dj]`` of the candidate offset ``(i, j)``; ``base``
    ``(n,)`` linear index of each box origin in the padded buffer; ``grid`` ``(3, K)`` rows
    ``1, i, j``; ``offset`` ``(1, K)`` linear offsets of the candidates.
    Candidates beyond a box are outside its triangle, in the padding, or repeat a pixel of the
    neighbouring tile with the same z, so no box mask is needed.
    """
    vals = torch.matmul(table, grid)  # (n, 4, K): one (4n, 3) x (3, K) product
    bmin = torch.minimum(vals[:, 0], vals[:, 1])
    torch.minimum(bmin, vals[:, 2], out=bmin)
    zc = vals[:, 3].masked_fill(bmin < 0, float("-inf"))
    zbuf.scatter_reduce_(
        0, (base.view(-1, 1) + offset).view(-1), zc.view(-1), reduce="amax", include_self=True
    )


def _win_chunk(
    zbuf: torch.Tensor,
    ids: torch.Tensor,
    table: torch.Tensor,
    base: torch.Tensor,
    pair: torch.Tensor,
    grid: torch.Tensor,
    offset: torch.Tensor,
) -> None:
    """The winner pass of :func:`_eval_chunk`'s candidates (same table, same products, so the
    same z): where a candidate's z equals the finished buffer's, its pair id is max-reduced
    into ``ids``."""
    vals = torch.matmul(table, grid)
    bmin = torch.minimum(torch.minimum(vals[:, 0], vals[:, 1]), vals[:, 2])
    zc = vals[:, 3].masked_fill(bmin < 0, float("-inf")).view(-1)
    lin = (base.view(-1, 1) + offset).view(-1)
    win = (zc >= zbuf.index_select(0, lin)) & (zc > float("-inf"))
    cand = torch.where(win, pair.view(-1, 1).expand(-1, offset.shape[1]).reshape(-1), -1)
    ids.scatter_reduce_(0, lin, cand, reduce="amax", include_self=True)


def _finish(
    zbuf: torch.Tensor, bsz: int, height: int, width: int, max_window: int
) -> tuple[torch.Tensor, torch.Tensor]:
    zb = zbuf.view(bsz, height + max_window - 1, width + max_window - 1)[:, :height, :width]
    mask = zb > float("-inf")
    return torch.nan_to_num(zb, neginf=0.0), mask


@dataclass(frozen=True)
class Raster:
    """Covered pixels of a batched rasterisation (:func:`rasterize`), in packed form.

    ``pix`` ``(N,)`` int64 flat index into ``(B, H, W)``; ``face`` ``(N,)`` the batch index;
    ``tri`` ``(N,)`` the visible triangle; ``bary`` ``(N, 3)`` its barycentric coordinates at the
    pixel centre; ``z`` ``(N,)`` the depth buffer's value (larger = closer).
    """

    pix: torch.Tensor
    face: torch.Tensor
    tri: torch.Tensor
    bary: torch.Tensor
    z: torch.Tensor
    batch: int
    height: int
    width: int

    def mask(self) -> torch.Tensor:
        """``(B, H, W)`` bool coverage."""
        m = torch.zeros(self.batch * self.height * self.width, dtype=torch.bool, device=self.pix.device)
        m[self.pix] = True
        return m.view(self.batch, self.height, self.width)


def rasterize(
    vertices: torch.Tensor,
    triangles: torch.Tensor,
    height: int,
    width: int,
    *,
    front: int = 0,
    max_window: int = 16,
    chunk_candidates: int | None = None,
) -> Raster:
    """The z-buffer of :func:`rasterize_depth` on a ``height x width`` output, with the visible
    triangle and its barycentrics per covered pixel (for attribute interpolation, e.g. textures).

    Same conventions and coverage rule; the nearest triangle wins (ties: the larger triangle
    index). ``front`` = +1 / -1 keeps only triangles whose projected signed area
    ``(v1 - v0) x (v2 - v0)`` (image x, y) has that sign (back-face culling); 0 keeps all.
    The winner is found by a second pass over the same candidates (no per-candidate storage).
    """
    _check("rasterize", vertices, triangles, height, width, max_window)
    height, width = int(height), int(width)
    bsz, n_tri = vertices.shape[0], triangles.shape[0]
    zbuf, ids = _zbuffer(vertices, triangles, height, width, max_window, chunk_candidates,
                         front=front, winners=True)
    pad = (height + max_window - 1, width + max_window - 1)
    idv = ids.view(bsz, *pad)[:, :height, :width].reshape(-1)
    zv = zbuf.view(bsz, *pad)[:, :height, :width].reshape(-1)
    pix = (idv >= 0).nonzero().squeeze(1)
    e = idv[pix]
    hw = height * width
    face = torch.div(pix, hw, rounding_mode="floor")
    tri = e - face * n_tri
    tv = vertices[face.view(-1, 1), triangles.to(vertices.device, torch.long)[tri]]  # (N, 3, 3)
    x, y = tv[..., 0], tv[..., 1]
    e1x, e1y = x[:, 1] - x[:, 0], y[:, 1] - y[:, 0]
    e2x, e2y = x[:, 2] - x[:, 0], y[:, 2] - y[:, 0]
    inv = 1.0 / (e1x * e2y - e1y * e2x)  # winners have a non-zero area
    dx = (pix % width).to(vertices.dtype) - x[:, 0]
    dy = torch.div(pix % hw, width, rounding_mode="floor").to(vertices.dtype) - y[:, 0]
    b1 = (e2y * dx - e2x * dy) * inv
    b2 = (e1x * dy - e1y * dx) * inv
    bary = torch.stack([1 - b1 - b2, b1, b2], 1)
    return Raster(pix, face, tri, bary, zv[pix], bsz, height, width)


def interpolate(raster: Raster, triangles: torch.Tensor, attrs: torch.Tensor) -> torch.Tensor:
    """Per-pixel attributes ``(N, C)`` from per-vertex ``attrs`` ``(V, C)`` or ``(B, V, C)``."""
    tri = triangles.to(attrs.device, torch.long)[raster.tri]  # (N, 3)
    if attrs.ndim == 2:
        a = attrs[tri]  # (N, 3, C)
    else:
        a = attrs[raster.face[:, None], tri]
    return (a * raster.bary[..., None].to(a.dtype)).sum(1)
