"""The one error tree: a single root, an input branch (the item fails, the run goes on) and a
setup branch (the run stops), in every entry point."""

from __future__ import annotations

import inspect

import pytest

import depthseg.trainer
import pipeline.base.errors
import pipeline.datasets.protocols
import pipeline.run.parallel
import storage.errors
from pipeline.base.errors import (ConfigError, FasError, InputError, ModelAssetMissing, NoFaceDetected, SetupError,
                                  UnknownName, WorkerError)
from pipeline.console import error_message
from pipeline.face.detect import DETECTORS
from pipeline.io.items import WorkItem
from pipeline.run.config import PreprocessConfig
from pipeline.run.unit import preprocess_unit
from tests.conftest import load_rgb
from tests.helpers.media import make_face_video


def _error_classes():
    for mod in (pipeline.base.errors, storage.errors, depthseg.trainer, pipeline.datasets.protocols,
                pipeline.run.parallel):
        for _, cls in inspect.getmembers(mod, inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__ == mod.__name__:
                yield cls


def test_every_error_has_the_one_root():
    classes = [c for c in _error_classes() if c is not pipeline.base.errors.RunInterrupted]  # Ctrl-C
    assert len(classes) > 25
    assert [c.__name__ for c in classes if not issubclass(c, FasError)] == []
    for cls in classes:
        assert isinstance(cls.reason, str) and cls.exit_code in (1, 2)


def test_branches():
    assert issubclass(NoFaceDetected, InputError) and not issubclass(NoFaceDetected, SetupError)
    for cls in (ModelAssetMissing, ConfigError, UnknownName, pipeline.datasets.protocols.SubjectOverlapError):
        assert issubclass(cls, SetupError) and not issubclass(cls, InputError)
    for cls in (storage.errors.StoreError, WorkerError, depthseg.trainer.CheckpointError,
                depthseg.trainer.TrainingError):
        assert issubclass(cls, FasError) and not issubclass(cls, (InputError, SetupError))
    # the builtin bases callers already catch stay
    assert issubclass(ModelAssetMissing, FileNotFoundError) and issubclass(ConfigError, ValueError)


def test_registry_raises_the_config_error_listing_names():
    with pytest.raises(ConfigError) as err:
        DETECTORS.create("mtcnn-nope")
    assert isinstance(err.value, KeyError)  # what a name lookup raised before
    assert "blazeface" in str(err.value) and str(err.value).startswith("Wrong")  # not quoted as a KeyError is


def test_cli_message_and_exit_code_come_from_the_tree():
    assert error_message(storage.errors.IntegrityError("s: damaged")) == ("store error: s: damaged", 2)
    assert error_message(WorkerError("worker 1 died"))[1] == 1
    assert error_message(UnknownName("unknown detector 'x'")) == ("error: unknown detector 'x'", 2)
    assert error_message(depthseg.trainer.TrainingError("diverged"))[1] == 1


def test_setup_error_is_not_recorded_as_an_item_failure(tmp_path, portraits, model_dir):
    """A missing model file leaves the per-item step as it came (the Prefect task calls it per
    unit): recording it as the item's failure made a flow run "complete" with every item failed."""
    empty = tmp_path / "models"
    empty.mkdir()
    video = make_face_video(tmp_path / "clip.mp4", load_rgb(portraits[0]), n=2)
    item = WorkItem(path=str(video), label="live")
    with pytest.raises(ModelAssetMissing, match="models"):
        preprocess_unit(item, str(tmp_path / "s.zarr"), PreprocessConfig.flat(size=64, max_frames=2, model_dir=str(empty)))
    # an input error still fails only the item
    res = preprocess_unit(WorkItem(path=str(tmp_path / "missing.mp4"), label="live"), str(tmp_path / "s.zarr"),
                          PreprocessConfig.flat(size=64, model_dir=str(model_dir)))
    assert res.status == "failed" and res.reason == "not-found"
