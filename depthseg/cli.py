"""``depthseg-fas train | evaluate | predict`` sub-commands (registered by pipeline.cli)."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from pipeline.base.errors import RunInterrupted

log = logging.getLogger(__name__)


def register(sub) -> None:
    t = sub.add_parser("train", help="train a DepthSeg model on a store")
    t.add_argument("--store", required=True)
    t.add_argument("--out-dir", required=True)
    t.add_argument("--arch", default="pspnet", help="pspnet | deeplabv3plus | unet")
    t.add_argument("--encoder", default="resnet18")
    t.add_argument("--encoder-weights", help="None (default), 'imagenet' when cached locally, or a file")
    t.add_argument("--num-classes", type=int, default=8)
    t.add_argument("--label-size", type=int, default=32)
    t.add_argument("--input-size", type=int, default=256)
    t.add_argument("--epochs", type=int, default=30)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--loss", default="ce", help="ce | ce+l1 | soft")
    t.add_argument("--device", default="auto")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--num-workers", type=int, default=0)
    t.add_argument("--max-steps-per-epoch", type=int)
    t.add_argument("--resume", action="store_true", help="continue from OUT_DIR/last.pt")
    t.add_argument("--nproc", type=int, default=1,
                   help="data-parallel processes on this machine (runs torchrun; one per GPU on CUDA)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="ISO/IEC 30107-3 metrics of a checkpoint on a store split")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--store", required=True)
    e.add_argument("--split", default="test")
    e.add_argument("--dev-split", default="dev")
    e.add_argument("--dev-store", help="store of the development set (cross-dataset HTER)")
    e.add_argument("--out-dir", default="eval")
    e.add_argument("--device", default="auto")
    e.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="score an image or video with a checkpoint")
    p.add_argument("input", help="image, image folder or video")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", help="depth PNG path (default <input stem>.depth.png in the current folder)")
    p.add_argument("--detector", default="blazeface")
    p.add_argument("--landmarks", default="dlib68")
    p.add_argument("--every-n", type=int, default=1)
    p.add_argument("--max-frames", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--model-dir")
    p.set_defaults(func=cmd_predict)


def _echo(msg: str) -> None:
    from pipeline.cli import echo

    echo(msg)


def cmd_train(args) -> int:
    from .trainer import TrainConfig, train

    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        from .distributed import launch, strip_nproc

        return launch(args.nproc, strip_nproc(sys.argv[1:]))

    cfg = TrainConfig(
        store=args.store, out_dir=args.out_dir, arch=args.arch, encoder=args.encoder,
        encoder_weights=args.encoder_weights, num_classes=args.num_classes, label_size=args.label_size,
        input_size=args.input_size, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        loss=args.loss, device=args.device, seed=args.seed, num_workers=args.num_workers,
        max_steps_per_epoch=args.max_steps_per_epoch,
    )
    try:
        res = train(cfg, resume=args.resume)
    except KeyboardInterrupt:
        raise RunInterrupted(_resume_hint(Path(args.out_dir))) from None
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # rank 0 reports
    _echo(f"best checkpoint: {res.best_checkpoint}")
    _echo(f"last checkpoint: {res.last_checkpoint}")
    _echo(json.dumps(res.metrics, indent=2, default=str))
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
    from .evaluate import evaluate

    res = evaluate(args.checkpoint, args.store, split=args.split, dev_split=args.dev_split or None,
                   out_dir=args.out_dir, dev_store=args.dev_store, device=args.device)
    _echo(json.dumps(res, indent=2, default=str))
    _echo(f"outputs: {Path(args.out_dir).resolve()}")
    return 0


def cmd_predict(args) -> int:
    import cv2

    from pipeline.run.process import PreprocessConfig

    from .inference import depth_panel, predict_media
    from .trainer import load_checkpoint

    model, meta = load_checkpoint(args.checkpoint, device=args.device)
    size = int(meta.get("config", {}).get("input_size", 256))
    pcfg = PreprocessConfig(detector=args.detector, landmarks=args.landmarks, every_n=args.every_n,
                            max_frames=args.max_frames, size=max(size, 64), device=args.device,
                            model_dir=args.model_dir)
    pred = predict_media(model, meta, args.input, pcfg)
    out = Path(args.out or f"{Path(args.input).stem}.depth.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), cv2.cvtColor(depth_panel(pred), cv2.COLOR_RGB2BGR))
    _echo(f"{args.input}: score {pred.score:.4f} (threshold {pred.threshold:.4f}) -> {pred.decision.upper()}"
          f" over {len(pred.frame_scores)} face frame(s)")
    _echo(f"depth: {out}")
    return 0
