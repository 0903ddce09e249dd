"""Presentation-attack-detection metrics (ISO/IEC 30107-3), frame and video level.

Conventions
-----------
* A score is a liveness score: **high = live** (bona fide is the positive class).
* Decision rule: ``score >= threshold`` -> classified **live** (bona fide);
  ``score < threshold`` -> classified **attack**. This is the convention of
  :func:`sklearn.metrics.roc_curve` and of pyeer's ``calculate_roc`` (genuine = bona fide).
* ``is_live`` marks bona-fide presentations; every other sample is an attack whose
  presentation-attack-instrument species is its ``attack_type`` (e.g. ``print``, ``replay``).

Definitions (for a threshold ``t``)
-----------------------------------
* ``APCER_s(t)``: fraction of attacks of species ``s`` classified live (``score >= t``).
  ``apcer_max`` is the maximum over species (ISO/IEC 30107-3: the system is as weak as
  its most successful species); ``apcer_pooled`` treats all attacks as one species (reported
  separately: it is what HTER and most cross-dataset papers use).
* ``BPCER(t)``: fraction of bona-fide presentations classified attack (``score < t``).
* ``ACER = (apcer_max + BPCER) / 2`` (the OULU-NPU convention), computed at a threshold
  fixed beforehand on the development set (its EER point, :func:`eer_threshold`).
* ``HTER = (apcer_pooled + BPCER) / 2``; for cross-dataset tests the threshold comes from the
  source dataset's development set and is applied to the target's test set.
* ``EER``: the error rate where pooled APCER equals BPCER, linearly interpolated between
  the two thresholds around the crossing (the same value as intersecting sklearn's ROC curve
  with ``fnr = fpr``).
* ``AUC``: area under the ROC curve (bona fide positive).
* ``bpcer@apcer=X%``: the lowest BPCER over thresholds whose APCER is at most X%
  (ISO's BPCER100 / BPCER20 / BPCER10 for X = 1, 5, 10), computed on the evaluated scores.
  APCER here is ``apcer_max`` by default (the operating point must hold for every species);
  :func:`bpcer_at_apcer` can use the pooled APCER.

No metric divides by zero: when a class (bona fide, all attacks, or a species) is absent,
the rates that need it are NaN and a :class:`RuntimeWarning` says which.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Iterable, Mapping

import numpy as np

from .score import video_scores

OPERATING_POINTS = (0.01, 0.05, 0.10)


def _warn(msg: str) -> None:
    warnings.warn(msg, RuntimeWarning, stacklevel=3)


def _check(scores: np.ndarray, is_live: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(is_live).astype(bool).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores {s.shape} and is_live {y.shape} differ in length")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{int((~np.isfinite(s)).sum())} scores are NaN or infinite")
    return s, y


def _attack_rate(attack_scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Fraction of ``attack_scores >= t`` for every t (NaN if there are no attacks)."""
    if attack_scores.size == 0:
        return np.full(thresholds.shape, np.nan)
    a = np.sort(attack_scores)
    return (a.size - np.searchsorted(a, thresholds, side="left")) / a.size


