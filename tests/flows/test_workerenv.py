"""The guard against a folder that shadows a project package (a Dask worker's spill folder)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from flows.workerenv import ShadowedPackage, require_project_packages
from tests.conftest import REPO


def test_installed_packages_pass():
    require_project_packages()


def test_namespace_folder_first_on_path_is_named(tmp_path, monkeypatch):
    (tmp_path / "depthseg_shadow_probe").mkdir()  # an empty folder, as Dask's spill folder `storage/`
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    with pytest.raises(ShadowedPackage, match=r"'depthseg_shadow_probe' is shadowed by the folder .*depthseg_shadow_probe"):
        require_project_packages(("storage", "depthseg_shadow_probe"))


EXIT_PROBE = """
import atexit, gc, sys
atexit.register(lambda: print("frozen at exit:", gc.get_freeze_count(), flush=True))  # runs last
import torch  # something to collect
from flows.workerenv import skip_collection_at_exit
skip_collection_at_exit()
skip_collection_at_exit()  # once per process
print("frozen before exit:", gc.get_freeze_count(), flush=True)
"""


def test_task_process_exit_skips_the_collection_of_everything_it_loaded():
    """The exit handler freezes the heap before the interpreter's shutdown collections (a spawned
    pool process spent ~2 s of every flow run there); other exit handlers still run."""
    out = subprocess.run([sys.executable, "-c", EXIT_PROBE], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = dict(line.split(": ") for line in out.stdout.splitlines())
    assert lines["frozen before exit"] == "0"
    assert int(lines["frozen at exit"]) > 100_000, out.stdout  # torch alone: hundreds of thousands of objects
