"""3D fit + z-buffer depth engine on real portraits (dlib landmarks), against eos-py and numpy.

Landmarks come from dlib's HOG detector (1 upsample) and the 68-point predictor shipped in the
``face_recognition_models`` package (located via ``importlib.util.find_spec``; the package itself
is never imported). Faces are cropped to 256 x 256 around the detector box enlarged 1.3x.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.reconstruct.depth import DepthConfig, depth_label, render_depth, to_uint8
from pipeline.base.errors import ConfigError, FitError, ModelAssetMissing
from pipeline.reconstruct.fit import FitConfig, fit_landmarks, yaw_pitch_roll
from pipeline.reconstruct.raster import interpolate, rasterize, rasterize_depth
from pipeline.reconstruct.sfm import load_sfm
from tests.conftest import SHARED

FACES = SHARED / "data" / "faces"
SFM_DIR = SHARED / "models" / "sfm"
CROP = 256
ENLARGE = 1.3

torch.set_num_threads(min(2, torch.get_num_threads()))


# ----------------------------------------------------------------------------- fixtures


def _predictor_path() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("face_recognition_models is not installed (needed for dlib's 68-point model)")
    folder = Path(list(spec.submodule_search_locations)[0])
    path = folder / "models" / "shape_predictor_68_face_landmarks.dat"
    assert path.is_file(), path
    return path


def _load_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@pytest.fixture(scope="module")
def crop_landmarks() -> dict[str, np.ndarray]:
    """name -> (68, 2) float32 dlib landmarks in the pixels of a 256 x 256 face crop."""
    import dlib

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(_predictor_path()))
    out = {}
    paths = sorted(FACES.glob("*.jpg"))
    assert len(paths) >= 5, f"expected the shared portraits in {FACES}"
    for path in paths:
        img = _load_rgb(path)
        dets = detector(img, 1)
        assert len(dets) >= 1, f"dlib found no face in {path.name}"
        r = max(dets, key=lambda d: d.area())
        shape = predictor(img, r)
        lm = np.array([[shape.part(i).x, shape.part(i).y] for i in range(68)], np.float64)
        # square crop around the box enlarged 1.3x: frame -> crop is a scale + shift
        cx, cy = (r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2
        side = ENLARGE * max(r.right() - r.left(), r.bottom() - r.top())
        k = CROP / side
        out[path.name] = ((lm - [cx - side / 2, cy - side / 2]) * k).astype(np.float32)
    return out


@pytest.fixture(scope="module")
def model_t():
    return load_sfm(SHARED / "models").to_torch("cpu", torch.float32)


@pytest.fixture(scope="module")
def engine_out(crop_landmarks, model_t):
    names = sorted(crop_landmarks)
    lm = torch.as_tensor(np.stack([crop_landmarks[n] for n in names]))
    res = render_depth(model_t, lm, CROP, FitConfig(), DepthConfig(size=CROP))
    return names, lm, res


# ----------------------------------------------------------------------------- the model


def test_sfm_model_contents(model_t):
    m = load_sfm(SHARED / "models")
    assert load_sfm(SHARED / "models") is m  # cached per resolved directory
    assert m.shape_mean.shape == (3448 * 3,)
    assert m.shape_basis.shape == (10344, 63) and m.eigenvalues.shape == (63,)
    assert m.triangles.shape == (6736, 3) and m.triangles.min() == 0 and m.triangles.max() == 3447
    assert m.blendshapes.shape == (10344, 6) and len(m.blendshape_names) == 6
    gram = m.shape_basis.T.astype(np.float64) @ m.shape_basis
    np.testing.assert_allclose(gram, np.eye(63), atol=1e-3)  # orthonormal basis
    assert np.all(np.diff(m.eigenvalues) <= 0) and m.eigenvalues.min() > 0
    # iBUG 31 (nose tip) -> vertex 114; jaw (1-8, 10-17) and inner mouth corners 61/65 unmapped
    assert m.landmark_vertex[30] == 114 and m.landmark_vertex[8] == 33
    unmapped = set(np.nonzero(m.landmark_vertex < 0)[0] + 1)
    assert unmapped == set(range(1, 9)) | set(range(10, 18)) | {61, 65}
    assert list(m.contour_landmarks_right) == list(range(0, 8))
    assert list(m.contour_landmarks_left) == list(range(9, 17))
    assert len(m.model_contour_right) == len(m.model_contour_left) == 17
    # right contour = subject's right = negative model x; the nose tip is the front (max z)
    mean = m.shape_mean.reshape(-1, 3)
    assert mean[m.model_contour_right, 0].mean() < 0 < mean[m.model_contour_left, 0].mean()
    assert mean[114, 2] > np.percentile(mean[:, 2], 99)
    assert m.edge_faces is not None and m.edge_faces.min() >= 0
    assert model_t.basis_rescaled.shape == (3448, 3, 63) and model_t.triangles.dtype == torch.int64


def test_sfm_missing_directory(tmp_path):
    with pytest.raises(ModelAssetMissing, match="sfm_shape_3448.bin"):
        load_sfm(tmp_path)


# ----------------------------------------------------------------------------- rasteriser


def _numpy_zbuffer(verts: np.ndarray, tris: np.ndarray, size: int, eps: float) -> np.ndarray:
    """Plain per-triangle z-buffer (float64); a pixel centre is inside when all barycentrics
    are >= -eps. Returns (S, S) with -inf where nothing is covered."""
    zb = np.full((size, size), -np.inf)
    for t in tris:
        p = verts[t].astype(np.float64)
        if not np.isfinite(p).all():
            continue
        x, y, z = p[:, 0], p[:, 1], p[:, 2]
        d = (x[1] - x[0]) * (y[2] - y[0]) - (y[1] - y[0]) * (x[2] - x[0])
        if abs(d) < 1e-12:
            continue
        x0, x1 = max(int(np.ceil(x.min() - 0.01)), 0), min(int(np.floor(x.max() + 0.01)), size - 1)
        y0, y1 = max(int(np.ceil(y.min() - 0.01)), 0), min(int(np.floor(y.max() + 0.01)), size - 1)
        if x1 < x0 or y1 < y0:
            continue
        gx, gy = np.meshgrid(np.arange(x0, x1 + 1), np.arange(y0, y1 + 1))
        dx, dy = gx - x[0], gy - y[0]
        b1 = (dx * (y[2] - y[0]) - dy * (x[2] - x[0])) / d
        b2 = ((x[1] - x[0]) * dy - (y[1] - y[0]) * dx) / d
        inside = (b1 >= -eps) & (b2 >= -eps) & (1 - b1 - b2 >= -eps)
        zz = z[0] + b1 * (z[1] - z[0]) + b2 * (z[2] - z[0])
        sub = zb[y0 : y1 + 1, x0 : x1 + 1]
        sub[inside] = np.maximum(sub[inside], zz[inside])
    return zb


def _compare_to_reference(verts: np.ndarray, tris: np.ndarray, size: int, **kw) -> None:
    """Torch z-buffer vs the numpy one on every pixel.

    A pixel centre within 1e-5 (barycentric) of a triangle border may go either way in float32,
    so the reference is also computed with triangles shrunk / grown by that margin: where both
    agree the torch result must match exactly (mask) and to 1e-4 (z); elsewhere it must lie
    between the two bounds (coverage only grows when triangles grow, and z is a maximum).
    """
    verts = verts.astype(np.float32).astype(np.float64)  # both sides see the same input
    z, mask = rasterize_depth(
        torch.as_tensor(verts, dtype=torch.float32), torch.as_tensor(tris), size, **kw
    )
    for b in range(verts.shape[0]):
        ref = _numpy_zbuffer(verts[b], tris, size, 0.0)
        lo = _numpy_zbuffer(verts[b], tris, size, -1e-5)
        hi = _numpy_zbuffer(verts[b], tris, size, 1e-5)
        zt, mt = z[b].double().numpy(), mask[b].numpy()
        sure = lo == hi  # unambiguous pixels (-inf == -inf counts)
        assert (~sure).mean() < 0.002, "too many borderline pixels for a meaningful comparison"
        assert np.array_equal(mt[sure], np.isfinite(ref[sure]))
        both = sure & np.isfinite(ref)
        assert both.sum() > 0
        np.testing.assert_allclose(zt[both], ref[both], atol=1e-4, rtol=1e-6)
        assert np.all(zt[~mt] == 0)
        assert np.all(np.isfinite(hi[mt])) and not np.any(np.isfinite(lo[~mt]))
        amb = ~sure & mt
        assert np.all((zt[amb] >= lo[amb] - 1e-3) & (zt[amb] <= hi[amb] + 1e-3))


@pytest.mark.parametrize(
    "size, n_tri, spread, max_window",
    [(48, 300, 0.12, 16), (40, 60, 0.6, 8), (33, 800, 0.03, 4), (64, 20, 1.0, 16)],
)
def test_rasterizer_matches_numpy_random_triangles(size, n_tri, spread, max_window):
    rng = np.random.default_rng(size * 1000 + n_tri)
    bsz = 3
    centre = rng.uniform(-4, size + 4, (bsz, n_tri, 1, 2))
    xy = centre + rng.normal(0, spread * size, (bsz, n_tri, 3, 2))  # includes huge/off-image tris
    z = rng.uniform(-30, 30, (bsz, n_tri, 3, 1))
    verts = np.concatenate([xy, z], -1).reshape(bsz, n_tri * 3, 3)
    tris = np.arange(n_tri * 3).reshape(n_tri, 3)
    _compare_to_reference(verts, tris, size, max_window=max_window)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rasterizer_matches_numpy_when_most_triangles_miss(dtype):
    """Most triangles off the image or between pixel centres (the rasteriser then sets up only
    the covering ones), mixed with large triangles (tiles), slivers (float64 refinement) and a
    few NaN vertices."""
    rng = np.random.default_rng(11)
    size, bsz, n_tri = 40, 3, 600
    centre = rng.uniform(-2 * size, 3 * size, (bsz, n_tri, 1, 2))
    spread = np.where(rng.random((bsz, n_tri, 1, 1)) < 0.1, 0.5 * size, 0.6)
    xy = centre + rng.normal(0, 1, (bsz, n_tri, 3, 2)) * spread
    sliver = rng.random((bsz, n_tri)) < 0.05  # third corner almost on the first edge
    xy[sliver, 2] = xy[sliver, 0] + (xy[sliver, 1] - xy[sliver, 0]) * 0.5 + 1e-3
    z = rng.uniform(-30, 30, (bsz, n_tri, 3, 1))
    verts = np.concatenate([xy, z], -1).reshape(bsz, n_tri * 3, 3)
    tris = np.arange(n_tri * 3).reshape(n_tri, 3)
    lo = np.ceil(xy.min(2)).clip(min=0)
    hi = np.floor(xy.max(2)).clip(max=size - 1)
    covering = (hi >= lo).all(-1)
    assert covering.mean() < 0.5, "the case must exercise the sparse set-up"
    nan_v = rng.choice(n_tri * 3, 5, replace=False)
    verts_nan = verts.copy()
    verts_nan[1, nan_v] = np.nan
    z_t, m_t = rasterize_depth(torch.as_tensor(verts_nan, dtype=dtype), torch.as_tensor(tris), size)
    assert z_t.dtype == dtype
    hit = np.isin(tris, nan_v).any(1)  # the triangles that lost a vertex are skipped
    ref = _numpy_zbuffer(verts[1], tris[~hit], size, 0.0)
    lo_r = _numpy_zbuffer(verts[1], tris[~hit], size, -1e-5)
    hi_r = _numpy_zbuffer(verts[1], tris[~hit], size, 1e-5)
    sure = lo_r == hi_r
    assert np.array_equal(m_t[1].numpy()[sure], np.isfinite(ref[sure]))
    both = sure & np.isfinite(ref)
    np.testing.assert_allclose(z_t[1].double().numpy()[both], ref[both], atol=1e-4, rtol=1e-6)
    if dtype == torch.float32:
        _compare_to_reference(verts, tris, size, max_window=8)


def test_rasterizer_matches_numpy_on_a_grid_mesh():
    """A height field with shared edges, tilted and bigger than the image (tiles, clipping)."""
    rng = np.random.default_rng(7)
    n = 18
    gy, gx = np.meshgrid(np.linspace(-6, 50, n), np.linspace(-5, 52, n), indexing="ij")
    gx = gx + rng.uniform(-0.8, 0.8, gx.shape)
    gy = gy + rng.uniform(-0.8, 0.8, gy.shape)
    gz = 10 * np.sin(gx / 7) + 5 * np.cos(gy / 5)
    verts = np.stack([gx, gy, gz], -1).reshape(1, -1, 3)
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    tris = np.concatenate(
        [np.stack([a, b, d], -1).reshape(-1, 3), np.stack([a, d, c], -1).reshape(-1, 3)]
    )
    _compare_to_reference(verts, tris, 45, max_window=2)  # 2 px windows force tiling


def test_rasterizer_edge_cases():
    tris = torch.tensor([[0, 1, 2]])
    v = torch.tensor([[[1.0, 1.0, 5.0], [9.0, 1.0, 5.0], [1.0, 9.0, 5.0]]])
    z, m = rasterize_depth(v, tris, 12)
    assert m.sum() == 45 and torch.all(z[m] == 5)  # right triangle, 8 px legs, borders included
    assert m[0, 1, 1] and m[0, 1, 9] and m[0, 9, 1] and not m[0, 9, 2] and not m[0, 0, 0]
    v_nan = v.clone()
    v_nan[0, 1, 0] = float("nan")
    z, m = rasterize_depth(v_nan, tris, 12)
    assert not m.any() and torch.all(z == 0)
    with pytest.raises(ConfigError):
        rasterize_depth(v[0], tris, 12)
    with pytest.raises(ConfigError):
        rasterize_depth(v, tris, 12, max_window=9)


# ----------------------------------------------------------------------------- engine on real faces


def test_live_faces_depth(engine_out, model_t):
    names, lm, res = engine_out
    far = DepthConfig().far_value
    for i, name in enumerate(names):
        d, mask = res.depth[i], res.mask[i]
        assert d.shape == (CROP, CROP)
        assert mask.float().mean() >= 0.30, f"{name}: face covers {mask.float().mean():.2f}"
        assert torch.all(d[~mask] == 0)
        assert d[mask].min() >= far - 1e-6 and abs(float(d[mask].max()) - 1.0) < 1e-6
        nose = lm[i, 30]

        def at(p):
            c = p.round().long()
            return float(d[c[1], c[0]])

        cheek_r = lm[i, 1] + 0.25 * (nose - lm[i, 1])
        cheek_l = lm[i, 15] + 0.25 * (nose - lm[i, 15])
        assert at(nose) > at(cheek_r) > 0 and at(nose) > at(cheek_l) > 0, name
        # not upside down: the forehead (above the brows) is covered, the chin vertex is on iBUG 9
        fit = res.fit
        assert float(fit.landmark_errors[i, 8]) < 0.05 * float(fit.face_size[i])
        assert float(fit.residual[i]) < 0.06
        brow = lm[i, 17:27].mean(0) - torch.tensor([0.0, 0.1 * float(fit.face_size[i])])
        assert at(brow) > 0, f"{name}: forehead not covered"
        lip = lm[i, 51] + 0.2 * (nose - lm[i, 51])  # just above the upper lip (the mouth is a hole)
        assert at(nose) > at(lip) > 0, name
        # image y grows downwards: the top of the model's forehead is above its chin (vertex 33)
        top = int(np.argmax(load_sfm(SHARED / "models").shape_mean.reshape(-1, 3)[:, 1]))
        assert float(fit.vertices[i, top, 1]) < float(fit.vertices[i, 33, 1]), name


def test_fit_result_fields(engine_out, model_t):
    names, lm, res = engine_out
    fit = res.fit
    b = len(names)
    assert fit.vertices.shape == (b, 3448, 3)
    assert fit.shape_coeffs.shape == (b, 63) and fit.expr_coeffs.shape == (b, 6)
    assert torch.all(fit.expr_coeffs >= 0)
    rot = fit.rotation.double()
    eye = torch.eye(3, dtype=torch.float64).expand(b, 3, 3)
    assert torch.allclose(rot @ rot.transpose(1, 2), eye, atol=1e-5)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(b, dtype=torch.float64), atol=1e-5)
    assert torch.all(fit.scale > 0) and fit.translation.shape == (b, 2)
    assert torch.equal(fit.t, fit.translation)
    # reprojection: vertices reproduce the fixed landmarks they were fitted to
    m = load_sfm(SHARED / "models")
    mapped = np.nonzero(m.landmark_vertex >= 0)[0]
    proj = fit.vertices[:, torch.as_tensor(m.landmark_vertex[mapped]), :2]
    err = (proj - lm[:, mapped]).norm(dim=-1)
    assert torch.allclose(err, fit.landmark_errors[:, mapped], atol=1e-3)
    assert torch.all(torch.isnan(fit.landmark_errors[:, [60, 64]]))  # unmapped inner-mouth corners
    assert torch.all((fit.residual > 0) & (fit.residual < 0.1))
    assert torch.all(fit.yaw.abs() < 45) and torch.all(fit.pitch.abs() < 45)


def test_yaw_pitch_roll_inverts_the_generator_rotation(engine_out):
    """The angles the QC columns store are those the synthetic renderer (and the label benchmark's
    true pose) composes: ``R = Rz(roll) Ry(yaw) Rx(pitch)``; and the fit's angles are its rotation's."""
    from pipeline.synth.geometry import rotation_matrix

    angles = torch.tensor([[30.0, 0, 0], [0, 20, 0], [0, 0, -10], [40, -15, 5], [-75, 25, -20]])
    rot = rotation_matrix(*torch.deg2rad(angles).T)
    got = torch.stack(yaw_pitch_roll(rot), 1)
    assert torch.allclose(got, angles, atol=1e-3), got
    fit = engine_out[2].fit
    assert torch.allclose(torch.stack(yaw_pitch_roll(fit.rotation), 1),
                          torch.stack([fit.yaw, fit.pitch, fit.roll], 1), atol=1e-4)


def test_resolutions_agree(engine_out):
    names, _, res = engine_out
    a, b = names.index("obama-240p.jpg"), names.index("obama-1080p.jpg")
    common = res.mask[a] & res.mask[b]
    assert common.float().mean() > 0.3
    mad = (res.depth[a][common] - res.depth[b][common]).abs().mean()
    assert mad < 0.08, f"240p vs 1080p depth MAD {mad:.3f}"


@functools.lru_cache(maxsize=1)
def _eos_setup():
    """eos-py model with blendshapes, landmark mapper, edge topology, contours (loaded once)."""
    import eos

    shape = eos.morphablemodel.load_model(str(SFM_DIR / "sfm_shape_3448.bin"))
    blend = eos.morphablemodel.load_blendshapes(
        str(SFM_DIR / "expression_blendshapes_3448.bin")
    )
    model = eos.morphablemodel.MorphableModel(
        shape.get_shape_model(), blend, color_model=eos.morphablemodel.PcaModel(),
        vertex_definitions=None, texture_coordinates=shape.get_texture_coordinates(),
    )
    return (
        model,
        eos.core.LandmarkMapper(str(SFM_DIR / "ibug_to_sfm.txt")),
        eos.morphablemodel.load_edge_topology(str(SFM_DIR / "sfm_3448_edge_topology.json")),
        eos.fitting.ContourLandmarks.load(str(SFM_DIR / "ibug_to_sfm.txt")),
        eos.fitting.ModelContour.load(str(SFM_DIR / "sfm_model_contours.json")),
    )


def _eos_reference(crop_lm: np.ndarray):
    """eos-py fit_shape_and_pose -> (V, 3) vertices in crop pixels (z larger = closer), yaw."""
    import eos

    mm, mapper, edges, contour_lms, model_contour = _eos_setup()
    lms = [eos.core.Landmark(str(i + 1), [float(x), float(y)]) for i, (x, y) in enumerate(crop_lm)]
    mesh, pose, _, _ = eos.fitting.fit_shape_and_pose(
        mm, lms, mapper, CROP, CROP, edges, contour_lms, model_contour
    )
    v = np.asarray(mesh.vertices, np.float64)
    mv, proj = np.asarray(pose.get_modelview()), np.asarray(pose.get_projection())
    cam = np.c_[v, np.ones(len(v))] @ mv.T
    clip = cam @ proj.T
    scale = proj[0, 0] * CROP / 2  # pixels per model unit
    x = (clip[:, 0] + 1) / 2 * CROP
    y = CROP - (clip[:, 1] + 1) / 2 * CROP  # OpenCV viewport: y down
    return np.stack([x, y, cam[:, 2] * scale], 1), float(pose.get_yaw_pitch_roll()[0])


def test_parity_with_eos(engine_out, model_t, crop_landmarks):
    pytest.importorskip("eos")
    names, _, res = engine_out
    ref, yaws = zip(*(_eos_reference(crop_landmarks[n]) for n in names))
    ref_v = torch.as_tensor(np.stack(ref), dtype=torch.float32)
    z, mask = rasterize_depth(ref_v, model_t.triangles, CROP)
    d_ref = depth_label(z, mask)
    for i, name in enumerate(names):
        inter = (mask[i] & res.mask[i]).sum().item()
        iou = inter / (mask[i] | res.mask[i]).sum().item()
        both = mask[i] & res.mask[i]
        mad = (d_ref[i][both] - res.depth[i][both]).abs().mean().item()
        assert iou >= 0.9, f"{name}: mask IoU with eos {iou:.3f}"
        assert mad <= 0.05, f"{name}: depth MAD vs eos {mad:.4f}"
        yaw = float(res.fit.yaw[i])
        assert abs(yaw - yaws[i]) < 5.0, f"{name}: yaw {yaw:.1f} vs eos {yaws[i]:.1f}"


@pytest.mark.slow  # >= 2.5 s on an idle 2-core machine
def test_batch_equals_single(engine_out, model_t):
    names, lm, res = engine_out
    cfg = FitConfig()
    for i in (0, len(names) - 1):
        one = fit_landmarks(model_t, lm[i : i + 1], cfg)
        assert torch.allclose(one.vertices[0], res.fit.vertices[i], atol=2e-3, rtol=0)
        assert torch.allclose(one.shape_coeffs[0], res.fit.shape_coeffs[i], atol=1e-4)
        assert torch.allclose(one.expr_coeffs[0], res.fit.expr_coeffs[i], atol=1e-4)
        d = render_depth(model_t, lm[i : i + 1], CROP, cfg, DepthConfig(size=CROP))
        assert torch.equal(d.mask[0], res.mask[i])
        assert torch.allclose(d.depth[0], res.depth[i], atol=1e-4)
    # internal chunking (the CPU default is 64 faces per chunk) gives the same batch result
    chunked = render_depth(model_t, lm, CROP, cfg, DepthConfig(size=CROP, chunk_size=2))
    assert torch.equal(chunked.mask, res.mask)
    assert torch.allclose(chunked.depth, res.depth, atol=1e-4)
    assert torch.allclose(chunked.fit.residual, res.fit.residual, atol=1e-5)
    empty = render_depth(model_t, lm[:0], CROP, cfg, DepthConfig(size=32))
    assert empty.depth.shape == (0, 32, 32) and empty.fit.vertices.shape == (0, 3448, 3)


def test_output_size_scaling(engine_out, model_t):
    """A 32 px label is the 256 px fit rendered smaller: same face region, same near/far order."""
    names, lm, res = engine_out
    small = render_depth(model_t, lm, CROP, FitConfig(), DepthConfig(size=32))
    assert small.depth.shape == (len(names), 32, 32)
    big_cover = res.mask.float().mean((1, 2))
    small_cover = small.mask.float().mean((1, 2))
    assert torch.allclose(big_cover, small_cover, atol=0.05)
    pooled = torch.nn.functional.avg_pool2d(res.depth[:, None], 8)[:, 0]
    full = torch.nn.functional.avg_pool2d(res.mask[:, None].float(), 8)[:, 0] == 1
    both = small.mask & full
    assert both.sum() > 0.2 * both.numel()
    assert (pooled[both] - small.depth[both]).abs().mean() < 0.05


def test_depth_label_and_uint8():
    z = torch.tensor([[[5.0, 1.0], [3.0, 9.0]]])
    mask = torch.tensor([[[True, True], [True, False]]])
    d = depth_label(z, mask, DepthConfig(far_value=0.2))
    assert torch.allclose(d, torch.tensor([[[1.0, 0.2], [0.6, 0.0]]]))
    assert to_uint8(d).tolist() == [[[255, 51], [153, 0]]]
    empty = depth_label(z, torch.zeros_like(mask))
    assert torch.all(empty == 0)
    flat = depth_label(torch.ones(1, 2, 2), torch.ones(1, 2, 2, dtype=torch.bool))
    assert torch.all(flat == 1)
    with pytest.raises(ConfigError, match="far_value"):
        DepthConfig(far_value=0.0)


def test_bad_inputs(model_t):
    with pytest.raises(ConfigError, match="landmarks"):
        fit_landmarks(model_t, torch.zeros(2, 5, 2))
    bad = torch.rand(3, 68, 2) * 100
    bad[1, 4, 0] = float("nan")
    with pytest.raises(FitError, match=r"\[1\]"):
        fit_landmarks(model_t, bad)
    with pytest.raises(ConfigError, match="iterations"):
        FitConfig(iterations=0)
    with pytest.raises(ConfigError, match="n_shape_coeffs"):
        fit_landmarks(model_t, torch.rand(1, 68, 2) * 100, FitConfig(n_shape_coeffs=100))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(engine_out, model_t):
    names, lm, res = engine_out
    model_cuda = load_sfm(SHARED / "models").to_torch("cuda", torch.float32)
    for size in (CROP, 32):
        cpu = res
        if size != CROP:
            cpu = render_depth(model_t, lm, CROP, FitConfig(), DepthConfig(size=size))
        gpu = render_depth(model_cuda, lm.cuda(), CROP, FitConfig(), DepthConfig(size=size))
        assert gpu.depth.device.type == "cuda"
        assert (gpu.fit.vertices.cpu() - cpu.fit.vertices).abs().max() < 1e-2  # pixels
        assert (gpu.mask.cpu() == cpu.mask).float().mean() > 0.999  # border pixels may flip
        both = gpu.mask.cpu() & cpu.mask
        diff = (gpu.depth.cpu() - cpu.depth)[both].abs()
        assert (diff > 1e-3).float().mean() < 1e-3 and diff.mean() < 1e-4


# ----------------------------------------------------------------------------- textured rasterize


def _sfm_faces(model, b: int, size: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    verts = model.mean[None].repeat(b, 1, 1) * torch.tensor([0.8, -0.8, 0.8]) * (size / 192)
    return verts + torch.tensor([size / 2, size / 2, 0.0]) + torch.randn(b, 1, 3, generator=g) * size / 20


def test_rasterize_is_rasterize_depth_plus_triangle_ids(model_t):
    verts = _sfm_faces(model_t, 3, 192.0)
    ras = rasterize(verts, model_t.triangles, 192, 192)
    z_ref, mask_ref = rasterize_depth(verts, model_t.triangles, 192)
    assert torch.equal(ras.mask(), mask_ref)
    z = torch.zeros(3 * 192 * 192)
    z[ras.pix] = ras.z
    assert torch.equal(z.view(3, 192, 192), z_ref)  # one z-buffer
    # the winning triangle covers its pixel: barycentrics in [0, 1], sum one, reproduce the centre
    assert torch.allclose(ras.bary.sum(1), torch.ones(len(ras.pix)), atol=1e-5)
    assert ras.bary.min() > -1e-4
    xy = interpolate(ras, model_t.triangles, verts[..., :2])
    px = torch.stack([ras.pix % 192, (ras.pix // 192) % 192], 1).float()
    assert (xy - px).abs().max() < 1e-3
    # and it is the nearest one: its interpolated z is the buffer's
    assert torch.allclose(interpolate(ras, model_t.triangles, verts[..., 2:])[:, 0], ras.z, atol=1e-3)


def test_rasterize_non_square_and_back_face_culling(model_t):
    verts = _sfm_faces(model_t, 2, 96.0, seed=1)
    wide = verts + torch.tensor([40.0, 0.0, 0.0])  # the same faces 40 px further right
    ras = rasterize(wide, model_t.triangles, 96, 176)
    ref = rasterize(verts, model_t.triangles, 96, 96).mask()
    assert torch.equal(ras.mask()[:, :, 40:136], ref) and not ras.mask()[:, :, :40].any()
    # culling by the sign of the projected area: the two signs split the mesh's triangles
    front = rasterize(verts, model_t.triangles, 96, 96, front=1)
    back = rasterize(verts, model_t.triangles, 96, 96, front=-1)
    tv = verts[:, model_t.triangles]
    area = ((tv[..., 1, 0] - tv[..., 0, 0]) * (tv[..., 2, 1] - tv[..., 0, 1])
            - (tv[..., 1, 1] - tv[..., 0, 1]) * (tv[..., 2, 0] - tv[..., 0, 0]))
    assert (area[front.face, front.tri] > 0).all() and (area[back.face, back.tri] < 0).all()
    # a face seen from its front (y flipped above: negative image-space area) is nearly all one sign
    assert back.mask().sum() > 0.95 * ref.sum() and front.mask().sum() < 0.05 * ref.sum()
    with pytest.raises(ConfigError, match="rasterize: output size"):
        rasterize(verts, model_t.triangles, 0, 10)
