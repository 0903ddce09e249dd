"""Protocols applied to a dataset scan (what preprocess keeps) and to a store's frames (the
roles train and evaluate use), against the protocols' own splits of the scanned items."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import storage
from depthseg.data import FrameDataset
from depthseg.roles import ProtocolRole
from pipeline.base.errors import ConfigError
from pipeline.cli import main
from pipeline.datasets import make_protocol, protocol_folds, scan_dataset
from pipeline.datasets.roles import fold_specs, frame_roles, items_from_columns, preprocess_items
from tests.helpers.dataset_trees import build_oulu, build_siw, make_tiny_video
from tests.helpers.stores import CONFIG, make_part

ITEM_COLUMNS = ("label", "attack_type", "subject", "session", "device", "split")


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return make_tiny_video(tmp_path_factory.mktemp("src") / "tiny.mp4")


@pytest.fixture(scope="module")
def oulu(tmp_path_factory, video) -> list:
    return scan_dataset("oulu-npu", build_oulu(tmp_path_factory.mktemp("oulu"), video)).items


@pytest.fixture(scope="module")
def siw(tmp_path_factory, video) -> list:
    return scan_dataset("siw", build_siw(tmp_path_factory.mktemp("siw"), video)).items


def columns_of(items, frames: int = 2) -> dict[str, np.ndarray]:
    """The per-frame columns preprocess writes for ``items`` (``frames`` frames each)."""
    cols = {c: np.repeat([getattr(i, c) for i in items], frames) for c in ("video_id", *ITEM_COLUMNS)}
    cols["dataset"] = np.repeat([i.extra["dataset"] for i in items], frames)
    cols["frame_index"] = np.tile(np.arange(frames), len(items))
    return cols


def roles_by_video(columns, roles) -> dict[str, str]:
    out = {}
    for vid, role in zip(columns["video_id"], roles):
        assert out.setdefault(vid, role) == role  # every frame of a video has its video's role
    return {v: r for v, r in out.items() if r}


@pytest.mark.slow  # >= 2.5 s on an idle 2-core machine
@pytest.mark.parametrize("name", ["oulu-npu-p1", "oulu-npu-p2", "oulu-npu-p3", "oulu-npu-p4"])
def test_store_roles_are_the_protocol_roles_of_the_scan(oulu, name):
    cols = columns_of(oulu)
    for spec, kw in zip(fold_specs(name), protocol_folds(name)):
        split = make_protocol(name, **kw).split(oulu)
        want = {i.video_id: role for role, items in split.roles().items() for i in items}
        assert roles_by_video(cols, frame_roles(spec, cols, "store")) == want


def test_siw_p1_trains_on_the_first_60_frames_of_each_video(siw):
    chosen = [i for i in siw if i.subject in ("001", "091")]  # a training and a test subject, 14 videos each
    cols = columns_of(chosen, frames=70)
    rng = np.random.default_rng(0)
    for k in range(len(chosen)):  # frames stored out of order: the cap follows frame_index
        rows = slice(70 * k, 70 * (k + 1))
        cols["frame_index"][rows] = rng.permutation(70) * 3
    roles = frame_roles("siw-p1", cols, "store")
    assert {"train", "test"} <= set(roles)
    for k, it in enumerate(chosen):
        rows = slice(70 * k, 70 * (k + 1))
        if it.split == "train":
            assert set(cols["frame_index"][rows][roles[rows] == "train"]) == set(range(0, 180, 3))
        else:
            assert (roles[rows] == "test").all()


def test_preprocess_keeps_what_some_fold_uses(oulu, siw):
    used = set()
    for kw in protocol_folds("oulu-npu-p4"):
        split = make_protocol("oulu-npu-p4", **kw).split(oulu)
        used |= {i.video_id for items in split.roles().values() for i in items}
    kept = preprocess_items("oulu-npu-p4", oulu, "root")
    assert [i.video_id for i in kept] == [i.video_id for i in oulu if i.video_id in used]
    assert len(kept) < len(oulu) and all(i.split == j.split for i, j in zip(kept, oulu) if i is j)
    assert {i.split for i in kept} == {"train", "dev", "test"}  # official splits kept: one store, every fold
    assert len(preprocess_items("oulu-npu-p3:fold=2", oulu, "root")) < len(preprocess_items("oulu-npu-p3", oulu, "r"))
    caps = {i.split: i.max_frames for i in preprocess_items("siw-p1", siw, "root")}
    assert caps == {"train": 60, "test": None}


def test_required_items_missing_are_refused(oulu):
    no_replay2 = [i for i in oulu if not (i.split == "test" and i.attack_type == "replay2")]
    with pytest.raises(ConfigError, match=r"oulu-npu-p2 does not match root: no test items with file_id 5"):
        preprocess_items("oulu-npu-p2", no_replay2, "root")
    cols = columns_of([i for i in oulu if not (i.split == "test" and i.device == "6")])
    assert frame_roles("oulu-npu-p3:fold=5", cols, "S").size
    with pytest.raises(ConfigError, match=r"oulu-npu-p3/fold6 does not match S: no test items"):
        frame_roles("oulu-npu-p3:fold=6", cols, "S")
    with pytest.raises(ConfigError, match=r"S: protocol cross-dataset/CIM-to-O needs items of casia-fasd"):
        frame_roles("cross-dataset:target=oulu-npu", columns_of(oulu), "S")
    with pytest.raises(ConfigError, match=r"has 6 folds; name one, e.g. 'oulu-npu-p3:fold=1'"):
        frame_roles("oulu-npu-p3", columns_of(oulu), "S")


def test_a_store_whose_metadata_disagrees_with_its_names_is_refused(oulu):
    cols = columns_of(oulu[:50])
    cols["device"] = cols["device"].copy()
    cols["device"][:2] = "6"  # the first video's name says phone 1
    with pytest.raises(ConfigError, match=f"video {oulu[0].video_id}: stored device"):
        items_from_columns(cols, "S")
    cols = columns_of(oulu[:50])
    cols["split"] = cols["split"].copy()
    cols["split"][1] = "test"
    with pytest.raises(ConfigError, match=f"S: the frames of video {oulu[0].video_id} disagree on split"):
        items_from_columns(cols, "S")
    del cols["dataset"]
    with pytest.raises(ConfigError, match=r"S: no per-frame column\(s\) \['dataset'\]"):
        items_from_columns(cols, "S")


@pytest.mark.slow  # writes 16 parts through the writer (~30 s on a loaded machine)
def test_protocol_roles_of_a_written_store(oulu, tmp_path):
    """A store written by the writer: FrameDataset(ProtocolRole) holds exactly the role's frames."""
    chosen = [i for i in oulu if i.session == "1" and (i.subject, i.device) in
              (("01", "1"), ("21", "1"), ("36", "1"), ("36", "4"))]
    w = storage.DatasetWriter.open(str(tmp_path / "s.zarr"), CONFIG)
    for k, it in enumerate(chosen):
        data = make_part(1, seed=k, label=it.label, video_id=it.video_id)
        data.meta.update({c: np.array([getattr(it, c)]) for c in ITEM_COLUMNS})
        data.meta["dataset"] = np.array(["oulu-npu"])
        w.write_part(f"p{k:03d}", data, input_checksum=f"sha{k}")
    reader = storage.open_dataset(str(tmp_path / "s.zarr"))
    split = make_protocol("oulu-npu-p3", fold=4).split(chosen)
    for role, items in split.roles().items():
        ds = FrameDataset(reader, ProtocolRole("oulu-npu-p3:fold=4", role))
        assert sorted(set(ds.video_id)) == sorted(i.video_id for i in items) and len(ds) == len(items)
    with pytest.raises(ConfigError, match=r"oulu-npu-p1 does not match .*s.zarr: no test items"):
        FrameDataset(reader, ProtocolRole("oulu-npu-p1", "test"))


def test_preprocess_refuses_a_protocol_the_dataset_cannot_follow(tmp_path, video, capsys):
    root = tmp_path / "oulu"
    for name in ("Train_files/1_1_01_1.avi", "Train_files/1_1_01_2.avi", "Test_files/1_3_36_1.avi"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).hardlink_to(video)
    out = tmp_path / "store.zarr"
    code = main(["preprocess", "--input", str(root), "--dataset", "oulu-npu", "--output", str(out),
                 "--protocol", "oulu-npu-p1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and not out.exists()
    assert f"protocol oulu-npu-p1 does not match {root}: " in err and "; no dev items;" in err
