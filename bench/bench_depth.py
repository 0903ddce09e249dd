"""Benchmark of the batched depth engine (fit + z-buffer + labels) against a per-face path.

Engine: :func:`pipeline.reconstruct.depth.render_depth` on batches of 1, 64 and 512 faces, output 256 and
32 px, on CPU and (when present) CUDA.
Reference ("per-face path"): eos-py ``fit_shape_and_pose`` (C++, same model, blendshapes,
mapper, edge topology and contours) followed by rendering that one face with
:func:`pipeline.reconstruct.raster.rasterize_depth` at batch 1 and :func:`pipeline.reconstruct.depth.depth_label`.

Landmarks: dlib (HOG detector, 1 upsample; 68-point predictor from face_recognition_models)
on the shared portraits, cropped to 256 px around the box enlarged 1.3x, then jittered (random
similarity + 1 px noise) to make N faces.

Usage::

    python -m bench.bench_depth                     # CPU (+ CUDA when available)
    python -m bench.bench_depth --cpu-max-batch 64  # skip / cap the 512 batch on CPU
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.reconstruct.depth import DepthConfig, depth_label, render_depth
from pipeline.reconstruct.fit import FitConfig
from pipeline.reconstruct.raster import rasterize_depth
from pipeline.reconstruct.sfm import load_sfm

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
CROP = 256


def portrait_landmarks(folder: Path) -> np.ndarray:
    """(P, 68, 2) dlib landmarks of the portraits in ``folder``, in 256 px crop pixels."""
    import dlib
    from PIL import Image

    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("face_recognition_models is needed for dlib's 68-point predictor")
    pkg_dir = Path(list(spec.submodule_search_locations)[0])
    pred_path = pkg_dir / "models" / "shape_predictor_68_face_landmarks.dat"
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(pred_path))
    out = []
    for path in sorted(folder.glob("*.jpg")):
        with Image.open(path) as im:
            img = np.asarray(im.convert("RGB"))
        dets = detector(img, 1)
        if not dets:
            continue
        r = max(dets, key=lambda d: d.area())
        sh = predictor(img, r)
        lm = np.array([[sh.part(i).x, sh.part(i).y] for i in range(68)], np.float64)
        cx, cy = (r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2
        side = 1.3 * max(r.right() - r.left(), r.bottom() - r.top())
        out.append((lm - [cx - side / 2, cy - side / 2]) * (CROP / side))
    if not out:
        raise SystemExit(f"no faces found in {folder}")
    return np.stack(out).astype(np.float32)


def jittered(base: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` faces: base landmarks under a random similarity (scale 0.95-1.05, +-5 deg,
    +-4 px) about the crop centre plus 1 px Gaussian noise per point."""
    rng = np.random.default_rng(seed)
    pick = base[rng.integers(0, len(base), n)].astype(np.float64)
    ang = np.deg2rad(rng.uniform(-5, 5, n))
    sc = rng.uniform(0.95, 1.05, n)
    rot = np.stack([np.cos(ang), -np.sin(ang), np.sin(ang), np.cos(ang)], -1).reshape(n, 2, 2)
    c = CROP / 2
    out = (pick - c) @ (rot * sc[:, None, None]).transpose(0, 2, 1) + c
    out += rng.uniform(-4, 4, (n, 1, 2)) + rng.normal(0, 1.0, out.shape)
    return out.astype(np.float32)


