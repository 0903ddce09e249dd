"""The per-photo table of bench/bench_label_pose.py: slopes of the fitted pose on the generated
turn and on the photos' real poses (pure functions on the recorded poses)."""

from __future__ import annotations

import math

from bench.bench_label_pose import POSES, source_table, turn_slopes


def _turns(follow_yaw: float, follow_pitch: float, base=(0.0, 0.0)):
    return [((y, p), (base[0] + follow_yaw * y, base[1] + follow_pitch * p)) for y, p in POSES]


def test_turn_slopes_are_how_far_the_fit_follows_the_turn():
    sy, sp = turn_slopes(_turns(0.9, 0.5, base=(20.0, -5.0)))
    assert math.isclose(sy, 0.9, abs_tol=1e-9) and math.isclose(sp, 0.5, abs_tol=1e-9)
    assert all(math.isnan(v) for v in turn_slopes(_turns(1, 1)[:2]))


def test_source_table_compares_real_poses_with_generated_turns():
    # three photos at real poses the turn-0 fit follows exactly, whose turns are followed at 0.8 / 0.6
    rows = [{"subject": f"p{k}", "source": [yaw, pitch], "turns": _turns(0.8, 0.6, base=(yaw, pitch))}
            for k, (yaw, pitch) in enumerate(((-30.0, 5.0), (0.0, -10.0), (25.0, 15.0)))]
    text = source_table(rows)
    last = text.splitlines()[-1]
    assert "3 photos): yaw slope 1.00, pitch slope 1.00" in last
    assert "median slope yaw 0.80, pitch 0.60" in last
    assert text.count("\n") == 3 + 3  # title, header, 3 photos, summary
