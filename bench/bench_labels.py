"""Ground-truth benchmark of the depth labels (issue 13): how good are the stored labels, and does
the QC catch the bad ones?

Frames whose true depth is known come from the synthetic renderer's pieces
(:func:`pipeline.synth.geometry.prepare_identity`: the SFM fitted to a real photo, textured by
it): every source identity posed at yaw -90..+90 deg (15 deg steps) and pitch -30..+30 deg,
the six SFM expressions at full strength (surprise = open mouth), faces from 40 px (landmark
extent, eyebrows to chin) to the full frame height in 640x360 frames, faces cut by the frame
border, a hand-like occluder (a skin-coloured palm and four fingers drawn over the face; its
pixels are not face in the ground truth), and no-face frames (noise, scikit-image textures and
photos, and its cat photo ``chelsea`` as the animal face: the synthetic renderer cannot make an
animal). The mouth of the synthetic face is closed by the renderer's hole fan set back 4 mm, so
the true depth has no hole there.

Each case is written as a folder of PNG frames and run through the real preprocessing core,
:func:`pipeline.run.stages.process_item` (what ``preprocess_unit`` / the CLI run per item), with
the default configuration except that QC drops nothing (``qc.drop = ()``), so that the frames the
default configuration would drop are measured too ("kept" applies the default drop rule).

Per stored frame the true mesh is mapped into the crop by the stored affine and rendered by
:func:`pipeline.reconstruct.raster.rasterize_depth`; the true mask is that coverage minus the
occluder and minus anything outside the source frame; the true depth is that z normalised by
the label rule (:func:`pipeline.reconstruct.depth.depth_label`). Reported per case and per yaw
bin: detection rate, kept rate, median mask IoU, median mean |depth difference| on the union of
the two masks, and QC precision / recall, where a label is *bad* if IoU < 0.8 or mean |d| > 0.1
(a stored no-face frame is always bad) and *caught* if it has any QC flag or is dropped, and
the median error of the stored head pose (``dyaw``, ``dpit``: |fitted - true| yaw and pitch in
degrees): at moderate yaw the label's depth error follows the pose error (a head fitted 10 deg
less turned than it is tilts the whole depth map), so this column says where |d| comes from.
The row ``turn 0 (the photo)`` holds the unturned frames: the source photo itself at its real
pose, its "true" depth the SFM fitted to dlib's landmarks on the full-size photo, so there the
label is compared with an independent landmark model's fit rather than with a generated turn.

Independent check: the synthetic frames share the face model and rasteriser with the labels, so
on a subset of frames eos-py's ``fit_shape_and_pose`` is run on the stored landmarks and its
mesh rendered by a plain per-triangle numpy z-buffer (:func:`numpy_zbuffer`); label vs eos and
truth vs eos are printed.

Usage::

    python -m bench.bench_labels --quick   # 2 identities, fewer poses and cases: a few minutes on 2 cores
    python -m bench.bench_labels           # every identity, every pose
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import skimage.data
import torch

from pipeline.base.errors import NoFaceDetected
from pipeline.io.items import WorkItem
from pipeline.reconstruct.depth import depth_label
from pipeline.reconstruct.fit import yaw_pitch_roll
from pipeline.reconstruct.raster import interpolate, rasterize, rasterize_depth
from pipeline.reconstruct.sfm import load_sfm
from pipeline.run.config import PreprocessConfig
from pipeline.run.engines import get_engines
from pipeline.run.stages import process_item
from pipeline.synth.geometry import HOLE_DEPTH, prepare_identity, rotation_matrix, sample_image
from pipeline.synth.plan import SynthConfig, plan_identities
from pipeline.synth.sources import load_sources

W, H = 640, 360
YAWS = tuple(range(-90, 91, 15))
#: SFM blendshape order
EXPRESSIONS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise")
_PIVOT = (0.0, -30.0, -95.0)  # head rotation pivot, model mm (as pipeline.synth.live)


@dataclass
class Shot:
    """One rendered frame: image, true mesh in frame pixels (None: no face), occluder mask, the
    yaw asked for (relative to the source photo's pose) and the true head pose (yaw, pitch, roll
    in degrees, the convention of the stored QC columns: the source's pose composed with it)."""

    case: str
    image: np.ndarray
    verts: np.ndarray | None = None
    occluder: np.ndarray | None = None
    yaw: float = 0.0
    pose: tuple[float, float, float] | None = None
    pitch: float = 0.0  # the pitch asked for (relative to the source photo's pose)


@dataclass
class Row:
    n: int = 0
    detected: int = 0
    kept: int = 0
    iou: list = field(default_factory=list)
    delta: list = field(default_factory=list)
    dyaw: list = field(default_factory=list)
    dpitch: list = field(default_factory=list)
    bad: int = 0
    caught: int = 0
    bad_caught: int = 0


class Scene:
    """One identity posed freely in a 640x360 frame."""

    def __init__(self, prep, sfm):
        self.prep, self.sfm = prep, sfm
        fit = prep.fit
        self.rest = torch.stack([prep.uv[: sfm.num_vertices, 0].mean(), prep.uv[: sfm.num_vertices, 1].mean()])
        self.pivot = fit.rotation @ torch.tensor(_PIVOT)

    def shot(self, case: str, yaw=0.0, pitch=0.0, expr=None, face_px=None, centre=None) -> Shot:
        """The face at that pose / expression, landmark extent ``face_px`` (default: as prepared),
        its rest centre at ``centre`` (default: the frame centre), over its own background moved
        by the same similarity."""
        p, sfm, fit = self.prep, self.sfm, self.prep.fit
        e = p.expr0 if expr is None else torch.as_tensor(expr, dtype=torch.float32)
        v = p.topo.extend((p.shape + sfm.blendshapes @ e)[None], torch.tensor([0.0, 0.0, -HOLE_DEPTH]))[0]
        deg = math.pi / 180
        r = rotation_matrix(*(torch.tensor([a * deg]) for a in (yaw, pitch, 0.0)))[0]
        cam = (v @ fit.rotation.T - self.pivot) @ r.T + self.pivot
        xyz = torch.stack([fit.scale * cam[:, 0] + fit.t[0], -fit.scale * cam[:, 1] + fit.t[1],
                           fit.scale * cam[:, 2]], -1)
        k = (face_px or p.face_px) / p.face_px
        c = torch.tensor(centre if centre is not None else (W / 2, H / 2), dtype=torch.float32)
        verts = torch.cat([(xyz[:, :2] - self.rest) * k + c, xyz[:, 2:] * k], -1)
        ras = rasterize(verts[None], p.topo.triangles, H, W, front=p.front)
        st = interpolate(ras, p.topo.triangles, torch.cat([p.uv, p.topo.edge_alpha], 1))
        col = sample_image(p.canvas, st[:, :2])
        m = np.array([[k, 0, c[0] - k * self.rest[0]], [0, k, c[1] - k * self.rest[1]]], np.float32)
        bg = cv2.warpAffine(p.background.permute(1, 2, 0).numpy(), m, (W, H), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REFLECT_101)
        out = torch.from_numpy(bg).permute(2, 0, 1).reshape(3, H * W).clone()
        cur = out[:, ras.pix]
        out[:, ras.pix] = cur + st[:, 2] * (col.T - cur)
        img = (out.reshape(3, H, W).permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        pose = tuple(float(a[0]) for a in yaw_pitch_roll((r @ fit.rotation)[None]))
        return Shot(case, np.ascontiguousarray(img), verts.numpy().astype(np.float64), yaw=yaw, pose=pose, pitch=pitch)


def hand_mask(centre, size: float, angle: float) -> np.ndarray:
    """``(H, W)`` bool hand-like shape: a palm ellipse and four fingers, ``size`` px long."""
    m = np.zeros((H, W), np.uint8)
    c = np.asarray(centre, np.float64)
    d = np.array([math.cos(angle), math.sin(angle)])  # palm -> finger tips
    n = np.array([-d[1], d[0]])
    cv2.ellipse(m, tuple(int(v) for v in c), (int(0.3 * size), int(0.24 * size)),
                math.degrees(angle), 0, 360, 1, -1)
    for j, off in enumerate((-0.18, -0.06, 0.06, 0.18)):
        base = c + d * 0.2 * size + n * off * size
        tip = base + d * (0.45 + 0.08 * (j in (1, 2))) * size
        cv2.line(m, tuple(int(v) for v in base), tuple(int(v) for v in tip), 1, max(2, int(0.09 * size)))
    return m.astype(bool)


def occlude(shot: Shot, mask: np.ndarray, rng: np.random.Generator) -> Shot:
    skin = np.array([205, 150, 120]) * rng.uniform(0.8, 1.1)
    shade = cv2.GaussianBlur(rng.normal(0, 12, (H, W)), (0, 0), 6)[..., None]
    img = shot.image.copy()
    img[mask] = np.clip(skin + shade, 0, 255)[mask].astype(np.uint8)
    return replace(shot, case="occluder", image=img, occluder=mask)


def face_shots(scenes: list[Scene], quick: bool, rng: np.random.Generator) -> list[Shot]:
    shots = []
    pitches = (0,) if quick else (-30, -15, 0, 15, 30)
    for sc in scenes:
        for yaw in YAWS:
            shots += [sc.shot("pose", yaw, p) for p in pitches]
        shots += [sc.shot("pitch+-30", 0, p) for p in (-30, 30)] if quick else []
        for j, name in enumerate(EXPRESSIONS):
            if quick and name not in ("happiness", "surprise"):
                continue
            e = np.zeros(len(EXPRESSIONS))
            e[j] = 1.0
            shots.append(sc.shot("open mouth" if name == "surprise" else "expression", expr=e))
        for fp in (40, 50, 60) if quick else (40, 45, 50, 55, 60):
            shots.append(sc.shot("size 40-60", face_px=fp, centre=rng.uniform([60, 60], [W - 60, H - 60])))
        for fp in (220,) if quick else (90, 220, 360):
            shots.append(sc.shot(f"size {fp}", face_px=fp, centre=(rng.uniform(W / 2 - 50, W / 2 + 50), H / 2)))
        fp = sc.prep.face_px
        for cx, cy in ((0.12 * fp, H / 2), (W - 0.12 * fp, H / 2), (W / 2, 0.15 * fp), (W / 2, H - 0.3 * fp)):
            shots.append(sc.shot("border cut", centre=(cx, cy)))
        for ang, off in ((-2.2, (0.25, 0.45)), (-0.9, (-0.35, 0.3))):
            s = sc.shot("occluder")
            c = np.array([W / 2, H / 2]) + np.array(off) * fp
            shots.append(occlude(s, hand_mask(c, 0.9 * fp, ang), rng))
    return shots


def noface_shots(n: int, rng: np.random.Generator) -> list[Shot]:
    """``n`` frames of each kind: noise, textures and photos without a person, the cat."""
    pics = {"texture": [np.dstack([getattr(skimage.data, k)()] * 3) for k in ("brick", "grass", "gravel")]
            + [skimage.data.coffee(), skimage.data.rocket()], "cat (animal face)": [skimage.data.chelsea()]}
    shots = []
    for i in range(n):
        img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        if i % 2:
            img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(1, 4)))
        shots.append(Shot("no face: noise", img))
        for case, srcs in pics.items():
            src = srcs[i % len(srcs)]
            k = float(rng.uniform(1.0, 1.6)) * max(W / src.shape[1], H / src.shape[0])
            m = np.array([[k, 0, rng.uniform(W - k * src.shape[1], 0)], [0, k, rng.uniform(H - k * src.shape[0], 0)]])
            if i % 2:
                m[0] = [-k, 0, W - 1 - m[0, 2]]
            shots.append(Shot(f"no face: {case}", cv2.warpAffine(src, m, (W, H), borderMode=cv2.BORDER_REFLECT_101)))
    return shots


