"""Batched fit of the Surrey Face Model to 68 iBUG landmarks (pose, shape, expression).

A batched torch re-implementation of eos's ``fit_shape_and_pose`` (Huber et al., VISAPP 2016),
device-agnostic and without any per-face Python loop:

1. scaled-orthographic camera from 2D-3D correspondences: batched weighted linear solve of the
   affine camera (eos ``estimate_orthographic_projection_linear``), rows orthonormalised into a
   rotation with a batched SVD;
2. PCA shape coefficients: regularised linear least squares on the rescaled basis
   (coefficients ~N(0, 1); data term weighted by ``1 / landmark_sigma**2`` in pixels^-2, prior
   ``lambda_shape * |c|^2``), batched Cholesky solve of the normal equations (the fixed
   landmarks' Gram blocks are precomputed once per call);
3. expression blendshape coefficients: non-negative least squares with an optional ridge
   ``lambda_expression`` (eos uses NNLS without one); exact, by solving all ``2^E`` active sets
   of the 6 blendshapes in one batched elimination and keeping the best feasible one;
4. ``iterations`` alternations of (contour correspondences, pose, shape, expression).

Jaw landmarks (iBUG 1-8 right, 10-17 left) have no fixed vertex. Following eos, the
*front-facing* side (chosen by the sign of the yaw) is matched to the model's jaw contour vertex
whose projection is nearest to each landmark (``get_contour_correspondences``); with
``occluding_contour`` the *away-facing* side is matched to the mesh silhouette: vertices on an
interior edge whose two triangles' normals have z components of different sign (equivalently:
the triangles around the vertex do not all face the same way), each paired with its nearest
away-side jaw landmark when within ``sqrt(occluding_threshold * scale)`` pixels, the
``max_occluding`` nearest pairs kept (eos ``find_occluding_edge_correspondences``, which keeps
all pairs; eos's ray-cast self-occlusion test is not done). Without ``occluding_contour`` both
sides use the model contour when ``|yaw| < frontal_yaw_deg``, otherwise only the front-facing
side.

Coordinates: landmarks are ``(B, 68, 2)`` ``(x, y)`` image pixels (x right, y down, pixel
centres at integer coordinates). Model space is right-handed, y up, z towards the viewer. The
camera is ``image = (s * (R X)_x + t_x, -s * (R X)_y + t_y)`` with ``R`` the model -> camera
rotation (camera: x right, y up, z towards the viewer, eos's convention). Fitted vertices are
returned in image pixels with ``z = s * (R X)_z``: larger z = closer to the camera.

Regularisation strengths are relative to the pixel scale of the landmarks (as in eos): fit in
the pixels of a face crop of about 256 px for the defaults to mean what they meant in eos.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from pipeline.base.errors import ConfigError, FitError
from pipeline.base.options import check_fields, opt
from pipeline.reconstruct.sfm import SFMTensors

logger = logging.getLogger(__name__)

__all__ = ["FitConfig", "FitResult", "fit_landmarks", "model_vertices", "project_vertices", "yaw_pitch_roll"]


@dataclass(frozen=True)
class FitConfig:
    """Parameters of :func:`fit_landmarks`.

    Attributes:
        iterations: alternations of contour matching / pose / shape / expression (eos: 5).
        lambda_shape: shape prior weight (eos ``lambda_identity``; eos-py default 30).
        lambda_expression: expression prior weight (eos's blendshape NNLS has none: 0).
        n_shape_coeffs: leading PCA components fitted (``None`` = all 63); the others stay 0.
        contour: match the jaw landmarks (iBUG 1-8, 10-17) to the model contour / silhouette.
        occluding_contour: eos's away-side silhouette matching.
        frontal_yaw_deg: without ``occluding_contour``, |yaw| below this uses both contours.
        landmark_sigma: landmark noise in pixels (eos: sqrt(3)); data weight 1 / sigma^2.
        occluding_threshold: eos's silhouette distance threshold: squared pixel distance
            <= threshold * scale (eos ``fit_shape_and_pose`` uses 180).
        max_occluding: most silhouette correspondences kept per face (nearest first).
        nonnegative_expression: constrain blendshape coefficients to >= 0 (eos: NNLS).
    """

    iterations: int = opt(5, help="iterations of the 3D model fit", ge=1)
    lambda_shape: float = 30.0
    lambda_expression: float = 0.0
    n_shape_coeffs: int | None = None
    contour: bool = True
    occluding_contour: bool = True
    frontal_yaw_deg: float = 15.0
    landmark_sigma: float = math.sqrt(3.0)
    occluding_threshold: float = 180.0
    max_occluding: int = 64
    nonnegative_expression: bool = True

    def __post_init__(self) -> None:
        check_fields(self)
        if self.lambda_shape < 0 or self.lambda_expression < 0:
            raise ConfigError(
                f"FitConfig.lambda_shape / lambda_expression must be >= 0, got "
                f"{self.lambda_shape} / {self.lambda_expression}"
            )
        if self.n_shape_coeffs is not None and self.n_shape_coeffs < 0:
            raise ConfigError(f"FitConfig.n_shape_coeffs must be >= 0, got {self.n_shape_coeffs}")
        if self.landmark_sigma <= 0:
            raise ConfigError(f"FitConfig.landmark_sigma must be > 0, got {self.landmark_sigma}")
        if self.max_occluding < 1:
            raise ConfigError(f"FitConfig.max_occluding must be >= 1, got {self.max_occluding}")


@dataclass
class FitResult:
    """Result of :func:`fit_landmarks` for ``B`` faces (tensors on the landmarks' device).

    Attributes:
        vertices: ``(B, V, 3)`` fitted mesh in the landmarks' image pixels (x right, y down),
            z in pixels, larger = closer.
        shape_coeffs: ``(B, K)`` PCA coefficients on the rescaled basis (all K components;
            zeros past ``n_shape_coeffs``).
        expr_coeffs: ``(B, E)`` blendshape coefficients.
        rotation: ``(B, 3, 3)`` model -> camera rotation (camera x right, y up, z to viewer).
        scale: ``(B,)`` pixels per model unit.
        translation: ``(B, 2)`` image-pixel translation: ``x = s (R X)_x + t_x``,
            ``y = -s (R X)_y + t_y``.
        yaw, pitch, roll: ``(B,)`` degrees, eos's convention (``R = Rz(roll) Ry(yaw) Rx(pitch)``;
            positive yaw = the subject looks to their left).
        landmark_errors: ``(B, 68)`` pixel distance between each landmark and the projection of
            its final correspondence (nearest matched silhouette vertex for away-side jaw
            landmarks); NaN for landmarks not used (unmapped, or jaw points not matched).
        residual: ``(B,)`` RMS of the finite ``landmark_errors`` divided by the face size.
        face_size: ``(B,)`` sqrt(width * height) of the landmarks' bounding box, pixels.
    """

    vertices: torch.Tensor
    shape_coeffs: torch.Tensor
    expr_coeffs: torch.Tensor
    rotation: torch.Tensor
    scale: torch.Tensor
    translation: torch.Tensor
    yaw: torch.Tensor
    pitch: torch.Tensor
    roll: torch.Tensor
    landmark_errors: torch.Tensor
    residual: torch.Tensor
    face_size: torch.Tensor

    @property
    def t(self) -> torch.Tensor:
        """Alias of :attr:`translation`."""
        return self.translation

    def __len__(self) -> int:
        return int(self.vertices.shape[0])


def model_vertices(
    model: SFMTensors, shape_coeffs: torch.Tensor, expr_coeffs: torch.Tensor
) -> torch.Tensor:
    """Model-space vertices ``(B, V, 3)`` = mean + rescaled basis @ shape + blendshapes @ expr.

    ``shape_coeffs`` ``(B, k)`` with ``k <= K`` (leading components), ``expr_coeffs`` ``(B, E)``.
    """
    k = shape_coeffs.shape[1]
    v = model.num_vertices
    dt = model.dtype
    return _vertices_from(
        torch.cat([model.basis_rescaled[:, :, :k], model.blendshapes], 2).reshape(v * 3, -1),
        model.mean,
        torch.cat([shape_coeffs.to(dt), expr_coeffs.to(dt)], 1),
    )


def _vertices_from(
    combined: torch.Tensor, mean: torch.Tensor, coeffs: torch.Tensor
) -> torch.Tensor:
    """``mean (V, 3) + combined (3V, C) @ coeffs (B, C)`` as ``(B, V, 3)`` (one GEMM)."""
    out = torch.addmm(mean.reshape(1, -1), coeffs.to(combined.dtype), combined.T)
    return out.view(coeffs.shape[0], -1, 3)


def project_vertices(
    points: torch.Tensor, rotation: torch.Tensor, scale: torch.Tensor, translation: torch.Tensor
) -> torch.Tensor:
    """Model-space ``(B, N, 3)`` -> image ``(B, N, 3)``.

    Image: pixels x right, y down; z = s * (R X)_z in pixels, larger = closer.
    """
    cam = torch.einsum("bij,bnj->bni", rotation.to(points.dtype), points)
    cam = cam * scale.to(points.dtype)[:, None, None]
    t = translation.to(points.dtype)
    return torch.stack([cam[..., 0] + t[:, None, 0], t[:, None, 1] - cam[..., 1], cam[..., 2]], -1)


# ----------------------------------------------------------------------------- internals


def _take(arr: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows of ``arr`` at ``idx`` ``(B, N)``: ``arr`` ``(V, ...)`` shared or ``(B, V, ...)``.

    Returns ``(B, N, ...)`` (flat ``index_select``, much faster than advanced indexing on CPU).
    """
    bsz, n = idx.shape
    return arr.index_select(0, idx.reshape(-1)).view(bsz, n, *arr.shape[1:])


def _take_b(arr: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Per-face rows: ``arr`` ``(B, V, C)``, ``idx`` ``(B, N)`` -> ``(B, N, C)``."""
    bsz, nv = arr.shape[:2]
    off = torch.arange(bsz, device=idx.device).view(-1, 1) * nv
    flat = arr.reshape(bsz * nv, *arr.shape[2:])
    return flat.index_select(0, (idx + off).reshape(-1)).view(bsz, idx.shape[1], *arr.shape[2:])


@dataclass
class _Pose:
    rot: torch.Tensor  # (B, 3, 3) float64
    scale: torch.Tensor  # (B,)
    trans: torch.Tensor  # (B, 2) image pixels (x, y-down)

    def sr2(self) -> torch.Tensor:
        """(B, 2, 3) linear part of the y-up projection: s * R[:2]."""
        return self.rot[:, :2] * self.scale[:, None, None]

    def project_up(self, pts: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) model -> (B, N, 2) image x, y-UP (y_up = -y_image)."""
        p = torch.einsum("bij,bnj->bni", self.sr2().to(pts.dtype), pts)
        t = self.trans.to(pts.dtype)
        return p + torch.stack([t[:, 0], -t[:, 1]], -1)[:, None]


def yaw_pitch_roll(rot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """eos / glm Euler angles (degrees) of ``(B, 3, 3)`` rotations ``R = Rz(roll) Ry(yaw) Rx(pitch)``
    (model -> camera; what :class:`FitResult` and the stored QC columns report)."""
    yaw = torch.rad2deg(torch.asin((-rot[:, 2, 0]).clamp(-1.0, 1.0)))
    pitch = torch.rad2deg(torch.atan2(rot[:, 2, 1], rot[:, 2, 2]))
    roll = torch.rad2deg(torch.atan2(rot[:, 1, 0], rot[:, 0, 0]))
    return yaw, pitch, roll


def _estimate_pose(pts3: torch.Tensor, img_up: torch.Tensor, w: torch.Tensor) -> _Pose:
    """Weighted linear affine camera + orthonormalisation (eos's linear SOP estimate).

    ``pts3`` ``(B, N, 3)``, ``img_up`` ``(B, N, 2)`` (x, y-up), ``w`` ``(B, N)``; float64.
    """
    a = torch.cat([pts3, torch.ones_like(pts3[..., :1])], -1)  # (B, N, 4)
    aw = a * w.unsqueeze(-1)
    m = aw.transpose(1, 2) @ a  # (B, 4, 4)
    m = m + 1e-9 * torch.eye(4, dtype=m.dtype, device=m.device) * m.diagonal(0, 1, 2).mean(-1)[
        :, None, None
    ].clamp(min=1e-12)
    k = torch.linalg.solve(m, aw.transpose(1, 2) @ img_up)  # (B, 4, 2): columns x, y
    r1, r2 = k[:, :3, 0], k[:, :3, 1]
    n1, n2 = r1.norm(dim=-1), r2.norm(dim=-1)
    s = (n1 + n2) / 2
    r1 = r1 / n1.clamp(min=1e-12)[:, None]
    r2 = r2 / n2.clamp(min=1e-12)[:, None]
    r = torch.stack([r1, r2, torch.linalg.cross(r1, r2)], 1)
    u, _, vh = torch.linalg.svd(r)
    d = torch.sign(torch.linalg.det(u @ vh))
    u = torch.cat([u[..., :2], u[..., 2:] * d[:, None, None]], -1)
    rot = u @ vh
    s = s.clamp(min=1e-12)
    trans = torch.stack([k[:, 3, 0], -k[:, 3, 1]], -1)  # image pixels, y down
    return _Pose(rot, s, trans)


class _LinearTerm:
    """Normal equations of one linear coefficient block (shape PCA or blendshapes).

    Correspondences are split into the ``F`` fixed landmarks (same vertices and unit weight for
    every face: their Gram blocks ``sum_n B_n[i]' B_n[j]`` are precomputed once, so the per-face
    cost does not grow with ``F``) and ``Nv`` per-face variable ones (contour / silhouette).
    """

    def __init__(self, basis: torch.Tensor, fixed_v: torch.Tensor) -> None:
        self.basis_t = basis.permute(1, 0, 2).contiguous()  # (3, V, K) coordinate-major
        self.fixed = basis.index_select(0, fixed_v).double()  # (F, 3, K)
        k = basis.shape[2]
        self.gram = torch.einsum("nik,njl->ijkl", self.fixed, self.fixed).reshape(9, k * k)

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        """Basis rows at per-face vertices ``idx`` ``(B, N)`` as ``(3, B, N, K)``."""
        bsz, n = idx.shape
        return self.basis_t.index_select(1, idx.reshape(-1)).view(3, bsz, n, -1)

    @staticmethod
    def apply(rows: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
        """Displacements ``(B, N, 3)`` float64 of ``rows`` ``(3, B, N, K)`` times ``(B, K)``."""
        d = torch.matmul(rows, coeffs.to(rows.dtype).unsqueeze(-1).unsqueeze(0))  # (3, B, N, 1)
        return d.squeeze(-1).permute(1, 2, 0).double()

    def solve(
        self,
        pose: _Pose,
        res_fixed: torch.Tensor,
        rows_var: torch.Tensor | None,
        res_var: torch.Tensor | None,
        w_var: torch.Tensor | None,
        lam: float,
        sigma2: float,
        nonneg: bool,
    ) -> torch.Tensor:
        """Minimise ``sum_n w_n |s R2 B_n c - res_n|^2 / sigma2 + lam |c|^2`` (c >= 0 if nonneg).

        ``res_*`` ``(B, N, 2)`` y-up residuals (image point minus projection of the fixed part
        of the shape), ``rows_var`` ``(3, B, Nv, K)`` basis rows at the variable
        correspondences (:meth:`rows`), ``w_var`` ``(B, Nv)``.
        Returns ``(B, K)`` float64.
        """
        sr2 = pose.sr2()  # (B, 2, 3) float64
        bsz = sr2.shape[0]
        kk = self.fixed.shape[2]
        if kk == 0:
            return torch.zeros(bsz, 0, dtype=torch.float64, device=sr2.device)
        proj = sr2.transpose(1, 2) @ sr2  # (B, 3, 3)
        q = (proj.reshape(bsz, 9) @ self.gram).view(bsz, kk, kk)
        u = res_fixed @ sr2  # (B, F, 3): sr2' r_n
        c = u.reshape(bsz, -1) @ self.fixed.reshape(-1, kk)
        if rows_var is not None and rows_var.shape[2] > 0:
            nv = rows_var.shape[2]
            # (B, 3, Nv*K) view of the coordinate-major rows: one bmm projects them all
            a = torch.bmm(sr2.to(rows_var.dtype), rows_var.permute(1, 0, 2, 3).reshape(bsz, 3, -1))
            a = a.view(bsz, 2 * nv, kk)  # rows ordered (x of all n, then y of all n)
            wr = w_var.to(a.dtype).repeat(1, 2).unsqueeze(-1)
            aw = a * wr
            q = q + (aw.transpose(1, 2) @ a).double()
            r = res_var.transpose(1, 2).reshape(bsz, -1, 1).to(a.dtype)
            c = c + (aw.transpose(1, 2) @ r).squeeze(-1).double()
        q = q / sigma2 + lam * torch.eye(kk, dtype=q.dtype, device=q.device)
        c = c / sigma2
        # a tiny ridge keeps the system solvable when lam = 0 and the data are degenerate
        q = q + 1e-10 * q.diagonal(0, 1, 2).mean(-1).clamp(min=1e-12)[:, None, None] * torch.eye(
            kk, dtype=q.dtype, device=q.device
        )
        if not nonneg:
            chol, info = torch.linalg.cholesky_ex(q)
            if bool((info == 0).all()):
                return torch.cholesky_solve(c.unsqueeze(-1), chol).squeeze(-1)
            return torch.linalg.solve(q, c)
        return _nnqp(q, c)


def _nnqp(q: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Batched ``argmin_{x >= 0} 0.5 x'Qx - c'x`` for positive-definite ``Q`` ``(B, K, K)``.

    For ``K <= 10`` exact: all ``2^K`` active sets are solved in one batched solve and the best
    feasible one kept (the optimum is the feasible unconstrained optimum of one of them).
    Otherwise projected coordinate descent (fixed 100 sweeps).
    """
    bsz, kk = c.shape
    if kk <= 10:
        subsets = (
            (torch.arange(2**kk, device=c.device)[:, None] >> torch.arange(kk, device=c.device))
            & 1
        ).to(q.dtype)  # (S, K) 1 = free
        fixed = torch.diag_embed(1 - subsets)  # (S, K, K) identity rows of the clamped
        qs = q[:, None] * (subsets[:, :, None] * subsets[:, None, :]) + fixed  # (B, S, K, K)
        xs = _spd_solve_small(qs, c[:, None] * subsets)  # (B, S, K)
        feasible = (xs >= -1e-12).all(-1)
        obj = ((xs @ q) * xs).sum(-1) * 0.5 - (xs * c[:, None]).sum(-1)  # (B, S)
        obj = obj.masked_fill(~feasible, float("inf"))
        best = obj.argmin(1)
        return xs.gather(1, best.view(-1, 1, 1).expand(-1, 1, kk)).squeeze(1).clamp(min=0)
    x = torch.linalg.solve(q, c).clamp(min=0)
    diag = q.diagonal(0, 1, 2).clamp(min=1e-30)
    for _ in range(100):
        for j in range(kk):
            g = (q[:, j] * x).sum(-1) - c[:, j]
            x[:, j] = (x[:, j] - g / diag[:, j]).clamp(min=0)
    return x


def _spd_solve_small(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Solve ``a x = b`` for many small symmetric positive-definite systems.

    ``a`` ``(..., K, K)``, ``b`` ``(..., K)``. Gaussian elimination without pivoting (stable for
    SPD matrices) written as K vectorised steps: for thousands of tiny systems this is much
    faster than one LAPACK call per matrix.
    """
    a = a.clone()
    b = b.clone()
    kk = a.shape[-1]
    for k in range(kk - 1):
        f = a[..., k + 1 :, k] / a[..., k, k].clamp(min=1e-300).unsqueeze(-1)  # (..., K-k-1)
        a[..., k + 1 :, k + 1 :] -= f.unsqueeze(-1) * a[..., k : k + 1, k + 1 :]
        b[..., k + 1 :] -= f * b[..., k : k + 1]
    x = torch.empty_like(b)
    for k in range(kk - 1, -1, -1):
        s = b[..., k]
        if k + 1 < kk:
            s = s - (a[..., k, k + 1 :] * x[..., k + 1 :]).sum(-1)
        x[..., k] = s / a[..., k, k].clamp(min=1e-300)
    return x


def _check_inputs(model: SFMTensors, landmarks: torch.Tensor, cfg: FitConfig) -> None:
    if landmarks.ndim != 3 or landmarks.shape[1:] != (68, 2):
        raise ConfigError(
            f"fit_landmarks: landmarks must be (B, 68, 2), got {tuple(landmarks.shape)}"
        )
    if cfg.n_shape_coeffs is not None and cfg.n_shape_coeffs > model.num_shape_coeffs:
        raise ConfigError(
            f"FitConfig.n_shape_coeffs={cfg.n_shape_coeffs} exceeds the model's "
            f"{model.num_shape_coeffs} components"
        )
    if cfg.contour and cfg.occluding_contour and model.vertex_faces is None:
        raise ConfigError(
            "FitConfig.occluding_contour needs SFMTensors.vertex_faces (built by "
            "SFMModel.to_torch); rebuild the tensors or set occluding_contour=False"
        )
    bad = ~torch.isfinite(landmarks).all(-1).all(-1)
    if bool(bad.any()):
        idx = bad.nonzero().squeeze(1).tolist()
        raise FitError(f"non-finite landmarks for batch item(s) {idx[:10]}", source="fit_landmarks")


class _Fit:
    """One batched fit in progress: the fixed (non-contour) correspondences and model slices,
    built once, and the current shape / expression coefficients (float64)."""

    def __init__(self, model: SFMTensors, landmarks: torch.Tensor, cfg: FitConfig):
        dev = model.device
        self.model, self.cfg = model, cfg
        self.lm = landmarks.to(device=dev, dtype=torch.float64)
        self.bsz = bsz = self.lm.shape[0]
        self.kk = kk = model.num_shape_coeffs if cfg.n_shape_coeffs is None else cfg.n_shape_coeffs
        ne = model.num_blendshapes
        self.sigma2 = cfg.landmark_sigma**2
        basis = model.basis_rescaled[:, :, :kk]
        blend = model.blendshapes
        self.lm_up = torch.stack([self.lm[..., 0], -self.lm[..., 1]], -1)  # (B, 68, 2) y up

        fixed_lm = (model.landmark_vertex >= 0).nonzero().squeeze(1)  # (F,)
        fixed_v = model.landmark_vertex[fixed_lm]

        self.shape_c = torch.zeros(bsz, kk, dtype=torch.float64, device=dev)
        self.expr_c = torch.zeros(bsz, ne, dtype=torch.float64, device=dev)
        self.shape_term = _LinearTerm(basis, fixed_v)
        self.expr_term = _LinearTerm(blend, fixed_v)
        self.mean_f = model.mean.index_select(0, fixed_v).double()  # (F, 3)
        self.f_img = self.lm_up[:, fixed_lm]  # (B, F, 2)
        self.f_idx = fixed_v.unsqueeze(0).expand(bsz, -1)
        self.f_w = torch.ones(bsz, self.mean_f.shape[0], dtype=torch.float64, device=dev)
        self.combined = torch.cat([basis, blend], 2).reshape(model.num_vertices * 3, kk + ne)

    def initial_pose(self) -> _Pose:
        """The pose on the mean shape, then an expression fit (as eos)."""
        mean_f, f_img, cfg = self.mean_f, self.f_img, self.cfg
        pose = _estimate_pose(mean_f.unsqueeze(0).expand(self.bsz, -1, -1), f_img, self.f_w)
        self.expr_c = self.expr_term.solve(
            pose, f_img - pose.project_up(mean_f.unsqueeze(0)), None, None, None,
            cfg.lambda_expression, self.sigma2, cfg.nonnegative_expression,
        )
        return pose

    def mesh(self) -> torch.Tensor:
        return _vertices_from(self.combined, self.model.mean, torch.cat([self.shape_c, self.expr_c], 1))

    def pose_on(self, verts: torch.Tensor, var: tuple | None) -> _Pose:
        """The pose from all correspondences (fixed, plus ``var``'s contour ones) on ``verts``."""
        if var is None:
            all_idx, all_img, all_w = self.f_idx, self.f_img, self.f_w
        else:
            all_idx = torch.cat([self.f_idx, var[0]], 1)
            all_img = torch.cat([self.f_img, var[1]], 1)
            all_w = torch.cat([self.f_w, var[2]], 1)
        return _estimate_pose(_take_b(verts, all_idx).double(), all_img, all_w)

    def solve_blocks(self, pose: _Pose, var: tuple | None) -> None:
        """One shape solve (with the current expression) then one expression solve."""
        model, cfg, shape_term, expr_term = self.model, self.cfg, self.shape_term, self.expr_term
        f_img, mean_f = self.f_img, self.mean_f
        e_f = torch.einsum("nik,bk->bni", expr_term.fixed, self.expr_c)
        res_f = f_img - pose.project_up(mean_f.unsqueeze(0) + e_f)
        bs_v = be_v = res_v = v_w = mean_v = None
        if var is not None:
            v_idx, v_img, v_w = var
            mean_v = _take(model.mean, v_idx).double()
            bs_v, be_v = shape_term.rows(v_idx), expr_term.rows(v_idx)  # (3, B, Nv, K / E)
            e_v = expr_term.apply(be_v, self.expr_c)
            res_v = v_img - pose.project_up(mean_v + e_v)
        self.shape_c = shape_term.solve(pose, res_f, bs_v, res_v, v_w, cfg.lambda_shape, self.sigma2, False)
        s_f = torch.einsum("nik,bk->bni", shape_term.fixed, self.shape_c)
        res_f = f_img - pose.project_up(mean_f.unsqueeze(0) + s_f)
        if var is not None:
            s_v = shape_term.apply(bs_v, self.shape_c)
            res_v = var[1] - pose.project_up(mean_v + s_v)
        self.expr_c = expr_term.solve(
            pose, res_f, be_v, res_v, v_w, cfg.lambda_expression, self.sigma2,
            cfg.nonnegative_expression,
        )

    def result(self, verts: torch.Tensor, pose: _Pose, var: tuple | None, occ_info) -> FitResult:
        model, dt = self.model, self.model.dtype
        image_verts = project_vertices(verts, pose.rot, pose.scale, pose.trans)  # (B, V, 3)
        errors, residual, face_size = _landmark_errors(model, verts, pose, self.lm, self.lm_up, self.f_idx,
                                                       self.f_img, var, occ_info)
        yaw, pitch, roll = yaw_pitch_roll(pose.rot)
        full_shape = torch.zeros(self.bsz, model.num_shape_coeffs, dtype=torch.float64, device=model.device)
        full_shape[:, :self.kk] = self.shape_c
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("fitted %d faces: median residual %.4f", self.bsz, float(residual.median()))
        return FitResult(
            vertices=image_verts.to(dt),
            shape_coeffs=full_shape.to(dt),
            expr_coeffs=self.expr_c.to(dt),
            rotation=pose.rot.to(dt),
            scale=pose.scale.to(dt),
            translation=pose.trans.to(dt),
            yaw=yaw.to(dt),
            pitch=pitch.to(dt),
            roll=roll.to(dt),
            landmark_errors=errors.to(dt),
            residual=residual.to(dt),
            face_size=face_size.to(dt),
        )


def fit_landmarks(
    model: SFMTensors, landmarks: torch.Tensor, cfg: FitConfig | None = None
) -> FitResult:
    """Fit the SFM to ``B`` faces' 68 iBUG landmarks at once.

    Args:
        model: :meth:`pipeline.reconstruct.sfm.SFMModel.to_torch` tensors (their device is used).
        landmarks: ``(B, 68, 2)`` ``(x, y)`` pixels, x right, y down (any float dtype/device).
        cfg: fit parameters (default :class:`FitConfig`).

    Returns:
        :class:`FitResult` (vertices in the model's dtype; pose and coefficients float64 inside,
        returned in the model's dtype) on the model's device.

    Raises:
        ConfigError: bad shapes / parameters. FitError: non-finite landmarks (the message names
        the batch indices).
    """
    cfg = cfg or FitConfig()
    _check_inputs(model, landmarks, cfg)
    if landmarks.shape[0] == 0:
        return _empty_result(model)
    fit = _Fit(model, landmarks, cfg)
    pose = fit.initial_pose()
    verts = fit.mesh()
    var: tuple | None = None
    occ_info = None
    for _ in range(cfg.iterations):
        if cfg.contour:
            var, occ_info = _contour_block(model, verts, pose, fit.lm_up, cfg)
        pose = fit.pose_on(verts, var)
        fit.solve_blocks(pose, var)
        verts = fit.mesh()
    return fit.result(verts, pose, var, occ_info)


def _contour_block(model: SFMTensors, verts: torch.Tensor, pose: _Pose, lm_up: torch.Tensor,
                   cfg: FitConfig) -> tuple[tuple, tuple | None]:
    """The variable correspondences of one iteration: each contour landmark to its nearest
    model-contour vertex on the side facing the camera (both sides when nearly frontal, without
    occluding contours), then the silhouette pairs. Returns ``(idx, img, w)`` concatenated in
    that order (right contour, left contour, silhouette) and the silhouette block (or None)."""
    bsz = verts.shape[0]
    cl_right, cl_left = model.contour_landmarks_right, model.contour_landmarks_left
    use_occ = cfg.contour and cfg.occluding_contour
    idx_l, img_l, w_l = [], [], []
    occ_info = None
    yaw = yaw_pitch_roll(pose.rot)[0]
    right_front = yaw >= 0  # positive yaw: the subject's right cheek faces the camera
    both = torch.zeros_like(right_front) if use_occ else yaw.abs() < cfg.frontal_yaw_deg
    for cl, mc, active in (
        (cl_right, model.model_contour_right, right_front | both),
        (cl_left, model.model_contour_left, ~right_front | both),
    ):
        proj = pose.project_up(_take_b(verts, mc.expand(bsz, -1)).double())  # (B, C, 2)
        target = lm_up[:, cl]  # (B, L, 2)
        nearest = mc[_sqdist(target, proj).argmin(-1)]  # (B, L)
        idx_l.append(nearest)
        img_l.append(target)
        w_l.append(active.double()[:, None].expand(-1, cl.numel()))
    if use_occ:
        occ_idx, occ_img, occ_w, occ_lm = _occluding_correspondences(
            verts, pose, model.triangles, model.vertex_faces,
            lm_up, cl_right, cl_left, right_front, cfg,
        )
        idx_l.append(occ_idx)
        img_l.append(occ_img)
        w_l.append(occ_w)
        occ_info = (occ_idx, occ_w, occ_lm)
    return (torch.cat(idx_l, 1), torch.cat(img_l, 1), torch.cat(w_l, 1)), occ_info


def _landmark_errors(model: SFMTensors, verts: torch.Tensor, pose: _Pose, lm: torch.Tensor,
                     lm_up: torch.Tensor, f_idx: torch.Tensor, f_img: torch.Tensor,
                     var: tuple | None, occ_info: tuple | None):
    """Per-landmark image distances of the final fit ``(B, 68)`` (NaN where a landmark has no
    correspondence; a silhouette landmark takes its best pair), their RMS relative to the face
    size (``sqrt`` of the landmark box area), and that face size."""
    bsz, n_lm = lm.shape[0], lm.shape[1]
    dev = lm.device
    fixed_lm = (model.landmark_vertex >= 0).nonzero().squeeze(1)
    cl_right, cl_left = model.contour_landmarks_right, model.contour_landmarks_left
    n_c = cl_right.numel() + cl_left.numel()
    errors = torch.full((bsz, n_lm), float("nan"), dtype=torch.float64, device=dev)
    f_proj = pose.project_up(_take_b(verts, f_idx).double())
    errors[:, fixed_lm] = (f_proj - f_img).norm(dim=-1)
    if var is not None:
        # variable block: right contour (L), left contour (L), then silhouette pairs
        c_idx, c_img, c_w = var[0][:, :n_c], var[1][:, :n_c], var[2][:, :n_c]
        c_err = (pose.project_up(_take_b(verts, c_idx).double()) - c_img).norm(dim=-1)
        c_lm = torch.cat([cl_right, cl_left])
        errors[:, c_lm] = torch.where(c_w > 0, c_err, errors[:, c_lm])
        if occ_info is not None:
            o_idx, o_w, o_lm = occ_info
            o_proj = pose.project_up(_take_b(verts, o_idx).double())
            o_err = (o_proj - _take_b(lm_up, o_lm)).norm(dim=-1)
            o_err = torch.where(o_w > 0, o_err, torch.full_like(o_err, float("inf")))
            best = torch.full((bsz, n_lm), float("inf"), dtype=torch.float64, device=dev)
            best.scatter_reduce_(1, o_lm, o_err, reduce="amin")
            errors = torch.where(torch.isfinite(best) & torch.isnan(errors), best, errors)
    span = lm.amax(1) - lm.amin(1)
    face_size = (span[:, 0].clamp(min=0) * span[:, 1].clamp(min=0)).sqrt()
    finite = torch.isfinite(errors)
    sq = torch.where(finite, errors**2, torch.zeros_like(errors)).sum(1)
    rms = (sq / finite.sum(1).clamp(min=1)).sqrt()
    residual = rms / face_size.clamp(min=1e-6)
    return errors, residual, face_size


def _empty_result(model: SFMTensors) -> FitResult:
    """A :class:`FitResult` for a batch of zero faces."""
    dev, dt = model.device, model.dtype

    def z(*shape: int) -> torch.Tensor:
        return torch.zeros(0, *shape, dtype=dt, device=dev)

    return FitResult(
        vertices=z(model.num_vertices, 3), shape_coeffs=z(model.num_shape_coeffs),
        expr_coeffs=z(model.num_blendshapes), rotation=z(3, 3), scale=z(), translation=z(2),
        yaw=z(), pitch=z(), roll=z(), landmark_errors=z(68), residual=z(), face_size=z(),
    )


def _occluding_correspondences(
    verts: torch.Tensor,
    pose: _Pose,
    triangles: torch.Tensor,
    vertex_faces: torch.Tensor,
    lm_up: torch.Tensor,
    cl_right: torch.Tensor,
    cl_left: torch.Tensor,
    right_front: torch.Tensor,
    cfg: FitConfig,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Silhouette vertices matched to the away-facing jaw landmarks (eos closest-edge fitting).

    A vertex is on the silhouette when it ends an interior edge whose two triangles' normals
    have z components of different sign under the current rotation. Each silhouette vertex is
    paired with its nearest away-side jaw landmark if the squared pixel distance is at most
    ``occluding_threshold * scale``; the ``max_occluding`` nearest pairs are kept.
    Returns vertex indices ``(B, M)``, image points ``(B, M, 2)`` y-up, weights ``(B, M)`` and
    the landmark index of each pair ``(B, M)``.
    """
    bsz, n_v = verts.shape[:2]
    dev, dt = verts.device, verts.dtype
    cam = torch.einsum("bij,bvj->bvi", pose.rot[:, :2].to(dt), verts).contiguous()  # (B, V, 2)
    # gather each corner's (x, y) pair as one 2-wide element: a per-face gather from a table
    # that stays in cache (much faster on CPU than gathering batch-last rows)
    n_t = triangles.shape[0]
    # complex views exist for float32 / float64 (the signs need no more than float32)
    pairs = torch.view_as_complex(cam if dt in (torch.float32, torch.float64) else cam.float())
    tri_idx = triangles.t().reshape(1, -1).expand(bsz, -1)
    c0, c1, c2 = torch.gather(pairs, 1, tri_idx).view(bsz, 3, n_t).unbind(1)
    # sign of each triangle's normal z (eos compares glm::sign; sign(0) = 0 is its own class):
    # with corners as complex numbers, the 2D cross product of the edges is Im(conj(e1) e2)
    nz = torch.sign((c1 - c0).conj_physical_().mul_(c2 - c0).imag).to(torch.int8)  # (B, T)
    # eos: a vertex is on the occluding boundary when an interior edge at it separates
    # triangles of different sign. Around a vertex the triangles form a fan joined by such
    # edges, so this is the same as: the signs of the triangles around it are not all equal.
    # batch-last: gathering rows of B signs is fast on CPU
    around = nz.t().contiguous().index_select(0, vertex_faces.t().reshape(-1)).view(-1, n_v, bsz)
    mixed = torch.zeros(n_v, bsz, dtype=torch.bool, device=dev)
    for d in range(1, around.shape[0]):  # over the fan slots (D <= 16), not over faces
        mixed |= around[d] != around[0]
    on_sil = mixed.t().contiguous()  # (B, V)
    # compact each face's silhouette vertices (typically 100-300 of 3448) into (B, C) slots
    n_per = on_sil.sum(1)
    n_sil = int(n_per.max()) if bsz else 0
    if n_sil == 0:
        z = torch.zeros(bsz, 1, dtype=torch.long, device=dev)
        return z, torch.zeros(bsz, 1, 2, dtype=lm_up.dtype, device=dev), z.double(), z
    slot = torch.cumsum(on_sil, 1) - 1  # (B, V) slot of each silhouette vertex
    slot = torch.where(on_sil, slot, n_sil)  # non-silhouette vertices go to a dump column
    cand = torch.zeros(bsz, n_sil + 1, dtype=torch.long, device=dev)
    cand.scatter_(1, slot, torch.arange(n_v, device=dev).expand(bsz, -1))
    cand = cand[:, :n_sil]
    valid_c = torch.arange(n_sil, device=dev)[None] < n_per[:, None]  # (B, C)
    # away-side jaw landmarks: left when the right side faces the camera, and vice versa
    away = torch.where(right_front[:, None], cl_left[None], cl_right[None])  # (B, L)
    away_pts = _take_b(lm_up, away).to(dt)  # (B, L, 2)
    s = pose.scale.to(dt)
    cxy = _take_b(cam, cand)  # (B, C, 2) rotated x, y-up
    px = cxy[..., 0] * s[:, None] + pose.trans[:, 0].to(dt)[:, None]
    py = cxy[..., 1] * s[:, None] - pose.trans[:, 1].to(dt)[:, None]
    d2 = torch.square(px.unsqueeze(1) - away_pts[..., 0:1]) + torch.square(
        py.unsqueeze(1) - away_pts[..., 1:2]
    )  # (B, L, C)
    dmin, which = d2.min(1)  # (B, C) nearest away-side landmark
    ok = valid_c & (dmin <= cfg.occluding_threshold * s[:, None])
    m = min(cfg.max_occluding, n_sil)
    score = torch.where(ok, dmin, torch.full_like(dmin, float("inf")))
    top_d, top_c = torch.topk(score, m, dim=1, largest=False)  # (B, M)
    w = torch.isfinite(top_d).double()
    top_v = cand.gather(1, top_c)
    lm_idx = away.gather(1, which.gather(1, top_c))
    return top_v, _take_b(lm_up, lm_idx), w, lm_idx


def _sqdist(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Squared distances ``(B, N, M)`` between ``p`` ``(B, N, 2)`` and ``q`` ``(B, M, 2)``."""
    d2 = (p * p).sum(-1, keepdim=True) + (q * q).sum(-1).unsqueeze(1)
    d2 = d2 - 2.0 * (p @ q.transpose(1, 2))
    return d2.clamp_(min=0)