class EosReference:
    """eos-py fit_shape_and_pose + per-face rasterisation (the baseline)."""

    def __init__(self, sfm_dir: Path, model_t) -> None:
        import eos

        self.eos = eos
        shape = eos.morphablemodel.load_model(str(sfm_dir / "sfm_shape_3448.bin"))
        blend = eos.morphablemodel.load_blendshapes(str(sfm_dir / "expression_blendshapes_3448.bin"))
        self.mm = eos.morphablemodel.MorphableModel(
            shape.get_shape_model(), blend, color_model=eos.morphablemodel.PcaModel(),
            vertex_definitions=None, texture_coordinates=shape.get_texture_coordinates(),
        )
        self.mapper = eos.core.LandmarkMapper(str(sfm_dir / "ibug_to_sfm.txt"))
        self.edges = eos.morphablemodel.load_edge_topology(str(sfm_dir / "sfm_3448_edge_topology.json"))
        self.contour_lms = eos.fitting.ContourLandmarks.load(str(sfm_dir / "ibug_to_sfm.txt"))
        self.model_contour = eos.fitting.ModelContour.load(str(sfm_dir / "sfm_model_contours.json"))
        self.model_t = model_t

    def mesh_pixels(self, lm: np.ndarray, size: int, crop: int = CROP) -> np.ndarray:
        """eos fit of ``(68, 2)`` landmarks in a ``crop``-pixel square: ``(V, 3)`` vertices in
        ``size``-pixel output coordinates (larger z = closer)."""
        eos = self.eos
        lms = [eos.core.Landmark(str(i + 1), [float(x), float(y)]) for i, (x, y) in enumerate(lm)]
        mesh, pose, _, _ = eos.fitting.fit_shape_and_pose(
            self.mm, lms, self.mapper, crop, crop, self.edges, self.contour_lms, self.model_contour
        )
        v = np.asarray(mesh.vertices, np.float64)
        mv, proj = np.asarray(pose.get_modelview()), np.asarray(pose.get_projection())
        cam = np.c_[v, np.ones(len(v))] @ mv.T
        clip = cam @ proj.T
        k = size / crop
        x = ((clip[:, 0] + 1) / 2 * crop + 0.5) * k - 0.5
        y = ((crop - (clip[:, 1] + 1) / 2 * crop) + 0.5) * k - 0.5
        zz = cam[:, 2] * proj[0, 0] * crop / 2 * k
        return np.stack([x, y, zz], 1)

    def depth(self, lm: np.ndarray, size: int) -> torch.Tensor:
        verts = torch.as_tensor(self.mesh_pixels(lm, size)[None], dtype=torch.float32)
        z, mask = rasterize_depth(verts, self.model_t.triangles, size)
        return depth_label(z, mask, DepthConfig(size=size))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_engine(
    model_t, lms: np.ndarray, batch: int, size: int, device: str, min_time: float
) -> tuple[float, float]:
    """(wall faces/s, process CPU ms per face) of render_depth on ``batch``-sized batches
    (at least ``min_time`` s of work)."""
    fit_cfg, depth_cfg = FitConfig(), DepthConfig(size=size)
    lm_all = torch.as_tensor(lms, device=device)
    n_batches = max(1, len(lms) // batch)
    with torch.inference_mode():
        render_depth(model_t, lm_all[:batch], CROP, fit_cfg, depth_cfg)  # warm-up
        _sync(device)
        done, t0, c0 = 0, time.perf_counter(), time.process_time()
        while True:
            s = (done // batch % n_batches) * batch
            render_depth(model_t, lm_all[s : s + batch], CROP, fit_cfg, depth_cfg)
            done += batch
            _sync(device)
            el = time.perf_counter() - t0
            if el >= min_time and done >= batch:
                return done / el, (time.process_time() - c0) * 1000 / done


def time_reference(ref: EosReference, lms: np.ndarray, size: int) -> tuple[float, float]:
    """(wall faces/s, process CPU ms per face) of the per-face path."""
    ref.depth(lms[0], size)  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    for lm in lms:
        ref.depth(lm, size)
    return len(lms) / (time.perf_counter() - t0), (time.process_time() - c0) * 1000 / len(lms)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64, 512])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 32])
    ap.add_argument("--devices", nargs="+", default=None, help="default: cpu (+ cuda if present)")
    ap.add_argument("--cpu-max-batch", type=int, default=None,
                    help="cap the batch size on CPU (e.g. 64 to skip the slow 512 run)")
    ap.add_argument("--ref-faces", type=int, default=6,
                    help="faces timed on the per-face path per round")
    ap.add_argument("--rounds", type=int, default=2,
                    help="interleaved rounds (reference, then every engine configuration)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads of the engine (default 1: same resources as the "
                    "single-threaded per-face reference; raise it on a machine that is not shared)")
    ap.add_argument("--ref-threads", type=int, default=1,
                    help="torch CPU threads while the reference runs (its eos fit is single-"
                    "threaded C++; only its per-face rendering uses torch; 1 is its fastest here)")
    ap.add_argument("--min-time", type=float, default=1.0,
                    help="seconds of work per engine figure and round")
    ap.add_argument("--shared", type=Path, default=SHARED)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    base = portrait_landmarks(args.shared / "data" / "faces")
    n_max = max(args.batches)
    lms = jittered(base, max(n_max, args.ref_faces * args.rounds))
    sfm = load_sfm(args.shared / "models")
    model_cpu = sfm.to_torch("cpu", torch.float32)
    ref = EosReference(args.shared / "models" / "sfm", model_cpu)

    print(f"torch {torch.__version__}, CPU threads: engine {args.threads}, reference {args.ref_threads}, "
          f"{len(base)} portraits -> {len(lms)} jittered faces, crop {CROP} px, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    cfgs = []
    for device in devices:
        for size in args.sizes:
            for batch in args.batches:
                if device == "cpu" and args.cpu_max_batch:
                    batch = min(batch, args.cpu_max_batch)
                if (device, size, batch) not in cfgs:
                    cfgs.append((device, size, batch))
    models = {d: (model_cpu if d == "cpu" else sfm.to_torch(d, torch.float32)) for d in devices}
    # interleave: each round times the reference and every engine configuration, so a busy
    # machine slows both alike; figures are totals over the rounds
    ref_t = {s: [0.0, 0.0, 0] for s in args.sizes}  # wall, cpu, faces
    eng_t = {c: [0.0, 0.0] for c in cfgs}  # faces/s and CPU ms/face, summed over rounds
    for r in range(args.rounds):
        for size in args.sizes:
            chunk = lms[r * args.ref_faces : (r + 1) * args.ref_faces]
            torch.set_num_threads(args.ref_threads)
            fps, cpu = time_reference(ref, chunk, size)
            torch.set_num_threads(args.threads)
            ref_t[size][0] += len(chunk) / fps
            ref_t[size][1] += cpu * len(chunk)
            ref_t[size][2] += len(chunk)
        for c in cfgs:
            device, size, b = c
            fps, cpu_ms = time_engine(models[device], lms, b, size, device, args.min_time)
            eng_t[c][0] += fps / args.rounds
            eng_t[c][1] += cpu_ms / args.rounds
    ref_fps = {s: ref_t[s][2] / ref_t[s][0] for s in args.sizes}
    ref_cpu = {s: ref_t[s][1] / ref_t[s][2] for s in args.sizes}
    for size in args.sizes:
        print(f"reference (eos fit_shape_and_pose + per-face render), {size:3d} px: "
              f"{ref_fps[size]:8.1f} faces/s wall ({1000 / ref_fps[size]:.1f} ms/face), "
              f"CPU {ref_cpu[size]:.1f} ms/face ({ref_t[size][2]} faces)")
    print(f"{'device':6s} {'batch':>5s} {'size':>4s} {'faces/s':>9s} {'ms/face':>8s} "
          f"{'CPU ms/face':>11s} {'ref faces/s':>11s} {'ratio wall':>10s} {'ratio CPU':>9s}")
    for c in cfgs:
        device, size, b = c
        fps, cpu_ms = eng_t[c]
        print(f"{device:6s} {b:5d} {size:4d} {fps:9.1f} {1000 / fps:8.2f} {cpu_ms:11.2f} "
              f"{ref_fps[size]:11.1f} {fps / ref_fps[size]:9.1f}x {ref_cpu[size] / cpu_ms:8.1f}x")
    print("ratio wall = engine faces/s / reference faces/s; ratio CPU = reference CPU ms per "
          "face / engine CPU ms per face (all threads; the reference fit is single-threaded)")
    if not math.isfinite(sum(ref_fps.values())):
        raise SystemExit("reference timing failed")


if __name__ == "__main__":
    main()
