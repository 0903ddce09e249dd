"""The guard against a folder that shadows a project package (a Dask worker's spill folder)."""

from __future__ import annotations

import sys

import pytest

from flows.workerenv import ShadowedPackage, require_project_packages


def test_installed_packages_pass():
    require_project_packages()


def test_namespace_folder_first_on_path_is_named(tmp_path, monkeypatch):
    (tmp_path / "depthseg_shadow_probe").mkdir()  # an empty folder, as Dask's spill folder `storage/`
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    with pytest.raises(ShadowedPackage, match=r"'depthseg_shadow_probe' is shadowed by the folder .*depthseg_shadow_probe"):
        require_project_packages(("storage", "depthseg_shadow_probe"))
