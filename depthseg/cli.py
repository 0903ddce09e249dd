"""``depthseg-fas train | evaluate | benchmark | predict | export`` sub-commands (registered by :func:`pipeline.cli.build_parser`)."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import cv2

from pipeline.base.errors import RunInterrupted
from pipeline.base.options import add_arguments, build
from pipeline.console import echo
from pipeline.run.config import PreprocessConfig

from .benchmark import benchmark
from .config import BenchmarkRun, EvaluateConfig, TrainRun
from .distributed import launch, strip_nproc
from .evaluate import evaluate
from .export import ExportConfig, export_checkpoint, read_metadata
from .inference import Predictor, depth_panel
from .trainer import tensorboard_missing, train

log = logging.getLogger(__name__)


def register(sub) -> None:
    """Add ``train``, ``evaluate``, ``benchmark``, ``predict`` and ``export``; their flags come from their
    config classes (:mod:`depthseg.config`, :class:`depthseg.export.ExportConfig`)."""
    t = sub.add_parser("train", help="train a DepthSeg model on a store")
    add_arguments(t, TrainRun)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="ISO/IEC 30107-3 metrics of a checkpoint on a store split")
    add_arguments(e, EvaluateConfig)
    e.set_defaults(func=cmd_evaluate)

    b = sub.add_parser("benchmark", help="every fold of a protocol: preprocess once, train, evaluate, "
                                         "write the table (CSV + Markdown)")
    add_arguments(b, BenchmarkRun)
    b.set_defaults(func=cmd_benchmark)

    p = sub.add_parser("predict", help="score an image or video with a checkpoint")
    p.add_argument("input", help="image, image folder or video")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", help="depth PNG path (default <input stem>.depth.png in the current folder)")
    trained = (None, "as the checkpoint's training store was made")
    add_arguments(p, PreprocessConfig, include=("detector", "landmarks", "every_n", "device", "model_dir"),
                  defaults={"detector": trained, "landmarks": trained})
    p.add_argument("--max-frames", type=int, default=64, help="at most this many frames scored [default: 64]")
    p.set_defaults(func=cmd_predict)

    x = sub.add_parser("export", help="export a checkpoint to ONNX or TorchScript (scores + depth, metadata)")
    add_arguments(x, ExportConfig)
    x.set_defaults(func=cmd_export)


def cmd_train(args) -> int:
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return launch(args.nproc, strip_nproc(sys.argv[1:]))

    run = build(TrainRun, vars(args))
    if run.config.tensorboard and tensorboard_missing():
        echo(f"notice: {tensorboard_missing()}")
    try:
        res = train(run.config, resume=run.resume)
    except KeyboardInterrupt:
        raise RunInterrupted(_resume_hint(Path(args.out_dir))) from None
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # rank 0 reports
    echo(f"best checkpoint: {res.best_checkpoint}")
    echo(f"last checkpoint: {res.last_checkpoint}")
    echo(json.dumps(res.metrics, indent=2, default=str))
    return 0


def _resume_hint(out: Path) -> str:
    """What an interrupted training run kept: its completed epochs (one metrics row each, written
    after the epoch's checkpoints) and how to continue."""
    rows = out / "metrics.jsonl"
    done = len(rows.read_text().splitlines()) if rows.is_file() else 0
    if not done or not (out / "last.pt").is_file():
        return f"no epoch completed, nothing saved in {out}"
    return (f"{done} epoch(s) completed, last checkpoint {out / 'last.pt'} intact; "
            f"continue with the same command plus --resume")


def cmd_evaluate(args) -> int:
    cfg = build(EvaluateConfig, vars(args))
    res = evaluate(cfg.checkpoint, cfg.store, **cfg.kwargs())
    echo(json.dumps(res, indent=2, default=str))
    echo(f"outputs: {Path(args.out_dir).resolve()}")
    return 0


def cmd_benchmark(args) -> int:
    cfg = build(BenchmarkRun, vars(args)).benchmark_config()
    res = benchmark(cfg)
    if res["skipped"]:
        echo(f"finished earlier, not rerun: {', '.join(res['skipped'])}")
    echo(Path(res["files"]["markdown"]).read_text())
    echo(f"table: {res['files']['csv']}, {res['files']['markdown']}")
    return 0


def cmd_predict(args) -> int:
    predictor = Predictor.from_checkpoint(args.checkpoint, device=args.device, detector=args.detector,
                                          landmarks=args.landmarks, every_n=args.every_n,
                                          max_frames=args.max_frames, model_dir=args.model_dir)
    pred = predictor.predict(args.input)
    out = Path(args.out or f"{Path(args.input).stem}.depth.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), cv2.cvtColor(depth_panel(pred), cv2.COLOR_RGB2BGR))
    echo(f"{args.input}: score {pred.score:.4f} (threshold {pred.threshold:.4f}) -> {pred.decision.upper()}"
          f" over {len(pred.frame_scores)} face frame(s)")
    echo(f"depth: {out}")
    return 0


def cmd_export(args) -> int:
    cfg = build(ExportConfig, vars(args))
    out = export_checkpoint(cfg.checkpoint, cfg.format, cfg.output)
    meta = read_metadata(out)
    echo(f"exported {args.checkpoint} -> {out} ({args.format}; input {meta['input_size']}x{meta['input_size']} "
          f"RGB in [0, 1]; outputs score, depth; frame threshold {meta['threshold_frame']})")
    return 0
