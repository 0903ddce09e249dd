"""Mesh topology helpers: the boundary loops of a triangle mesh and the fans that close its holes.

The SFM is an open mesh: its outer border (forehead, ears, neck) and one inner hole, the mouth.
A depth label must not show background between the lips (issue 13: an open mouth made a hole of
~4% of the face), so the labels are drawn with every inner hole closed by a fan of triangles to
one extra vertex per hole, the mean of the hole's border: the lip gap gets the depth of the lips
around it. The synthetic renderer (:mod:`pipeline.synth.geometry`) closes the mouth the same way.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["boundary_loops", "hole_fans", "append_hole_centres"]


def boundary_loops(triangles: np.ndarray) -> list[np.ndarray]:
    """Boundary loops of a triangle mesh (vertex indices in the border edges' direction), longest first."""
    t = np.asarray(triangles, dtype=np.int64)
    d = np.concatenate([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]], 0)
    n = int(t.max()) + 1
    fwd = set((d[:, 0] * n + d[:, 1]).tolist())
    border = d[~np.isin(d[:, 1] * n + d[:, 0], list(fwd))]  # directed edges without a twin
    nxt = dict(zip(border[:, 0].tolist(), border[:, 1].tolist()))
    loops, seen = [], set()
    for start in nxt:  # walk each loop once (a few hundred border edges)
        if start in seen:
            continue
        loop, v = [], start
        while v not in seen:
            seen.add(v)
            loop.append(v)
            v = nxt[v]
        loops.append(np.asarray(loop, dtype=np.int64))
    return sorted(loops, key=len, reverse=True)


def hole_fans(triangles: np.ndarray, num_vertices: int) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Close the inner holes (every boundary loop but the longest, the outer border).

    Returns ``(closed, holes, outer)``: ``closed`` the triangles plus, for hole ``j``, the twin
    ``(b, a, num_vertices + j)`` of each border edge ``a -> b`` (same winding as the mesh);
    ``holes`` the border vertex lists; ``outer`` the outer border.
    """
    t = np.asarray(triangles, dtype=np.int64)
    loops = boundary_loops(t)
    outer, holes = loops[0], loops[1:]
    fans = [np.stack([np.roll(h, -1), h, np.full(len(h), num_vertices + j)], 1) for j, h in enumerate(holes)]
    return (np.concatenate([t, *fans], 0) if fans else t), holes, outer


def append_hole_centres(vertices: torch.Tensor, holes) -> torch.Tensor:
    """``(..., V, C)`` per-vertex values with one row per hole appended: the mean over its border."""
    extra = [vertices[..., h, :].mean(-2, keepdim=True) for h in holes]
    return torch.cat([vertices, *extra], -2) if extra else vertices
