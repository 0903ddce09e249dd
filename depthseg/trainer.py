"""DepthSeg training: one :class:`TrainConfig` in, checkpoints + logs + metrics out.

``train(cfg)`` trains on ``cfg.train_split`` of the store and evaluates ``cfg.dev_split``
after every epoch. Each epoch writes into ``cfg.out_dir``:

* ``epoch_{k}.pt`` (k = 1, 2, ...) and ``last.pt`` (identical), plus ``best.pt`` when the dev
  ACER improved (ties broken by the lower dev loss);
* ``metrics.jsonl`` and ``metrics.csv`` (one row per epoch, rewritten from the history, so a
  resumed run's logs have no duplicate rows) and ``metrics.png`` (the history plotted: losses,
  dev error rates, learning rate);
* TensorBoard scalars under ``tensorboard/`` when ``cfg.tensorboard`` is set. TensorBoard is an
  optional extra (``pip install 'depthseg-fas[tensorboard]'``): asked for and not installed, the
  run says so in one warning line (:func:`tensorboard_missing`) and goes on with the other logs.

Splits are checked before training starts: the training split and the dev split must each
hold live *and* spoof frames (:class:`SplitError` otherwise) - with one class the dev EER
threshold and ACER are undefined, and a checkpoint carrying NaN as its threshold would pass
for a trained model. An empty dev split (or ``dev_split=None``) means no dev set: a warning,
model selection by training loss, and no threshold saved (``threshold`` None, ``thresholds``
empty), never NaN.

Checkpoints are written to a temporary file beside the target and renamed into place: a
failed write (disk full) or Ctrl-C removes the temporary file and leaves the previous
checkpoint intact; a failed write raises :class:`CheckpointError`.

Checkpoints load with ``torch.load(path, weights_only=True)``: they hold tensors and plain
containers only - the model state, the ``build_model`` kwargs, the class centres, the dev
thresholds (frame and video), the config as a dict, the data trained on (``data_store``: the
store's path, its config hash, the ``label_version`` of its depth labels, 1 for a store
written before labels were versioned, and ``preprocess``: the detector, landmarks and crop scale
its crops were made with, which :class:`depthseg.inference.Predictor` crops with), the history, and (for resuming) the
optimizer / scheduler / grad-scaler states and every RNG state (torch, CUDA, numpy, python,
and the generators used for shuffling and augmentation). :func:`load_checkpoint` rebuilds
the model.

Exact resume: ``train(cfg, resume=True)`` continues from ``last.pt``; on CPU (deterministic
algorithms on) an interrupted-and-resumed run ends with the same weights and metrics as an
uninterrupted one. Optimisation: AdamW (no weight decay on biases / norm weights), linear
warm-up then cosine decay per step (``LambdaLR``), gradient clipping, autocast + channels_last
on CUDA.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import logging
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.utils.deterministic as tud
from tqdm.auto import tqdm

import storage
from pipeline.base.errors import ConfigError, FasError
from pipeline.base.options import check_device, check_fields, opt

import depthseg.distributed as distributed  # (not `from . import`: that is an import of the package itself)
from .augment import AugmentConfig
from .data import FrameDataset, describe_drops, make_loader, prepare_batch
from .labels import DEFAULT_LABEL_SIZE, DEFAULT_NUM_CLASSES, class_centres
from .losses import LOSSES, build_loss
from .metrics import dev_thresholds, frame_and_video_metrics
from .models import ARCHITECTURES, DepthSegNet, build_model
from .predict import autocast_for, predict_dataset
from .roles import protocol_split

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "depthseg-checkpoint"
CHECKPOINT_VERSION = 1
#: config fields that may differ when resuming (they do not change the optimisation)
RESUME_MUTABLE = frozenset({"device", "num_workers", "out_dir", "progress", "eval_batch_size", "store",
                            "tensorboard"})


class CheckpointError(FasError, ValueError):
    """A checkpoint file that is missing, unreadable, not a DepthSeg checkpoint or not of this
    code's models, or one that could not be written (the message names the file)."""

    reason = "bad-checkpoint"


class CheckpointWriteError(CheckpointError):
    """A checkpoint could not be written (disk full...): the machine's problem, not the input's."""

    reason = "checkpoint-write-failed"
    exit_code = 1


class TrainingError(FasError, RuntimeError):
    """Training cannot go on (diverged loss, nothing to train)."""

    reason = "training-failed"
    exit_code = 1


