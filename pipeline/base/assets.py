"""Where model files are found: ``--model-dir`` flag > ``DEPTHSEG_MODEL_DIR`` > ``../shared/models``.

No code here downloads anything. A missing file raises :class:`ModelAssetMissing` naming the
file, the directories searched and where to get it.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.base.errors import ModelAssetMissing

ENV_VAR = "DEPTHSEG_MODEL_DIR"
PROJECT_ROOT = Path(__file__).resolve().parents[2]  # pipeline/base/assets.py -> the checkout

#: where each known asset comes from, shown when it is missing
SOURCES = {
    "sfm": "the share/ folder of https://github.com/patrikhuber/eos (sfm_shape_3448.bin, "
    "expression_blendshapes_3448.bin, ibug_to_sfm.txt, sfm_model_contours.json)",
    "blazeface": "https://github.com/hollance/BlazeFace-PyTorch (blazeface.pth, anchors.npy, "
    "blazefaceback.pth, anchorsback.npy)",
    "sfd": "face-alignment's S3FD weights, s3fd-619a316812.pth from "
    "https://www.adrianbulat.com/downloads/python-fan/",
    "fan": "face-alignment's FAN weights (2DFAN4-cd938726ad.zip / 3DFAN4-4a694010b9.zip, "
    "depth-6c4283c0e0.zip) from https://www.adrianbulat.com/downloads/python-fan/",
    "insightface": "an insightface model pack (e.g. buffalo_l: det_10g.onnx, 1k3d68.onnx) from "
    "https://github.com/deepinsight/insightface/releases",
}


def default_model_dirs() -> list[Path]:
    """Fallback model directories, most specific first."""
    return [PROJECT_ROOT.parent / "shared" / "models", Path.cwd().parent / "shared" / "models"]


def resolve_model_dir(model_dir: str | os.PathLike | None = None) -> Path:
    """The model directory: the argument, else ``$DEPTHSEG_MODEL_DIR``, else ``../shared/models``."""
    if model_dir:
        return Path(model_dir).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    for cand in default_model_dirs():
        if cand.is_dir():
            return cand
    return default_model_dirs()[0]


def asset_path(
    relative: str, model_dir: str | os.PathLike | None = None, *, source_key: str | None = None
) -> Path:
    """Path of ``relative`` (e.g. ``"sfm/sfm_shape_3448.bin"``) inside the model directory.

    Raises :class:`ModelAssetMissing` with the file, the directory and where to get it.
    """
    root = resolve_model_dir(model_dir)
    path = root / relative
    if path.is_file():
        return path
    key = source_key or relative.split("/", 1)[0]
    where = SOURCES.get(key, "the project's README (section 'Model files')")
    raise ModelAssetMissing(
        f"model file {relative!r} not found in model directory {str(root)!r} "
        f"(set --model-dir or ${ENV_VAR}); get it from {where}",
        source=str(path),
    )
