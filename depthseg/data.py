"""Training / evaluation data over a dataset store (:mod:`storage`).

* :class:`FrameDataset` - the labelled frames (``live`` / ``spoof``) of one split of a store.
  A split is chosen by metadata (``split="train"``, or a mapping of column criteria) or by a
  protocol object: any picklable callable mapping the store's full
  :class:`storage.DatasetReader` to the view to use. The reader is picklable and opens its
  zarr arrays lazily, so every DataLoader worker opens the store on first read.
* :func:`make_loader` reads batches whole (``dataset.read_batch`` -> ``reader.read_into``,
  frames decoded straight into the batch, see :mod:`storage.fastread`) with the indices of a
  batch in sorted order (:class:`SortedBatchSampler`), as uint8 tensors: ``image (B, S, S,
  3)``, ``depth (B, S, S)``, ``is_live (B,)`` bool, ``index (B,)`` int64. Spoof frames get an
  all-zero depth map made in the loader: their stored depth is never read.
* Plain PyTorch works too: ``dataset[i]`` is one sample (the same fields without ``B``) and
  ``__getitems__`` returns a list of samples (read as one batch), so
  ``DataLoader(dataset, batch_size=8, shuffle=True, num_workers=2)`` collates them as usual.
* :func:`prepare_batch` moves a batch to the device and converts it there: image to float
  ``(B, 3, in, in)`` in [0, 1], depth resized to the label size (area) and quantized,
  optional augmentation (:mod:`depthseg.augment`).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

import storage

from .augment import AugmentConfig, augment_batch
from .batchpool import BatchPool, PooledBatch, unpool
from .labels import quantize, resize_depth

log = logging.getLogger(__name__)

#: a split name (``meta.split``), column criteria for ``reader.filter``, or a protocol callable
SplitSpec = Union[str, Mapping[str, Any], Callable[["storage.DatasetReader"], "storage.DatasetReader"]]
LABELS = ("live", "spoof")


def select_split(reader: storage.DatasetReader, split: SplitSpec) -> storage.DatasetReader:
    """The view of ``reader`` that ``split`` names, restricted to ``live`` / ``spoof`` frames."""
    if isinstance(split, str):
        view = reader.filter(split=split)
    elif isinstance(split, Mapping):
        view = reader.filter(**split)
    elif callable(split):
        view = split(reader)
    else:
        raise TypeError(f"split must be a name, a mapping of criteria or a callable, got {split!r}")
    if len(view) == 0:
        return view
    labelled = view.filter(label=LABELS)
    if len(labelled) < len(view):
        log.warning("%s split %s: %d frames without a live/spoof label are left out",
                    reader.url, _split_name(split), len(view) - len(labelled))
    return labelled


def without_flagged(view: storage.DatasetReader) -> storage.DatasetReader:
    """The frames of ``view`` with no QC flag (``qc_flags == 0``; see :mod:`pipeline.face.qc`).

    Flagged frames are labels QC does not trust (pose beyond what the landmarks follow, landmarks
    off the face, a bad fit, blur, ...): they are not trained on or evaluated by default. The
    fit-independent flags are the same for live and spoof frames; the per-class counts of
    :func:`flag_drops` show what leaving them out does to each class.
    """
    if len(view) == 0 or "qc_flags" not in view.columns:
        return view
    return view.select(np.flatnonzero(np.asarray(view.meta["qc_flags"]) == 0))


def flag_drops(view: storage.DatasetReader) -> dict[str, dict[str, int]]:
    """``{label: {"frames": n, "flagged": k}}`` for ``live`` and ``spoof`` frames of ``view``."""
    out = {lab: {"frames": 0, "flagged": 0} for lab in LABELS}
    if len(view) == 0:
        return out
    label = np.asarray(view.meta["label"]).astype(str)
    flags = np.asarray(view.meta["qc_flags"]) if "qc_flags" in view.columns else np.zeros(len(view), np.uint8)
    for lab in LABELS:
        m = label == lab
        out[lab] = {"frames": int(m.sum()), "flagged": int((flags[m] != 0).sum())}
    return out


def describe_drops(drops: Mapping[str, Mapping[str, int]]) -> str:
    """One line: QC-flagged frames left out per class, with rates."""
    parts = [f"{lab} {d['flagged']}/{d['frames']} ({d['flagged'] / d['frames']:.1%})" if d["frames"]
             else f"{lab} 0/0" for lab, d in drops.items()]
    return "QC-flagged frames left out (--include-flagged keeps them): " + ", ".join(parts)


def _split_name(split: SplitSpec) -> str:
    if isinstance(split, str):
        return split
    if isinstance(split, Mapping):
        return ",".join(f"{k}={v}" for k, v in split.items())
    return getattr(split, "__name__", type(split).__name__)


class FrameDataset(Dataset):
    """The live/spoof frames of one split of a store.

    Attributes (numpy, one entry per frame of the view): ``is_live`` (bool), ``video_id``,
    ``attack_type``, ``label`` (str).
    """

    def __init__(self, store: str | os.PathLike | storage.DatasetReader, split: SplitSpec = "train", *,
                 include_flagged: bool = False):
        reader = store if isinstance(store, storage.DatasetReader) else storage.open_dataset(store)
        self.split_name = _split_name(split)
        labelled = select_split(reader, split)
        #: per class (``live`` / ``spoof``): frames of the split, frames left out as QC-flagged
        self.flag_drops = flag_drops(labelled)
        #: the labelled frames of the split, QC-flagged ones included
        self.all_frames = labelled
        self.reader = labelled if include_flagged else without_flagged(labelled)
        if not include_flagged and len(self.reader) < len(labelled):
            log.info("%s split %s: %s", reader.url, self.split_name, describe_drops(self.flag_drops))
        meta = self.reader.meta
        self.label = np.asarray(meta["label"]).astype(str)
        self.is_live = self.label == "live"
        self.video_id = np.asarray(meta["video_id"]).astype(str)
        self.attack_type = np.asarray(meta["attack_type"]).astype(str)
        self._frame_shapes: dict[str, tuple[int, ...]] = {}

    def __len__(self) -> int:
        return len(self.reader)

    @property
    def url(self) -> str:
        return self.reader.url

    def read_batch(self, indices: Sequence[int] | np.ndarray) -> dict[str, torch.Tensor]:
        """Frames ``indices`` (view positions) as one batch of uint8 tensors, in that order.

        Decoded straight into the batch tensors, which live in shared memory inside a
        DataLoader worker (what torch's collate does), so handing a batch to the main process
        copies nothing.
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        image = _batch_tensor((len(idx), *self._frame_shape("image")))
        depth = _batch_tensor((len(idx), *self._frame_shape("depth")))
        live = self.read_into(idx, image.numpy(), depth.numpy())
        return {
            "image": image,
            "depth": depth,
            "is_live": torch.from_numpy(live),
            "index": torch.from_numpy(idx),
        }

    def read_into(self, idx: np.ndarray, image: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """Frames ``idx`` decoded into ``image`` ``(B, S, S, 3)`` and ``depth`` ``(B, S, S)``
        (spoof depth zero, never read); returns ``is_live`` of the frames."""
        live = self.is_live[idx]
        self.reader.read_into(idx, "image", image)
        if live.all():
            self.reader.read_into(idx, "depth", depth)
        else:  # spoof: zero depth, never read
            depth[...] = 0
            if live.any():
                depth[live] = self.reader.read_batch(idx[live], fields=("depth",))["depth"]
        return live

    def _frame_shape(self, name: str) -> tuple[int, ...]:
        if name not in self._frame_shapes:
            self._frame_shapes[name] = self.reader.read_batch([], fields=(name,))[name].shape[1:]
        return self._frame_shapes[name]

    def __getitems__(self, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        """Samples ``indices`` as a list (torch's convention), read as one batch."""
        batch = self.read_batch(indices)
        return [{k: v[i] for k, v in batch.items()} for i in range(len(indices))]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """One sample: ``image (S, S, 3)``, ``depth (S, S)`` uint8, ``is_live`` bool, ``index`` int64."""
        return {k: v[0] for k, v in self.read_batch([int(index)]).items()}


def _batch_tensor(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised uint8 tensor; in shared memory inside a DataLoader worker."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=torch.uint8)
    storage_ = torch.UntypedStorage._new_shared(math.prod(shape))
    return torch.empty(0, dtype=torch.uint8).set_(storage_).view(shape)


class _Batches(Dataset):
    """The dataset as :func:`make_loader` sees it: a batch of indices -> the whole batch
    (:meth:`FrameDataset.read_batch`), not a list of samples to collate; inside a worker,
    decoded into a slot of ``pool`` when one is free (:mod:`depthseg.batchpool`)."""

    def __init__(self, dataset: FrameDataset):
        self.dataset = dataset
        self.pool: BatchPool | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor] | PooledBatch:
        taken = self.pool.acquire(len(indices)) if self.pool is not None else None
        if taken is None:
            return self.dataset.read_batch(indices)
        worker, slot, views = taken
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        try:
            live = self.dataset.read_into(idx, views["image"], views["depth"])
        except BaseException:
            self.pool.give_back(worker, slot)
            raise
        return PooledBatch(self.pool.id, worker, slot, len(idx), live, idx)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.dataset[index]


class SortedBatchSampler(Sampler[list[int]]):
    """Batches of indices, each sorted (so a batch reads the store in order).

    With ``shuffle`` the frames are permuted with ``generator`` (a seeded ``torch.Generator``
    whose state advances once per epoch) before being cut into batches. A last batch of a
    single frame is merged into the previous one (BatchNorm needs two samples to train).
    """

    def __init__(self, n: int, batch_size: int, *, shuffle: bool = False,
                 generator: torch.Generator | None = None, merge_singleton: bool = True):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.n, self.batch_size, self.shuffle = int(n), int(batch_size), shuffle
        self.generator, self.merge_singleton = generator, merge_singleton

    def _bounds(self) -> list[int]:
        bounds = list(range(0, self.n, self.batch_size)) + [self.n]
        if self.merge_singleton and len(bounds) > 2 and bounds[-1] - bounds[-2] == 1:
            del bounds[-2]
        return bounds

    def __len__(self) -> int:
        return len(self._bounds()) - 1

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            order = torch.randperm(self.n, generator=self.generator).numpy()
        else:
            order = np.arange(self.n)
        bounds = self._bounds()
        for a, b in zip(bounds[:-1], bounds[1:]):
            yield np.sort(order[a:b]).tolist()


def _collate(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return batch  # read_batch already returns the stacked batch


class _BatchLoader(DataLoader):
    """The DataLoader of :func:`make_loader`: with workers, each iteration uses the loader's
    :class:`BatchPool` (made on first use) when no other iteration holds it."""

    def __init__(self, batches: _Batches, batch_sampler: SortedBatchSampler, **kw: Any):
        super().__init__(batches, batch_sampler=batch_sampler, collate_fn=_collate, **kw)
        self._pool: BatchPool | None = None

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        if self.num_workers == 0:
            return super().__iter__()
        if self._pool is None:
            ds = self.dataset.dataset
            slots = (self.prefetch_factor or 2) + 2  # in flight, in the user's hands, one spare
            self._pool = BatchPool(self.num_workers, slots, self.batch_sampler.batch_size + 1,
                                   {n: ds._frame_shape(n) for n in ("image", "depth")})
        pool = self._pool if self._pool.claim() else None  # None: another iteration's workers use it
        self.dataset.pool = pool  # the workers started by super().__iter__ inherit it
        try:
            it = super().__iter__()
        finally:
            self.dataset.pool = None
        if pool is None:
            return it
        pool.hold(it)
        return _Unpooled(it, pool)


class _Unpooled:
    """A DataLoader iterator whose pooled batches become tensors (:func:`batchpool.unpool`)."""

    def __init__(self, it: Iterator, pool: BatchPool):
        self._it, self._pool = it, pool  # the pool lives as long as its batches can arrive

    def __iter__(self) -> _Unpooled:
        return self

    def __len__(self) -> int:
        return len(self._it)

    def __next__(self) -> dict[str, torch.Tensor]:
        return unpool(next(self._it))


def make_loader(dataset: FrameDataset, batch_size: int, *, shuffle: bool = False,
                generator: torch.Generator | None = None, num_workers: int = 0,
                pin_memory: bool = False, batch_sampler: Sampler[list[int]] | None = None) -> DataLoader:
    """A DataLoader yielding whole uint8 batches (see :meth:`FrameDataset.read_batch`).

    Each batch is one batched read (``_Batches.__getitems__``), never one read per sample
    plus a collate copy; ``loader.batch_sampler`` is the :class:`SortedBatchSampler` (or the given
    ``batch_sampler``, e.g. a rank's share under DDP). With workers, batches are decoded into
    reused shared buffers (:mod:`depthseg.batchpool`).
    """
    sampler = batch_sampler
    if sampler is None:  # (not `or`: a rank's share may be empty, and an empty sampler is falsy)
        sampler = SortedBatchSampler(len(dataset), batch_size, shuffle=shuffle, generator=generator)
    return _BatchLoader(_Batches(dataset), sampler, num_workers=num_workers, pin_memory=pin_memory,
                        persistent_workers=False,
                        multiprocessing_context="spawn" if num_workers and torch.cuda.is_initialized() else None)


@dataclass
class DeviceBatch:
    """A batch ready for the model (everything on the device unless said otherwise).

    image: ``(B, 3, in, in)`` float in [0, 1]; depth: ``(B, L, L)`` float target depth in
    [0, 1]; target: ``(B, L, L)`` int64 classes; is_live: ``(B,)`` bool; index: ``(B,)``
    int64 view positions (CPU).
    """

    image: torch.Tensor
    depth: torch.Tensor
    target: torch.Tensor
    is_live: torch.Tensor
    index: torch.Tensor


def images_to_input(image: torch.Tensor, input_size: int) -> torch.Tensor:
    """``(B, S, S, 3)`` uint8 (on the device) -> ``(B, 3, in, in)`` float in [0, 1]."""
    x = image.permute(0, 3, 1, 2).float().div_(255.0)
    if x.shape[-1] != input_size or x.shape[-2] != input_size:
        x = F.interpolate(x, size=(input_size, input_size), mode="bilinear", align_corners=False,
                          antialias=True).clamp_(0.0, 1.0)
    return x


def prepare_batch(
    batch: Mapping[str, torch.Tensor],
    device: torch.device | str,
    *,
    input_size: int,
    label_size: int,
    num_classes: int,
    augment: AugmentConfig | None = None,
    generator: torch.Generator | None = None,
    channels_last: bool = False,
) -> DeviceBatch:
    """Move a uint8 batch to ``device`` and convert it there (see :class:`DeviceBatch`).

    Depth is resized to ``label_size`` with area interpolation before augmentation and
    quantization; augmentation (when ``augment`` is given, with ``generator``) moves image and
    depth with the same geometry.
    """
    device = torch.device(device)
    nb = device.type == "cuda"
    image = images_to_input(batch["image"].to(device, non_blocking=nb), input_size)
    depth = resize_depth(batch["depth"].to(device, non_blocking=nb), label_size)
    if augment is not None:
        if generator is None:
            raise ValueError("augmentation needs a seeded torch.Generator")
        image, depth = augment_batch(image, depth, augment, generator)
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    return DeviceBatch(
        image=image,
        depth=depth,
        target=quantize(depth, num_classes),
        is_live=batch["is_live"].to(device, non_blocking=nb),
        index=batch["index"],
    )