class SplitError(TrainingError):
    """A split of the store cannot serve its role (empty, or lacking live or spoof frames)."""

    reason = "bad-split"
    exit_code = 2


@dataclass
class TrainConfig:
    """Everything one training run depends on (stored in every checkpoint as a dict)."""

    store: str = opt(help="store written by preprocess")
    out_dir: str = opt(help="checkpoints, logs and metrics go here")
    arch: str = opt("pspnet", help="segmentation architecture", choices=ARCHITECTURES.names)
    encoder: str = opt("resnet18", help="encoder of the architecture (segmentation-models-pytorch name)")
    encoder_weights: str | None = opt(None, help="encoder weights: none, 'imagenet' when cached locally, or a file")
    num_classes: int = opt(DEFAULT_NUM_CLASSES, help="depth classes (class 0: zero depth)", ge=2, le=64)
    label_size: int = opt(DEFAULT_LABEL_SIZE, help="side of the predicted depth map", ge=8, le=256)
    input_size: int = opt(256, help="side of the network input (crops are resized)", ge=32, le=512)
    epochs: int = opt(30, help="training epochs", ge=1)
    batch_size: int = opt(32, help="training batch size", ge=1)
    eval_batch_size: int = 64
    lr: float = opt(1e-3, help="peak learning rate (AdamW, warm-up then cosine decay)", gt=0)
    weight_decay: float = opt(1e-4, help="AdamW weight decay", ge=0)
    #: warm-up length in epochs (fractions allowed); ``warmup_steps`` overrides it when set
    warmup_epochs: float = 1.0
    warmup_steps: int | None = None
    #: cosine decay floor as a fraction of ``lr``
    min_lr_ratio: float = 0.0
    #: max gradient norm (None: no clipping)
    grad_clip: float | None = 5.0
    #: ``ce``, ``ce+l1`` or ``soft`` (see :mod:`depthseg.losses`) and its kwargs
    loss: str = opt("ce", help="training loss (see depthseg.losses)", choices=LOSSES.names)
    loss_kwargs: dict[str, Any] = field(default_factory=dict)
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)
    #: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1``...
    device: str = opt("auto", help="torch device: auto (CUDA when available) | cpu | cuda | cuda:N")
    #: autocast (bf16 where supported, else fp16 with a grad scaler); CUDA only
    amp: bool = True
    #: channels_last memory format; CUDA only
    channels_last: bool = True
    seed: int = opt(0, help="random seed (weights, shuffling, augmentation)")
    #: torch.use_deterministic_algorithms during training on CPU
    deterministic: bool = True
    num_workers: int = opt(0, help="data loader worker processes", ge=0)
    train_split: str = opt("train", help="split of the store to train on")
    dev_split: str | None = opt("dev", help="split evaluated after every epoch (its EER sets the threshold)")
    protocol: str | None = opt(None, help="a protocol fold (oulu-npu-p3:fold=2): train_split/dev_split then name "
                                          "its roles (train on its train role, choose the model on its dev role)")
    max_steps_per_epoch: int | None = opt(None, help="cap on training steps per epoch (quick runs)", ge=1)
    #: train (and select on dev) QC-flagged frames too (default: left out, depthseg.data.without_flagged)
    include_flagged: bool = opt(False, help="train on QC-flagged frames too (default: left out, counted per class)")
    progress: bool = True
    tensorboard: bool = opt(False, help="TensorBoard scalars under out_dir/tensorboard "
                                        "(needs the tensorboard extra; a one-line notice when missing)")

    def __post_init__(self) -> None:
        if isinstance(self.augment, dict):
            self.augment = AugmentConfig(**self.augment)
        check_fields(self)
        check_device(self.device, auto=True)
        for name in ("eval_batch_size",):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup_epochs < 0:
            raise ConfigError(f"bad optimiser settings warmup_epochs={self.warmup_epochs}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples as lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown TrainConfig fields {unknown}")
        return cls(**d)


@dataclass
class TrainResult:
    """Paths of the best and last checkpoints, final metrics, and the per-epoch history.

    ``metrics``: ``best_epoch``, ``best`` (the best epoch's dev metrics, frame and video),
    ``last`` (the last epoch's), ``thresholds`` (dev thresholds of the best checkpoint),
    ``train_loss_first`` / ``train_loss_last``.
    """

    best_checkpoint: Path
    last_checkpoint: Path
    metrics: dict[str, Any]
    history: list[dict[str, Any]]


