"""Model-asset lookup: the default model directory is found from the code's own place, not the
current directory (the synth CLI's default shared folder likewise)."""

from __future__ import annotations

import pytest

from pipeline.base.assets import ENV_VAR, PROJECT_ROOT, asset_path, resolve_model_dir
from pipeline.base.errors import ModelAssetMissing
from pipeline.synth.plan import default_shared_dir
from tests.conftest import REPO, SHARED


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """Run from a folder with no ../shared next to it, without the env overrides."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.delenv("DEPTHSEG_SHARED", raising=False)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    return tmp_path


def test_project_root_is_the_checkout():
    assert PROJECT_ROOT == REPO


def test_default_model_dir_found_from_any_working_directory(elsewhere):
    assert resolve_model_dir(None) == REPO.parent / "shared" / "models"
    assert asset_path("sfm/sfm_shape_3448.bin").is_file()


def test_default_shared_dir_found_from_any_working_directory(elsewhere):
    assert default_shared_dir().resolve() == (REPO.parent / "shared").resolve()
    assert (default_shared_dir() / "data" / "faces").is_dir()


def test_missing_asset_names_file_directory_and_source(tmp_path):
    with pytest.raises(ModelAssetMissing) as e:
        asset_path("sfm/nothing.bin", tmp_path)
    assert "sfm/nothing.bin" in str(e.value) and str(tmp_path) in str(e.value) and "eos" in str(e.value)
    assert SHARED.is_dir()
