"""Setup errors stop a run in every entry point: a missing model file ends the Prefect flow run
with the one-line message naming the file, as it ends the CLI command, instead of failing every
item and finishing "successfully"."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("prefect")
from prefect.testing.utilities import prefect_test_harness  # noqa: E402

from pipeline.base.errors import ModelAssetMissing, SetupError  # noqa: E402
from pipeline.cli import main as cli  # noqa: E402
from tests.conftest import load_rgb  # noqa: E402
from tests.helpers.media import make_face_video  # noqa: E402


@pytest.fixture(scope="module")
def clips(tmp_path_factory, portraits):
    root = tmp_path_factory.mktemp("clips")
    face = load_rgb(next(p for p in portraits if p.name == "obama.jpg"))
    for i in range(2):
        make_face_video(root / f"clip{i}.mp4", face, n=4, gap=(8, 8))
    return root


def _run_flow(**params):
    from flows.preprocess import preprocess

    return preprocess(**params)


@pytest.mark.slow  # starts Prefect's test server (~15 s idle)
def test_missing_model_file_fails_the_flow_run(clips, tmp_path):
    empty = tmp_path / "models"
    empty.mkdir()
    out = tmp_path / "store.zarr"
    with prefect_test_harness(server_startup_timeout=120):
        with pytest.raises(SetupError) as err:
            _run_flow(input=str(clips), output=str(out), size=64, max_frames=2, model_dir=str(empty),
                      task_runner="thread", max_workers=1)
    assert isinstance(err.value, ModelAssetMissing)
    msg = str(err.value)
    assert "\n" not in msg and str(empty) in msg  # one line naming the directory searched


def test_missing_model_file_stops_the_cli(clips, tmp_path, capsys):
    empty = tmp_path / "models"
    empty.mkdir()
    rc = cli(["preprocess", "--input", str(clips), "--output", str(tmp_path / "s.zarr"), "--size", "64",
              "--max-frames", "2", "--model-dir", str(empty)])
    err = capsys.readouterr().err  # beside the progress bar: one error line, no traceback
    assert rc == 2 and err.count("depthseg-fas preprocess: error:") == 1 and "Traceback" not in err, err
    assert str(empty) in err and "blazeface" in err