# --------------------------------------------------------------------------- helpers


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available else CPU; otherwise ``torch.device(name)``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but CUDA is not available")
    return device


@contextlib.contextmanager
def _determinism(enabled: bool, cudnn_benchmark: bool) -> Iterator[None]:
    """Deterministic algorithms (CPU) or cuDNN autotuning (CUDA) for the run, restored after.

    Filling uninitialised memory (a debugging aid that deterministic mode turns on) is left
    off: it made CPU training several times slower and changes no result of a correct op.
    """
    prev = (torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.backends.cudnn.benchmark, tud.fill_uninitialized_memory)
    try:
        if enabled:
            torch.use_deterministic_algorithms(True, warn_only=True)
            tud.fill_uninitialized_memory = False
        torch.backends.cudnn.benchmark = cudnn_benchmark
        yield
    finally:
        torch.use_deterministic_algorithms(prev[0], warn_only=prev[1])
        torch.backends.cudnn.benchmark = prev[2]
        tud.fill_uninitialized_memory = prev[3]


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state(gens: dict[str, torch.Generator]) -> dict[str, Any]:
    """Every RNG state as tensors / plain lists (``weights_only``-loadable)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "generators": {k: g.get_state() for k, g in gens.items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], gens: dict[str, torch.Generator]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    for k, g in gens.items():
        g.set_state(state["generators"][k])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def lr_factor(step: int, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    """Linear warm-up from ``1/warmup`` to 1 over ``warmup`` steps, then cosine to ``min_ratio``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _plain(obj: Any) -> Any:
    """Metrics -> plain Python (floats, ints, str, None, lists, dicts) for checkpoints / JSON."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj)
    if isinstance(obj, (np.integer, int)) and not isinstance(obj, bool):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


@contextlib.contextmanager
def _temp_beside(path: Path) -> Iterator[Path]:
    """A temporary name beside ``path`` for an atomic write; whatever ends the write early (disk
    full, Ctrl-C) removes the temporary file, and a failed write becomes a
    :class:`CheckpointWriteError` naming ``path``. ``path`` itself is replaced only by a complete
    file, so the previous one survives."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        # torch's zip writer reports a failed write (disk full) as a RuntimeError
        if isinstance(exc, (OSError, RuntimeError)) and not isinstance(exc, FasError):
            why = getattr(exc, "strerror", None) or " ".join(str(exc).split())
            raise CheckpointWriteError(f"{path}: could not write the checkpoint ({why}); "
                                       f"the previous {path.name} (if any) is kept") from exc
        raise


def _atomic_save(obj: Any, path: Path) -> None:
    with _temp_beside(path) as tmp:
        torch.save(obj, tmp)
        os.replace(tmp, path)


def _atomic_copy(src: Path, dst: Path) -> None:
    with _temp_beside(dst) as tmp:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)


#: history columns that measure time (they differ between otherwise identical runs)
TIMING_KEYS = ("epoch_seconds", "train_images_per_s")