def _bona_fide_rate(live_scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Fraction of ``live_scores < t`` for every t (NaN if there are no bona-fide samples)."""
    if live_scores.size == 0:
        return np.full(thresholds.shape, np.nan)
    b = np.sort(live_scores)
    return np.searchsorted(b, thresholds, side="left") / b.size


def error_curves(scores: np.ndarray, is_live: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pooled APCER and BPCER at every distinct decision.

    Returns ``(thresholds, apcer, bpcer)``: thresholds are the sorted unique scores followed
    by ``+inf`` (everything rejected); APCER falls from (at most) 1 to 0 and BPCER rises
    from 0 to 1 along them.
    """
    s, y = _check(scores, is_live)
    thr = np.append(np.unique(s), np.inf)
    return thr, _attack_rate(s[~y], thr), _bona_fide_rate(s[y], thr)


def apcer_bpcer(
    scores: np.ndarray, is_live: np.ndarray, threshold: float, attack_types: np.ndarray | None = None
) -> dict[str, Any]:
    """APCER per species, max and pooled APCER, BPCER, ACER and HTER at ``threshold``."""
    s, y = _check(scores, is_live)
    t = np.array([threshold], dtype=np.float64)
    types = np.full(s.shape, "attack", dtype=object) if attack_types is None else np.asarray(attack_types).astype(str)
    if types.shape != s.shape:
        raise ValueError(f"attack_types {types.shape} and scores {s.shape} differ in length")
    n_live, n_attack = int(y.sum()), int((~y).sum())
    if n_live == 0:
        _warn("no bona-fide samples: BPCER is NaN")
    if n_attack == 0:
        _warn("no attack samples: APCER is NaN")
    by_type = {
        str(k): float(_attack_rate(s[~y & (types == k)], t)[0]) for k in np.unique(types[~y])
    }
    pooled = float(_attack_rate(s[~y], t)[0])
    bpcer = float(_bona_fide_rate(s[y], t)[0])
    apcer_max = max(by_type.values()) if by_type else math.nan
    worst = max(by_type, key=by_type.get) if by_type else None
    return {
        "threshold": float(threshold),
        "apcer_by_type": by_type,
        "apcer_max": apcer_max,
        "apcer_max_type": worst,
        "apcer_pooled": pooled,
        "bpcer": bpcer,
        "acer": (apcer_max + bpcer) / 2.0,
        "hter": (pooled + bpcer) / 2.0,
    }


def eer(scores: np.ndarray, is_live: np.ndarray) -> float:
    """Equal error rate (pooled APCER = BPCER), interpolated; NaN (warning) if a class is absent."""
    thr, apcer, bpcer = error_curves(scores, is_live)
    if np.isnan(apcer[0]) or np.isnan(bpcer[0]):
        _warn("EER needs bona-fide and attack samples: NaN")
        return math.nan
    diff = apcer - bpcer  # >= 0 at the lowest threshold, -1 at +inf
    j = int(np.argmax(diff <= 0))
    if diff[j] == 0 or j == 0:
        return float(apcer[j])
    a = diff[j - 1] / (diff[j - 1] - diff[j])
    return float(apcer[j - 1] + a * (apcer[j] - apcer[j - 1]))


def eer_threshold(scores: np.ndarray, is_live: np.ndarray) -> float:
    """Decision threshold at the EER point of a (development) score set.

    The candidate decision minimising ``|APCER - BPCER|`` (ties: the lowest
    ``APCER + BPCER``, then the lowest threshold); the threshold returned is the midpoint
    between that decision's score and the next lower score, so it makes the same decisions
    on this set and keeps a margin on both sides. NaN (warning) when a class is absent.
    """
    thr, apcer, bpcer = error_curves(scores, is_live)
    if np.isnan(apcer[0]) or np.isnan(bpcer[0]):
        _warn("an EER threshold needs bona-fide and attack samples: NaN")
        return math.nan
    order = np.lexsort((thr, apcer + bpcer, np.abs(apcer - bpcer)))
    j = int(order[0])
    if j == 0:
        return float(thr[0])
    if np.isinf(thr[j]):
        return float(np.nextafter(thr[j - 1], np.inf))
    return float((thr[j - 1] + thr[j]) / 2.0)


def roc_auc(scores: np.ndarray, is_live: np.ndarray) -> float:
    """Area under the ROC curve, bona fide positive (ties count half); NaN if a class is absent."""
    s, y = _check(scores, is_live)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        _warn("AUC needs bona-fide and attack samples: NaN")
        return math.nan
    # Mann-Whitney U with average ranks for ties
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(s.size, dtype=np.float64)
    sorted_s = s[order]
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def bpcer_at_apcer(
    scores: np.ndarray,
    is_live: np.ndarray,
    apcer_target: float,
    attack_types: np.ndarray | None = None,
    *,
    pooled: bool = False,
) -> tuple[float, float]:
    """Lowest BPCER over thresholds with APCER <= ``apcer_target``; returns ``(bpcer, threshold)``.

    APCER is the maximum over species (``attack_types``) unless ``pooled`` (or no types).
    NaN (warning) when a class is absent.
    """
    s, y = _check(scores, is_live)
    thr = np.append(np.unique(s), np.inf)
    if pooled or attack_types is None:
        apcer = _attack_rate(s[~y], thr)
    else:
        types = np.asarray(attack_types).astype(str)
        curves = [_attack_rate(s[~y & (types == k)], thr) for k in np.unique(types[~y])]
        apcer = np.max(curves, axis=0) if curves else np.full(thr.shape, np.nan)
    bpcer = _bona_fide_rate(s[y], thr)
    if np.isnan(apcer[0]) or np.isnan(bpcer[0]):
        _warn(f"BPCER@APCER={apcer_target:g} needs bona-fide and attack samples: NaN")
        return math.nan, math.nan
    j = int(np.argmax(apcer <= apcer_target + 1e-12))  # APCER reaches 0 at +inf
    return float(bpcer[j]), float(thr[j])


def pad_metrics(
    scores: np.ndarray,
    is_live: np.ndarray,
    attack_types: np.ndarray | None = None,
    threshold: float | None = None,
    *,
    operating_points: Iterable[float] = OPERATING_POINTS,
) -> dict[str, Any]:
    """Every metric of one score set.

    Args:
        scores: ``(N,)`` liveness scores (high = live).
        is_live: ``(N,)`` bool, True for bona fide.
        attack_types: ``(N,)`` species of each attack (ignored for bona fide).
        threshold: the decision threshold fixed beforehand (dev EER point); ``None`` uses this
            set's own EER threshold (``threshold_source`` says which).

    Returns:
        A JSON-ready dict: ``n_live``, ``n_attack``, ``n_attack_by_type``, ``threshold``,
        ``threshold_source``, ``apcer_by_type``, ``apcer_max``, ``apcer_max_type``,
        ``apcer_pooled``, ``bpcer``, ``acer``, ``hter``, ``eer``, ``eer_threshold``, ``auc``,
        and ``bpcer@apcer=X%`` (+ ``threshold@apcer=X%``) per operating point.
    """
    s, y = _check(scores, is_live)
    types = np.full(s.shape, "attack", dtype=object) if attack_types is None else np.asarray(attack_types).astype(str)
    own = eer_threshold(s, y)
    source = "given" if threshold is not None else "self-eer"
    thr = own if threshold is None else float(threshold)
    out: dict[str, Any] = {
        "n_live": int(y.sum()),
        "n_attack": int((~y).sum()),
        "n_attack_by_type": {str(k): int(c) for k, c in zip(*np.unique(types[~y], return_counts=True))},
    }
    if math.isnan(thr):
        _warn("no usable threshold: APCER/BPCER/ACER/HTER are NaN")
        rates = {"threshold": math.nan, "apcer_by_type": {}, "apcer_max": math.nan,
                 "apcer_max_type": None, "apcer_pooled": math.nan, "bpcer": math.nan,
                 "acer": math.nan, "hter": math.nan}
    else:
        rates = apcer_bpcer(s, y, thr, types)
    out.update(rates)
    out["threshold_source"] = source
    out["eer"] = eer(s, y)
    out["eer_threshold"] = own
    out["auc"] = roc_auc(s, y)
    for op in operating_points:
        b, t = bpcer_at_apcer(s, y, op, types)
        out[f"bpcer@apcer={op * 100:g}%"] = b
        out[f"threshold@apcer={op * 100:g}%"] = t
    return out


def cross_dataset_hter(
    dev_scores: np.ndarray, dev_is_live: np.ndarray, test_scores: np.ndarray, test_is_live: np.ndarray
) -> dict[str, float]:
    """HTER of a cross-dataset test: the threshold is the EER threshold of the *source*
    dataset's development scores, applied unchanged to the *target* dataset's test scores.

    Returns ``threshold``, ``hter``, ``apcer_pooled`` and ``bpcer`` (on the target).
    """
    t = eer_threshold(dev_scores, dev_is_live)
    if math.isnan(t):
        return {"threshold": t, "hter": math.nan, "apcer_pooled": math.nan, "bpcer": math.nan}
    r = apcer_bpcer(test_scores, test_is_live, t)
    return {"threshold": t, "hter": r["hter"], "apcer_pooled": r["apcer_pooled"], "bpcer": r["bpcer"]}


def video_level(
    scores: np.ndarray, is_live: np.ndarray, attack_types: np.ndarray, video_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Aggregate frames by ``video_id`` (mean score): ``(ids, scores, is_live, attack_types)``."""
    ids, vs, (live, types) = video_scores(scores, video_ids, np.asarray(is_live).astype(bool),
                                          np.asarray(attack_types).astype(str))
    return ids, vs, live, types


def frame_and_video_metrics(
    scores: np.ndarray,
    is_live: np.ndarray,
    attack_types: np.ndarray,
    video_ids: np.ndarray,
    thresholds: Mapping[str, float] | None = None,
) -> dict[str, dict[str, Any]]:
    """:func:`pad_metrics` at frame and video level.

    ``thresholds`` maps ``"frame"`` / ``"video"`` to the thresholds fixed on a development
    set (missing: each level's own EER threshold).
    """
    thresholds = thresholds or {}
    _, vs, vl, vt = video_level(scores, is_live, attack_types, video_ids)
    return {
        "frame": pad_metrics(scores, is_live, attack_types, thresholds.get("frame")),
        "video": pad_metrics(vs, vl, vt, thresholds.get("video")),
    }


def dev_thresholds(
    scores: np.ndarray, is_live: np.ndarray, video_ids: np.ndarray
) -> dict[str, float]:
    """EER thresholds of a development set at frame and video level."""
    _, vs, vl, _ = video_level(scores, is_live, np.zeros(len(scores), dtype=str), video_ids)
    return {"frame": eer_threshold(scores, is_live), "video": eer_threshold(vs, vl)}


def non_response_rates(attempted: np.ndarray, evaluated: np.ndarray, is_live: np.ndarray) -> dict[str, dict[str, Any]]:
    """ISO/IEC 30107-3 non-response rates from per-video counts.

    ``attempted`` ``(V,)``: sampled frames of each video (what preprocessing decoded);
    ``evaluated`` ``(V,)``: frames of it that were scored (the rest were lost to face detection,
    face confirmation or QC); ``is_live`` ``(V,)``. A frame not scored is a frame-level
    non-response, a video with no frame scored a video-level one. ``bpnrr`` (bona fide) and
    ``apnrr`` (attack) are the non-response fractions of each class (NaN without the class);
    counts are given beside them. These are reported *beside* APCER / BPCER, which are computed
    on the responses only.
    """
    attempted = np.asarray(attempted, dtype=np.int64)
    evaluated = np.asarray(evaluated, dtype=np.int64)
    live = np.asarray(is_live).astype(bool)
    if attempted.shape != evaluated.shape or attempted.shape != live.shape or np.any(evaluated > attempted):
        raise ValueError(f"non_response_rates: need equal-length counts with evaluated <= attempted, got "
                         f"{attempted.shape}, {evaluated.shape}, {live.shape}")

    def rate(lost: int, total: int) -> float:
        return lost / total if total else float("nan")

    out: dict[str, dict[str, Any]] = {}
    for level, tot, lost in (("frame", attempted, attempted - evaluated),
                             ("video", np.ones_like(attempted), (evaluated == 0).astype(np.int64))):
        bt, bl = int(tot[live].sum()), int(lost[live].sum())
        at, al = int(tot[~live].sum()), int(lost[~live].sum())
        out[level] = {"bpnrr": rate(bl, bt), "apnrr": rate(al, at), "bona_fide_attempted": bt,
                      "bona_fide_lost": bl, "attack_attempted": at, "attack_lost": al}
    return out
