"""Frame-sized allocations stay on the heap in a process started with Dask's malloc settings
(``MALLOC_TRIM_THRESHOLD_=65536``, set by every Dask nanny), where each one was a fresh mmap:
the Dask runner spent 3x the CLI's CPU per frame on page faults (issue 16)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pipeline.run.heap import _glibc
from tests.conftest import REPO, load_rgb
from tests.helpers.media import make_face_video

DASK_ENV = {"MALLOC_TRIM_THRESHOLD_": "65536"}  # distributed.nanny.pre-spawn-environ

pytestmark = pytest.mark.skipif(_glibc() is None, reason="needs glibc's mallopt")

FAULTS = """
import json, resource, numpy as np
from pipeline.run.heap import frame_heap

def faults(n=60):
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        a = np.empty(1 << 20, np.uint8)
        a.fill(1)  # touch every page, as decoding a frame does
        del a
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0

before = faults()
with frame_heap() as changed:
    with frame_heap():  # nested: the outer block keeps the setting
        pass
    inside = faults()
after = faults()
print(json.dumps({"changed": changed, "before": before, "inside": inside, "after": after}))
"""


def _run(code: str, env: dict[str, str], *args: str) -> dict:
    full = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env={**full, **env}, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_frame_heap_keeps_frame_sized_allocations_on_the_heap_and_restores_after():
    r = _run(FAULTS, DASK_ENV)
    assert r["changed"] is True
    # 60 x 1 MiB freshly mapped: ~256 faults each; from the heap: the first one only
    assert r["before"] > 60 * 200, r
    assert r["inside"] < r["before"] / 10, r
    assert r["after"] > 60 * 200, r  # the variable's setting is back after the block


def test_frame_heap_changes_nothing_without_the_variables():
    r = _run(FAULTS, {})
    assert r["changed"] is False
    assert r["before"] < 60 * 50 and r["inside"] < 60 * 50, r  # glibc's dynamic threshold at work


UNITS = """
import json, resource, sys
import cv2, torch
torch.set_num_threads(1); cv2.setNumThreads(1)
from pipeline.run.config import PreprocessConfig
from pipeline.run.runners import run_units

cfg = PreprocessConfig.from_dict({"size": 96, "landmarks": "dlib68"})
items = [{"path": sys.argv[1], "label": "live", "video_id": "v"}]
run_units(items, sys.argv[2] + "/warm.zarr", cfg)  # models loaded, buffers sized
r0 = resource.getrusage(resource.RUSAGE_SELF)
out = run_units(items, sys.argv[2] + "/s.zarr", cfg)
r1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"faults": r1.ru_minflt - r0.ru_minflt, "stored": out[0]["frames_stored"]}))
"""


@pytest.mark.slow
def test_the_flow_tasks_body_in_a_dask_worker_environment_faults_like_anywhere_else(tmp_path, portraits):
    """``run_units`` (the preprocess task's body) in a process started with a Dask nanny's
    environment pays no more page faults per frame than in a plain one (10x more before)."""
    face = load_rgb(next(p for p in portraits if p.name == "obama.jpg"))
    video = make_face_video(tmp_path / "clip.mp4", face, n=12, gap=(12, 12))
    runs = {}
    for name, env in (("plain", {}), ("dask", DASK_ENV)):
        work = tmp_path / name
        work.mkdir()
        runs[name] = _run(UNITS, env, str(video), str(work))
    assert runs["plain"]["stored"] == runs["dask"]["stored"] > 0, runs
    # the plain process's count is not steady (glibc's dynamic mmap threshold follows the order of
    # frees): 3,400 to 141,000 in runs of this test, while the Dask-like one had 771,716 before the
    # fix and 10,500-14,500 after; so the bound is twice the plain count, but never under 60,000
    assert runs["dask"]["faults"] < max(2 * runs["plain"]["faults"], 60_000), runs
