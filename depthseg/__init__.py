"""DepthSeg: face anti-spoofing by semantic segmentation of quantized pseudo-depth.

"Advanced Face Anti-Spoofing with Depth Segmentation" (IJCNN 2022): the depth map of a face
crop is predicted as a K-class segmentation (class 0 = zero depth: background and every
spoof pixel; classes 1..K-1 = equal bins of (0, 1]) with PSPNet / DeepLabv3+ (UNet as a
baseline) from segmentation-models-pytorch; the liveness score is the mean expected depth.

Modules: :mod:`~depthseg.labels` (quantization), :mod:`~depthseg.models`,
:mod:`~depthseg.losses`, :mod:`~depthseg.score`, :mod:`~depthseg.metrics` (ISO/IEC 30107-3),
:mod:`~depthseg.data` (store -> batches), :mod:`~depthseg.augment`,
:mod:`~depthseg.trainer`, :mod:`~depthseg.predict`, :mod:`~depthseg.evaluate`,
:mod:`~depthseg.inference` (:class:`Predictor`: images and videos, face detection included),
:mod:`~depthseg.export` (ONNX / TorchScript).
"""

from .augment import AugmentConfig, augment_batch
from .data import FrameDataset, SortedBatchSampler, make_loader, prepare_batch
from .evaluate import evaluate
from .export import export_checkpoint, read_metadata
from .labels import class_centres, depth_to_labels, expected_depth, quantize
from .losses import build_loss
from .metrics import pad_metrics
from .models import DepthSegNet, architectures, build_model
from .predict import CropPrediction, predict_crops, predict_dataset
from .score import frame_scores, video_scores
from .trainer import TrainConfig, TrainResult, load_checkpoint, train

__all__ = [
    "AugmentConfig",
    "CropPrediction",
    "DepthSegNet",
    "FrameDataset",
    "MediaPrediction",
    "Predictor",
    "SortedBatchSampler",
    "TrainConfig",
    "TrainResult",
    "architectures",
    "augment_batch",
    "build_loss",
    "build_model",
    "class_centres",
    "depth_to_labels",
    "evaluate",
    "expected_depth",
    "export_checkpoint",
    "frame_scores",
    "load_checkpoint",
    "make_loader",
    "pad_metrics",
    "predict_crops",
    "predict_dataset",
    "prepare_batch",
    "quantize",
    "read_metadata",
    "train",
    "video_scores",
]


def __getattr__(name: str):
    """``Predictor`` / ``MediaPrediction`` on first use: they bring in the preprocessing stages
    (pipeline.run), which the training core does not import."""
    if name in ("Predictor", "MediaPrediction"):
        from . import inference

        return getattr(inference, name)
    raise AttributeError(f"module 'depthseg' has no attribute {name!r}")
