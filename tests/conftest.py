"""Shared fixtures: the real images in ../shared and small videos made from them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

# Prefect's telemetry heartbeat writes to the test server's SQLite and can log lock errors
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# A flow run without PREFECT_API_URL starts a temporary API server on a new SQLite database and
# waits 20 s for it by default; on a loaded CI machine that start took longer and failed the run
# ("Timed out while attempting to connect to ephemeral Prefect API server"). Set before the test
# modules import, so the environments they copy for subprocesses carry it too.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("DEPTHSEG_SHARED", REPO.parent / "shared"))
FACES = SHARED / "data" / "faces"
PAD = SHARED / "data" / "pad-samples"
MODELS = SHARED / "models"


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # pragma: no cover
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs CUDA")
        for item in items:
            if "cuda" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="module", autouse=True)
def _free_module_scratch(request, tmp_path_factory):
    """Delete the folders a test module's fixtures made with ``tmp_path_factory.mktemp`` once the
    module is done, unless one of its tests failed (kept to look at). With pyproject's
    ``tmp_path_retention_policy = "failed"`` (each passing test's ``tmp_path`` goes at once) this
    bounds the suite's disk use by one module's, not by the sum of all (checkpoints of ~50 MB each:
    the whole suite used to leave ~8 GB behind and filled a CI disk)."""
    base = tmp_path_factory.getbasetemp()
    before = set(base.iterdir())
    failed = request.session.testsfailed
    yield
    if request.session.testsfailed == failed:
        for path in set(base.iterdir()) - before:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"shared assets not found at {SHARED} (set DEPTHSEG_SHARED)")
    return SHARED


@pytest.fixture(scope="session")
def portraits(shared_dir) -> list[Path]:
    return sorted(FACES.glob("*.jpg"))


@pytest.fixture(scope="session")
def pad_samples(shared_dir) -> dict[str, Path]:
    return {"print": PAD / "image_F1.jpg", "replay": PAD / "image_F2.jpg", "live": PAD / "image_T1.jpg"}


@pytest.fixture(scope="session")
def model_dir(shared_dir) -> Path:
    return MODELS


def load_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))