def json_safe(obj: Any) -> Any:
    """``_plain`` with NaN / inf as ``None`` (strict JSON)."""
    obj = _plain(obj)
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _write_logs(out: Path, history: list[dict[str, Any]]) -> None:
    with open(out / "metrics.jsonl", "w") as f:
        for row in history:
            f.write(json.dumps(json_safe(row)) + "\n")
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    with open(out / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(history)


def _plot_history(out: Path, history: list[dict[str, Any]]) -> None:
    """``metrics.png``: train / dev loss, dev error rates and the learning rate per epoch."""
    # on use: keeps every `depthseg-fas` call (the CLI imports this module) from importing matplotlib (~1 s)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.6))
    FigureCanvasAgg(fig)
    panels = (("loss", ("train_loss", "dev_loss")),
              ("dev error rates", ("dev_acer", "dev_apcer_max", "dev_bpcer", "dev_eer", "dev_video_acer")),
              ("learning rate", ("lr",)))
    epochs = [row["epoch"] for row in history]
    for i, (title, keys) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for k in keys:
            ys = [row.get(k) for row in history]
            ys = [math.nan if y is None else float(y) for y in ys]
            if any(math.isfinite(y) for y in ys):
                ax.plot(epochs, ys, marker="o", ms=3, label=k)
        ax.set(title=title, xlabel="epoch")
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    with _temp_beside(out / "metrics.png") as tmp:
        fig.savefig(tmp, dpi=80, format="png")
        os.replace(tmp, out / "metrics.png")


def tensorboard_missing() -> str | None:
    """The one-line notice when the ``tensorboard`` package is not importable, else None."""
    try:  # tensorboard is an optional extra: imported where asked for, to see whether it is there
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        return ("TensorBoard logging was asked for but tensorboard is not installed "
                "(pip install 'depthseg-fas[tensorboard]'); training goes on with metrics.jsonl/csv/png only")
    return None


def _tensorboard(out: Path, wanted: bool):
    if not wanted:
        return None
    notice = tensorboard_missing()
    if notice is not None:
        log.warning("%s", notice)
        return None
    from torch.utils.tensorboard import SummaryWriter  # optional extra, present (checked above)

    return SummaryWriter(str(out / "tensorboard"))


# --------------------------------------------------------------------------- checkpoints


def _load_failure(exc: Exception) -> str:
    """The gist of a torch.load failure: for a file the safe unpickler refuses, its reason alone,
    without torch's advice to retry with the weights-only guard switched off (which would run the file's code)."""
    text = " ".join(str(exc).split())
    if "WeightsUnpickler error:" in text:
        text = "refused by the weights-only unpickler: " + text.split("WeightsUnpickler error:", 1)[1].strip()
        text = text.split(" Check the documentation", 1)[0]
    return text if len(text) <= 300 else text[:297] + "..."


def load_checkpoint_dict(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The raw checkpoint dict (``weights_only=True``), checked to be a DepthSeg checkpoint."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint not found")
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle / zip errors of a broken file
        raise CheckpointError(f"{p}: not a readable checkpoint ({_load_failure(exc)})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{p}: not a {CHECKPOINT_FORMAT} file")
    if ckpt.get("format_version", 0) > CHECKPOINT_VERSION:
        raise CheckpointError(f"{p}: checkpoint format {ckpt['format_version']} is newer than "
                              f"this code's {CHECKPOINT_VERSION}")
    return ckpt


@contextlib.contextmanager
def _checkpoint_contents(path: str | os.PathLike) -> Iterator[None]:
    """Turn what a checkpoint of another model, or a damaged one, makes rebuilding raise (a
    missing key, another architecture's state dict, unknown model kwargs) into a CheckpointError."""
    try:
        yield
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        if isinstance(exc, FasError):
            raise
        raise CheckpointError(f"{path}: checkpoint does not match this code's models "
                              f"({type(exc).__name__}: {exc})") from exc


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[DepthSegNet, dict[str, Any]]:
    """Rebuild the model of a checkpoint (eval mode, on ``device``).

    Returns ``(model, meta)``; ``meta`` has ``model_kwargs``, ``class_centres``,
    ``threshold`` (frame-level dev EER threshold), ``thresholds`` (frame / video),
    ``dev_metrics``, ``config``, ``epoch``, ``history``, ``versions``.
    """
    ckpt = load_checkpoint_dict(path)
    with _checkpoint_contents(path):
        model = build_model(**ckpt["model_kwargs"])
        model.load_state_dict(ckpt["model_state"])
    model.to(resolve_device(str(device))).eval()
    skip = {"model_state", "optimizer_state", "scheduler_state", "scaler_state", "rng", "rng_ranks"}
    return model, {k: v for k, v in ckpt.items() if k not in skip}


# --------------------------------------------------------------------------- training


def train_step(
    model: nn.Module,
    batch: Any,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    scaler: torch.amp.GradScaler,
    *,
    amp: bool,
    grad_clip: float | None,
) -> torch.Tensor:
    """One optimisation step on a prepared :class:`~depthseg.data.DeviceBatch`; returns the
    detached loss (on the device, no host sync)."""
    device = batch.image.device
    with autocast_for(device, amp):
        logits = model(batch.image)
    loss = loss_fn(logits.float(), batch.target, batch.depth)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip is not None:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    if scheduler is not None:
        scheduler.step()
    return loss.detach()


def _check_resume_config(saved: dict[str, Any], new: dict[str, Any], path: Path) -> None:
    diff = sorted(k for k in set(saved) | set(new)
                  if k not in RESUME_MUTABLE and saved.get(k) != new.get(k))
    if diff:
        raise ConfigError(
            f"cannot resume: config differs from the checkpoint's in {diff} "
            f"(only {sorted(RESUME_MUTABLE)} may change)", source=str(path))


def _checked_split(ds: FrameDataset, store: Any, role: str) -> FrameDataset:
    """``ds`` if it holds live and spoof frames, else a SplitError naming the store and split."""
    n_live = int(ds.is_live.sum())
    n_spoof = len(ds) - n_live
    if n_live and n_spoof:
        return ds
    what = "no live/spoof frames" if not len(ds) else f"only {'live' if n_live else 'spoof'} frames ({len(ds)})"
    need = {"training": "training needs live and spoof frames",
            "dev": "both classes are needed to choose the decision threshold (EER)"}[role]
    raise SplitError(f"{store}: {role} split {ds.split_name!r} has {what}; {need}")


def train(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train a DepthSeg model (see the module docstring for the outputs).

    Args:
        cfg: the run's configuration.
        resume: continue from ``cfg.out_dir/last.pt`` when it exists (else start afresh).
        on_epoch_end: called as ``on_epoch_end(epoch, history_row)`` after each epoch's
            checkpoints are written (an exception raised there stops the run; the run can
            be resumed from the epoch just saved).
    """
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = distributed.local_device(resolve_device(cfg.device))
    ctx = distributed.context(device)  # under torchrun: this rank (see depthseg.distributed)
    cuda = device.type == "cuda"
    with _determinism(cfg.deterministic and not cuda, cudnn_benchmark=cuda):
        return _train(cfg, out, device, resume, on_epoch_end, ctx)


def _train(cfg: TrainConfig, out: Path, device: torch.device, resume: bool,
           on_epoch_end: Callable[[int, dict[str, Any]], None] | None,
           ctx: distributed.DistContext = distributed.DistContext()) -> TrainResult:
    """The run inside :func:`train`'s determinism settings: set up, resume, one
    :func:`_run_epoch` per epoch, then the result. Seeding, model init and the generators run in
    this fixed order: the same seed must give the same run, and exact resume depends on it."""
    _seed_all(cfg.seed)
    run = _setup(cfg, out, device, ctx, *_open_splits(cfg))
    if resume:
        _resume(run)
    tb = _tensorboard(out, cfg.tensorboard) if ctx.is_main else None
    try:
        for epoch in range(run.start_epoch + 1, cfg.epochs + 1):
            row = _run_epoch(run, epoch, tb)
            if on_epoch_end is not None:
                on_epoch_end(epoch, row)
    finally:
        if tb is not None:
            tb.close()
    if not run.history:
        raise TrainingError(f"{out}: nothing trained (epochs={cfg.epochs}, resumed at {run.start_epoch})")
    return TrainResult(out / "best.pt", out / "last.pt", _final_metrics(run), run.history)


@dataclass
class _Run:
    """The state of one training run: what :func:`_setup` builds, and the history, best epoch
    and step counter that the epochs advance and a checkpoint saves (and :func:`_resume` restores)."""

    cfg: TrainConfig
    out: Path
    device: torch.device
    ctx: distributed.DistContext
    data_store: dict[str, Any]
    train_ds: FrameDataset
    dev_ds: FrameDataset | None
    model: DepthSegNet
    net: nn.Module  #: ``model``, wrapped for DDP under torchrun (the one trained)
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    loader: Any
    gens: dict[str, torch.Generator]
    steps_per_epoch: int
    amp: bool  #: mixed precision: asked for and on CUDA
    channels_last: bool  #: channels-last memory format: asked for and on CUDA
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"epoch": 0, "key": [math.inf, math.inf]})
    start_epoch: int = 0
    step: int = 0


#: the store settings that decide what a face crop looks like: inference must crop as they did
FACE_SETTINGS = ("detector", "landmarks", "crop_scale")


def store_face_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The :data:`FACE_SETTINGS` of a store's config (those it records)."""
    return {k: config[k] for k in FACE_SETTINGS if k in config}


def _open_splits(cfg: TrainConfig) -> tuple[dict[str, Any], FrameDataset, FrameDataset | None]:
    """The store's identity (``data_store`` of the checkpoints), the training split and the dev
    split (None when not asked for or empty), each checked to hold live and spoof frames."""
    reader = storage.open_dataset(cfg.store)
    data_store = {"path": str(cfg.store), "config_hash": reader.config_hash,
                  "label_version": int(reader.config.get("label_version", 1)),
                  "preprocess": store_face_settings(reader.config)}
    train_ds = _checked_split(FrameDataset(reader, protocol_split(cfg.protocol, cfg.train_split),
                                           include_flagged=cfg.include_flagged), cfg.store, "training")
    dev_ds = (FrameDataset(reader, protocol_split(cfg.protocol, cfg.dev_split), include_flagged=cfg.include_flagged)
              if cfg.dev_split else None)
    log.info("train split %r: %s", cfg.train_split, describe_drops(train_ds.flag_drops)
             if not cfg.include_flagged else "QC-flagged frames included (--include-flagged)")
    if dev_ds is not None and len(dev_ds) == 0:
        log.warning("%s: dev split %r is empty; model selection falls back to the training loss "
                    "and no decision threshold is saved", cfg.store, cfg.dev_split)
        dev_ds = None
    if dev_ds is not None:
        _checked_split(dev_ds, cfg.store, "dev")
    log.info("train: %d frames (%d live), dev: %d frames", len(train_ds), int(train_ds.is_live.sum()),
             len(dev_ds) if dev_ds is not None else 0)
    return data_store, train_ds, dev_ds


def _setup(cfg: TrainConfig, out: Path, device: torch.device, ctx: distributed.DistContext,
           data_store: dict[str, Any], train_ds: FrameDataset, dev_ds: FrameDataset | None) -> _Run:
    """Model, loss, optimizer, the shuffling and augmentation generators, the loader (sharded
    under torchrun) and the warm-up + cosine schedule over ``epochs * steps_per_epoch`` steps."""
    cuda = device.type == "cuda"
    amp, channels_last = cfg.amp and cuda, cfg.channels_last and cuda
    model = build_model(cfg.arch, cfg.encoder, cfg.num_classes, cfg.label_size,
                        cfg.encoder_weights, cfg.input_size).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    loss_fn = build_loss(cfg.loss, cfg.num_classes, **cfg.loss_kwargs).to(device)
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr)

    shuffle_gen = torch.Generator().manual_seed(cfg.seed)
    augment_gen = torch.Generator().manual_seed(cfg.seed + 1 + ctx.rank)
    shard = distributed.ShardedBatchSampler(len(train_ds), cfg.batch_size, ctx.rank, ctx.world_size, shuffle=True,
                                            generator=shuffle_gen) if ctx.enabled else None
    loader = make_loader(train_ds, cfg.batch_size, shuffle=True, generator=shuffle_gen,
                         num_workers=cfg.num_workers, pin_memory=cuda, batch_sampler=shard)
    net = distributed.wrap(model, ctx, device)
    steps_per_epoch = len(loader.batch_sampler)
    if cfg.max_steps_per_epoch is not None:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    total_steps = cfg.epochs * steps_per_epoch
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else round(cfg.warmup_epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, warmup, total_steps, cfg.min_lr_ratio))
    fp16 = amp and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda", enabled=fp16)
    return _Run(cfg, out, device, ctx, data_store, train_ds, dev_ds, model, net, loss_fn, optimizer, scheduler,
                scaler, loader, {"shuffle": shuffle_gen, "augment": augment_gen}, steps_per_epoch, amp,
                channels_last)