def run_case(shots: list[Shot], cfg: PreprocessConfig, eng, folder: Path):
    """Write the frames as PNGs and run the real preprocessing core on the folder.

    Returns the stored part (None if nothing was stored) and the seconds taken."""
    folder.mkdir(parents=True)
    for i, s in enumerate(shots):
        cv2.imwrite(str(folder / f"{i:05d}.png"), cv2.cvtColor(s.image, cv2.COLOR_RGB2BGR))
    t0 = time.perf_counter()
    try:
        part, _ = process_item(WorkItem(str(folder)), cfg, eng)
    except NoFaceDetected:  # nothing stored
        part = None
    return part, time.perf_counter() - t0


def warp_mask(mask: np.ndarray, affine: np.ndarray, size: int) -> np.ndarray:
    return cv2.warpAffine(mask.astype(np.uint8), affine.astype(np.float64), (size, size),
                          flags=cv2.INTER_NEAREST, borderValue=0).astype(bool)


def truth(shots: list[Shot], affine: np.ndarray, tris: torch.Tensor, cfg: PreprocessConfig):
    """True ``(mask, depth)`` ``(N, S, S)`` in the stored crops (all-False for no-face shots)."""
    s = cfg.crop.size
    n = len(shots)
    mask, z = np.zeros((n, s, s), bool), np.zeros((n, s, s), np.float32)
    idx = [i for i, sh in enumerate(shots) if sh.verts is not None]
    if idx:
        v = np.stack([shots[i].verts for i in idx])
        a = affine[idx].astype(np.float64)
        xy = np.einsum("bij,bvj->bvi", a[:, :, :2], v[..., :2]) + a[:, None, :, 2]
        k = np.sqrt(np.abs(np.linalg.det(a[:, :, :2])))[:, None, None]
        verts = torch.as_tensor(np.concatenate([xy, v[..., 2:] * k], -1), dtype=torch.float32)
        zz, mm = rasterize_depth(verts, tris, s)
        z[idx], mask[idx] = zz.numpy(), mm.numpy()
    inside = np.ones((H, W), bool)
    for i, sh in enumerate(shots):
        if sh.verts is not None:
            mask[i] &= warp_mask(inside, affine[i], s)
            if sh.occluder is not None:
                mask[i] &= ~warp_mask(sh.occluder, affine[i], s)
    depth = depth_label(torch.from_numpy(z), torch.from_numpy(mask), cfg.depth).numpy()
    return mask, depth


