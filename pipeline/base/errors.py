"""The project's one error tree: every error raised on purpose derives from :class:`FasError`.

Two branches decide what a run does with an error, in every entry point (CLI, runners, the
Prefect task):

- :class:`InputError`: one item is bad (missing, corrupt, no face...). The item fails with its
  ``reason`` in the run report and the run goes on.
- :class:`SetupError`: the run itself cannot work (a model file is missing, a parameter is bad).
  It stops at once: recording it against every item would report a wrong cause a thousand times.

Beside them under the root: ``storage.errors.StoreError`` (the store), :class:`WorkerError` (a
worker process, parallel runner) and ``depthseg.trainer``'s ``CheckpointError`` / ``TrainingError``.
This module imports nothing, so ``storage`` (which imports nothing else of ``pipeline``) and
``depthseg`` can derive from it without a circle.

Every error names the input it concerns. ``exit_code`` is what the command line exits with when
one ends a command (2: bad input, config, store or checkpoint; 1: a run that failed on good
input); :class:`RunInterrupted` is Ctrl-C (130).
"""

from __future__ import annotations


class FasError(Exception):
    """Root of every error the project raises on purpose."""

    #: short machine-readable reason used in run reports
    reason: str = "error"
    #: exit status of the command line when this error ends a command
    exit_code: int = 2

    def __init__(self, message: str, *, source: str | None = None):
        self.source = source
        super().__init__(f"{source}: {message}" if source else message)


# ------------------------------------------------------------------ input errors: the item fails


class InputError(FasError):
    """One input item cannot be processed; recorded per item, the run goes on."""


class InputNotFound(InputError):
    reason = "not-found"


class CorruptVideo(InputError):
    reason = "corrupt-video"


class UnreadableImage(InputError):
    reason = "unreadable-image"


class ImageTooLarge(InputError):
    """An image (or video frame) over the configured pixel limit; refused before decoding it."""

    reason = "image-too-large"


class UnsupportedInput(InputError):
    reason = "unsupported-input"


class NoFaceDetected(InputError):
    reason = "no-face"


class LandmarkError(InputError):
    reason = "landmarks-failed"


class FitError(InputError):
    reason = "fit-failed"


class DatasetLayoutError(InputError):
    """A file name or CSV row that does not follow a dataset's official layout."""

    reason = "bad-layout"


# ------------------------------------------------------------------ setup errors: the run stops


class SetupError(FasError):
    """The run cannot work at all (environment or configuration); it stops at once."""


class ModelAssetMissing(SetupError, FileNotFoundError):
    """A model file (weights, 3D model) is missing from the model directory."""

    reason = "model-asset-missing"


class ConfigError(SetupError, ValueError):
    """A bad parameter; the message names the parameter."""

    reason = "bad-config"


class UnknownName(ConfigError, KeyError):
    """A name that no registry entry has (detector, dataset adapter, loss...); the message
    lists the valid names. Also a ``KeyError``, what a name lookup raised before this tree."""

    __str__ = Exception.__str__  # KeyError's own would quote the message


# ------------------------------------------------------------------ the run's machinery


class WorkerError(FasError, RuntimeError):
    """A worker process failed in a way that concerns the whole run (not one item)."""

    reason = "worker-failed"
    exit_code = 1


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C ended a run after it put its house in order (open parts aborted, report filled in).

    A ``KeyboardInterrupt``, so that code catching that still sees it. ``report`` is the run's
    partial report (preprocess) or None; ``detail`` tells the user what was kept and how to go on.
    """

    def __init__(self, detail: str = "", *, report=None):
        self.detail = detail
        self.report = report
        super().__init__(detail)
