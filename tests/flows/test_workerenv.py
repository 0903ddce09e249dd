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


HEAVY = ("segmentation_models_pytorch", "timm", "torchvision", "matplotlib")


@pytest.mark.slow  # >= 2.5 s on an idle 2-core machine (a subprocess importing torch and prefect)
@pytest.mark.parametrize("module", ["flows.preprocess", "pipeline.cli"])
def test_preprocessing_entry_points_do_not_import_the_training_models(module):
    """Every preprocess task process (and every ``depthseg-fas`` call) imports these; through
    ``depthseg.config`` they used to import segmentation_models_pytorch, hence timm, torchvision
    and torch._dynamo: 12 s -> 6.4 s of CPU to import ``flows.preprocess``, 10.8 s -> 5.5 s for
    ``depthseg-fas --help`` (this machine). Building a model still imports smp."""
    code = (f"import sys; import {module}; print(sorted(m for m in {HEAVY!r} if m in sys.modules)); "
            "from depthseg.models import build_model; build_model('unet', encoder='resnet18', num_classes=3); "
            "print('segmentation_models_pytorch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[:2] == ["[]", "True"]
