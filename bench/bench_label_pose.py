"""Where the stored head pose's error comes from (issue 13): the 3D fit, or the landmarks it is given?

On generated faces (the pose grid of :mod:`bench.bench_labels`: every source identity at yaw
-45..+45 and pitch -30..+30 relative to its source photo, 15 deg steps) the landmarks of the chosen
backend are detected by the real preprocessing core, then :func:`pipeline.reconstruct.fit.fit_landmarks`
is run on:

* ``detected``: the 68 detected landmarks (what the stored labels use);
* ``true inner``: the inner points (iBUG 18-68 with a fixed SFM vertex) replaced by the true
  projections of their vertices, the detected jaw kept (contour matching as usual);
* ``true inner, no jaw``: the true inner points alone (``FitConfig(contour=False)``);
* with ``--mediapipe-3d`` also MediaPipe's own 3D points (x, y and its z) of the same inner
  landmarks aligned rigidly to the SFM mean shape (Umeyama), no fit.

Reported: median |fitted - true| yaw and pitch (degrees, the true pose being the source photo's
composed with the generated turn), their 90th percentile, and the slope of fitted on true (1 =
unbiased; below 1 = the pose is compressed towards frontal).

Then, per source photo, whether the detected landmarks follow *real* head poses or only fail on
generated turns: the photo's own pose (the generator's fit to its dlib landmarks on the full-size
photo), the pose fitted to the detected landmarks of the unturned frame (turn 0, 0: the photo
itself, re-rendered), and the slope of the fitted yaw / pitch on the generated turn. The photos'
poses are real (up to 45 deg of yaw, 20 deg of pitch), so the slope of the turn-0 fit on the photo
pose across photos says how the landmarks follow a real pose, to compare with the slope on the
generated turns.

Usage::

    python -m bench.bench_label_pose --landmarks mediapipe68 [--identities 11] [--mediapipe-3d]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from bench.bench_labels import H, W, Scene, run_case
from pipeline.face.crop import transform_points
from pipeline.face.detect import pick_face
from pipeline.face.landmarks import MEDIAPIPE_INPUT, mediapipe_crop_affine, mesh_to_ibug68
from pipeline.reconstruct.fit import FitConfig, fit_landmarks, yaw_pitch_roll
from pipeline.reconstruct.sfm import load_sfm
from pipeline.run.config import PreprocessConfig
from pipeline.run.engines import get_engines
from pipeline.synth.geometry import prepare_identity
from pipeline.synth.plan import SynthConfig, plan_identities
from pipeline.synth.sources import load_sources

POSES = tuple((y, p) for y in (-45, -30, -15, 0, 15, 30, 45) for p in (-30, -15, 0, 15, 30))


def umeyama_rotation(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Rotation ``R`` (3x3) of the least-squares similarity ``dst ~ s R src + t`` (Umeyama 1991)."""
    s0, d0 = src - src.mean(0), dst - dst.mean(0)
    u, _, vt = np.linalg.svd(d0.T @ s0)
    d = np.eye(3)
    d[2, 2] = np.sign(np.linalg.det(u @ vt))
    return u @ d @ vt


