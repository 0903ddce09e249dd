"""Data-parallel training with ``torch.distributed`` (DDP), launched by ``torchrun``.

``torchrun --nproc_per_node N -m pipeline.cli train ...`` (or ``depthseg-fas train --nproc N``,
which runs exactly that) starts N processes; :func:`context` reads the ``RANK`` /
``WORLD_SIZE`` / ``LOCAL_RANK`` that torchrun sets and joins the process group (gloo on CPU,
NCCL on CUDA, one GPU per local rank). Without those variables everything is one process, as
before.

Decisions:

* **Sharding** (:class:`ShardedBatchSampler`): every rank draws the *same* permutation (same
  seeded generator) and cuts it into the same sorted batches as :class:`SortedBatchSampler`;
  rank r takes batches r, r+N, r+2N... For training, ranks that would get one batch fewer
  repeat the first batches (as ``DistributedSampler`` pads), so every rank takes the same
  number of steps and DDP's gradient all-reduce never waits for a missing peer. ``batch_size``
  is per process: the global batch is N times it.
* **Evaluation** runs on rank 0's BatchNorm statistics (:func:`sync_buffers`: DDP leaves each
  rank with statistics of its own last batch), sharded the same way without padding, and the frame scores are summed
  across ranks: every frame is scored in the very batch a one-process run puts it in, so the
  dev metrics (and the threshold saved in the checkpoint) equal those of evaluating the
  checkpoint in one process. The training loss is a sum over all ranks' frames.
* **Only rank 0 writes** checkpoints, logs and TensorBoard; the other ranks' RNG states are
  gathered into the checkpoint (``rng_ranks``) so that resuming restores every rank exactly.
  A run resumes only with the world size it was saved with (the sharding depends on it).
* Augmentation generators are seeded per rank (``seed + 1 + rank``), so ranks do not apply the
  same random crops to their different frames; rank 0 keeps the one-process seed.

Tested on CPU with gloo and 2 processes; NCCL across several GPUs is untested (no multi-GPU
machine at hand).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from .data import SortedBatchSampler

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """This process's place in the run: ``rank`` of ``world_size`` (1: not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self) -> tuple[int, int] | None:
        return (self.rank, self.world_size) if self.enabled else None


def context(device: torch.device) -> DistContext:
    """The run's :class:`DistContext` from torchrun's variables; joins the process group once."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    ctx = DistContext(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(ctx.local_rank)
        torch.distributed.init_process_group(backend=backend)
    if not ctx.is_main:
        logging.getLogger("depthseg").setLevel(logging.WARNING)  # one log, from rank 0
    return ctx


def local_device(device: torch.device) -> torch.device:
    """On CUDA under torchrun, this process's GPU (``cuda:LOCAL_RANK``)."""
    if device.type == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


class ShardedBatchSampler(SortedBatchSampler):
    """Rank ``rank``'s share of the batches of a :class:`SortedBatchSampler` (see the module
    docstring); ``pad`` repeats leading batches so every rank yields the same count."""

    def __init__(self, n: int, batch_size: int, rank: int, world_size: int, *, shuffle: bool = False,
                 generator: torch.Generator | None = None, pad: bool = True):
        super().__init__(n, batch_size, shuffle=shuffle, generator=generator)
        self.rank, self.world_size, self.pad = rank, world_size, pad

    def _mine(self, total: int) -> list[int]:
        per_rank = -(-total // self.world_size) if self.pad else len(range(self.rank, total, self.world_size))
        return [(self.rank + k * self.world_size) % max(total, 1) for k in range(per_rank)]

    def __len__(self) -> int:
        return len(self._mine(super().__len__()))

    def __iter__(self) -> Iterator[list[int]]:
        batches = list(super().__iter__())  # the generator advances once, on every rank alike
        for i in self._mine(len(batches)):
            yield batches[i]


def all_sum(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """``t`` summed over every rank (``t`` itself when not distributed; NCCL reduces on the GPU)."""
    if not ctx.enabled:
        return t
    on = t
    if torch.distributed.get_backend() == "nccl" and t.device.type != "cuda":
        on = t.to(torch.device("cuda", torch.cuda.current_device()))
    torch.distributed.all_reduce(on, op=torch.distributed.ReduceOp.SUM)
    return on.to(t.device)


def gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """``obj`` of every rank, in rank order (``[obj]`` when not distributed)."""
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    torch.distributed.all_gather_object(out, obj)
    return out


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        torch.distributed.barrier()


def wrap(model: torch.nn.Module, ctx: DistContext, device: torch.device) -> torch.nn.Module:
    """``model`` in DistributedDataParallel when distributed (weights broadcast from rank 0)."""
    if not ctx.enabled:
        return model
    ids = [device.index] if device.type == "cuda" else None
    # some encoders build stages the decoder never uses (PSPNet reads ResNet to depth 3)
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def sync_buffers(model: torch.nn.Module, ctx: DistContext) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank. DDP broadcasts them at the
    start of each forward, so after the last step each rank holds statistics updated with its own
    batch; evaluation must use the model rank 0 saves, on every rank."""
    if ctx.enabled:
        for b in model.buffers():
            on = b.data if torch.distributed.get_backend() != "nccl" or b.is_cuda else b.data.cuda()
            torch.distributed.broadcast(on, src=0)
            if on is not b.data:
                b.data.copy_(on)


def sum_scores(scores: np.ndarray, loss: float, ctx: DistContext) -> tuple[np.ndarray, float]:
    """Per-rank sharded dev scores (zeros where another rank scored) and loss shares, summed."""
    if not ctx.enabled:
        return scores, loss
    t = torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32)).clone()
    lt = torch.tensor([loss], dtype=torch.float64)
    return all_sum(t, ctx).numpy(), float(all_sum(lt, ctx)[0])


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Run ``depthseg-fas <argv>`` under torchrun with ``nproc`` processes on this machine."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "pipeline.cli", *argv]
    log.info("launching: %s", " ".join(cmd))
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    return subprocess.call(cmd, env=env)


def strip_nproc(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--nproc N`` / ``--nproc=N`` (what each torchrun process is given)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


__all__ = ["DistContext", "ShardedBatchSampler", "context", "local_device", "all_sum", "gather_objects",
           "barrier", "wrap", "sum_scores", "launch", "strip_nproc"]
