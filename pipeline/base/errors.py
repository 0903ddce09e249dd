"""Typed exceptions of the preprocessing core.

Every error names the input it concerns and what went wrong, so that a run report can
record it per item while the rest of the run continues.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base class of every error the preprocessing core raises on purpose."""

    #: short machine-readable reason used in run reports
    reason: str = "error"

    def __init__(self, message: str, *, source: str | None = None):
        self.source = source
        super().__init__(f"{source}: {message}" if source else message)


class InputNotFound(PipelineError):
    reason = "not-found"


class CorruptVideo(PipelineError):
    reason = "corrupt-video"


class UnreadableImage(PipelineError):
    reason = "unreadable-image"


class UnsupportedInput(PipelineError):
    reason = "unsupported-input"


class NoFaceDetected(PipelineError):
    reason = "no-face"


class LandmarkError(PipelineError):
    reason = "landmarks-failed"


class FitError(PipelineError):
    reason = "fit-failed"


class ModelAssetMissing(PipelineError, FileNotFoundError):
    """A model file (weights, 3D model) is missing from the model directory."""

    reason = "model-asset-missing"


class ConfigError(PipelineError, ValueError):
    """A bad parameter; the message names the parameter."""

    reason = "bad-config"


class DatasetLayoutError(PipelineError):
    """A file name or CSV row that does not follow a dataset's official layout."""

    reason = "bad-layout"
