"""Face choice, small faces, no-face frames and pose QC, measured through the real preprocessing core.

Frames with known truth are rendered from the synthetic set's identities (:mod:`pipeline.synth`):

* ``yaw±N``  - the identity's textured 3D fit turned to yaw N (-90..90 in 15 degree steps), in its
  own 320x240 scene upscaled to 640x360 (face ~120 px tall);
* ``small``  - the frontal face shrunk to 40-60 px (face mesh height) pasted at a random place of a
  640x360 synthetic room;
* ``hand``   - the frontal face beside a larger skin-coloured hand-like blob;
* ``noise`` / ``texture`` - no face at all: uniform noise, and smoothed noise textures.

Each case is written as a folder of PNG frames (one work item) and run through
``pipeline.run.stages.iter_part_chunks`` (decode -> detect -> pick -> landmarks -> crop -> fit ->
QC) with the default ``PreprocessConfig``. Per case it prints: frames, detected (a face box whose
centre lies in the true face box), kept (stored with no QC flag), flagged, stored; for no-face
clips, stored frames per 1,000.

    python bench/bench_detect.py [--identities 3] [--noise-frames 200] [--out /tmp/bench_detect]

Also runs on an older checkout (``PYTHONPATH=/work/main python bench/bench_detect.py``): only the
public core (``PreprocessConfig``, ``iter_part_chunks``, ``get_engines``) is used.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

W, H = 640, 360


def render_pose(prep, sfm, yaw_deg: float, pitch_deg: float = 0.0):
    """The identity of ``prep`` turned to ``yaw_deg`` / ``pitch_deg``, over its own background:
    ``(image (h, w, 3) uint8, face mask (h, w) bool)`` at the synth config's frame size."""
    from pipeline.reconstruct.raster import interpolate, rasterize
    from pipeline.synth.geometry import HOLE_DEPTH, rotation_matrix, sample_image
    from pipeline.synth.plan import MARGIN

    cfg, fit, dev = prep.cfg, prep.fit, prep.canvas.device
    deg = math.pi / 180
    r_d = rotation_matrix(torch.tensor([yaw_deg * deg]), torch.tensor([pitch_deg * deg]), torch.tensor([0.0]))
    verts = prep.topo.extend((prep.shape + sfm.blendshapes @ prep.expr0)[None],
                             torch.tensor([0.0, 0.0, -HOLE_DEPTH], device=dev))
    pivot = fit.rotation @ torch.tensor([0.0, -30.0, -95.0], device=dev)
    cam = (verts @ fit.rotation.T - pivot) @ r_d.transpose(1, 2) + pivot
    xyz = torch.stack([fit.scale * cam[..., 0] + fit.t[0] - MARGIN, -fit.scale * cam[..., 1] + fit.t[1] - MARGIN,
                       fit.scale * cam[..., 2]], -1)
    h, w = cfg.height, cfg.width
    ras = rasterize(xyz, prep.topo.triangles, h, w, front=prep.front)
    st = interpolate(ras, prep.topo.triangles, torch.cat([prep.uv, prep.topo.edge_alpha], 1))
    col = sample_image(prep.canvas, st[:, :2])
    out = prep.background[:, MARGIN:MARGIN + h, MARGIN:MARGIN + w].clone().reshape(3, -1)
    pix = ras.pix % (h * w)
    out[:, pix] = out[:, pix] + st[:, 2] * (col.T - out[:, pix])
    img = (out.reshape(3, h, w).permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()
    return img, ras.mask()[0].cpu().numpy().astype(bool)


def mask_box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)


