"""QC-flagged frames are not trained on or scored by default, and evaluation counts the frames
and videos it does not score as ISO/IEC 30107-3 non-responses (issue 13, item 6).

The store is written by the real writer from the shared images (tests/helpers/train_store.py),
with the first frames of each split of each part carrying a QC flag.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import storage
from depthseg.data import FrameDataset, flag_drops
from depthseg.evaluate import split_non_responses
from depthseg.metrics import non_response_rates
from tests.helpers.train_store import SOURCES, SPLIT_FRAMES, make_store

N_LIVE = sum(1 for v in SOURCES.values() if v[0] == "live")
N_SPOOF = len(SOURCES) - N_LIVE


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    # train split: 4 frames per part; 1 flagged per live part, 3 per spoof part
    return make_store(tmp_path_factory.mktemp("flagged"), size=32, flagged={"live": 1, "spoof": 3})


def test_flagged_frames_are_left_out_by_default(store):
    ds = FrameDataset(store, "train")
    flags = np.asarray(ds.reader.meta["qc_flags"])
    assert len(ds) == N_LIVE * 3 + N_SPOOF * 1 and not flags.any()
    assert ds.flag_drops == {"live": {"frames": 4 * N_LIVE, "flagged": N_LIVE},
                             "spoof": {"frames": 4 * N_SPOOF, "flagged": 3 * N_SPOOF}}
    everything = FrameDataset(store, "train", include_flagged=True)
    assert len(everything) == 4 * len(SOURCES)
    assert int((np.asarray(everything.reader.meta["qc_flags"]) != 0).sum()) == N_LIVE + 3 * N_SPOOF
    # what is read is what the view says: no flagged frame in a batch
    batch = ds.read_batch(np.arange(len(ds)))
    assert int(batch["is_live"].sum()) == 3 * N_LIVE


@pytest.mark.slow  # >= 2.5 s on an idle 2-core machine
def test_flag_drops_of_an_unflagged_store(tmp_path):
    reader = storage.open_dataset(make_store(tmp_path, size=32))
    drops = flag_drops(reader.filter(split="dev"))
    assert drops == {"live": {"frames": 2 * N_LIVE, "flagged": 0}, "spoof": {"frames": 2 * N_SPOOF, "flagged": 0}}


def test_non_response_rates_by_hand():
    # three bona fide videos (10, 10, 5 frames sampled; 10, 0, 4 scored), two attacks (8, 2; 8, 2)
    r = non_response_rates(np.array([10, 10, 5, 8, 2]), np.array([10, 0, 4, 8, 2]),
                           np.array([True, True, True, False, False]))
    assert r["frame"]["bpnrr"] == pytest.approx(11 / 25) and r["frame"]["apnrr"] == 0.0
    assert r["video"]["bpnrr"] == pytest.approx(1 / 3) and r["video"]["apnrr"] == 0.0
    assert r["frame"]["bona_fide_lost"] == 11 and r["video"]["attack_attempted"] == 2
    assert math.isnan(non_response_rates(np.array([3]), np.array([1]), np.array([True]))["frame"]["apnrr"])
    with pytest.raises(ValueError):
        non_response_rates(np.array([3]), np.array([4]), np.array([True]))


def test_evaluation_counts_flagged_frames_as_non_responses(store):
    test = FrameDataset(store, "test")  # 2 frames per part: 1 of 2 live, 2 of 2 spoof flagged
    r = split_non_responses(test)
    n = SPLIT_FRAMES["test"]
    assert r["frame"]["bona_fide_attempted"] == n * N_LIVE and r["frame"]["bona_fide_lost"] == N_LIVE
    assert r["frame"]["apnrr"] == 1.0 and r["frame"]["bpnrr"] == pytest.approx(0.5)
    assert r["video"]["apnrr"] == 1.0 and r["video"]["bpnrr"] == 0.0  # every spoof video lost whole
    kept = split_non_responses(FrameDataset(store, "test", include_flagged=True))
    assert kept["frame"]["bpnrr"] == 0.0 and kept["frame"]["apnrr"] == 0.0
