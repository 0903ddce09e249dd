"""Typed exceptions of the preprocessing core.

Every error names the input it concerns and what went wrong, so that a run report can
record it per item while the rest of the run continues. ``exit_code`` is what the command
line exits with when one ends a command (2: bad input, config, store or checkpoint; 1: a run
that failed on good input); :class:`RunInterrupted` is Ctrl-C (130).
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base class of every error the preprocessing core raises on purpose."""

    #: short machine-readable reason used in run reports
    reason: str = "error"
    #: exit status of the command line when this error ends a command
    exit_code: int = 2

    def __init__(self, message: str, *, source: str | None = None):
        self.source = source
        super().__init__(f"{source}: {message}" if source else message)


class InputNotFound(PipelineError):
    reason = "not-found"


class CorruptVideo(PipelineError):
    reason = "corrupt-video"


class UnreadableImage(PipelineError):
    reason = "unreadable-image"


class ImageTooLarge(PipelineError):
    """An image (or video frame) over the configured pixel limit; refused before decoding it."""

    reason = "image-too-large"


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


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C ended a run after it put its house in order (open parts aborted, report filled in).

    A ``KeyboardInterrupt``, so that code catching that still sees it. ``report`` is the run's
    partial report (preprocess) or None; ``detail`` tells the user what was kept and how to go on.
    """

    def __init__(self, detail: str = "", *, report=None):
        self.detail = detail
        self.report = report
        super().__init__(detail)