def _resume(run: _Run) -> None:
    """Restore ``run`` from ``out/last.pt`` when it exists (else start afresh): weights,
    optimizer / scheduler / scaler states, this rank's RNG states, history, best epoch, step.
    Refuses a checkpoint of another config or another number of processes."""
    last_path = run.out / "last.pt"
    if not last_path.is_file():
        log.info("resume requested but %s does not exist: starting afresh", last_path)
        return
    ckpt = load_checkpoint_dict(last_path, map_location="cpu")
    ctx = run.ctx
    with _checkpoint_contents(last_path):
        _check_resume_config(ckpt["config"], run.cfg.to_dict(), last_path)
        if int(ckpt.get("world_size", 1)) != ctx.world_size:
            raise ConfigError(f"cannot resume: saved by {ckpt.get('world_size', 1)} process(es), "
                              f"now {ctx.world_size} (the data sharding depends on it)", source=str(last_path))
        run.model.load_state_dict(ckpt["model_state"])
        run.optimizer.load_state_dict(ckpt["optimizer_state"])
        run.scheduler.load_state_dict(ckpt["scheduler_state"])
        run.scaler.load_state_dict(ckpt["scaler_state"])
        _set_rng_state(ckpt.get("rng_ranks", [ckpt["rng"]])[ctx.rank], run.gens)
        run.history, run.best = list(ckpt["history"]), dict(ckpt["best"])
        run.start_epoch, run.step = int(ckpt["epoch"]), int(ckpt["global_step"])
    log.info("resuming %s from epoch %d (step %d)", run.out, run.start_epoch, run.step)


