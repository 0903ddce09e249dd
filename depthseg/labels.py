"""Quantized pseudo-depth labels: depth estimation as semantic segmentation.

Depth convention (as in :mod:`pipeline.base.types`): a depth map is float in ``[0, 1]``, 0 is
background (and every pixel of a spoof face), 1 the nearest face point.

With ``K = num_classes`` classes:

* class 0 is *zero depth*: background and spoof faces;
* classes ``1 .. K-1`` are equal-width bins of ``(0, 1]``: with ``w = 1 / (K - 1)``, class
  ``k`` holds depths in ``((k - 1) w, k w]`` and its centre is ``(k - 0.5) w``; class 0's
  centre is ``0.0``.

A depth is "zero" when it is below :data:`ZERO_DEPTH_EPS` (half a uint8 step), so that the
uint8 maps of the store (``0..255``, 255 nearest) quantize exactly and float noise from
resizing does not create a spurious class 1.

Stored maps are ``(S, S)`` uint8 (typically 256x256); they are resized to ``label_size``
(default 32, as CDCN/SSAN; 256 allowed) with area interpolation *before* quantizing
(:func:`depth_to_labels`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.base.errors import ConfigError

DEFAULT_NUM_CLASSES = 8
DEFAULT_LABEL_SIZE = 32
#: depths below this are class 0 (half a uint8 step)
ZERO_DEPTH_EPS = 0.5 / 255.0


def check_num_classes(num_classes: int) -> int:
    """Validate ``num_classes`` (at least 2: zero depth plus one bin)."""
    if int(num_classes) != num_classes or num_classes < 2:
        raise ConfigError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    return int(num_classes)


def class_centres(
    num_classes: int = DEFAULT_NUM_CLASSES,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``(K,)`` depth value represented by each class: ``[0, 0.5w, 1.5w, ..., 1 - 0.5w]``."""
    k = check_num_classes(num_classes)
    width = 1.0 / (k - 1)
    centres = (torch.arange(k, device=device, dtype=dtype) - 0.5) * width
    centres[0] = 0.0
    return centres


def quantize(depth: torch.Tensor, num_classes: int = DEFAULT_NUM_CLASSES) -> torch.Tensor:
    """Class index of every pixel of a float depth map.

    Args:
        depth: ``(B, H, W)`` (any shape works) float depth in ``[0, 1]``; values outside are
            clipped.
        num_classes: K.

    Returns:
        ``int64`` tensor of the same shape with values in ``[0, K-1]``: 0 where
        ``depth < ZERO_DEPTH_EPS``, else ``ceil(depth * (K - 1))`` clipped to ``[1, K-1]``.
    """
    k = check_num_classes(num_classes)
    if not torch.is_floating_point(depth):
        raise ConfigError(f"quantize expects a float depth tensor in [0, 1], got {depth.dtype}")
    d = depth.clamp(0.0, 1.0)
    cls = torch.ceil(d * (k - 1)).clamp_(1, k - 1).long()
    return torch.where(d < ZERO_DEPTH_EPS, torch.zeros_like(cls), cls)


def resize_depth(depth: torch.Tensor, label_size: int) -> torch.Tensor:
    """Resize ``(B, H, W)`` depth maps to ``(B, label_size, label_size)``.

    uint8 input (the store's ``0..255``) is converted to float ``[0, 1]`` first. Downsizing
    uses area interpolation (the mean depth of each label cell); upsizing is bilinear.
    """
    if depth.ndim != 3:
        raise ConfigError(f"depth maps must be (B, H, W), got shape {tuple(depth.shape)}")
    d = depth.float() / 255.0 if depth.dtype == torch.uint8 else depth.float()
    h, w = d.shape[-2:]
    if (h, w) == (label_size, label_size):
        return d
    mode = "area" if h >= label_size and w >= label_size else "bilinear"
    kwargs = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(d[:, None], size=(label_size, label_size), mode=mode, **kwargs)[:, 0]


def depth_to_labels(
    depth: torch.Tensor, num_classes: int = DEFAULT_NUM_CLASSES, label_size: int = DEFAULT_LABEL_SIZE
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stored depth maps -> (float depth ``(B, L, L)`` in [0, 1], int64 classes ``(B, L, L)``)."""
    d = resize_depth(depth, label_size)
    return d, quantize(d, num_classes)


def labels_to_depth(labels: torch.Tensor, num_classes: int = DEFAULT_NUM_CLASSES) -> torch.Tensor:
    """Class map -> depth map of the class centres (same shape, float32)."""
    return class_centres(num_classes, device=labels.device)[labels]


def expected_depth(logits: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Soft depth ``sum_k softmax(logits)_k * centre_k``.

    Args:
        logits: ``(B, K, H, W)``.
        centres: ``(K,)`` class centres (:func:`class_centres`).

    Returns:
        ``(B, H, W)`` float32 expected depth in ``[0, 1]``.
    """
    probs = torch.softmax(logits.float(), dim=1)
    return torch.einsum("bkhw,k->bhw", probs, centres.to(probs.device, probs.dtype))
