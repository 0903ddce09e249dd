"""ISO/IEC 30107-3 metrics against sklearn, pyeer and hand-worked cases."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
# pyeer.eer_info (get_eer_stats) imports pkg_resources, absent from modern environments; its
# building blocks in pyeer.eer_stats are what get_eer_stats calls
from pyeer.eer_stats import calculate_roc, get_eer_values
from sklearn.metrics import auc as sk_auc
from sklearn.metrics import roc_curve

from depthseg.metrics import (
    apcer_bpcer,
    bpcer_at_apcer,
    cross_dataset_hter,
    eer,
    eer_threshold,
    error_curves,
    frame_and_video_metrics,
    pad_metrics,
    roc_auc,
)
from depthseg.score import video_scores


def random_set(seed: int, n_live: int = 300, n_attack: int = 500, ties: bool = False):
    rng = np.random.default_rng(seed)
    live = rng.normal(0.6, 0.15, n_live)
    attack = rng.normal(0.35, 0.2, n_attack)
    scores = np.concatenate([live, attack])
    if ties:
        scores = np.round(scores, 1)
    is_live = np.r_[np.ones(n_live, bool), np.zeros(n_attack, bool)]
    types = np.where(is_live, "none", np.where(rng.random(len(scores)) < 0.4, "print", "replay"))
    return scores, is_live, types


def sklearn_eer(scores, is_live) -> float:
    """EER by intersecting sklearn's ROC polyline with fnr = fpr (independent of our code)."""
    fpr, tpr, _ = roc_curve(is_live.astype(int), scores, drop_intermediate=False)
    fnr = 1 - tpr
    d = fnr - fpr  # 1 at the first point (fpr=0, fnr=1), -1 at the last
    i = np.flatnonzero((d[:-1] > 0) & (d[1:] <= 0))[0]
    t = d[i] / (d[i] - d[i + 1])
    return float(fpr[i] + t * (fpr[i + 1] - fpr[i]))


@pytest.mark.parametrize("seed,ties", [(0, False), (1, False), (2, True), (3, True)])
def test_eer_and_auc_match_sklearn(seed, ties):
    s, y, _ = random_set(seed, ties=ties)
    assert eer(s, y) == pytest.approx(sklearn_eer(s, y), abs=1e-12)
    fpr, tpr, _ = roc_curve(y.astype(int), s)
    assert roc_auc(s, y) == pytest.approx(sk_auc(fpr, tpr), abs=1e-12)