def room(rng: np.random.Generator) -> np.ndarray:
    from pipeline.synth.attacks import synthetic_room

    r = synthetic_room(rng, H, W)
    return np.ascontiguousarray((r.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())


def texture(rng: np.random.Generator) -> np.ndarray:
    cell = int(rng.integers(4, 40))
    small = rng.integers(0, 256, (H // cell + 2, W // cell + 2, 3), dtype=np.uint8)
    return np.ascontiguousarray(cv2.resize(small, (W + 2 * cell, H + 2 * cell), interpolation=cv2.INTER_CUBIC)[:H, :W])


def hand_blob(img: np.ndarray, rng: np.random.Generator, face_box: np.ndarray) -> None:
    """A skin-coloured palm with five fingers, larger than the face, beside it (in place)."""
    fw = face_box[2] - face_box[0]
    side = 1 if face_box[0] < W / 2 else -1
    cx = int(np.clip((face_box[0] + face_box[2]) / 2 + side * 1.6 * fw, 0.3 * fw, W - 0.3 * fw))
    cy = int((face_box[1] + face_box[3]) / 2 + 0.1 * fw)
    colour = tuple(int(c) for c in rng.integers([170, 110, 80], [230, 160, 130]))
    r = int(0.75 * fw)
    cv2.ellipse(img, (cx, cy), (r, int(1.1 * r)), 0, 0, 360, colour, -1)
    for k in range(5):
        ang = math.radians(-150 + 30 * k)
        x1, y1 = int(cx + 2.0 * r * math.cos(ang)), int(cy + 2.0 * r * math.sin(ang))
        cv2.line(img, (cx, cy), (x1, y1), colour, max(3, r // 3))
    img[:] = cv2.GaussianBlur(img, (0, 0), 1.0)


def make_cases(identities: int, noise_frames: int, seed: int = 0) -> dict[str, list[tuple[np.ndarray, np.ndarray | None]]]:
    """case name -> list of (frame, true face box or None)."""
    from pipeline.synth.generator import SynthGenerator
    from pipeline.synth.plan import SynthConfig

    rng = np.random.default_rng(seed)
    gen = SynthGenerator.from_config(SynthConfig(identities=identities, seed=seed, width=320, height=240,
                                                 extra_sources=True))
    cases: dict[str, list] = {}
    for ident in gen.identities[:identities]:
        prep = gen.prepare(ident)
        with torch.inference_mode():
            for yaw in range(-90, 91, 15):
                img, mask = render_pose(prep, gen.sfm, yaw, float(rng.uniform(-5, 5)))
                # 320x240 -> 640x360: scale 1.5, centre crop of the 480-wide result
                big = cv2.resize(img, (480, 360), interpolation=cv2.INTER_LINEAR)
                frame = np.zeros((H, W, 3), np.uint8)
                frame[:, 80:560] = big
                frame[:, :80] = big[:, :1]
                frame[:, 560:] = big[:, -1:]
                box = mask_box(mask) * 1.5 + np.array([80, 0, 80, 0])
                cases.setdefault(f"yaw{yaw:+d}", []).append((frame, box))
            img, mask = render_pose(prep, gen.sfm, 0.0)
        box0 = mask_box(mask)
        for k in range(8):  # small faces: mesh height 40..60 px
            target = 40 + 20 * k / 7
            s = target / (box0[3] - box0[1])
            small = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
            frame = room(rng)
            hh, ww = small.shape[:2]
            x, y = int(rng.integers(0, W - ww)), int(rng.integers(0, H - hh))
            frame[y:y + hh, x:x + ww] = small
            cases.setdefault("small40-60", []).append((frame, box0 * s + np.array([x, y, x, y])))
        for k in range(4):  # a hand-like blob larger than the face beside it
            s = float(rng.uniform(0.55, 0.7))
            face = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
            frame = room(rng)
            hh, ww = face.shape[:2]
            x = int(rng.integers(0, 60)) if k % 2 == 0 else W - ww - int(rng.integers(0, 60))
            y = int(rng.integers(0, H - hh))
            frame[y:y + hh, x:x + ww] = face
            box = box0 * s + np.array([x, y, x, y])
            hand_blob(frame, rng, box)
            cases.setdefault("hand", []).append((frame, box))
        gen.release()
    cases["noise"] = [(rng.integers(0, 256, (H, W, 3), dtype=np.uint8), None) for _ in range(noise_frames)]
    cases["texture"] = [(texture(rng), None) for _ in range(noise_frames)]
    return cases


def run_case(name: str, frames: list, out: Path, cfg, eng) -> dict:
    from pipeline.io.items import WorkItem
    from pipeline.run.stages import FrameCounts, iter_part_chunks
    from pipeline.run.timing import StageTimer

    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    for i, (img, _) in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:05d}.png"), img[..., ::-1])
    counts = FrameCounts()
    stored = {}
    for chunk in iter_part_chunks(WorkItem(path=str(folder), label="live"), cfg, eng, StageTimer(), counts):
        names = [Path(s).name for s in chunk.meta["source"]]
        for j, nm in enumerate(names):
            stored[int(nm.split(".")[0])] = (chunk.bbox[j], int(chunk.qc["qc_flags"][j]))
    from collections import Counter

    from pipeline.face.qc import describe_flags

    n = len(frames)
    why = Counter(name for _, f in stored.values() for name in describe_flags(f))
    hit = kept = flagged = 0
    for i, (_, box) in enumerate(frames):
        if i not in stored or box is None:
            continue
        b, flags = stored[i]
        cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        if box[0] <= cx <= box[2] and box[1] <= cy <= box[3]:
            hit += 1
            kept += flags == 0
            flagged += flags != 0
    return {"case": name, "frames": n, "stored": len(stored), "detected": hit, "kept": kept, "flagged": flagged,
            "no_face": counts.no_face, "dropped_qc": counts.dropped_qc,
            "flags": dict(why.most_common())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--identities", type=int, default=3)
    ap.add_argument("--noise-frames", type=int, default=200)
    ap.add_argument("--out", default=None, help="folder for the frames (default: a temporary one)")
    ap.add_argument("--json", default=None, help="write the rows here too")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from pipeline.run.config import PreprocessConfig
    from pipeline.run.engines import get_engines

    cfg = PreprocessConfig()
    eng = get_engines(cfg)
    t0 = time.perf_counter()
    cases = make_cases(args.identities, args.noise_frames)
    t_render = time.perf_counter() - t0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        for name, frames in cases.items():
            rows.append(run_case(name, frames, out, cfg, eng))
    print(f"rendered in {t_render:.0f} s; detector {cfg.detect.detector}, landmarks {cfg.detect.landmarks}")
    print(f"{'case':<12}{'frames':>7}{'detected':>10}{'kept':>7}{'flagged':>8}{'stored':>7}  flags of stored frames")
    for r in rows:
        note = ", ".join(f"{k} {v}" for k, v in r["flags"].items())
        if r["case"] in ("noise", "texture"):
            note = f"{1000 * r['stored'] / r['frames']:.1f} stored per 1,000"
        print(f"{r['case']:<12}{r['frames']:>7}{r['detected'] / r['frames']:>10.0%}{r['kept'] / r['frames']:>7.0%}"
              f"{r['flagged'] / r['frames']:>8.0%}{r['stored']:>7}  {note}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
