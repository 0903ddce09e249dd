"""Inference cores: liveness scores and predicted depth maps.

* :func:`predict_crops`: face crops in memory (``(N, S, S, 3)`` uint8 RGB, as the
  preprocessing stages make them) -> frame scores and expected-depth maps.
* :func:`predict_dataset`: every frame of a :class:`~depthseg.data.FrameDataset` -> scores
  (and the mean loss against the quantized labels when a loss is given).

Scores follow :mod:`depthseg.score`: mean expected depth of the predicted map, high = live.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from .data import FrameDataset, images_to_input, make_loader, prepare_batch
from .distributed import ShardedBatchSampler
from .labels import class_centres
from .models import DepthSegNet
from .score import frame_scores


@dataclass
class CropPrediction:
    """scores: ``(N,)`` float32 in [0, 1] (high = live); depth: ``(N, L, L)`` float32 expected
    depth in [0, 1] (1 = nearest); classes: ``(N, L, L)`` uint8 most likely depth class."""

    scores: np.ndarray
    depth: np.ndarray
    classes: np.ndarray


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def autocast_for(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    """bf16 (or fp16) autocast on CUDA when ``amp``; a no-op elsewhere."""
    if amp and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


@torch.no_grad()
def predict_crops(
    model: DepthSegNet, crops: np.ndarray | torch.Tensor, *, batch_size: int = 64, amp: bool = True
) -> CropPrediction:
    """Scores and depth maps of face crops.

    Args:
        model: a trained :class:`DepthSegNet` (put in eval mode here), on its device.
        crops: ``(N, S, S, 3)`` uint8 RGB face crops (any S; resized to the model's input size).
        batch_size: crops per forward pass.
        amp: autocast on CUDA.
    """
    crops_t = torch.as_tensor(crops)
    if crops_t.ndim != 4 or crops_t.shape[-1] != 3 or crops_t.dtype != torch.uint8:
        raise ValueError(f"crops must be (N, S, S, 3) uint8, got {tuple(crops_t.shape)} {crops_t.dtype}")
    model.eval()
    device = model_device(model)
    in_size = int(model.arch_kwargs["in_size"])
    centres = class_centres(model.num_classes, device=device)
    scores, depths, classes = [], [], []
    for start in range(0, crops_t.shape[0], batch_size):
        x = images_to_input(crops_t[start:start + batch_size].to(device), in_size)
        with autocast_for(device, amp):
            logits = model(x)
        s, d = frame_scores(logits.float(), centres)
        scores.append(s.cpu())
        depths.append(d.cpu())
        classes.append(logits.argmax(dim=1).to(torch.uint8).cpu())
    if not scores:
        side = model.label_size
        return CropPrediction(np.zeros(0, np.float32), np.zeros((0, side, side), np.float32),
                              np.zeros((0, side, side), np.uint8))
    return CropPrediction(torch.cat(scores).numpy(), torch.cat(depths).numpy(),
                          torch.cat(classes).numpy())


@dataclass
class DatasetPrediction:
    """scores: ``(N,)`` float32 in view order; loss: mean loss over frames (NaN without a loss)."""

    scores: np.ndarray
    loss: float


@torch.no_grad()
def predict_dataset(
    model: DepthSegNet,
    dataset: FrameDataset,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    loss_fn: nn.Module | None = None,
    amp: bool = True,
    channels_last: bool = False,
    progress: bool = False,
    shard: tuple[int, int] | None = None,
) -> DatasetPrediction:
    """Frame scores of every frame of ``dataset`` (and its mean loss).

    ``shard=(rank, world_size)``: score only this rank's batches (others stay 0, the loss is this
    rank's share); summing the ranks' results gives the one-process result (depthseg.distributed)."""
    model.eval()
    device = model_device(model)
    kw = model.arch_kwargs
    centres = class_centres(model.num_classes, device=device)
    scores = torch.zeros(len(dataset), dtype=torch.float32)
    total = torch.zeros((), dtype=torch.float64, device=device)
    sampler = None
    if shard is not None:
        sampler = ShardedBatchSampler(len(dataset), batch_size, *shard, pad=False)
    loader = make_loader(dataset, batch_size, num_workers=num_workers, pin_memory=device.type == "cuda",
                         batch_sampler=sampler)
    if progress:
        loader = tqdm(loader, desc=f"predict {dataset.split_name}", leave=False)
    for batch in loader:
        b = prepare_batch(batch, device, input_size=kw["in_size"], label_size=kw["label_size"],
                          num_classes=kw["num_classes"], channels_last=channels_last)
        with autocast_for(device, amp):
            logits = model(b.image)
        logits = logits.float()
        s, _ = frame_scores(logits, centres)
        scores[b.index] = s.cpu()
        if loss_fn is not None:
            total += loss_fn(logits, b.target, b.depth).double() * len(b.index)
    loss = float(total) / len(dataset) if loss_fn is not None and len(dataset) else float("nan")
    return DatasetPrediction(scores.numpy(), loss)