def frame_errors(label: np.ndarray, gt_mask: np.ndarray, gt_depth: np.ndarray, affine: np.ndarray):
    """Per frame: IoU, mean |d| on the union, hole fraction (zero depth enclosed by the label
    mask, % of it) and label pixels outside the source frame (% of the label mask)."""
    from scipy.ndimage import binary_fill_holes

    d = label.astype(np.float32) / 255.0
    lm = label > 0
    inter = (lm & gt_mask).sum((1, 2))
    union = (lm | gt_mask).sum((1, 2))
    iou = inter / np.maximum(union, 1)
    delta = np.abs(d - gt_depth).sum((1, 2)) / np.maximum(union, 1)
    area = np.maximum(lm.sum((1, 2)), 1)
    holes = np.array([(binary_fill_holes(m) & ~m).sum() for m in lm]) / area
    inside = np.ones((H, W), bool)
    out = np.array([(m & ~warp_mask(inside, a, m.shape[0])).sum() for m, a in zip(lm, affine)]) / area
    return iou, delta, 100 * holes, 100 * out


def accumulate(rows: dict, keys: list[str], shot_ok: bool, stored: bool, kept: bool, err, flagged: bool,
               pose_err=None) -> None:
    """Add one frame to the rows named ``keys``; ``err`` = (iou, delta) when stored, ``pose_err``
    = (|yaw error|, |pitch error|) of the stored pose when the shot has a face."""
    for k in keys:
        r = rows.setdefault(k, Row())
        r.n += 1
        if not stored:
            continue
        r.detected += 1
        r.kept += kept
        bad = not shot_ok or err[0] < 0.8 or err[1] > 0.1
        caught = flagged or not kept
        if shot_ok:
            r.iou.append(err[0])
            r.delta.append(err[1])
        if pose_err is not None:
            r.dyaw.append(pose_err[0])
            r.dpitch.append(pose_err[1])
        r.bad += bad
        r.caught += caught
        r.bad_caught += bad and caught