def _run_epoch(run: _Run, epoch: int, tb: Any) -> dict[str, Any]:
    """One epoch: train, evaluate dev, pick the best, write checkpoints and logs; returns the
    epoch's history row."""
    cfg, t0 = run.cfg, time.perf_counter()
    train_loss, seen = _train_epoch(run, epoch)
    train_seconds = time.perf_counter() - t0
    row: dict[str, Any] = {"epoch": epoch, "step": run.step, "lr": run.scheduler.get_last_lr()[0],
                           "train_loss": train_loss}
    distributed.sync_buffers(run.model, run.ctx)  # every rank evaluates the model rank 0 saves
    thresholds, dev_metrics, dev_loss = _evaluate_dev(run, row)
    row.update({"epoch_seconds": time.perf_counter() - t0,
                "train_images_per_s": seen / max(train_seconds, 1e-9)})
    row = _plain(row)
    run.history.append(row)

    acer = row.get("dev_acer", math.nan)
    key = [acer if math.isfinite(acer) else math.inf,
           dev_loss if math.isfinite(dev_loss) else train_loss]
    improved = key < run.best["key"]
    if improved:
        run.best = {"epoch": epoch, "key": key, "dev_metrics": _plain(dev_metrics),
                    "thresholds": _plain(thresholds) if run.dev_ds is not None else {}}
    _save_epoch(run, _checkpoint(run, epoch, thresholds, dev_metrics), epoch, improved)
    if tb is not None:
        for k, v in row.items():
            if isinstance(v, (int, float)) and k != "epoch":
                tb.add_scalar(k, v, epoch)
    log.info("epoch %d/%d: train loss %.4f, dev loss %.4f, dev ACER %.4f%s (%.1f img/s)",
             epoch, cfg.epochs, train_loss, dev_loss, acer, " *best*" if improved else "",
             row["train_images_per_s"])
    return row


