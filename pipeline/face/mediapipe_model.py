"""Where the ``mediapipe68`` landmark backend finds MediaPipe's face-landmark model, and loading it.

The model is ``face_landmark.tflite`` (468-point face mesh, 192 px input) as shipped inside the
``mediapipe==0.10.21`` wheel (later wheels ship no models; the package itself pins numpy<2 and
protobuf<5, so it is not installed: only the file is taken from its wheel). Looked up as
``mediapipe/face_landmark.tflite`` in the model directory (``--model-dir`` >
``$DEPTHSEG_MODEL_DIR`` > ``../shared/models``), then in :func:`installed_dir` of this Python
environment, where ``make setup`` puts it (``scripts/fetch_mediapipe_model.py``). It runs with
LiteRT (``ai-edge-litert``, the extra ``mediapipe``). Nothing here downloads anything.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pipeline.base.assets import resolve_model_dir
from pipeline.base.errors import ModelAssetMissing

#: the file inside a model directory
RELATIVE = "mediapipe/face_landmark.tflite"
#: the member of the mediapipe wheel it comes from, and that wheel
WHEEL_MEMBER = "mediapipe/modules/face_landmark/face_landmark.tflite"
WHEEL = "mediapipe==0.10.21"
#: sha256 of the file as the 0.10.21 wheel ships it
SHA256 = "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814"
HOW_TO_GET = ("`make setup`, or `python scripts/fetch_mediapipe_model.py [--dest MODEL_DIR]` (takes "
              f"{WHEEL_MEMBER} from the {WHEEL} wheel on PyPI)")


def installed_dir() -> Path:
    """This environment's model folder (``<sys.prefix>/share/depthseg-fas/models``)."""
    return Path(sys.prefix) / "share" / "depthseg-fas" / "models"


def model_file(model_dir: str | None = None) -> Path:
    """The model file: in the model directory, else in :func:`installed_dir`; raises
    :class:`ModelAssetMissing` naming both places and how to get it."""
    searched = [resolve_model_dir(model_dir) / RELATIVE, installed_dir() / RELATIVE]
    for path in searched:
        if path.is_file():
            return path
    raise ModelAssetMissing(
        f"MediaPipe face-landmark model not found (looked for {', '.join(map(str, searched))}); get it with "
        + HOW_TO_GET, source=str(searched[0]))


def load_interpreter(model_dir: str | None = None, *, threads: int = 1) -> Any:
    """A LiteRT interpreter of the model with its tensors allocated, on ``threads`` CPU threads."""
    path = model_file(model_dir)
    try:  # optional dependency (extra `mediapipe`): only this backend needs it
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as e:
        raise ModelAssetMissing("the mediapipe68 landmark backend needs LiteRT: "
                                "pip install ai-edge-litert (a dependency of depthseg-fas)", source=str(path)) from e
    interpreter = Interpreter(model_path=str(path), num_threads=int(threads))
    interpreter.allocate_tensors()
    return interpreter