def evaluate(groups: dict[str, list[Shot]], cfg: PreprocessConfig, tris, work: Path, rows: dict,
             eos_pool: list, records: list | None = None) -> dict:
    """Run each group through the pipeline and fill ``rows``; returns geometry extras per case.
    ``records``: one dict per frame is appended (case, true pose, stored, IoU, |d|, and every
    stored QC column), for tuning QC thresholds offline (``--dump``)."""
    eng = get_engines(cfg)
    drop = PreprocessConfig().qc.drop_mask()
    extras: dict[str, list] = {}
    for gi, (name, shots) in enumerate(groups.items()):
        part, secs = run_case(shots, cfg, eng, work / f"g{gi:03d}")
        by_frame = {}
        if part is not None:
            fi = np.asarray(part.meta["frame_index"])
            mask, depth = truth([shots[i] for i in fi], part.affine, tris, cfg)
            iou, delta, holes, out = frame_errors(part.depth, mask, depth, part.affine)
            flags = np.asarray(part.qc["qc_flags"]).astype(int)
            fitted = np.stack([np.asarray(part.qc[k], np.float64) for k in ("yaw", "pitch")], 1)
            qc_cols = {k: np.asarray(v) for k, v in part.qc.items()}
            for j, i in enumerate(fi):
                by_frame[int(i)] = (iou[j], delta[j], int(flags[j]), fitted[j],
                                    {k: v[j].item() for k, v in qc_cols.items()})
                ex = extras.setdefault(shots[i].case, [])
                ex.append((holes[j], out[j]))
                if shots[i].verts is not None and abs(shots[i].yaw) <= 30 and shots[i].case == "pose":
                    eos_pool.append((part.landmarks[j], part.affine[j], part.depth[j], mask[j], depth[j]))
        for i, sh in enumerate(shots):
            keys = [sh.case] + ([f"yaw {sh.yaw:+.0f}"] if sh.case == "pose" else [])
            if sh.case == "pose" and sh.yaw == 0 and sh.pitch == 0:
                keys.append("turn 0 (the photo)")
            keys.append("all faces" if sh.verts is not None else "all no-face")
            keys.append("all")
            got = by_frame.get(i)
            pose_err = None
            if got is not None and sh.pose is not None:
                pose_err = tuple(abs(float(f) - t) for f, t in zip(got[3], sh.pose[:2]))
            accumulate(rows, keys, sh.verts is not None, got is not None,
                       got is not None and (got[2] & drop) == 0, got[:2] if got else None,
                       got is not None and got[2] != 0, pose_err)
            if records is not None:
                records.append({"group": name, "case": sh.case, "yaw_asked": sh.yaw, "pitch_asked": sh.pitch, "true_pose": sh.pose,
                                "face": sh.verts is not None, "stored": got is not None,
                                "iou": None if got is None else float(got[0]),
                                "delta": None if got is None else float(got[1]),
                                "qc": None if got is None else got[4]})
        print(f"  {name}: {len(shots)} frames, {len(by_frame)} stored, {secs:.1f} s", flush=True)
    return extras