def _train_epoch(run: _Run, epoch: int) -> tuple[float, int]:
    """The optimisation steps of one epoch (at most ``steps_per_epoch``); returns the mean
    training loss and the number of images seen, summed over ranks. A non-finite loss stops the
    run (:class:`TrainingError`)."""
    cfg, device = run.cfg, run.device
    run.model.train()
    running = torch.zeros((), dtype=torch.float64, device=device)
    seen = 0
    batches = run.loader
    if cfg.progress and run.ctx.is_main:
        batches = tqdm(run.loader, total=run.steps_per_epoch, desc=f"epoch {epoch}/{cfg.epochs}", leave=False)
    for i, raw in enumerate(batches):
        if i >= run.steps_per_epoch:
            break
        b = prepare_batch(raw, device, input_size=cfg.input_size, label_size=cfg.label_size,
                          num_classes=cfg.num_classes, augment=cfg.augment,
                          generator=run.gens["augment"], channels_last=run.channels_last)
        loss = train_step(run.net, b, run.loss_fn, run.optimizer, run.scheduler, run.scaler, amp=run.amp,
                          grad_clip=cfg.grad_clip)
        running += loss.double() * len(b.index)
        seen += len(b.index)
        run.step += 1
    seen = int(distributed.all_sum(torch.tensor(seen), run.ctx))
    train_loss = float(distributed.all_sum(running, run.ctx)) / max(seen, 1)
    if not math.isfinite(train_loss):
        raise TrainingError(f"epoch {epoch}: training loss is {train_loss} (diverged); "
                            f"lower lr (now {cfg.lr}) or enable grad_clip")
    return train_loss, seen