@pytest.mark.parametrize("seed,ties", [(4, False), (5, True)])
def test_rates_match_pyeer(seed, ties):
    s, y, types = random_set(seed, ties=ties)
    # pyeer: genuine = bona fide, FMR = attacks accepted (>= t), FNMR = bona fide rejected (< t)
    thrs, fmr, fnmr = calculate_roc(s[y], s[~y])
    for t, a, b in list(zip(thrs, fmr, fnmr))[:: max(1, len(thrs) // 60)]:
        r = apcer_bpcer(s, y, t, types)
        assert r["apcer_pooled"] == pytest.approx(a, abs=1e-12)
        assert r["bpcer"] == pytest.approx(b, abs=1e-12)
        assert r["hter"] == pytest.approx((a + b) / 2, abs=1e-12)
    # our EER threshold is at least as balanced as pyeer's EER threshold
    eer_index, eer_low, eer_high, _ = get_eer_values(fmr, fnmr)
    ours = apcer_bpcer(s, y, eer_threshold(s, y))
    theirs = apcer_bpcer(s, y, thrs[eer_index])
    assert abs(ours["apcer_pooled"] - ours["bpcer"]) <= abs(theirs["apcer_pooled"] - theirs["bpcer"]) + 1e-12
    assert abs(ours["apcer_pooled"] - ours["bpcer"]) == pytest.approx(np.min(np.abs(fmr - fnmr)), abs=1e-12)
    # pyeer's EER is an interval at one threshold next to the crossing; ours interpolates
    # along the crossing segment, so it lies inside that interval
    assert eer_low - 1e-12 <= eer(s, y) <= eer_high + 1e-12
    # BPCER at APCER <= x on pyeer's curve (pooled APCER)
    for op in (0.01, 0.05, 0.10):
        expected = fnmr[fmr <= op + 1e-12].min()
        assert bpcer_at_apcer(s, y, op, pooled=True)[0] == pytest.approx(expected, abs=1e-12)


def test_hand_worked_iso_case_max_vs_pooled_apcer():
    live = [0.9, 0.8, 0.7, 0.3]
    prints = [0.1, 0.2, 0.6, 0.2]
    replays = [0.55, 0.65, 0.1]
    s = np.array(live + prints + replays)
    y = np.array([True] * 4 + [False] * 7)
    types = np.array(["none"] * 4 + ["print"] * 4 + ["replay"] * 3)
    r = apcer_bpcer(s, y, 0.5, types)
    assert r["apcer_by_type"] == {"print": 1 / 4, "replay": 2 / 3}
    assert r["apcer_max"] == 2 / 3 and r["apcer_max_type"] == "replay"
    assert r["apcer_pooled"] == 3 / 7  # differs from the max
    assert r["bpcer"] == 1 / 4
    assert r["acer"] == pytest.approx((2 / 3 + 1 / 4) / 2)
    assert r["hter"] == pytest.approx((3 / 7 + 1 / 4) / 2)
    # decision convention: a score equal to the threshold is live
    r = apcer_bpcer(s, y, 0.6, types)
    assert r["apcer_by_type"]["print"] == 1 / 4 and r["bpcer"] == 1 / 4
    # BPCER at APCER <= 25%: the replay APCER is 1/3 up to t=0.65, so the max-species
    # APCER first drops to <= 1/4 at t=0.7 (BPCER 1/4: 0.3 rejected); pooled APCER is
    # 2/7 at t=0.6 and 1/7 at t=0.65
    assert bpcer_at_apcer(s, y, 0.25, types) == (0.25, 0.7)
    assert bpcer_at_apcer(s, y, 0.25, types, pooled=True) == (0.25, 0.65)
    assert bpcer_at_apcer(s, y, 0.0, types) == (0.25, 0.7)
    # the whole error curve, by hand:
    thr, apcer, bpcer = error_curves(s, y)
    assert thr.tolist() == [0.1, 0.2, 0.3, 0.55, 0.6, 0.65, 0.7, 0.8, 0.9, math.inf]
    assert apcer.tolist() == pytest.approx([1, 5 / 7, 3 / 7, 3 / 7, 2 / 7, 1 / 7, 0, 0, 0, 0])
    assert bpcer.tolist() == pytest.approx([0, 0, 0, 1 / 4, 1 / 4, 1 / 4, 1 / 4, 2 / 4, 3 / 4, 1])
    # first crossing between t=0.6 (2/7 > 1/4) and t=0.65 (1/7 < 1/4): along the segment
    # APCER goes 2/7 -> 1/7 while BPCER stays 1/4 -> EER = 1/4
    assert eer(s, y) == pytest.approx(1 / 4)
    # closest |APCER - BPCER| is at t=0.6 (|2/7-1/4| = 1/28); threshold = midpoint (0.55+0.6)/2
    assert eer_threshold(s, y) == pytest.approx(0.575)


def test_pad_metrics_uses_given_threshold_and_operating_points():
    s, y, types = random_set(7)
    m = pad_metrics(s, y, types, threshold=0.5)
    assert m["threshold"] == 0.5 and m["threshold_source"] == "given"
    assert m["acer"] == pytest.approx((m["apcer_max"] + m["bpcer"]) / 2)
    assert m["apcer_max"] == max(m["apcer_by_type"].values()) >= m["apcer_pooled"]
    assert m["n_live"] == y.sum() and sum(m["n_attack_by_type"].values()) == (~y).sum()
    own = pad_metrics(s, y, types)
    assert own["threshold"] == own["eer_threshold"] and own["threshold_source"] == "self-eer"
    # operating points: APCER (max over species) at the reported threshold is within the target
    for op in ("1%", "5%", "10%"):
        t = m[f"threshold@apcer={op}"]
        assert apcer_bpcer(s, y, t, types)["apcer_max"] <= float(op[:-1]) / 100 + 1e-12
        assert m[f"bpcer@apcer={op}"] == apcer_bpcer(s, y, t, types)["bpcer"]
    assert m["bpcer@apcer=1%"] >= m["bpcer@apcer=5%"] >= m["bpcer@apcer=10%"]


def test_missing_classes_give_nan_with_warning():
    live_only = np.array([0.2, 0.9, 0.5])
    with pytest.warns(RuntimeWarning, match="attack"):
        m = pad_metrics(live_only, np.ones(3, bool), np.array(["none"] * 3), threshold=0.4)
    assert math.isnan(m["apcer_max"]) and math.isnan(m["apcer_pooled"]) and math.isnan(m["acer"])
    assert m["bpcer"] == 1 / 3
    assert math.isnan(m["eer"]) and math.isnan(m["auc"]) and math.isnan(m["bpcer@apcer=5%"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = pad_metrics(live_only, np.zeros(3, bool), np.array(["print"] * 3))
    assert any("bona-fide" in str(w.message) for w in caught)
    assert all(issubclass(w.category, RuntimeWarning) for w in caught)
    assert math.isnan(m["bpcer"]) and math.isnan(m["threshold"]) and math.isnan(m["apcer_max"])
    with pytest.warns(RuntimeWarning):
        m = pad_metrics(np.zeros(0), np.zeros(0, bool), np.zeros(0, str), threshold=0.5)
    assert m["n_live"] == 0 and math.isnan(m["hter"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # both classes present: no warning
        pad_metrics(np.array([0.1, 0.9]), np.array([False, True]), np.array(["print", "none"]))


def test_video_level_aggregation():
    frames = np.array([0.9, 0.7, 0.2, 0.4, 0.6, 0.1])
    vids = np.array(["b", "b", "a", "a", "c", "c"])
    live = np.array([True, True, False, False, True, True])
    types = np.array(["none", "none", "print", "print", "none", "none"])
    ids, vs, (vl, vt) = video_scores(frames, vids, live, types)
    assert ids.tolist() == ["a", "b", "c"]
    assert vs == pytest.approx([0.3, 0.8, 0.35])
    assert vl.tolist() == [False, True, True] and vt.tolist() == ["print", "none", "none"]
    m = frame_and_video_metrics(frames, live, types, vids, {"frame": 0.5, "video": 0.32})
    assert m["frame"]["n_live"] == 4 and m["video"]["n_live"] == 2
    assert m["frame"]["bpcer"] == 1 / 4  # 0.1 < 0.5
    assert m["video"]["bpcer"] == 0 and m["video"]["apcer_max"] == 0  # 0.3 < 0.32 <= 0.35
    assert m["video"]["threshold"] == 0.32


def test_cross_dataset_hter_uses_source_dev_threshold():
    # source dev: perfectly separated at any t in (0.4, 0.6]; EER threshold = midpoint 0.5
    dev = np.array([0.1, 0.3, 0.4, 0.6, 0.8, 0.9])
    dev_live = np.array([False, False, False, True, True, True])
    assert eer_threshold(dev, dev_live) == pytest.approx(0.5)
    # target test: its own EER threshold would differ; the source's is applied as is
    test = np.array([0.2, 0.55, 0.45, 0.7, 0.52, 0.3])
    test_live = np.array([False, False, False, True, True, True])
    r = cross_dataset_hter(dev, dev_live, test, test_live)
    assert r["threshold"] == pytest.approx(0.5)
    assert r["apcer_pooled"] == 1 / 3  # 0.55 accepted
    assert r["bpcer"] == 1 / 3  # 0.3 rejected
    assert r["hter"] == pytest.approx(1 / 3)
    with pytest.warns(RuntimeWarning):
        assert math.isnan(cross_dataset_hter(dev, np.ones(6, bool), test, test_live)["hter"])
