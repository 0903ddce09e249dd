"""The train and evaluate options of the CLI and the flows, declared once.

Training's options are :class:`~depthseg.trainer.TrainConfig`'s own fields; :class:`TrainRun`
adds what a run decides beside them (resume, data-parallel processes, the split evaluated after
training). The CLI flags and the flat flow parameters are generated from these classes
(:mod:`pipeline.base.options`). ``nproc`` is not a TrainConfig field: it is not saved in the
checkpoint's config (a resume checks the world size itself, see :mod:`depthseg.distributed`).

``resume`` is off by default everywhere: a rerun of the same command starts afresh (a finished
run resumed would have nothing to train), and continuing an interrupted run is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.base.options import check_device, check_fields, group, opt

from .trainer import TrainConfig


@dataclass(frozen=True)
class TrainRun:
    """A training run: :class:`TrainConfig` plus resume and the split tested afterwards (flow)."""

    resume: bool = opt(False, help="continue from out_dir/last.pt when it exists")
    nproc: int = opt(1, help="data-parallel processes on this machine (runs torchrun; one per GPU on CUDA)", ge=1)
    test_split: str | None = opt("test", help="split evaluated with the best checkpoint after training "
                                               "(none to skip)", cli=False)
    config: TrainConfig = group(TrainConfig, "")

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class EvaluateConfig:
    """ISO/IEC 30107-3 metrics of a checkpoint on one split of a store (:func:`depthseg.evaluate.evaluate`)."""

    checkpoint: str = opt(help="checkpoint written by train (best.pt)")
    store: str = opt(help="store holding the split to evaluate")
    split: str = opt("test", help="split to evaluate")
    dev_split: str | None = opt("dev", help="split whose EER sets the threshold (none: the checkpoint's)")
    dev_store: str | None = opt(None, help="store of the development split (cross-dataset HTER; default: store)")
    out_dir: str = opt("eval", help="metrics.json, score CSVs and plots go here")
    device: str = opt("auto", help="torch device: auto (CUDA when available) | cpu | cuda | cuda:N")
    batch_size: int = opt(64, help="evaluation batch size", ge=1)

    def __post_init__(self) -> None:
        check_fields(self)
        check_device(self.device, auto=True)

    def kwargs(self) -> dict:
        """Keyword arguments of :func:`depthseg.evaluate.evaluate`."""
        return {"split": self.split, "dev_split": self.dev_split or None, "out_dir": self.out_dir,
                "dev_store": self.dev_store, "device": self.device, "batch_size": self.batch_size}
