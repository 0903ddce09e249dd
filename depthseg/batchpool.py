"""Batch buffers shared with DataLoader workers and reused, so a worker decodes into memory
that is already mapped (:func:`depthseg.data.make_loader` with ``num_workers > 0``).

Why: a worker normally hands a batch to the main process in a fresh shared-memory segment
(what torch's collate does too). On the 2-core VM of the benchmark, creating and filling a
fresh 12.6 MB segment (64 images of 256²) took 61 ms, against 9 ms to fill a reused buffer:
more than decoding the batch, so 2 workers were slower than reading in the main process.

How: before the workers start, the main process allocates ``slots`` buffers per worker in
shared memory (pages are touched only when first written). A worker decodes into a free slot
of its own and sends back only the slot number (:class:`PooledBatch`); the main process wraps
the slot as tensors, without a copy, that hold a lease: the slot is free again only when every
tensor (or view, or numpy array) of that batch is gone, so a batch the user keeps stays
intact. When a worker finds no free slot (batches kept) or a batch larger than a slot, it
falls back to a fresh segment: slower, never wrong. One iteration at a time uses the pool (the
workers of a second live iteration would write the same slots); another one started while it
runs takes the fallback path. Memory: workers x (prefetch_factor + 2) slots of batch_size + 1
frames (the sampler may merge a last single frame), e.g. 136 MB for 2 workers, batch 64, 256².
"""

from __future__ import annotations

import math
import secrets
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import get_worker_info

#: pools of this process by id, for PooledBatch.pin_memory (called by torch's pin-memory thread)
_POOLS: weakref.WeakValueDictionary[str, BatchPool] = weakref.WeakValueDictionary()


class BatchPool:
    """``workers`` x ``slots`` batch buffers of up to ``capacity`` frames of each field
    (``fields``: name -> uint8 frame shape), in shared memory."""

    def __init__(self, workers: int, slots: int, capacity: int, fields: dict[str, tuple[int, ...]]):
        self.id = secrets.token_hex(8)
        self.capacity, self.fields = int(capacity), {k: tuple(v) for k, v in fields.items()}
        self.slot_bytes = self.capacity * sum(math.prod(s) for s in self.fields.values())
        # _new_shared, not share_memory_(): no copy, so no page is touched until a worker writes it
        self.data = _shared((workers, slots, self.slot_bytes))
        self.busy = _shared((workers, slots))
        self.busy.zero_()
        self._leased: set[tuple[int, int]] = set()
        self._holder: Any = None
        _POOLS[self.id] = self

    def __getstate__(self) -> dict:  # for spawned workers: the shared tensors travel by handle
        return {k: v for k, v in self.__dict__.items() if k not in ("_leased", "_holder")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _leased=set(), _holder=None)

    # --- main process -------------------------------------------------------------------
    def claim(self) -> bool:
        """Before an iteration starts its workers: True (and every slot not held by a batch of
        this process marked free) unless the workers of another iteration may still write here."""
        held = self._holder() if self._holder is not None else None
        if held is not None and not getattr(held, "_shutdown", False):
            return False
        busy = self.busy.numpy()
        busy[...] = 0  # slots that stopped workers took but never delivered
        for w, k in tuple(self._leased):  # tuple: a pin-memory thread may drop a lease meanwhile
            busy[w, k] = 1
        self._holder = None
        return True

    def hold(self, iterator: Any) -> None:
        """The pool is ``iterator``'s until its workers are shut down (or it is gone)."""
        self._holder = weakref.ref(iterator)

    def tensors(self, batch: PooledBatch) -> dict[str, torch.Tensor]:
        """The batch as tensors viewing its slot; the slot is free once all of them are gone."""
        flat = np.asarray(_Lease(self, batch.worker, batch.slot))
        out, pos = {}, 0
        for name, shape in self.fields.items():
            size = batch.frames * math.prod(shape)
            out[name] = torch.from_numpy(flat[pos:pos + size].reshape(batch.frames, *shape))
            pos += self.capacity * math.prod(shape)
        out["is_live"] = torch.from_numpy(batch.is_live)
        out["index"] = torch.from_numpy(batch.index)
        return out

    # --- worker -------------------------------------------------------------------------
    def acquire(self, frames: int) -> tuple[int, int, dict[str, np.ndarray]] | None:
        """In a worker: (worker, slot, {field: (frames, *shape) array in the slot}) of a free
        slot, now taken; None outside a worker, when none is free or ``frames`` do not fit."""
        info = get_worker_info()
        if info is None or frames > self.capacity or info.id >= self.busy.shape[0]:
            return None
        busy = self.busy.numpy()[info.id]
        free = np.flatnonzero(busy == 0)
        if not free.size:
            return None
        k = int(free[0])
        busy[k] = 1
        flat, views, pos = self.data.numpy()[info.id, k], {}, 0
        for name, shape in self.fields.items():
            size = frames * math.prod(shape)
            views[name] = flat[pos:pos + size].reshape(frames, *shape)
            pos += self.capacity * math.prod(shape)
        return info.id, k, views

    def give_back(self, worker: int, slot: int) -> None:
        """In a worker: a slot taken by :meth:`acquire` that will not be sent (the read failed)."""
        self.busy.numpy()[worker, slot] = 0


def _shared(shape: tuple[int, ...]) -> torch.Tensor:
    storage = torch.UntypedStorage._new_shared(math.prod(shape))
    return torch.empty(0, dtype=torch.uint8).set_(storage).view(shape)


class _Lease:
    """One delivered slot as a numpy-compatible buffer; frees the slot when garbage."""

    def __init__(self, pool: BatchPool, worker: int, slot: int):
        self.pool, self.key = pool, (worker, slot)
        pool._leased.add(self.key)
        row = pool.data[worker, slot]
        self.__array_interface__ = {"shape": (pool.slot_bytes,), "typestr": "|u1", "version": 3,
                                    "data": (row.data_ptr(), False)}

    def __del__(self) -> None:
        self.pool._leased.discard(self.key)
        self.pool.busy.numpy()[self.key] = 0


@dataclass
class PooledBatch:
    """What a worker sends for a batch decoded into a pool slot (a few bytes, no tensor)."""

    pool_id: str
    worker: int
    slot: int
    frames: int
    is_live: np.ndarray
    index: np.ndarray

    def pin_memory(self, device: Any = None) -> dict[str, torch.Tensor]:
        """Called by torch's pin-memory thread: pinned copies (the slot is freed right after)."""
        return {k: v.pin_memory() for k, v in _POOLS[self.pool_id].tensors(self).items()}


def unpool(batch: Any) -> Any:
    """A batch as the user sees it: a :class:`PooledBatch` becomes its tensors."""
    return _POOLS[batch.pool_id].tensors(batch) if isinstance(batch, PooledBatch) else batch
