"""The Surrey Face Model (SFM, 3448 vertices) as plain numpy arrays and torch tensors.

Files are read from the model directory (see :mod:`pipeline.base.assets`), sub-folder ``sfm/``:

* ``sfm_shape_3448.bin`` - PCA shape model (mean, orthonormal basis, eigenvalues, triangles),
  read with eos-py (``eos.morphablemodel.load_model``);
* ``expression_blendshapes_3448.bin`` - 6 expression blendshapes (eos-py ``load_blendshapes``);
* ``ibug_to_sfm.txt`` - TOML: iBUG-68 id (1-based) -> SFM vertex index, plus the jaw contour
  landmark ids (``[contour_landmarks]``);
* ``sfm_model_contours.json`` - the model's right/left jaw contour vertex lists;
* ``sfm_3448_edge_topology.json`` - (optional) interior edge -> adjacent faces / vertices, kept
  for reference (the silhouette test of :mod:`pipeline.reconstruct.fit` uses the equivalent per-vertex
  triangle fans, :attr:`SFMTensors.vertex_faces`).

Model coordinates: right-handed, x to the subject's left (image right in a frontal view),
y up, z out of the face towards the viewer; units are roughly millimetres.

Loading does no work at import time; :func:`load_sfm` caches one model per resolved directory.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.base.assets import asset_path, resolve_model_dir
from pipeline.base.errors import ConfigError, ModelAssetMissing
from pipeline.reconstruct.mesh import hole_fans

logger = logging.getLogger(__name__)

__all__ = ["SFMModel", "SFMTensors", "load_sfm", "SHAPE_FILE", "BLENDSHAPES_FILE"]

SHAPE_FILE = "sfm/sfm_shape_3448.bin"
BLENDSHAPES_FILE = "sfm/expression_blendshapes_3448.bin"
MAPPING_FILE = "sfm/ibug_to_sfm.txt"
CONTOURS_FILE = "sfm/sfm_model_contours.json"
EDGE_TOPOLOGY_FILE = "sfm/sfm_3448_edge_topology.json"


@dataclass(frozen=True)
class SFMTensors:
    """The SFM as torch tensors on one device (see :meth:`SFMModel.to_torch`).

    Shapes (``V`` vertices, ``K`` shape components, ``E`` expression blendshapes,
    ``T`` triangles, ``Ed`` interior edges):

    * ``mean`` ``(V, 3)``; ``basis`` ``(V, 3, K)`` orthonormal PCA basis;
      ``eigenvalues`` ``(K,)``; ``basis_rescaled`` ``(V, 3, K)`` = basis * sqrt(eigenvalues)
      (coefficients on this basis are ~N(0, 1), eos's convention);
    * ``blendshapes`` ``(V, 3, E)`` expression deformations (added to the shape);
    * ``triangles`` ``(T, 3)`` int64 vertex indices;
    * ``landmark_vertex`` ``(68,)`` int64 SFM vertex of each iBUG landmark (index 0 = iBUG 1),
      ``-1`` where the landmark has no fixed mapping (jaw contour and some inner-mouth points);
    * ``contour_landmarks_right`` / ``_left`` ``(8,)`` int64 landmark indices (0-based) of the
      jaw contour (iBUG 1-8 and 10-17); ``model_contour_right`` / ``_left`` ``(Nc,)`` int64 SFM
      vertices of the model's jaw contour;
    * ``edge_faces`` / ``edge_vertices`` ``(Ed, 2)`` int64 (0-based) adjacent triangles /
      end vertices of each interior mesh edge, or ``None`` without the edge-topology file;
    * ``vertex_faces`` ``(V, D)`` int64 the triangles around each vertex, padded by repeating
      the vertex's first triangle (so a max / min over a row ignores the padding);
    * ``holes`` the border vertex lists ``(n_j,)`` of the mesh's inner holes (the mouth) and
      ``closed_triangles`` ``(T + sum n_j, 3)`` the triangles with those holes closed by fans to
      one appended vertex per hole (:mod:`pipeline.reconstruct.mesh`; the depth labels use them).
    """

    mean: torch.Tensor
    basis: torch.Tensor
    eigenvalues: torch.Tensor
    basis_rescaled: torch.Tensor
    blendshapes: torch.Tensor
    triangles: torch.Tensor
    landmark_vertex: torch.Tensor
    contour_landmarks_right: torch.Tensor
    contour_landmarks_left: torch.Tensor
    model_contour_right: torch.Tensor
    model_contour_left: torch.Tensor
    edge_faces: torch.Tensor | None
    edge_vertices: torch.Tensor | None
    vertex_faces: torch.Tensor | None = None
    holes: tuple[torch.Tensor, ...] = ()
    closed_triangles: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        return self.mean.device

    @property
    def dtype(self) -> torch.dtype:
        return self.mean.dtype

    @property
    def num_vertices(self) -> int:
        return int(self.mean.shape[0])

    @property
    def num_shape_coeffs(self) -> int:
        return int(self.basis.shape[2])

    @property
    def num_blendshapes(self) -> int:
        return int(self.blendshapes.shape[2])


@dataclass(frozen=True)
class SFMModel:
    """The Surrey Face Model as numpy arrays (float32 geometry, int64 indices).

    * ``shape_mean`` ``(3V,)`` interleaved ``x0, y0, z0, x1, ...``;
    * ``shape_basis`` ``(3V, K)`` orthonormal PCA basis; ``eigenvalues`` ``(K,)`` variances;
    * ``triangles`` ``(T, 3)``;
    * ``blendshapes`` ``(3V, E)`` expression deformations, ``blendshape_names`` their names;
    * ``landmark_vertex`` ``(68,)`` SFM vertex per iBUG landmark (``-1`` = unmapped);
    * ``contour_landmarks_right`` / ``_left`` 0-based iBUG indices of the jaw contour landmarks;
    * ``model_contour_right`` / ``_left`` SFM jaw contour vertices;
    * ``edge_faces`` / ``edge_vertices`` ``(Ed, 2)`` 0-based interior-edge topology, or ``None``.
    """

    shape_mean: np.ndarray
    shape_basis: np.ndarray
    eigenvalues: np.ndarray
    triangles: np.ndarray
    blendshapes: np.ndarray
    blendshape_names: tuple[str, ...]
    landmark_vertex: np.ndarray
    contour_landmarks_right: np.ndarray
    contour_landmarks_left: np.ndarray
    model_contour_right: np.ndarray
    model_contour_left: np.ndarray
    edge_faces: np.ndarray | None
    edge_vertices: np.ndarray | None
    source: str = ""

    @property
    def num_vertices(self) -> int:
        return int(self.shape_mean.shape[0] // 3)

    def to_torch(
        self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
    ) -> SFMTensors:
        """Tensors of the model on ``device`` (geometry in ``dtype``, indices int64)."""
        if not dtype.is_floating_point:
            raise ConfigError(f"SFMModel.to_torch: dtype must be floating point, got {dtype}")
        v = self.num_vertices

        def f(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype, device=device)

        def i(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.int64, device=device)

        basis = self.shape_basis.reshape(v, 3, -1)
        rescaled = basis * np.sqrt(np.maximum(self.eigenvalues, 0.0))[None, None, :]
        closed, holes, _ = hole_fans(self.triangles, v)
        return SFMTensors(
            mean=f(self.shape_mean.reshape(v, 3)),
            basis=f(basis),
            eigenvalues=f(self.eigenvalues),
            basis_rescaled=f(rescaled),
            blendshapes=f(self.blendshapes.reshape(v, 3, -1)),
            triangles=i(self.triangles),
            landmark_vertex=i(self.landmark_vertex),
            contour_landmarks_right=i(self.contour_landmarks_right),
            contour_landmarks_left=i(self.contour_landmarks_left),
            model_contour_right=i(self.model_contour_right),
            model_contour_left=i(self.model_contour_left),
            edge_faces=None if self.edge_faces is None else i(self.edge_faces),
            edge_vertices=None if self.edge_vertices is None else i(self.edge_vertices),
            vertex_faces=i(_vertex_faces(self.triangles, v)),
            holes=tuple(i(h) for h in holes),
            closed_triangles=i(closed),
        )


def _vertex_faces(triangles: np.ndarray, n_vert: int) -> np.ndarray:
    """``(V, D)`` triangles around each vertex, padded with the vertex's first triangle
    (0 for a vertex in no triangle)."""
    corners = triangles.reshape(-1)
    tri_ids = np.repeat(np.arange(len(triangles)), 3)
    order = np.argsort(corners, kind="stable")
    corners, tri_ids = corners[order], tri_ids[order]
    counts = np.bincount(corners, minlength=n_vert)
    starts = np.cumsum(counts) - counts
    first = np.where(counts > 0, tri_ids[np.minimum(starts, len(tri_ids) - 1)], 0)
    out = np.repeat(first[:, None], max(int(counts.max()), 1), axis=1).astype(np.int64)
    slot = np.arange(len(corners)) - np.repeat(starts, counts)
    out[corners, slot] = tri_ids
    return out


def load_sfm(model_dir: str | os.PathLike | None = None) -> SFMModel:
    """Load (and cache) the SFM from ``<model_dir>/sfm``.

    ``model_dir`` follows :func:`pipeline.base.assets.resolve_model_dir`. Raises
    :class:`ModelAssetMissing` naming a missing file, :class:`ImportError` if eos-py is not
    installed, and :class:`ConfigError` for a malformed mapping/contour file.
    """
    root = resolve_model_dir(model_dir).resolve()
    return _load_sfm_cached(str(root))


@functools.lru_cache(maxsize=4)
def _load_sfm_cached(root: str) -> SFMModel:
    shape_path = asset_path(SHAPE_FILE, root)
    blend_path = asset_path(BLENDSHAPES_FILE, root)
    mapping_path = asset_path(MAPPING_FILE, root)
    contours_path = asset_path(CONTOURS_FILE, root)
    try:
        import eos  # noqa: PLC0415  (optional dependency, imported on use)
    except ImportError as exc:  # pragma: no cover - eos-py is installed in the project venv
        raise ImportError(
            f"reading the Surrey Face Model ({shape_path}) needs eos-py: pip install 'eos-py>=1.4'"
        ) from exc

    model = eos.morphablemodel.load_model(str(shape_path))
    shape = model.get_shape_model()
    mean = np.asarray(shape.get_mean(), dtype=np.float32).reshape(-1)
    basis = np.asarray(shape.get_orthonormal_pca_basis(), dtype=np.float32)
    eig = np.asarray(shape.get_eigenvalues(), dtype=np.float32).reshape(-1)
    tris = np.asarray(shape.get_triangle_list(), dtype=np.int64).reshape(-1, 3)
    n_vert = mean.shape[0] // 3
    if basis.shape[0] != mean.shape[0] or basis.shape[1] != eig.shape[0]:
        raise ConfigError(
            f"inconsistent shape model: mean {mean.shape}, basis {basis.shape}, "
            f"eigenvalues {eig.shape}",
            source=str(shape_path),
        )

    bs = eos.morphablemodel.load_blendshapes(str(blend_path))
    if not bs:
        raise ConfigError("no blendshapes in file", source=str(blend_path))
    blend = np.stack([np.asarray(b.deformation, dtype=np.float32).reshape(-1) for b in bs], 1)
    names = tuple(str(b.name) for b in bs)
    if blend.shape[0] != mean.shape[0]:
        raise ConfigError(
            f"blendshapes have {blend.shape[0] // 3} vertices, the shape model {n_vert}",
            source=str(blend_path),
        )

    lm_vertex, right_ids, left_ids = _read_mapping(mapping_path, n_vert)
    model_right, model_left = _read_contours(contours_path, n_vert)
    edge_faces = edge_vertices = None
    try:
        edge_path = asset_path(EDGE_TOPOLOGY_FILE, root)
    except ModelAssetMissing:
        logger.info("no %s in %s: occluding-contour fitting unavailable", EDGE_TOPOLOGY_FILE, root)
    else:
        edge_faces, edge_vertices = _read_edge_topology(edge_path, tris.shape[0], n_vert)

    logger.info(
        "loaded SFM from %s: %d vertices, %d shape components, %d blendshapes, %d triangles",
        root, n_vert, basis.shape[1], blend.shape[1], tris.shape[0],
    )
    return SFMModel(
        shape_mean=mean,
        shape_basis=basis,
        eigenvalues=eig,
        triangles=tris,
        blendshapes=blend,
        blendshape_names=names,
        landmark_vertex=lm_vertex,
        contour_landmarks_right=right_ids,
        contour_landmarks_left=left_ids,
        model_contour_right=model_right,
        model_contour_left=model_left,
        edge_faces=edge_faces,
        edge_vertices=edge_vertices,
        source=root,
    )


def _read_mapping(path: Path, n_vert: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """iBUG (1-based) -> vertex mapping and the contour landmark ids (0-based) from TOML."""
    try:
        data = tomllib.loads(path.read_text())
        mappings = data["landmark_mappings"]
        contour = data.get("contour_landmarks", {})
        lm_vertex = np.full(68, -1, dtype=np.int64)
        for key, vert in mappings.items():
            idx = int(key) - 1
            if not 0 <= idx < 68 or not 0 <= int(vert) < n_vert:
                raise ValueError(f"mapping {key} = {vert} out of range")
            lm_vertex[idx] = int(vert)
        right = np.asarray([int(x) - 1 for x in contour.get("right", [])], dtype=np.int64)
        left = np.asarray([int(x) - 1 for x in contour.get("left", [])], dtype=np.int64)
    except (tomllib.TOMLDecodeError, KeyError, ValueError, TypeError) as exc:
        raise ConfigError(f"malformed iBUG->SFM mapping file: {exc}", source=str(path)) from exc
    if right.size == 0 or left.size == 0:
        raise ConfigError("mapping file has no [contour_landmarks] right/left", source=str(path))
    return lm_vertex, right, left


def _read_contours(path: Path, n_vert: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        data = json.loads(path.read_text())["model_contour"]
        right = np.asarray(data["right_contour"], dtype=np.int64)
        left = np.asarray(data["left_contour"], dtype=np.int64)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"malformed model contour file: {exc}", source=str(path)) from exc
    for arr in (right, left):
        if arr.size == 0 or arr.min() < 0 or arr.max() >= n_vert:
            raise ConfigError("model contour vertex index out of range", source=str(path))
    return right, left


def _read_edge_topology(path: Path, n_tri: int, n_vert: int) -> tuple[np.ndarray, np.ndarray]:
    """Interior edges only (eos marks a boundary edge with adjacent face 0); 0-based indices."""
    try:
        data = json.loads(path.read_text())["edge_topology"]
        faces = np.asarray([[e["value0"], e["value1"]] for e in data["adjacent_faces"]], np.int64)
        verts = np.asarray(
            [[e["value0"], e["value1"]] for e in data["adjacent_vertices"]], np.int64
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"malformed edge topology file: {exc}", source=str(path)) from exc
    keep = (faces[:, 0] > 0) & (faces[:, 1] > 0)
    faces, verts = faces[keep] - 1, verts[keep] - 1
    if faces.max() >= n_tri or verts.min() < 0 or verts.max() >= n_vert:
        raise ConfigError("edge topology index out of range", source=str(path))
    return faces, verts
