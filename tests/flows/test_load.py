"""Load: the Prefect ``preprocess`` flow over many small videos with a 2-process pool.

N = 8 videos by default (a couple of minutes at most), N = 200 with ``DEPTHSEG_STRESS=full``
(``make stress``). Checks: the flow completes, no "database is locked" anywhere in the captured
output (API server, flow, workers), every unit written with every frame, the store verifies, the
RSS the flow adds to the process tree (over the tree's RSS at the start: the test process and the
children earlier tests left, which depend on the tests run before it) stays under 4 GiB; prints the throughput (stored frames / s) and both
RSS figures.

Videos: 160x120, 4 frames, a face cut from each shared live portrait moving over a background.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("prefect")
psutil = pytest.importorskip("psutil")
from prefect.testing.utilities import prefect_test_harness  # noqa: E402

import storage  # noqa: E402
from pipeline.io.media import write_video  # noqa: E402
from tests.conftest import SHARED, load_rgb  # noqa: E402
from tests.helpers.media import moving_face_frames  # noqa: E402
from tests.helpers.train_store import SOURCES  # noqa: E402

FULL = os.environ.get("DEPTHSEG_STRESS") == "full"
N_VIDEOS = 200 if FULL else 8
FRAMES = 4
ITEMS_PER_TASK = 4
#: bound on what the flow adds to the process tree's RSS (shared pages counted per process) over the
#: tree's RSS at the start, which depends on the tests that ran before in the session
ADDED_RSS_LIMIT = 4 * 2**30

# slow: the preprocess flow over 8 videos with a 2-process pool
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600 if FULL else 600)]


class PeakRSS:
    """Samples the summed RSS of this process and all its descendants in a thread."""

    def __init__(self, interval: float = 0.1):
        self.interval, self.peak, self.peak_procs = interval, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def tree() -> tuple[int, int]:
        """Summed RSS of this process and its descendants now, and how many processes."""
        me = psutil.Process()
        total, n = 0, 0
        for p in [me, *me.children(recursive=True)]:
            try:
                total += p.memory_info().rss
                n += 1
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return total, n

    def _sample(self) -> None:
        total, n = self.tree()
        if total > self.peak:
            self.peak, self.peak_procs = total, n

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """N_VIDEOS distinct files: one clip per shared live portrait, copied under numbered names."""
    root = tmp_path_factory.mktemp("load_videos")
    base = []
    for name, (label, _, cx, cy, frac) in SOURCES.items():
        if label != "live":
            continue
        img = load_rgb(SHARED / "data" / name)
        h, w = img.shape[:2]
        side = 1.6 * frac * w  # the face with some context, so the detector finds it at 160x120
        x0, y0 = int(max(0, cx * w - side / 2)), int(max(0, cy * h - side / 2))
        face = img[y0 : int(y0 + side), x0 : int(x0 + side)]
        path = root / "_src" / f"{Path(name).stem}.mp4"
        path.parent.mkdir(exist_ok=True)
        write_video(path, moving_face_frames(face, n=FRAMES, size=(160, 120), gap=(FRAMES, FRAMES)), fps=10.0)
        base.append(path)
    data = root / "in"
    data.mkdir()
    for i in range(N_VIDEOS):
        shutil.copy(base[i % len(base)], data / f"v{i:04d}_{Path(base[i % len(base)]).stem}.mp4")
    return data


def test_preprocess_flow_under_load(videos, tmp_path, capfd, caplog, monkeypatch):
    from flows.preprocess import preprocess

    # as `make test` / `make stress` export it: with analytics on, the temporary server's
    # telemetry heartbeat races its own start-up on SQLite ("database is locked", not ours)
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    out = tmp_path / "load.zarr"
    caplog.set_level(logging.INFO)
    # the whole tree, not only this process: processes earlier tests left as its children (a
    # multiprocessing forkserver with torch loaded, under pytest-xdist) are in every sample of the
    # peak, and counted them as added by the flow (4.06 GiB "added" in a 2-worker run)
    start_rss, start_procs = PeakRSS.tree()
    with prefect_test_harness(server_startup_timeout=120):
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            res = preprocess(**{"input": str(videos), "output": str(out), "size": 64,
                                     "task_runner": "process", "max_workers": 2,
                                     "items_per_task": ITEMS_PER_TASK})
            seconds = time.perf_counter() - t0
    captured = capfd.readouterr()
    text = captured.out + captured.err + caplog.text
    lines = text.splitlines()
    locked = [i for i, line in enumerate(lines) if "database is locked" in line.lower()]
    if locked:
        context = "\n".join(lines[max(0, locked[0] - 40) : locked[0] + 5])
        pytest.fail(f"{len(locked)} 'database is locked' line(s) in the captured output; first:\n{context}")

    counts = res["counts"]
    assert counts["items"] == N_VIDEOS and counts["written"] == N_VIDEOS, counts
    assert counts["failed"] == 0 and counts["frames_no_face"] == 0, counts
    assert counts["frames_stored"] == N_VIDEOS * FRAMES, counts
    ds = storage.open_dataset(str(out))
    assert len(ds.parts) == N_VIDEOS and len(ds) == N_VIDEOS * FRAMES
    assert all(p.frames == FRAMES for p in ds.parts)
    assert sorted(Path(v).stem for v in set(ds.meta["video_id"])) == sorted(p.stem for p in videos.glob("*.mp4"))
    assert storage.verify(str(out)) == []
    depth = ds.read_batch(np.arange(len(ds)), fields=("depth",))["depth"]
    assert ((depth > 0).mean(axis=(1, 2)) > 0.2).all()  # every stored live frame has a rendered face

    fps = counts["frames_stored"] / seconds
    with capfd.disabled():
        print(f"\nload: {N_VIDEOS} videos x {FRAMES} frames, process pool of 2, {ITEMS_PER_TASK} items/task: "
              f"{seconds:.1f}s flow time, {fps:.2f} frames/s, peak RSS {mem.peak / 2**20:.0f} MiB "
              f"over {mem.peak_procs} processes ({(mem.peak - start_rss) / 2**20:.0f} MiB over the "
              f"{start_rss / 2**20:.0f} MiB of the test process and its {start_procs - 1} child process(es) "
              "at the start)")
    assert mem.peak - start_rss < ADDED_RSS_LIMIT, f"the flow added {(mem.peak - start_rss) / 2**30:.2f} GiB"