def _evaluate_dev(run: _Run, row: dict[str, Any]) -> tuple[dict[str, float], dict[str, Any], float]:
    """Dev thresholds (EER, frame and video), metrics and loss, added to ``row``; NaN thresholds,
    no metrics and a NaN loss without a dev split."""
    dev_ds = run.dev_ds
    if dev_ds is None:
        return {"frame": math.nan, "video": math.nan}, {}, math.nan
    pred = predict_dataset(run.model, dev_ds, batch_size=run.cfg.eval_batch_size,
                           num_workers=run.cfg.num_workers, loss_fn=run.loss_fn, amp=run.amp,
                           channels_last=run.channels_last, shard=run.ctx.shard())
    dev_scores, dev_loss = distributed.sum_scores(pred.scores, pred.loss, run.ctx)
    thresholds = dev_thresholds(dev_scores, dev_ds.is_live, dev_ds.video_id)
    dev_metrics = frame_and_video_metrics(dev_scores, dev_ds.is_live, dev_ds.attack_type,
                                          dev_ds.video_id, thresholds)
    fm, vm = dev_metrics["frame"], dev_metrics["video"]
    row.update({"dev_loss": dev_loss, "dev_acer": fm["acer"], "dev_apcer_max": fm["apcer_max"],
                "dev_bpcer": fm["bpcer"], "dev_eer": fm["eer"], "dev_auc": fm["auc"],
                "dev_threshold": thresholds["frame"], "dev_video_acer": vm["acer"],
                "dev_video_threshold": thresholds["video"]})
    return thresholds, dev_metrics, dev_loss


def _checkpoint(run: _Run, epoch: int, thresholds: dict[str, float], dev_metrics: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint dict of the epoch just trained (see the module docstring for its keys);
    under torchrun it carries every rank's RNG states, for an exact resume of each."""
    has_dev = run.dev_ds is not None
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "epoch": epoch,
        "global_step": run.step,
        "model_state": run.model.state_dict(),
        "model_kwargs": dict(run.model.arch_kwargs),
        "class_centres": class_centres(run.cfg.num_classes).tolist(),
        "threshold": thresholds["frame"] if has_dev else None,
        "thresholds": _plain(thresholds) if has_dev else {},
        "dev_metrics": _plain(dev_metrics),
        "config": run.cfg.to_dict(),
        "data_store": run.data_store,
        "history": run.history,
        "best": run.best,
        "optimizer_state": run.optimizer.state_dict(),
        "scheduler_state": run.scheduler.state_dict(),
        "scaler_state": run.scaler.state_dict(),
        "rng": _rng_state(run.gens),
        "versions": _versions(),
    }
    if run.ctx.enabled:
        ckpt.update(rng_ranks=distributed.gather_objects(ckpt["rng"], run.ctx), world_size=run.ctx.world_size)
    return ckpt


def _save_epoch(run: _Run, ckpt: dict[str, Any], epoch: int, improved: bool) -> None:
    """Rank 0 writes ``epoch_{k}.pt``, ``last.pt`` (and ``best.pt`` when ``improved``) and the
    logs; every rank then waits, so none runs ahead of a checkpoint it may resume from."""
    out = run.out
    epoch_path = out / f"epoch_{epoch}.pt"
    if run.ctx.is_main:
        _atomic_save(ckpt, epoch_path)
        _atomic_copy(epoch_path, out / "last.pt")
        if improved:
            _atomic_copy(epoch_path, out / "best.pt")
        _write_logs(out, run.history)
        _plot_history(out, run.history)
    distributed.barrier(run.ctx)


def _final_metrics(run: _Run) -> dict[str, Any]:
    """:attr:`TrainResult.metrics` from the history and the best epoch."""
    best, history = run.best, run.history
    return {
        "best_epoch": best["epoch"],
        "best": best.get("dev_metrics", {}),
        "thresholds": best.get("thresholds", {}),
        "last": {k: v for k, v in history[-1].items() if k not in TIMING_KEYS},
        "train_loss_first": history[0]["train_loss"],
        "train_loss_last": history[-1]["train_loss"],
        # per class: frames of the train split and QC-flagged ones left out (0 with include_flagged)
        "qc_left_out": {lab: dict(d, flagged=0 if run.cfg.include_flagged else d["flagged"])
                        for lab, d in run.train_ds.flag_drops.items()},
    }


def _versions() -> dict[str, str]:
    from importlib.metadata import version  # smp itself is imported only when a model is built

    return {"torch": str(torch.__version__), "segmentation_models_pytorch": version("segmentation-models-pytorch")}
