"""The Prefect flows under prefect_test_harness (a temporary local API + SQLite)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("prefect")
from prefect.testing.utilities import prefect_test_harness  # noqa: E402

import storage  # noqa: E402
from tests.helpers.flow_inputs import flow_params, write_clips  # noqa: E402


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def clips(tmp_path_factory, portraits):
    return write_clips(tmp_path_factory.mktemp("clips"), portraits)



@pytest.mark.slow  # two flow runs under the test harness (~50 s loaded)
def test_preprocess_flow_then_cached_rerun(harness, clips, tmp_path):
    from flows.preprocess import preprocess

    out = tmp_path / "store.zarr"
    res = preprocess(**flow_params(clips, out, task_runner="thread", max_workers=2))
    assert res["counts"]["written"] == 3 and res["counts"]["failed"] == 0
    from flows import workerenv

    assert workerenv._exit_hook  # the task (in this process: threads) made its process's exit quick
    ds = storage.open_dataset(str(out))
    assert len(ds) == 12
    before = {p.part_id: p for p in ds.parts}
    res2 = preprocess(**flow_params(clips, out, task_runner="thread", max_workers=2))
    assert res2["counts"]["skipped"] == 3 and res2["counts"]["written"] == 0
    after = {p.part_id: p for p in storage.open_dataset(str(out)).parts}
    assert after == before
    report = json.loads(Path(res2["report"]).read_text())
    assert all("cached" in u["message"] or u["status"] == "skipped" for u in report["units"])


@pytest.mark.slow  # a process pool per run (~90 s loaded)
def test_preprocess_flow_process_pool(harness, clips, tmp_path):
    from flows.preprocess import preprocess

    out = tmp_path / "pp.zarr"
    res = preprocess(**flow_params(clips, out, task_runner="process", max_workers=2, items_per_task=2))
    assert res["counts"]["written"] == 3
    assert len(storage.open_dataset(str(out))) == 12


@pytest.mark.slow  # a local dask cluster (~100 s loaded)
def test_preprocess_flow_dask(harness, clips, tmp_path):
    pytest.importorskip("prefect_dask")
    from flows.preprocess import preprocess

    out = tmp_path / "dask.zarr"
    res = preprocess(**flow_params(clips, out, task_runner="dask", max_workers=2))
    assert res["counts"]["written"] == 3
    assert storage.verify(str(out)) == []


@pytest.mark.slow  # starts Prefect's test server (~15 s idle)
@pytest.mark.parametrize(
    "bad, name",
    [({"input": "/no/such/folder"}, "input"), ({"detector": "mtcnn-nope"}, "detector"), ({"batch_size": -4}, "batch_size")],
)
def test_bad_parameter_fails_at_once_naming_it(harness, clips, tmp_path, bad, name):
    from flows.preprocess import preprocess

    params = {**flow_params(clips, tmp_path / "bad.zarr"), **bad}
    with pytest.raises(Exception) as err:
        preprocess(**params)
    assert name in str(err.value)
    assert not (tmp_path / "bad.zarr").exists()


@pytest.mark.slow  # two flow runs under the test harness (~10 s idle)
def test_cached_unit_whose_part_left_the_store_is_recomputed(harness, clips, tmp_path):
    """Issue 11 item 7: the task cache must not report a part written that the manifest lacks."""
    from flows.preprocess import preprocess
    from storage.layout import Location, read_manifest, write_manifest

    out = tmp_path / "dropped.zarr"
    res = preprocess(**flow_params(clips, out, task_runner="thread", max_workers=2))
    assert res["counts"]["written"] == 3
    before = {p.part_id: p for p in storage.open_dataset(str(out)).parts}
    dropped = sorted(before)[0]
    # drop one committed part between runs (its manifest entry and its folder)
    loc = Location.parse(str(out))
    manifest = read_manifest(loc)
    entry = manifest["parts"].pop(dropped)
    write_manifest(loc, manifest)
    shutil.rmtree(out / entry["path"])
    assert dropped not in {p.part_id for p in storage.open_dataset(str(out)).parts}

    res2 = preprocess(**flow_params(clips, out, task_runner="thread", max_workers=2))
    report = json.loads(Path(res2["report"]).read_text())
    units = {u["part_id"]: u for u in report["units"]}
    assert units[dropped]["status"] == "written" and units[dropped]["frames_stored"] == before[dropped].frames
    assert res2["counts"]["written"] == 1 and res2["counts"]["skipped"] == 2
    after = {p.part_id: p for p in storage.open_dataset(str(out)).parts}
    assert sorted(after) == sorted(before)  # the part is back, really in the store
    assert after[dropped].input_checksum == before[dropped].input_checksum
    assert storage.verify(str(out)) == []
    # every part the report calls written or skipped is in the manifest with its input's checksum
    for u in report["units"]:
        assert u["status"] in ("written", "skipped") and after[u["part_id"]].input_checksum == u["input_checksum"]


@pytest.mark.slow  # two flow runs under the test harness (~10 s idle)
def test_store_made_under_other_package_versions_is_reported(harness, clips, tmp_path, monkeypatch):
    """A rerun of the flow on a store whose parts were made with another OpenCV reports the mix
    (the same code with OpenCV 5.0 and 5.1 stored different crops and labels)."""
    import storage.writer as writer_mod
    from flows.preprocess import preprocess
    from storage.layout import package_versions

    real = package_versions()
    cv = "opencv-python-headless" if "opencv-python-headless" in real else "opencv-python"
    out = tmp_path / "mixed.zarr"
    monkeypatch.setattr(writer_mod, "package_versions", lambda: dict(real, **{cv: "4.0.0-old"}))
    res = preprocess(**flow_params(clips, out, task_runner="thread", max_workers=2))  # tasks in this process
    assert res["counts"]["written"] == 3
    assert json.loads(Path(res["report"]).read_text())["version_mix"] == {}
    monkeypatch.undo()
    res2 = preprocess(**flow_params(clips, out, task_runner="thread", max_workers=2))
    assert res2["counts"]["skipped"] == 3
    report = json.loads(Path(res2["report"]).read_text())
    assert report["version_mix"] == {cv: {real[cv]: 0, "4.0.0-old": 3}}
    assert "Package versions differ between parts" in Path(res2["report"]).with_suffix(".html").read_text()
