"""The flow task's core (``run_units``: paths and config in, small summaries out) and the unit
runner's steps it shares with the CLI runners: write, skip, fail an item, stop on setup errors."""

from __future__ import annotations

import shutil

import pytest

import storage
from pipeline.base.errors import ModelAssetMissing
from pipeline.io.items import WorkItem
from pipeline.run.config import PreprocessConfig
from pipeline.run.runners import run_preprocess, run_units
from pipeline.run.unit import UnitResult, part_id_for
from tests.conftest import FACES

CFG = PreprocessConfig.flat(size=64)


@pytest.fixture()
def images(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    for name in ("obama.jpg", "biden.jpg"):
        shutil.copy(FACES / name, root / name)
    return root


def test_run_units_writes_skips_and_fails_items_like_the_cli(tmp_path, images):
    store = str(tmp_path / "store.zarr")
    items = [WorkItem(path=str(images / "obama.jpg"), label="live").to_dict(),
             WorkItem(path=str(images / "gone.jpg"), label="live").to_dict(),
             WorkItem(path=str(images / "biden.jpg"), label="spoof", attack_type="print").to_dict()]
    out = run_units(items, store, CFG, input_root=str(images))
    assert [r["status"] for r in out] == ["written", "failed", "written"]
    assert out[1]["reason"] == "not-found" and "gone.jpg" in out[1]["message"]
    assert all(set(r) == set(UnitResult.__dataclass_fields__) for r in out)
    ds = storage.open_dataset(store)
    assert len(ds) == out[0]["frames_stored"] + out[2]["frames_stored"] == 2
    assert {p["input_checksum"] for p in (out[0], out[2])} == {storage.file_checksum(images / n)
                                                               for n in ("obama.jpg", "biden.jpg")}
    # the CLI's runner over the same store: every committed item is skipped, under the same ids
    report = run_preprocess([WorkItem(**it) for it in items], store, CFG, input_root=str(images))
    assert [u.status for u in report.units] == ["skipped", "failed", "skipped"]
    assert [u.part_id for u in report.units] == [part_id_for(WorkItem(**it), str(images)) for it in items]
    # and the task again: skipped too
    assert [r["status"] for r in run_units(items, store, CFG, input_root=str(images))] == ["skipped", "failed",
                                                                                            "skipped"]


def test_run_units_stops_on_a_missing_model_instead_of_failing_every_item(tmp_path, images):
    """A setup error concerns the run, not an item: the task raises (before, each item of the
    Prefect task was reported failed and the flow went on)."""
    cfg = PreprocessConfig.flat(size=64, model_dir=str(tmp_path / "no-models"))
    items = [WorkItem(path=str(images / "obama.jpg")).to_dict()]
    with pytest.raises(ModelAssetMissing):
        run_units(items, str(tmp_path / "store.zarr"), cfg, input_root=str(images))
    assert storage.DatasetWriter.open(str(tmp_path / "store.zarr"), cfg.output_config()).parts == {}
