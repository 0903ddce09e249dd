"""Export a checkpoint to ONNX or TorchScript: one file that scores face crops without this project.

The exported graph takes ``image``: ``(B, 3, S, S)`` float32 RGB in ``[0, 1]`` at the checkpoint's
input size ``S`` (the ImageNet mean/std normalisation is inside the graph), and returns

* ``score``: ``(B,)`` frame scores (mean expected depth, high = live), as :mod:`depthseg.score`;
* ``depth``: ``(B, L, L)`` expected-depth maps in ``[0, 1]``.

A user compares ``score`` with the dev threshold stored in the file (frame level; a video's score
is the mean of its frames' scores, compared with the video threshold). The file carries, as
metadata (ONNX ``metadata_props``; TorchScript extra file ``depthseg.json``), everything needed to
feed and read it: input size and layout, mean/std, number of depth classes, label size, class
centres, the frame and video thresholds, architecture and source checkpoint
(:func:`read_metadata` reads either format).

Why the input size is fixed: adaptive average pooling (PSPNet's pyramid pooling, DeepLabv3+'s
image pooling, the logits' resize to the label size) has no ONNX form when the output size does
not divide the input size (PSPNet pools an 8x8 map to 3x3 at a 64 input). At a fixed size every
such pooling is a fixed linear map: :class:`MatrixAdaptiveAvgPool2d` computes it as two small
matrix products (``P_h @ x @ P_w^T``, the exact bin means of ``adaptive_avg_pool2d``), which
traces to plain ``MatMul`` nodes. The model is traced once (``torch.jit.trace``) with those
modules swapped in, and that trace is what both formats hold, so the ONNX and TorchScript files
compute the same graph. The batch dimension stays dynamic.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from pipeline.base.errors import ConfigError
from pipeline.base.options import check_fields, opt

from .labels import class_centres
from .models import IMAGENET_MEAN, IMAGENET_STD, DepthSegNet
from .score import frame_scores
from .trainer import load_checkpoint

log = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript")
#: name of the metadata file inside a TorchScript archive (and key prefix of ONNX metadata_props)
METADATA_NAME = "depthseg.json"
ONNX_OPSET = 17


@dataclass(frozen=True)
class ExportConfig:
    """The ``export`` command's options (its CLI flags are generated from these fields)."""

    checkpoint: str = opt(help="checkpoint written by train (best.pt)")
    format: str = opt(help="file format", choices=FORMATS)
    output: str | None = opt(None, help="file to write (default: the checkpoint's path with .onnx / .torchscript.pt)")

    def __post_init__(self) -> None:
        check_fields(self)


def pool_matrix(n_in: int, n_out: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(n_out, n_in)`` averaging matrix of 1-D adaptive average pooling: row ``i`` averages
    input bins ``[floor(i * n_in / n_out), ceil((i + 1) * n_in / n_out))`` (PyTorch's rule)."""
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_out):
        start, end = (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)
        m[i, start:end] = 1.0 / (end - start)
    return m.to(dtype)


class MatrixAdaptiveAvgPool2d(nn.Module):
    """``nn.AdaptiveAvgPool2d`` as ``P_h @ x @ P_w^T`` for the input size seen when traced."""

    def __init__(self, output_size: int | tuple[int | None, int | None]):
        super().__init__()
        self.output_size = output_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        out = self.output_size if isinstance(self.output_size, (tuple, list)) else (self.output_size,) * 2
        oh, ow = (h if out[0] is None else int(out[0])), (w if out[1] is None else int(out[1]))
        ph = pool_matrix(h, oh, x.dtype).to(x.device)
        pw = pool_matrix(w, ow, x.dtype).to(x.device)
        return torch.matmul(torch.matmul(ph, x), pw.t())


def _swap_adaptive_pools(module: nn.Module) -> int:
    """Replace every ``nn.AdaptiveAvgPool2d`` under ``module`` (in place); returns how many."""
    n = 0
    for name, child in module.named_children():
        if isinstance(child, nn.AdaptiveAvgPool2d):
            setattr(module, name, MatrixAdaptiveAvgPool2d(child.output_size))
            n += 1
        else:
            n += _swap_adaptive_pools(child)
    return n


class ScoringModel(nn.Module):
    """``image (B, 3, S, S) in [0, 1]`` -> ``(score (B,), depth (B, L, L))`` of a DepthSeg model."""

    def __init__(self, model: DepthSegNet):
        super().__init__()
        self.model = model
        self.register_buffer("centres", class_centres(model.num_classes), persistent=False)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return frame_scores(self.model(image), self.centres)


def trace_scoring_model(model: DepthSegNet, batch: int = 2) -> torch.jit.ScriptModule:
    """The scoring graph of ``model`` (a CPU copy, adaptive pools as matrices) traced at its input size."""
    scorer = ScoringModel(copy.deepcopy(model).float().cpu().eval()).eval()
    _swap_adaptive_pools(scorer)
    size = int(model.arch_kwargs["in_size"])
    example = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), warnings.catch_warnings():
        # the size-dependent branches and int(shape) are meant to be frozen at this input size
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return torch.jit.trace(scorer, (example,), check_trace=False)


