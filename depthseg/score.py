"""Liveness scores from predicted depth-class maps (no ground-truth map at test time).

* Frame score: the mean over pixels of the expected depth ``sum_k p_k * centre_k`` of the
  predicted map, in ``[0, 1]``; high = live (a spoof's map is all class 0, depth 0).
* Video score: the mean of its frames' scores.
"""

from __future__ import annotations

import numpy as np
import torch

from .labels import expected_depth


def frame_scores(logits: torch.Tensor, centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, K, H, W)`` logits -> (``(B,)`` frame scores, ``(B, H, W)`` expected depth maps)."""
    depth = expected_depth(logits, centres)
    return depth.mean(dim=(1, 2)), depth


def video_scores(
    scores: np.ndarray, video_ids: np.ndarray, *others: np.ndarray
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Mean frame score per video.

    Args:
        scores: ``(N,)`` frame scores.
        video_ids: ``(N,)`` video id of each frame.
        others: ``(N,)`` per-frame columns constant within a video (label, attack type):
            the value of each video's first frame is kept.

    Returns:
        ``(V,)`` sorted unique video ids, ``(V,)`` float64 mean scores, and the ``(V,)``
        columns of ``others``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    ids, first, inverse = np.unique(np.asarray(video_ids), return_index=True, return_inverse=True)
    sums = np.bincount(inverse, weights=scores, minlength=len(ids))
    counts = np.bincount(inverse, minlength=len(ids))
    return ids, sums / counts, [np.asarray(o)[first] for o in others]
