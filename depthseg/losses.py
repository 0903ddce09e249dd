"""Losses over quantized depth classes.

Every loss is an ``nn.Module`` called as ``loss(logits, target, depth)`` with

* ``logits``: ``(B, K, L, L)`` float;
* ``target``: ``(B, L, L)`` int64 class indices (:func:`depthseg.labels.quantize`);
* ``depth``: ``(B, L, L)`` float target depth in ``[0, 1]`` (before quantization), used by
  the ordinal-aware losses; may be ``None`` (then the class centres of ``target`` are used).

and returns a scalar (mean over pixels).

Names for :func:`build_loss`:

``ce``
    Pixel-wise cross-entropy, optional per-class weights (``class_weights``, length K; the
    mean is then weighted as in :func:`torch.nn.functional.cross_entropy`).
``ce+l1``
    ``CE + l1_weight * mean |E[d] - depth|`` where ``E[d] = sum_k p_k centre_k`` is the
    expected depth under the predicted class distribution: penalises predictions that are
    far from the true depth in the *ordinal* sense, which CE alone ignores.
``soft``
    Cross-entropy against soft labels: the one-hot target spread over neighbouring bins with
    a Gaussian in bin distance, ``q_k ∝ exp(-(k - y)^2 / (2 sigma^2))`` (``sigma`` in bins;
    a bin next to the true one is cheaper than a distant one). Class weights, if given,
    weight each pixel by the weight of its true class.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.base.errors import ConfigError
from pipeline.base.registry import Registry

from .labels import class_centres, check_num_classes, expected_depth

LOSSES: Registry[nn.Module] = Registry("loss")


def _weights(class_weights: Sequence[float] | torch.Tensor | None, k: int) -> torch.Tensor | None:
    if class_weights is None:
        return None
    w = torch.as_tensor(class_weights, dtype=torch.float32).flatten()
    if w.numel() != k or bool((w < 0).any()):
        raise ConfigError(f"class_weights must be {k} non-negative numbers, got {w.tolist()}")
    return w


class CrossEntropyDepthLoss(nn.Module):
    """Pixel-wise cross-entropy over depth classes (``ce``)."""

    def __init__(self, num_classes: int, class_weights: Sequence[float] | None = None):
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        w = _weights(class_weights, self.num_classes)
        self.register_buffer("weight", w if w is not None else torch.ones(0), persistent=False)

    def _ce(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        weight = self.weight.to(logits.device) if self.weight.numel() else None
        return F.cross_entropy(logits.float(), target, weight=weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor,
                depth: torch.Tensor | None = None) -> torch.Tensor:
        return self._ce(logits, target)


class CrossEntropyL1Loss(CrossEntropyDepthLoss):
    """``ce+l1``: CE plus ``l1_weight`` times the L1 error of the expected depth."""

    def __init__(self, num_classes: int, class_weights: Sequence[float] | None = None,
                 l1_weight: float = 1.0):
        super().__init__(num_classes, class_weights)
        if l1_weight < 0:
            raise ConfigError(f"l1_weight must be >= 0, got {l1_weight}")
        self.l1_weight = float(l1_weight)
        self.register_buffer("centres", class_centres(self.num_classes), persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor,
                depth: torch.Tensor | None = None) -> torch.Tensor:
        centres = self.centres.to(logits.device)
        if depth is None:
            depth = centres[target]
        pred = expected_depth(logits, centres)
        return self._ce(logits, target) + self.l1_weight * (pred - depth.float()).abs().mean()


class SoftLabelLoss(CrossEntropyDepthLoss):
    """``soft``: cross-entropy against Gaussian-smoothed (in bin distance) labels."""

    def __init__(self, num_classes: int, class_weights: Sequence[float] | None = None,
                 sigma: float = 1.0):
        super().__init__(num_classes, class_weights)
        if sigma <= 0:
            raise ConfigError(f"sigma must be > 0 (in bins), got {sigma}")
        k = torch.arange(self.num_classes, dtype=torch.float32)
        # table[y] = soft label of true class y, (K, K), rows sum to 1
        table = torch.softmax(-((k[None, :] - k[:, None]) ** 2) / (2.0 * sigma**2), dim=1)
        self.register_buffer("table", table, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor,
                depth: torch.Tensor | None = None) -> torch.Tensor:
        soft = self.table.to(logits.device)[target].permute(0, 3, 1, 2)  # (B, K, H, W)
        logp = torch.log_softmax(logits.float(), dim=1)
        per_pixel = -(soft * logp).sum(dim=1)  # (B, H, W)
        if not self.weight.numel():
            return per_pixel.mean()
        w = self.weight.to(logits.device)[target]
        return (per_pixel * w).sum() / w.sum().clamp_min(1e-12)


LOSSES.register("ce")(CrossEntropyDepthLoss)
LOSSES.register("ce+l1")(CrossEntropyL1Loss)
LOSSES.register("soft")(SoftLabelLoss)


def build_loss(name: str = "ce", num_classes: int = 8, **kwargs) -> nn.Module:
    """Build a loss by name (``ce``, ``ce+l1``, ``soft``; unknown: UnknownName (a ConfigError) listing them).

    Keyword arguments: ``class_weights`` (all), ``l1_weight`` (``ce+l1``), ``sigma`` (``soft``).
    """
    try:
        return LOSSES.create(name, num_classes=num_classes, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"bad arguments {sorted(kwargs)} for loss {name!r}: {exc}") from exc