def mediapipe_3d_pose(eng, image: np.ndarray, mean_pts: np.ndarray, fixed: np.ndarray) -> tuple[float, float] | None:
    """Yaw and pitch of MediaPipe's 3D inner points aligned to the SFM mean shape's, or None."""
    boxes = eng.detector.detect(image)
    if not boxes:
        return None
    lm = eng.landmarker
    aff = mediapipe_crop_affine(pick_face(boxes), MEDIAPIPE_INPUT)
    crop = cv2.warpAffine(image, aff, (MEDIAPIPE_INPUT, MEDIAPIPE_INPUT), flags=cv2.INTER_LINEAR, borderValue=0)
    lm.interpreter.set_tensor(lm.input_index, (crop.astype(np.float32) / 255.0)[None])
    lm.interpreter.invoke()
    mesh = np.array(lm.interpreter.get_tensor(lm.points_index), dtype=np.float64).reshape(-1, 3)
    p68 = mesh_to_ibug68(mesh)  # crop px, y down, z smaller = closer
    pts = np.stack([p68[:, 0], -p68[:, 1], -p68[:, 2]], 1)[fixed]  # model axes: y up, z to the viewer
    rot = umeyama_rotation(mean_pts, pts)
    yaw, pitch, _ = yaw_pitch_roll(torch.tensor(rot[None]))
    return float(yaw[0]), float(pitch[0])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--landmarks", default=None, help="landmark backend (default: the CLI's)")
    ap.add_argument("--identities", type=int, default=11, help="source identities (default: all 11)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mediapipe-3d", action="store_true", help="also MediaPipe's own 3D points (mediapipe68 only)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = PreprocessConfig.flat(qc_drop=(), **({"landmarks": args.landmarks} if args.landmarks else {}))
    t0 = time.perf_counter()
    sfm_np = load_sfm(cfg.model_dir)
    sfm = sfm_np.to_torch("cpu", torch.float32)
    nv, lv = sfm.num_vertices, sfm_np.landmark_vertex
    fixed = np.flatnonzero(lv >= 0)
    mean_pts = sfm.mean.double().numpy()[lv[fixed]]
    scfg = SynthConfig(width=W, height=H, extra_sources=True)
    sources = {s.name: s for s in load_sources(scfg)}
    plans = plan_identities(list(sources.values()), len(sources), 0)[: args.identities]
    eng = get_engines(cfg)
    variants = {"detected": [], "true inner": [], "true inner, no jaw": []}
    if args.mediapipe_3d:
        variants["mediapipe 3D points"] = []
    truth: dict[str, list] = {k: [] for k in variants}
    by_source: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-label-pose-") as tmp, torch.inference_mode():
        for gi, p in enumerate(plans):
            prep = prepare_identity(p, sources[p.source], sfm, scfg)
            sc = Scene(prep, sfm)
            src_pose = [float(a[0]) for a in yaw_pitch_roll(prep.fit.rotation[None])][:2]
            per_turn = []
            shots = [sc.shot("pose", y, pt) for y, pt in POSES]
            part, _ = run_case(shots, cfg, eng, Path(tmp) / f"g{gi}")
            if part is None:
                continue
            for j, i in enumerate(np.asarray(part.meta["frame_index"])):
                det = transform_points(part.affine[j], part.landmarks[j])  # crop px, as the stage fits
                true_v = transform_points(part.affine[j], shots[i].verts[:nv, :2])
                inner = det.copy()
                inner[fixed] = true_v[lv[fixed]]
                for name, lm, fcfg in (("detected", det, FitConfig()), ("true inner", inner, FitConfig()),
                                       ("true inner, no jaw", inner, FitConfig(contour=False))):
                    r = fit_landmarks(sfm, torch.tensor(lm[None], dtype=torch.float32), fcfg)
                    variants[name].append((float(r.yaw[0]), float(r.pitch[0])))
                    truth[name].append(shots[i].pose[:2])
                    if name == "detected":
                        per_turn.append((POSES[i], variants[name][-1]))
                if args.mediapipe_3d:
                    got = mediapipe_3d_pose(eng, shots[i].image, mean_pts, fixed)
                    if got is not None:
                        variants["mediapipe 3D points"].append(got)
                        truth["mediapipe 3D points"].append(shots[i].pose[:2])
            by_source.append({"subject": p.subject, "source": src_pose, "turns": per_turn})
            print(f"  {p.subject}: {len(part.meta['frame_index'])} of {len(shots)} frames stored", flush=True)
    print(f"\nhead pose error on the pose grid (yaw -45..45, pitch -30..30 from the source pose), "
          f"landmarks {cfg.detect.landmarks}, {len(plans)} identities, {time.perf_counter() - t0:.0f} s")
    print(f"{'landmarks given to the fit':28s} {'n':>4s} {'dyaw':>6s} {'dpitch':>7s} {'p90 dpitch':>11s} "
          f"{'yaw slope':>10s} {'pitch slope':>12s}")
    for name, est in variants.items():
        e, t = np.array(est), np.array(truth[name])
        err = np.abs(e - t)
        print(f"{name:28s} {len(e):4d} {np.median(err[:, 0]):6.2f} {np.median(err[:, 1]):7.2f} "
              f"{np.percentile(err[:, 1], 90):11.2f} {np.polyfit(t[:, 0], e[:, 0], 1)[0]:10.2f} "
              f"{np.polyfit(t[:, 1], e[:, 1], 1)[0]:12.2f}")
    print(source_table(by_source))


def turn_slopes(turns: list) -> tuple[float, float]:
    """Slopes of the fitted yaw and pitch on the generated turn (NaN with fewer than 3 turns)."""
    if len(turns) < 3:
        return float("nan"), float("nan")
    d = np.array([t for t, _ in turns], np.float64)
    f = np.array([e for _, e in turns], np.float64)
    return tuple(float(np.polyfit(d[:, k], f[:, k], 1)[0]) if np.ptp(d[:, k]) > 0 else float("nan")
                 for k in (0, 1))


def source_table(by_source: list[dict]) -> str:
    """Per source photo: its pose, the fitted pose of its unturned frame, the slopes on the turn;
    then the slope of the unturned frames' fit on the photos' poses (real poses) against the
    median slope on the generated turns."""
    lines = ["", "per source photo: real pose (fit to dlib landmarks on the photo), fitted pose of the "
             "unturned frame (detected landmarks), slope of the fitted pose on the generated turn",
             f"{'photo':12s} {'photo yaw':>9s} {'pitch':>6s} {'turn 0 yaw':>10s} {'pitch':>6s} "
             f"{'yaw slope':>9s} {'pitch slope':>11s}"]
    real, fit0, slopes = [], [], []
    for row in by_source:
        zero = [e for t, e in row["turns"] if tuple(t) == (0, 0)]
        sy, sp = turn_slopes(row["turns"])
        slopes.append((sy, sp))
        z = zero[0] if zero else (float("nan"), float("nan"))
        if zero:
            real.append(row["source"])
            fit0.append(z)
        lines.append(f"{row['subject']:12s} {row['source'][0]:9.1f} {row['source'][1]:6.1f} {z[0]:10.1f} "
                     f"{z[1]:6.1f} {sy:9.2f} {sp:11.2f}")
    if len(real) >= 3:
        r, f = np.array(real), np.array(fit0)
        sl = np.array(slopes)
        lines.append(f"real poses (turn 0 fit on photo pose, {len(r)} photos): yaw slope "
                     f"{np.polyfit(r[:, 0], f[:, 0], 1)[0]:.2f}, pitch slope {np.polyfit(r[:, 1], f[:, 1], 1)[0]:.2f}, "
                     f"median |difference| yaw {np.median(np.abs(f[:, 0] - r[:, 0])):.1f}, "
                     f"pitch {np.median(np.abs(f[:, 1] - r[:, 1])):.1f} deg; generated turns: median slope "
                     f"yaw {np.nanmedian(sl[:, 0]):.2f}, pitch {np.nanmedian(sl[:, 1]):.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
