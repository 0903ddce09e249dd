"""``depthseg-fas benchmark`` and the ``benchmark`` flow on a small official-layout OULU-NPU tree.

All six folds of OULU-NPU protocol 3 are preprocessed once, trained (1 epoch, PSPNet-ResNet18 at
32x32) and evaluated; the table must be what the folds' own ``metrics.json`` files say (mean,
and sample std), a rerun must leave every finished fold alone, and the flow must rerun only a
fold whose metrics are gone, getting the same numbers (threads pinned per fold).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline.cli import main
from tests.helpers.benchmark_table import P3_FOLDS, check_table, file_times, fold_metrics, read_table
from tests.helpers.dataset_trees import build_oulu_benchmark

# slow: preprocesses 50 clips and trains six folds (minutes on a loaded 2-core machine)
pytestmark = pytest.mark.slow

TINY = ["--epochs", "1", "--size", "32", "--max-frames", "2", "--input-size", "32", "--label-size", "8",
        "--batch-size", "8", "--device", "cpu", "--threads", "1",
        "--include-flagged"]  # the fixture's 32-px two-frame clips get QC flags; the fold machinery is what is tested
FOLDS = P3_FOLDS


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return build_oulu_benchmark(tmp_path_factory.mktemp("oulu") / "OULU-NPU")


@pytest.fixture(scope="module")
def bench(tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "p3"
    code = main(["benchmark", "--datasets", "oulu-npu", "--roots", str(tree), "--protocol", "oulu-npu-p3",
                 "--out-dir", str(out), *TINY])
    assert code == 0
    return out


def test_all_six_folds_and_the_table_are_what_the_folds_measured(bench):
    check_table(bench)
    metrics = fold_metrics(bench)
    rows = read_table(bench)
    for f in FOLDS:  # each fold tested on its own phone, thresholds from its dev role
        m = metrics[f]
        assert m["protocol"] == f"oulu-npu-p3:fold={f[-1]}" and m["threshold_source"].startswith("EER of")
        assert m["video"]["n_live"] == 1 and m["video"]["n_attack"] == 4
        assert sorted(m["video"]["n_attack_by_type"]) == ["print1", "print2", "replay1", "replay2"]
    md = (bench / "table.md").read_text()
    assert "sample standard deviation" in md and "n - 1" in md
    video = [r for r in rows if r["level"] == "video"]
    mean, std = (next(r for r in video if r["kind"] == k) for k in ("mean", "std"))
    assert f"| {100 * float(mean['acer']):.2f} ± {100 * float(std['acer']):.2f} |" in md


def test_rerun_skips_finished_folds(bench, tree, capsys):
    before = file_times(bench)
    code = main(["benchmark", "--datasets", "oulu-npu", "--roots", str(tree), "--protocol", "oulu-npu-p3",
                 "--out-dir", str(bench), *TINY])
    assert code == 0
    assert "finished earlier, not rerun: " + ", ".join(f"oulu-npu-p3:fold={k}" for k in range(1, 7)) in capsys.readouterr().out
    assert file_times(bench) == before  # no fold retrained or re-evaluated, the store untouched


def test_other_settings_in_the_same_folder_are_refused(bench, tree, capsys):
    code = main(["benchmark", "--datasets", "oulu-npu", "--roots", str(tree), "--protocol", "oulu-npu-p3",
                 "--out-dir", str(bench), *TINY, "--lr", "0.01"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "another benchmark configuration" in err and "oulu-npu-p3_fold1" in err


def test_flow_reruns_only_the_fold_whose_metrics_are_gone(bench, tree, tmp_path):
    pytest.importorskip("prefect")
    from prefect.testing.utilities import prefect_test_harness

    from flows.benchmark import benchmark

    out = tmp_path / "p3"
    shutil.copytree(bench, out)
    (out / "folds" / FOLDS[1] / "eval" / "metrics.json").unlink()
    shutil.rmtree(out / "folds" / FOLDS[1] / "train")
    params = {"datasets": ["oulu-npu"], "roots": [str(tree)], "protocol": "oulu-npu-p3", "out_dir": str(out),
              "epochs": 1, "size": 32, "max_frames": 2, "input_size": 32, "label_size": 8, "batch_size": 8,
              "device": "cpu", "threads": 1, "task_runner": "thread", "max_workers": 2,
              "include_flagged": True}
    with prefect_test_harness(server_startup_timeout=120):
        res = benchmark(**params)
    assert res["skipped"] == [f"oulu-npu-p3:fold={k}" for k in (1, 3, 4, 5, 6)]
    assert (out / "folds" / FOLDS[1] / "train" / "best.pt").is_file()
    # same settings, same pinned thread count: the rerun fold measures what the CLI's did
    assert read_table(out) == read_table(bench)
