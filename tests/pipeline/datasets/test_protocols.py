"""Protocols: splits of scanned miniature trees against the published definitions.

Expected sizes are computed from each paper's rules (users x sessions x phones x files ...)
and, where the paper tabulates them, compared with the published numbers too.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

import pytest

from pipeline.datasets import (
    ProtocolSplit,
    SubjectOverlapError,
    check_subject_disjoint,
    holdout_subjects,
    list_protocols,
    make_protocol,
    parse_protocol_spec,
    protocol_folds,
    scan_dataset,
)
from pipeline.base.errors import ConfigError
from tests.helpers.dataset_trees import (
    MSU_TEST,
    MSU_TRAIN,
    SIW_TEST,
    SIW_TRAIN,
    build_casia,
    build_msu,
    build_oulu,
    build_replay,
    build_siw,
    make_tiny_video,
)

_OULU_NAME = re.compile(r"^(\d)_(\d)_(\d\d)_(\d)\.avi$")


def oulu_fields(path: str) -> tuple[int, int, int, int]:
    """(phone, session, user, file) read from the file name, independently of the adapter."""
    return tuple(int(g) for g in _OULU_NAME.match(os.path.basename(path)).groups())


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return make_tiny_video(tmp_path_factory.mktemp("src") / "tiny.mp4")


@pytest.fixture(scope="module")
def roots(tmp_path_factory, video) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("datasets")
    return {
        "oulu-npu": build_oulu(base / "oulu", video),
        "siw": build_siw(base / "siw", video),
        "casia-fasd": build_casia(base / "casia", video),
        "replay-attack": build_replay(base / "replay", video),
        "msu-mfsd": build_msu(base / "msu", video),
    }


@pytest.fixture(scope="module")
def scans(roots) -> dict[str, list]:
    out = {}
    for name, root in roots.items():
        scan = scan_dataset(name, root)
        assert not scan.rejected, scan.rejected[:3]
        out[name] = scan.items
    return out


def _real_attack(items) -> tuple[int, int]:
    c = Counter(i.label for i in items)
    return c["live"], c["spoof"]


# ----------------------------------------------------------------------------- OULU-NPU

USERS = {"train": 20, "dev": 15, "test": 20}
# Boulkenafet et al., FG 2017, Table 2: (real, attack) videos per protocol and set
PUBLISHED_OULU = {
    1: {"train": (240, 960), "dev": (180, 720), "test": (120, 480)},
    2: {"train": (360, 720), "dev": (270, 540), "test": (360, 720)},
    3: {"train": (300, 1200), "dev": (225, 900), "test": (60, 240)},
    4: {"train": (200, 400), "dev": (150, 300), "test": (20, 40)},
}
# the rules: (sessions, n_phones, attack files) of train/dev and of test; phone k is held out
RULES = {
    1: (({1, 2}, 6, {2, 3, 4, 5}), ({3}, 6, {2, 3, 4, 5})),
    2: (({1, 2, 3}, 6, {2, 4}), ({1, 2, 3}, 6, {3, 5})),
    3: (({1, 2, 3}, 5, {2, 3, 4, 5}), ({1, 2, 3}, 1, {2, 3, 4, 5})),
    4: (({1, 2}, 5, {2, 4}), ({3}, 1, {3, 5})),
}


def _oulu_cases():
    for n in (1, 2):
        yield n, None
    for n in (3, 4):
        for k in range(1, 7):
            yield n, k


@pytest.mark.parametrize("number,fold", list(_oulu_cases()))
def test_oulu_protocols_match_published_definitions(scans, number, fold):
    proto = make_protocol(f"oulu-npu-p{number}", **({"fold": fold} if fold else {}))
    split = proto.split(scans["oulu-npu"])
    check_subject_disjoint(split)
    (tr_sessions, tr_phones, tr_attacks), (te_sessions, te_phones, te_attacks) = RULES[number]
    for role, items in split.roles().items():
        sessions, n_phones, attacks = (te_sessions, te_phones, te_attacks) if role == "test" else (
            tr_sessions, tr_phones, tr_attacks)
        expected = (USERS[role] * len(sessions) * n_phones, USERS[role] * len(sessions) * n_phones * len(attacks))
        assert _real_attack(items) == expected == PUBLISHED_OULU[number][role]
        for it in items:
            phone, session, user, f = oulu_fields(it.path)
            assert it.split == role and it.extra["official_split"] == role
            assert session in sessions and (f == 1 or f in attacks)
            assert {"train": range(1, 21), "dev": range(21, 36), "test": range(36, 56)}[role].count(user) == 1
            if fold is not None:
                assert (phone == fold) == (role == "test")
    assert len(split.train) + len(split.dev) + len(split.test) + split.excluded == 4950


def test_oulu_protocol_arguments_are_checked(scans):
    with pytest.raises(ConfigError, match="fold must be the held-out phone"):
        make_protocol("oulu-npu-p3")
    with pytest.raises(ConfigError, match="fold must be the held-out phone"):
        make_protocol("oulu-npu-p4", fold=7)
    with pytest.raises(ConfigError, match="single fold"):
        make_protocol("oulu-npu-p1", fold=1)
    with pytest.raises(KeyError, match="oulu-npu-p1"):
        make_protocol("oulu-npu-p5")
    with pytest.raises(ConfigError, match="needs items of oulu-npu.*siw"):
        make_protocol("oulu-npu-p1").split(scans["siw"])
    assert protocol_folds("oulu-npu-p3") == [{"fold": k} for k in range(1, 7)]
    assert protocol_folds("oulu-npu-p1") == [{}]


# ----------------------------------------------------------------------------- SiW
# fixture per subject: 8 live (2 sensors x 4 sessions), print media 1-2, replay media 1-4


def test_siw_p1_first_60_frames_for_training(scans):
    split = make_protocol("siw-p1").split(scans["siw"])
    check_subject_disjoint(split)
    assert len(split.train) == 90 * 14 and len(split.test) == 75 * 14 and split.dev == []
    assert {i.max_frames for i in split.train} == {60}
    assert {i.max_frames for i in split.test} == {None}
    assert {int(i.subject) for i in split.train} == set(SIW_TRAIN)
    assert {int(i.subject) for i in split.test} == set(SIW_TEST)
    assert make_protocol("siw-p1", train_frames=30).split(scans["siw"]).train[0].max_frames == 30


@pytest.mark.parametrize("fold", [1, 2, 3, 4])
def test_siw_p2_leave_one_replay_medium_out(scans, fold):
    split = make_protocol("siw-p2", fold=fold).split(scans["siw"])
    check_subject_disjoint(split)
    assert _real_attack(split.train) == (90 * 8, 90 * 3)
    assert _real_attack(split.test) == (75 * 8, 75 * 1)
    for role, items in (("train", split.train), ("test", split.test)):
        spoof = [i for i in items if i.label == "spoof"]
        assert {i.attack_type for i in spoof} == {"replay"}  # no print attacks in P2
        media = {int(Path(i.path).stem.split("-")[3]) for i in spoof}
        assert media == ({fold} if role == "test" else {1, 2, 3, 4} - {fold})


@pytest.mark.parametrize("fold,train_pai,test_pai,n_train,n_test", [(1, "print", "replay", 2, 4), (2, "replay", "print", 4, 2)])
def test_siw_p3_cross_pai(scans, fold, train_pai, test_pai, n_train, n_test):
    split = make_protocol("siw-p3", fold=fold).split(scans["siw"])
    check_subject_disjoint(split)
    assert Counter(i.attack_type for i in split.train) == {"none": 90 * 8, train_pai: 90 * n_train}
    assert Counter(i.attack_type for i in split.test) == {"none": 75 * 8, test_pai: 75 * n_test}


def test_siw_dev_holdout_takes_whole_training_subjects(scans):
    split = make_protocol("siw-p1", dev_holdout=0.2, seed=3).split(scans["siw"])
    check_subject_disjoint(split)
    dev_subjects = {i.subject for i in split.dev}
    assert len(dev_subjects) == 18 and len({i.subject for i in split.train}) == 72
    assert len(split.dev) == 18 * 14 and {i.max_frames for i in split.dev} == {None}
    assert all(i.extra["official_split"] == "train" for i in split.dev)
    again = make_protocol("siw-p1", dev_holdout=0.2, seed=3).split(list(reversed(scans["siw"])))
    assert {i.subject for i in again.dev} == dev_subjects  # deterministic, order-independent
    other = make_protocol("siw-p1", dev_holdout=0.2, seed=4).split(scans["siw"])
    assert {i.subject for i in other.dev} != dev_subjects
    with pytest.raises(ConfigError, match="fold must be one of"):
        make_protocol("siw-p2", fold=5)


# ----------------------------------------------------------------------------- cross-dataset


@pytest.mark.parametrize("target", ["O", "C", "I", "M"])
def test_cross_dataset_leave_one_out(scans, target):
    every = [i for name in ("oulu-npu", "casia-fasd", "replay-attack", "msu-mfsd") for i in scans[name]]
    every += scans["siw"]  # not part of the family: excluded
    proto = make_protocol("cross-dataset", target=target)
    split = proto.split(every)
    check_subject_disjoint(split)
    names = {"O": "oulu-npu", "C": "casia-fasd", "I": "replay-attack", "M": "msu-mfsd"}
    tgt = names[target]
    assert {i.extra["dataset"] for i in split.test} == {tgt}
    assert {i.extra["official_split"] for i in split.test} == {"train", "test"}
    n_target = {"oulu-npu": 40 * 90, "casia-fasd": 600, "replay-attack": 35 * 24, "msu-mfsd": 280}
    assert len(split.test) == n_target[tgt]
    sources = set(names.values()) - {tgt}
    assert {i.extra["dataset"] for i in split.train} == sources
    assert {i.extra["dataset"] for i in split.dev} == sources
    # dev: official dev where it exists, else 20% of a source's training subjects
    dev_by = Counter(i.extra["dataset"] for i in split.dev)
    expected_dev = {"oulu-npu": 15 * 90, "replay-attack": 15 * 24, "casia-fasd": 10 * 12, "msu-mfsd": 7 * 8}
    assert dev_by == {d: expected_dev[d] for d in sources}
    train_by = Counter(i.extra["dataset"] for i in split.train)
    expected_train = {"oulu-npu": 40 * 90, "replay-attack": 35 * 24, "casia-fasd": 40 * 12, "msu-mfsd": 28 * 8}
    assert train_by == {d: expected_train[d] for d in sources}
    assert split.excluded == len(every) - len(split.train) - len(split.dev) - len(split.test)
    assert split.excluded >= len(scans["siw"])
    assert proto.name == f"cross-dataset/{''.join(sorted(set('OCIM') - {target}, key='OCIM'.index))}-to-{target}"


def test_cross_dataset_options_and_dataset_qualified_subjects(scans):
    items = [i for n in ("oulu-npu", "casia-fasd", "replay-attack", "msu-mfsd") for i in scans[n]]
    split = make_protocol("cross-dataset", target="M", target_splits=("test",), holdout_fraction=0.0).split(items)
    assert len(split.test) == len(MSU_TEST) * 8
    assert not any(i.extra["dataset"] == "casia-fasd" for i in split.dev)
    # raw subject ids repeat across datasets (Replay-Attack client 002, MSU client 002) ...
    raw_train, raw_test = {i.subject for i in split.train}, {i.subject for i in split.test}
    assert raw_train & raw_test
    check_subject_disjoint(split)  # ... but subjects are qualified by dataset
    assert int(next(iter(raw_train & raw_test))) in MSU_TRAIN + MSU_TEST
    two = make_protocol("cross-dataset", target="C", sources="O&I")
    assert two.name == "cross-dataset/OI-to-C"
    with pytest.raises(ConfigError, match="needs items of replay-attack, msu-mfsd"):
        make_protocol("cross-dataset", target="M").split(scans["oulu-npu"] + scans["casia-fasd"])
    with pytest.raises(ConfigError, match="also a source"):
        make_protocol("cross-dataset", target="M", sources="OM")
    with pytest.raises(ConfigError, match="target is required"):
        make_protocol("cross-dataset")


# ----------------------------------------------------------------------------- official / checks


def test_official_protocol_with_subject_holdout(scans):
    split = make_protocol("official", dev_holdout=0.25).split(scans["casia-fasd"])
    check_subject_disjoint(split)
    assert len({i.subject for i in split.dev}) == 5 and len({i.subject for i in split.train}) == 15
    assert len(split.test) == 360
    plain = make_protocol("official").split(scans["replay-attack"])  # has an official dev split
    assert (len(plain.train), len(plain.dev), len(plain.test)) == (360, 360, 480)


def test_check_subject_disjoint_detects_overlap(scans):
    split = make_protocol("oulu-npu-p1").split(scans["oulu-npu"])
    leaked = ProtocolSplit(split.protocol, split.train, split.dev, split.test + split.train[:3])
    with pytest.raises(SubjectOverlapError, match=r"subject\(s\) in both train and test: oulu-npu:01") as exc:
        check_subject_disjoint(leaked)
    assert "video(s) in both train and test" in str(exc.value)
    kept, held = holdout_subjects(split.train, 0.5, seed=1)
    assert {i.subject for i in kept}.isdisjoint({i.subject for i in held})
    assert len({i.subject for i in held}) == 10
    with pytest.raises(ConfigError):
        holdout_subjects(split.train, 1.0)


def test_protocol_registry_and_spec_parsing():
    assert set(list_protocols()) >= {"oulu-npu-p1", "oulu-npu-p2", "oulu-npu-p3", "oulu-npu-p4",
                                     "siw-p1", "siw-p2", "siw-p3", "cross-dataset", "official"}
    assert parse_protocol_spec("oulu-npu-p3:fold=2") == ("oulu-npu-p3", {"fold": 2})
    assert parse_protocol_spec("cross-dataset:target=M,holdout_fraction=0.1,target_splits=test") == (
        "cross-dataset", {"target": "M", "holdout_fraction": 0.1, "target_splits": ("test",)})
    with pytest.raises(ConfigError, match="key=value"):
        parse_protocol_spec("siw-p2:3")
    assert protocol_folds("cross-dataset") == [{"target": t} for t in "OCIM"]