def table(rows: dict, extras: dict) -> str:
    def med(x):
        return f"{np.median(x):.3f}" if x else "   - "

    def med1(x):
        return f"{np.median(x):5.1f}" if x else "   - "

    def pct(a, b):
        return f"{100 * a / b:5.1f}" if b else "   - "

    head = (f"{'case':22s} {'n':>5s} {'det%':>5s} {'kept%':>5s} {'IoU':>6s} {'|d|':>6s} {'bad':>4s} "
            f"{'QC P%':>5s} {'QC R%':>5s} {'hole%':>6s} {'out%':>6s} {'dyaw':>5s} {'dpit':>5s}")
    lines = [head, "-" * len(head)]
    for k, r in rows.items():
        ex = extras.get(k, [])
        hole = f"{np.mean([e[0] for e in ex]):6.2f}" if ex else "    - "
        out = f"{np.mean([e[1] for e in ex]):6.2f}" if ex else "    - "
        lines.append(f"{k:22s} {r.n:5d} {pct(r.detected, r.n)} {pct(r.kept, r.n)} {med(r.iou):>6s} "
                     f"{med(r.delta):>6s} {r.bad:4d} {pct(r.bad_caught, r.caught)} {pct(r.bad_caught, r.bad)} "
                     f"{hole} {out} {med1(r.dyaw):>5s} {med1(r.dpitch):>5s}")
    return "\n".join(lines)