def export_metadata(meta: dict[str, Any], checkpoint: str | os.PathLike) -> dict[str, Any]:
    """What a user of the exported file needs, from a checkpoint's ``meta`` (:func:`load_checkpoint`)."""
    kw = meta["model_kwargs"]
    thresholds = meta.get("thresholds") or {}
    return {
        "format": "depthseg-export",
        "format_version": 1,
        "input_name": "image",
        "input_layout": "NCHW float32 RGB in [0, 1] (uint8 / 255), fixed S x S; batch dynamic",
        "input_size": int(kw["in_size"]),
        "normalisation": "inside the model: (x - mean) / std",
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "outputs": {"score": "(B,) frame score, mean expected depth in [0, 1], high = live",
                    "depth": "(B, L, L) expected depth in [0, 1]"},
        "num_classes": int(kw["num_classes"]),
        "label_size": int(kw["label_size"]),
        "class_centres": [float(c) for c in class_centres(int(kw["num_classes"])).tolist()],
        "decision": "live if score >= threshold (frame threshold for one frame; video threshold for "
                    "the mean score of a video's frames); null thresholds: no dev set, undecided",
        "threshold_frame": _finite_or_none(thresholds.get("frame", meta.get("threshold"))),
        "threshold_video": _finite_or_none(thresholds.get("video")),
        "arch": kw["arch"],
        "encoder": kw["encoder"],
        "epoch": meta.get("epoch"),
        "source_checkpoint": str(Path(checkpoint).resolve()),
        "versions": meta.get("versions", {}),
    }


def _finite_or_none(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if value == value and abs(value) != float("inf") else None


def export_checkpoint(checkpoint: str | os.PathLike, fmt: str, output: str | os.PathLike | None = None) -> Path:
    """Write the scoring graph of ``checkpoint`` as ``fmt`` (``onnx`` | ``torchscript``) to
    ``output`` (default: the checkpoint's path with ``.onnx`` / ``.torchscript.pt``); returns it."""
    cfg = ExportConfig(os.fspath(checkpoint), fmt, os.fspath(output) if output else None)  # checks fmt
    ckpt = Path(cfg.checkpoint)
    out = Path(cfg.output) if cfg.output else ckpt.with_suffix(".onnx" if fmt == "onnx" else ".torchscript.pt")
    model, meta = load_checkpoint(ckpt, device="cpu")
    metadata = export_metadata(meta, ckpt)
    traced = trace_scoring_model(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        if fmt == "onnx":
            _write_onnx(traced, metadata, tmp)
        else:
            torch.jit.save(traced, str(tmp), _extra_files={METADATA_NAME: json.dumps(metadata)})
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("exported %s (%s, input %d) to %s", ckpt, fmt, metadata["input_size"], out)
    return out


def _write_onnx(traced: torch.jit.ScriptModule, metadata: dict[str, Any], path: Path) -> None:
    try:
        import onnx  # optional dependency (the export extra), imported on use
    except ImportError:
        raise ConfigError("ONNX export needs the onnx package: pip install 'depthseg-fas[export]'") from None
    size = metadata["input_size"]
    example = torch.zeros(1, 3, size, size)
    with warnings.catch_warnings():  # the TorchScript-based exporter is deprecated, not wrong
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", "no signature found", UserWarning)
        torch.onnx.export(traced, (example,), str(path), dynamo=False, opset_version=ONNX_OPSET,
                          input_names=["image"], output_names=["score", "depth"],
                          dynamic_axes={"image": {0: "batch"}, "score": {0: "batch"}, "depth": {0: "batch"}})
    proto = onnx.load(str(path))
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.save(proto, str(path))


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of an exported file (``.onnx`` or TorchScript), as :func:`export_metadata` wrote it."""
    p = Path(path)
    if p.suffix == ".onnx":
        import onnx  # optional dependency (the export extra): only .onnx files need it

        proto = onnx.load(str(p), load_external_data=False)
        return {e.key: json.loads(e.value) for e in proto.metadata_props}
    files = {METADATA_NAME: ""}
    torch.jit.load(str(p), map_location="cpu", _extra_files=files)
    return json.loads(files[METADATA_NAME])
