"""Label versioning (issue 13, item 8): the stored config names the label version, so a store of
older labels is refused instead of getting new labels mixed in, and the flow's cache key (the
config) changes with it."""

from __future__ import annotations

import pytest

import storage
from pipeline.base.errors import ConfigError
from pipeline.io.items import WorkItem
from pipeline.reconstruct import LABEL_VERSION
from pipeline.run.config import PreprocessConfig
from pipeline.run.runners import run_preprocess
from tests.conftest import FACES
from tests.helpers.stores import PARTS, write_store


def test_output_config_carries_the_label_version():
    cfg = PreprocessConfig.flat(size=64)
    out = cfg.output_config()
    assert out["label_version"] == LABEL_VERSION >= 2
    assert PreprocessConfig.from_dict(out) == cfg
    with pytest.raises(ConfigError, match="label version 1"):
        PreprocessConfig.from_dict({**out, "label_version": 1})


def test_store_of_older_labels_is_refused(tmp_path):
    cfg = PreprocessConfig.flat(size=64)
    old = {k: v for k, v in cfg.output_config().items() if k != "label_version"}  # a version-1 store
    url = str(tmp_path / "store")
    write_store(url, parts=PARTS[:1], config=old)  # one part of version-1 labels
    before = storage.open_dataset(url).config_hash
    with pytest.raises(storage.ConfigMismatch):
        run_preprocess([WorkItem(str(FACES / "obama.jpg"), label="live")], url, cfg)
    assert storage.open_dataset(url).config_hash == before
    assert storage.config_hash(old) != storage.config_hash(cfg.output_config())
