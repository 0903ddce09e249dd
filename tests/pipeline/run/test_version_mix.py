"""A store resumed under other package versions is flagged, not mixed without a word.

The same code and config with OpenCV 5.0 and 5.1 stored different crops and depth labels (1-level
image differences on 1.2% of the values, 4% of the depth pixels, on a demo clip): each part records
the versions of the packages that shape it (OpenCV and the landmark runtimes among them), and a run
adding parts to a store whose parts were made with other versions logs a warning naming the
package and versions, and its report (JSON and HTML) carries them. A run in the same environment
reports nothing.
"""

from __future__ import annotations

import json
import logging
import shutil

import pytest

import storage
import storage.writer as writer_mod
from pipeline.cli import main as cli
from storage.layout import package_versions
from tests.conftest import FACES

SIZE = 64


@pytest.mark.slow  # >= 2.5 s on an idle 2-core machine (three CLI runs)
def test_resuming_under_another_opencv_is_reported(tmp_path, monkeypatch, caplog):
    real = package_versions()
    cv = "opencv-python-headless" if "opencv-python-headless" in real else "opencv-python"
    assert cv in real  # OpenCV's version is recorded per part
    for name in ("obama", "biden"):  # two inputs (a folder of stills is one input, one part)
        (tmp_path / name).mkdir()
        shutil.copy(FACES / f"{name}.jpg", tmp_path / name / f"{name}.jpg")
    store, rep_path, html = tmp_path / "s.zarr", tmp_path / "r.json", tmp_path / "r.html"

    def run(name: str) -> dict:
        assert cli(["preprocess", "--input", str(tmp_path / name), "--output", str(store), "--size", str(SIZE),
                    "--report", str(rep_path), "--html-report", str(html)]) == 0
        return json.loads(rep_path.read_text())

    # the first part made "with an older OpenCV"
    monkeypatch.setattr(writer_mod, "package_versions", lambda: dict(real, **{cv: "4.0.0-old"}))
    rep = run("obama")
    assert rep["counts"]["written"] == 1 and rep["version_mix"] == {}
    (info,) = storage.DatasetWriter.open(str(store), rep["config"]).parts.values()
    assert info.versions[cv] == "4.0.0-old"
    monkeypatch.undo()

    # a second input added with the installed OpenCV: warned and reported
    with caplog.at_level(logging.WARNING, logger="pipeline.run.report"):
        rep = run("biden")
    assert rep["counts"]["written"] == 1
    assert rep["version_mix"] == {cv: {"4.0.0-old": 1, real[cv]: 0}}
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(cv in m and f"this run's {real[cv]}:" in m and "4.0.0-old (1 part)" in m and str(store) in m
               for m in warned), warned
    text = html.read_text(encoding="utf-8")
    assert "Package versions differ between parts" in text and "4.0.0-old" in text

    # a rerun in this environment still sees the old part (1) next to the new one (1)
    rep = run("biden")
    assert rep["counts"]["skipped"] == 1
    assert rep["version_mix"] == {cv: {"4.0.0-old": 1, real[cv]: 1}}


@pytest.mark.slow  # >= 2.5 s on an idle 2-core machine (two CLI runs)
def test_same_environment_reports_no_mix(tmp_path):
    data = tmp_path / "in"
    data.mkdir()
    shutil.copy(FACES / "obama.jpg", data / "obama.jpg")
    store, rep_path = tmp_path / "s.zarr", tmp_path / "r.json"
    for _ in range(2):
        assert cli(["preprocess", "--input", str(data), "--output", str(store), "--size", str(SIZE),
                    "--report", str(rep_path)]) == 0
        rep = json.loads(rep_path.read_text())
        assert rep["version_mix"] == {}
    assert rep["counts"]["skipped"] == 1
