"""DepthSeg networks: segmentation models (via segmentation-models-pytorch) over depth classes.

``build_model(arch, ...)`` returns a :class:`DepthSegNet`:

* input: ``(B, 3, in_size, in_size)`` float RGB in ``[0, 1]`` (normalised inside the model
  with the ImageNet mean/std, so callers never normalise themselves);
* output: ``(B, num_classes, label_size, label_size)`` logits over the quantized depth
  classes of :mod:`depthseg.labels`.

Architectures: ``pspnet`` and ``deeplabv3plus`` (the paper's), ``unet`` (baseline). Their
segmentation heads upsample straight to ``label_size`` when that is an integer factor of
the decoder's resolution; otherwise the logits are resized (area when shrinking, bilinear
when growing).

Pretrained encoders: ``encoder_weights=None`` (default) never touches the network.
A name such as ``"imagenet"`` is looked up **only in local caches** (the Hugging Face hub
cache smp downloads to, then ``<model dir>/smp/<encoder>.<weights>.safetensors``); when the
file is in neither, :class:`~pipeline.base.errors.ModelAssetMissing` says where it was looked
for and how to get it. A path to a ``.safetensors`` / ``.pt`` encoder state dict also works.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.base.assets import resolve_model_dir
from pipeline.base.errors import ConfigError, ModelAssetMissing
from pipeline.base.registry import Registry

from .labels import DEFAULT_LABEL_SIZE, DEFAULT_NUM_CLASSES, check_num_classes

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: architecture name -> factory(encoder, num_classes, label_size, in_size) -> smp model
ARCHITECTURES: Registry[nn.Module] = Registry("architecture")


class DepthSegNet(nn.Module):
    """A segmentation network whose logits are resized to ``label_size``.

    Attributes:
        net: the smp model (``net.encoder`` is the backbone).
        label_size: side of the output logits.
        arch_kwargs: the :func:`build_model` arguments that rebuild this model (plain dict).
    """

    def __init__(self, net: nn.Module, label_size: int, arch_kwargs: dict[str, Any]):
        super().__init__()
        self.net = net
        self.label_size = int(label_size)
        self.arch_kwargs = dict(arch_kwargs)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        # a module, not F.adaptive_avg_pool2d, so that export can swap it (depthseg.export)
        self.shrink = nn.AdaptiveAvgPool2d(self.label_size)

    @property
    def num_classes(self) -> int:
        return int(self.arch_kwargs["num_classes"])

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` float RGB in [0, 1] -> ``(B, K, label_size, label_size)`` logits."""
        x = (image - self.mean.to(image.dtype)) / self.std.to(image.dtype)
        logits = self.net(x)
        return resize_logits(logits, self.label_size, self.shrink)


def resize_logits(logits: torch.Tensor, size: int, shrink: nn.Module | None = None) -> torch.Tensor:
    """Resize ``(B, K, h, w)`` logits to ``(B, K, size, size)`` (area down, bilinear up);
    ``shrink``: the pooling module used to shrink (default adaptive average pooling)."""
    h, w = logits.shape[-2:]
    if (h, w) == (size, size):
        return logits
    if h >= size and w >= size:
        return shrink(logits) if shrink is not None else F.adaptive_avg_pool2d(logits, size)
    return F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)


def _head_upsampling(feature_size: float, label_size: int) -> int:
    """Integer upsampling of a head from ``feature_size`` to ``label_size`` (1 if not integral)."""
    factor = label_size / feature_size
    return int(factor) if factor >= 1 and float(factor).is_integer() else 1


def _smp():
    """segmentation_models_pytorch, imported on the first model built: it brings in timm and
    torchvision (~3 s), which the modules that only need the configs (the preprocess flow's task
    processes import ``depthseg.config`` through ``flows.params``) must not pay."""
    import segmentation_models_pytorch as smp

    return smp


@ARCHITECTURES.register("pspnet")
def _pspnet(encoder: str, num_classes: int, label_size: int, in_size: int):
    # encoder_depth=3: features at stride 8 (32x32 for a 256 input, the label size)
    up = _head_upsampling(in_size / 8, label_size)
    return _smp().PSPNet(encoder_name=encoder, encoder_weights=None, encoder_depth=3,
                      classes=num_classes, upsampling=up)


@ARCHITECTURES.register("deeplabv3plus")
def _deeplabv3plus(encoder: str, num_classes: int, label_size: int, in_size: int):
    # the decoder output is at stride 4
    up = _head_upsampling(in_size / 4, label_size)
    return _smp().DeepLabV3Plus(encoder_name=encoder, encoder_weights=None, classes=num_classes,
                             upsampling=up)