def numpy_zbuffer(verts: np.ndarray, tris: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A plain per-triangle z-buffer (bounding box, barycentrics at pixel centres, nearest z
    wins), independent of :mod:`pipeline.reconstruct.raster`: ``(z, mask)`` ``(S, S)``."""
    z = np.full((size, size), -np.inf)
    for t in tris:
        p = verts[t]
        x0, x1 = max(int(np.ceil(p[:, 0].min())), 0), min(int(np.floor(p[:, 0].max())), size - 1)
        y0, y1 = max(int(np.ceil(p[:, 1].min())), 0), min(int(np.floor(p[:, 1].max())), size - 1)
        if x1 < x0 or y1 < y0:
            continue
        det = (p[1, 0] - p[0, 0]) * (p[2, 1] - p[0, 1]) - (p[2, 0] - p[0, 0]) * (p[1, 1] - p[0, 1])
        if abs(det) < 1e-12:
            continue
        ys, xs = np.mgrid[y0 : y1 + 1, x0 : x1 + 1]
        b1 = ((xs - p[0, 0]) * (p[2, 1] - p[0, 1]) - (ys - p[0, 1]) * (p[2, 0] - p[0, 0])) / det
        b2 = ((ys - p[0, 1]) * (p[1, 0] - p[0, 0]) - (xs - p[0, 0]) * (p[1, 1] - p[0, 1])) / det
        inside = (b1 >= 0) & (b2 >= 0) & (b1 + b2 <= 1)
        zz = np.where(inside, p[0, 2] + b1 * (p[1, 2] - p[0, 2]) + b2 * (p[2, 2] - p[0, 2]), -np.inf)
        sub = z[y0 : y1 + 1, x0 : x1 + 1]
        np.maximum(sub, zz, out=sub)
    mask = np.isfinite(z)
    return np.where(mask, z, 0.0), mask


def eos_check(pool: list, n: int, cfg: PreprocessConfig, sfm_np) -> str:
    """Label and truth against eos-py's fit of the stored landmarks, drawn by :func:`numpy_zbuffer`."""
    from bench.bench_depth import EosReference
    from pipeline.base.assets import resolve_model_dir

    if not pool:
        return "independent check: no frontal frame stored"
    ref = EosReference(resolve_model_dir(cfg.model_dir) / "sfm", None)
    rng = np.random.default_rng(1)
    pick = rng.choice(len(pool), size=min(n, len(pool)), replace=False)
    s = cfg.crop.size
    res = []
    for i in pick:
        lm, aff, label, gt_mask, gt_depth = pool[i]
        lm_crop = lm @ aff[:, :2].T + aff[:, 2]
        z, m = numpy_zbuffer(ref.mesh_pixels(lm_crop, s, crop=s), sfm_np.triangles, s)
        e = depth_label(torch.from_numpy(z[None]).float(), torch.from_numpy(m[None]),
                        cfg.depth)[0].numpy()
        for other, om in ((label.astype(np.float32) / 255, label > 0), (gt_depth, gt_mask)):
            u = (om | m).sum()
            res.append(((om & m).sum() / max(u, 1), np.abs(other - e).sum() / max(u, 1)))
    r = np.array(res).reshape(-1, 2, 2)
    return (f"independent check, {len(pick)} frontal frames (|yaw| <= 30), eos-py fit + numpy z-buffer: "
            f"label vs eos median IoU {np.median(r[:, 0, 0]):.3f}, mean |d| {np.median(r[:, 0, 1]):.3f}; "
            f"truth vs eos IoU {np.median(r[:, 1, 0]):.3f}, |d| {np.median(r[:, 1, 1]):.3f}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 identities, pitch 0 (+-30 at yaw 0), 2 expressions, 20 no-face frames per kind")
    ap.add_argument("--size", type=int, default=None, help="crop / label side (default: the CLI's, 256)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eos", type=int, default=None, help="frames of the independent check (default 8 / 30)")
    ap.add_argument("--detector", default=None, help="face detector (default: the CLI's)")
    ap.add_argument("--landmarks", default=None, help="landmark backend (default: the CLI's); compare backends by it")
    ap.add_argument("--dump", type=Path, default=None, help="write one JSON line per frame (case, true pose, "
                    "stored, IoU, |d|, QC columns) to this file, to tune QC thresholds offline")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    chosen = {k: v for k, v in (("size", args.size), ("detector", args.detector), ("landmarks", args.landmarks)) if v}
    cfg = PreprocessConfig.flat(qc_drop=(), **chosen)
    t0 = time.perf_counter()
    sfm_np = load_sfm(cfg.model_dir)
    sfm = sfm_np.to_torch("cpu", torch.float32)
    scfg = SynthConfig(width=W, height=H, extra_sources=not args.quick)
    sources = {s.name: s for s in load_sources(scfg)}
    plans = plan_identities(list(sources.values()), len(sources), 0)[: 2 if args.quick else None]
    rng = np.random.default_rng(0)
    groups: dict[str, list[Shot]] = {}
    with torch.inference_mode():
        scenes = [Scene(prepare_identity(p, sources[p.source], sfm, scfg), sfm) for p in plans]
        for p, sc in zip(plans, scenes):
            for sh in face_shots([sc], args.quick, rng):
                groups.setdefault(f"{p.subject}/{sh.case}", []).append(sh)
    for sh in noface_shots(20 if args.quick else 400, rng):
        groups.setdefault(sh.case, []).append(sh)
    print(f"{sum(map(len, groups.values()))} frames rendered ({len(plans)} identities), "
          f"{time.perf_counter() - t0:.0f} s; crop {cfg.crop.size}, detector {cfg.detect.detector}, landmarks {cfg.detect.landmarks}", flush=True)
    rows: dict = {}
    pool: list = []
    with tempfile.TemporaryDirectory(prefix="bench-labels-") as tmp, torch.inference_mode():
        records: list | None = [] if args.dump else None
        extras = evaluate(groups, cfg, sfm.triangles, Path(tmp), rows, pool, records)
    if args.dump:
        args.dump.write_text("".join(json.dumps(r) + "\n" for r in records))
        print(f"{len(records)} frame records written to {args.dump}")
    order = sorted(rows, key=lambda k: (not k.startswith("yaw"), k.startswith(("all", "turn")),
                                        float(k.split()[1]) if k.startswith("yaw") else 0, k))
    print("\n" + table({k: rows[k] for k in order}, extras))
    print("\n" + eos_check(pool, args.eos or (8 if args.quick else 30), cfg, sfm_np))
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
