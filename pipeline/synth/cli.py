"""``depthseg-fas synth``: write the synthetic face anti-spoofing sample set (see :mod:`pipeline.synth`).

Registered by :func:`pipeline.cli.build_parser` through :func:`register`.
"""

from __future__ import annotations

import argparse
import logging
import os
import re

from tqdm import tqdm

from pipeline.base.options import add_arguments, build
from pipeline.console import echo
from pipeline.synth.generator import generate
from pipeline.synth.plan import CLIP_NAMES, SynthConfig

log = logging.getLogger("depthseg_fas.cli.synth")


def _size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"size must look like 320x240 (width x height), got {text!r}")
    return int(m.group(1)), int(m.group(2))


def register(subparsers) -> None:
    """Add the ``synth`` sub-command to the project CLI's sub-parsers."""
    p = subparsers.add_parser(
        "synth",
        help="write a synthetic live/print/replay sample set (mp4 + manifest.csv) from real photos",
        description="Synthetic face anti-spoofing clips built from real face photographs: per "
        "identity 1 live clip (the face re-rendered from its textured 3D fit, moving), 2 print "
        "attacks and 2 replay attacks, H.264 mp4, plus manifest.csv "
        "(path,label,attack_type,subject,session,device,split) for the generic CSV adapter.",
    )
    p.add_argument("--out", required=True, help="output folder (videos + manifest.csv)")
    add_arguments(p, SynthConfig)  # flags, defaults and bounds from pipeline.synth.plan.SynthConfig
    size = (SynthConfig.width, SynthConfig.height)  # the fields' defaults
    p.add_argument("--size", type=_size, default=size,
                   help=f"frame size WIDTHxHEIGHT [default: {size[0]}x{size[1]}]")
    p.add_argument("--workers", type=int, default=None,
                   help="processes rendering identities in parallel (default: min(2, CPU count) on CPU, 1 on CUDA)")
    p.set_defaults(func=cmd_synth)


def cmd_synth(args) -> int:
    """Run the generation with a tqdm bar (one step per clip); prints the manifest path."""
    width, height = args.size
    cfg = build(SynthConfig, dict(vars(args), width=width, height=height))
    workers = args.workers
    if workers is None:
        workers = 1 if "cuda" in args.device else max(1, min(2, os.cpu_count() or 1))
    bar = tqdm(total=cfg.identities * len(CLIP_NAMES), unit="clip", desc="synth")

    def on_clip(clip, seconds: float) -> None:
        bar.set_postfix_str(f"{clip.identity.subject}/{clip.name}")
        bar.update(1)

    try:
        res = generate(cfg, args.out, workers=workers, on_clip=on_clip)
    finally:
        bar.close()
    splits: dict[str, set[str]] = {}
    for r in res.rows:
        splits.setdefault(r["split"], set()).add(r["subject"])
    echo(f"wrote {len(res.rows)} clips of {len(res.identities)} identities "
         f"({cfg.num_frames} frames, {width}x{height}, {cfg.fps:g} fps) in {res.seconds:.1f} s")
    echo("splits: " + ", ".join(f"{k} {len(splits.get(k, ()))}" for k in ("train", "dev", "test")))
    echo(f"manifest: {res.manifest}")
    return 0