@ARCHITECTURES.register("unet")
def _unet(encoder: str, num_classes: int, label_size: int, in_size: int):
    return _smp().Unet(encoder_name=encoder, encoder_weights=None, classes=num_classes)


def architectures() -> list[str]:
    """Names accepted by :func:`build_model`."""
    return ARCHITECTURES.names()


def build_model(
    arch: str,
    encoder: str = "resnet18",
    num_classes: int = DEFAULT_NUM_CLASSES,
    label_size: int = DEFAULT_LABEL_SIZE,
    encoder_weights: str | os.PathLike | None = None,
    in_size: int = 256,
    *,
    model_dir: str | os.PathLike | None = None,
) -> DepthSegNet:
    """Build a DepthSeg network.

    Args:
        arch: ``pspnet``, ``deeplabv3plus`` or ``unet`` (unknown: ``KeyError`` listing them).
        encoder: any smp encoder name (``resnet18``, ``resnet34``, ``resnet50``,
            ``mobilenet_v2``, ``efficientnet-b0``, ...; unknown: ``KeyError`` listing them).
        num_classes: K depth classes (see :mod:`depthseg.labels`).
        label_size: side of the output logits.
        encoder_weights: ``None`` (random init), a weights name known to smp for this encoder
            (``"imagenet"``...) that must already be cached locally, or a path to an encoder
            state dict file.
        in_size: side of the input images (a multiple of the encoder's output stride).
        model_dir: where ``smp/<encoder>.<weights>.safetensors`` may be found (see
            :func:`pipeline.base.assets.resolve_model_dir`).
    """
    k = check_num_classes(num_classes)
    if label_size < 1 or in_size < 1:
        raise ConfigError(f"label_size and in_size must be positive, got {label_size}, {in_size}")
    net = ARCHITECTURES.create(arch, encoder=encoder, num_classes=k, label_size=int(label_size),
                               in_size=int(in_size))
    stride = int(net.encoder.output_stride)
    if in_size % stride:
        raise ConfigError(
            f"in_size={in_size} must be a multiple of {stride} (output stride of {arch}/{encoder})"
        )
    if encoder_weights is not None:
        path = resolve_encoder_weights(encoder, encoder_weights, model_dir)
        _load_encoder_state(net.encoder, path)
        log.info("loaded %s encoder weights from %s", encoder, path)
    kwargs = {"arch": arch, "encoder": encoder, "num_classes": k, "label_size": int(label_size),
              "in_size": int(in_size)}
    return DepthSegNet(net, label_size, kwargs)


def resolve_encoder_weights(
    encoder: str, weights: str | os.PathLike, model_dir: str | os.PathLike | None = None
) -> Path:
    """Local file holding ``weights`` for ``encoder``; never downloads.

    Raises:
        ModelAssetMissing: the weights are in no local cache (message says where to get them).
        KeyError: ``weights`` is neither a file nor a weights name smp knows for ``encoder``.
    """
    as_path = Path(os.fspath(weights)).expanduser()
    if as_path.suffix in (".safetensors", ".pt", ".pth", ".bin") or as_path.is_file():
        if not as_path.is_file():
            raise ModelAssetMissing(f"encoder weights file for {encoder!r} not found",
                                    source=str(as_path))
        return as_path
    name = str(weights)
    settings = _smp().encoders.encoders.get(encoder, {}).get("pretrained_settings", {})
    if name not in settings:
        raise KeyError(
            f"Wrong encoder weights `{name}` for encoder `{encoder}`, supported weights: "
            f"{sorted(settings)} (or a path to a state dict file)"
        )
    repo_id, revision = settings[name]["repo_id"], settings[name].get("revision")
    from huggingface_hub import try_to_load_from_cache  # smp's own dependency: only to resolve named weights

    cached = try_to_load_from_cache(repo_id, "model.safetensors", revision=revision)
    if isinstance(cached, str) and Path(cached).is_file():
        return Path(cached)
    local = resolve_model_dir(model_dir) / "smp" / f"{encoder}.{name}.safetensors"
    if local.is_file():
        return local
    raise ModelAssetMissing(
        f"{name} weights for encoder {encoder!r} are not cached and nothing is downloaded at run "
        f"time: looked in the Hugging Face cache (repo {repo_id}, revision {revision}) and at "
        f"{local}. On a machine with internet, run `huggingface-cli download {repo_id} "
        f"model.safetensors --revision {revision}` (then copy ~/.cache/huggingface) or save "
        f"the file as {local}; or use encoder_weights=None",
        source=f"{encoder}.{name}",
    )


def _load_encoder_state(encoder: nn.Module, path: Path) -> None:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file  # smp's own dependency: only for .safetensors files

        state = load_file(str(path), device="cpu")
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        encoder.load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(f"encoder weights do not match the encoder: {exc}", source=str(path)) from exc
