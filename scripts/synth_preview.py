#!/usr/bin/env python
"""Write a small PNG contact sheet of the synthetic sample set (``docs/synth_preview.png``).

Rows: ``live`` (four moments of the clip: the head turns), ``print`` (first / last frame of
print1 - glossy - and print2 - matte), ``replay`` (first / last frame of replay1 - tablet - and
replay2 - phone). Frames come straight from :class:`pipeline.synth.generator.SynthGenerator` (before video
encoding).

    .venv/bin/python scripts/synth_preview.py [--subject astronaut] [--seed 0] [--out docs/synth_preview.png]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pipeline.synth.generator import SynthGenerator  # noqa: E402
from pipeline.synth.plan import ClipSpec, SynthConfig  # noqa: E402


def contact_sheet(gen: SynthGenerator, subject: str, scale: float = 0.5) -> Image.Image:
    """3 rows x 4 tiles of one identity's clips, labelled."""
    ident = next((i for i in gen.identities if i.subject == subject), None)
    if ident is None:
        raise SystemExit(f"no identity {subject!r}; have {[i.subject for i in gen.identities]}")
    clips = {name: gen.render(ClipSpec(ident, name)) for name in ("live", "print1", "print2", "replay1", "replay2")}
    t = len(clips["live"]) - 1
    rows = [
        [("live", clips["live"][round(t * k / 3)], f"live t={round(t * k / 3)}") for k in range(4)],
        [(n, clips[n][i], f"{n} t={i}") for n in ("print1", "print2") for i in (0, t)],
        [(n, clips[n][i], f"{n} t={i}") for n in ("replay1", "replay2") for i in (0, t)],
    ]
    h, w = clips["live"].shape[1:3]
    tw, th = int(w * scale), int(h * scale)
    sheet = Image.new("RGB", (4 * tw, 3 * th))
    draw = ImageDraw.Draw(sheet)
    for r, row in enumerate(rows):
        for c, (_, frame, label) in enumerate(row):
            sheet.paste(Image.fromarray(frame).resize((tw, th), Image.LANCZOS), (c * tw, r * th))
            draw.rectangle([c * tw, r * th, c * tw + 6 * len(label) + 4, r * th + 12], fill=(0, 0, 0))
            draw.text((c * tw + 2, r * th), label, fill=(255, 255, 255))
    return sheet


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--subject", default="astronaut", help="identity to show (default astronaut)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--out", default=str(REPO / "docs" / "synth_preview.png"))
    args = ap.parse_args(argv)
    gen = SynthGenerator.from_config(SynthConfig(identities=3, seed=args.seed, seconds=args.seconds))
    sheet = contact_sheet(gen, args.subject)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # a 160-colour palette keeps the file small (~100 KB)
    pal = sheet.quantize(colors=160, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG)
    pal.save(out, optimize=True)
    sys.stdout.write(f"wrote {out} ({out.stat().st_size // 1024} KB)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
