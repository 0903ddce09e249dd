"""End-to-end preprocessing throughput and memory, against a per-frame CDCN-era baseline.

End to end (frames/s = sampled frames decoded / wall seconds):

``baseline``
    A sequential one-frame-at-a-time script in the style of the CDCN-era preprocessing code:
    decode → detect → landmarks → crop → fit + render that one face (``render_depth`` with
    B=1) → ``cv2.imwrite`` one JPEG crop + one PNG depth map per frame. Same detector,
    landmarks, crop and depth engine as the project (``get_engines``).
``sequential``
    ``pipeline.run.runners.run_preprocess`` (in-process; batched fit+render of ``--batch-size``
    faces; zarr store).
``pipelined``
    ``pipeline.run.parallel.run_parallel`` with ``--workers`` worker processes, batches exactly as
    the sequential path (parts identical): what ``depthseg-fas preprocess --workers`` runs. Wall
    time includes starting the fork server and the workers (stopped before each timed run: a CLI
    run is a new process and pays that start every time, as a flow run pays its task processes').
``pipelined-mix``
    the same with ``mix_items=True`` (batches across videos).
``flow-process``, ``flow-dask-1``, ``flow-dask-2``
    the Prefect ``preprocess`` flow called in this process (Prefect's ephemeral API, a temporary
    ``PREFECT_HOME``): a process pool of ``--workers`` task processes, a local Dask cluster of 1
    and of 2 single-threaded workers, one task per ``--items-per-task`` videos (default: the
    flow's). Input: a folder of links to the round's videos. Wall time is the whole flow call
    (task runner start, models loaded in each task process, the flow's store checks and report);
    the ephemeral API server's start, paid once per process (a deployment finds its server
    running), is timed apart in an untimed warm-up flow run, as the fork server's is.

The set: ``--videos`` videos of ``--frames`` frames at 640×480, made from the shared portraits
moving and scaling over a textured background (as ``tests/helpers/media.py``), a few frames without a
face, cached in ``--cache``. ``--rounds`` splits the set into interleaved rounds (each round runs
every mode on its share), so that a change of load on a shared machine hits every mode alike.

Memory: peak RSS (VmHWM) of preprocessing one generated 1080p video of each of
``--memory-frames`` lengths, each run in a fresh subprocess (sequential and pipelined; for the
pipelined runner the workers' VmHWM is sampled too). It must not grow with the video's length.
The default lengths (600, 1800) are both past one 512-frame image/depth shard of the store: a
streamed part rewrites its last shard while it fills (memory up to one compressed shard), so a
video shorter than 512 frames peaks lower than any longer one, after which the peak is flat.

    .venv/bin/python -m bench.bench_pipeline                          # full: 20 videos x 100 frames
    .venv/bin/python -m bench.bench_pipeline --videos 4 --frames 30 --memory-frames 60 120  # quick
    .venv/bin/python -m bench.bench_pipeline --skip-e2e                # memory only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("DEPTHSEG_SHARED", REPO.parent / "shared"))
FLOW_MODES = {"flow-process": ("process", None), "flow-dask-1": ("dask", 1), "flow-dask-2": ("dask", 2)}
MODES = ("baseline", "sequential", "pipelined", "pipelined-mix", *FLOW_MODES)


# ---------------------------------------------------------------------------------- media


#: portraits whose face BlazeFace finds in (nearly) every frame of the moving-face videos at
#: 640x480 and 1080p (in the others the face is a small part of a wide picture and is lost in
#: half the frames)
PORTRAITS = ("obama.jpg", "obama2.jpg")


def _portraits() -> list[np.ndarray]:
    """The portraits and their mirror images (four faces)."""
    from PIL import Image

    out = []
    for name in PORTRAITS:
        path = SHARED / "data" / "faces" / name
        if not path.is_file():
            raise SystemExit(f"portrait {path} not found (set DEPTHSEG_SHARED)")
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
        out += [rgb, np.ascontiguousarray(rgb[:, ::-1])]
    return out


def make_set(cache: Path, videos: int, frames: int, size=(640, 480)) -> list[Path]:
    """``videos`` videos of ``frames`` frames (cached): face i % 4, background seed i, 4 frames
    without a face in the middle."""
    from pipeline.io.media import write_video
    from tests.helpers.media import moving_face_frames

    folder = cache / f"set-{videos}x{frames}-{size[0]}x{size[1]}"
    paths = [folder / f"vid_{i:03d}.mp4" for i in range(videos)]
    if all(p.exists() for p in paths):
        return paths
    faces = _portraits()
    folder.mkdir(parents=True, exist_ok=True)
    for i, p in enumerate(paths):
        if p.exists():
            continue
        g0 = frames // 2
        tmp = p.with_suffix(".tmp.mp4")
        write_video(tmp, moving_face_frames(faces[i % len(faces)], n=frames, size=size, gap=(g0, g0 + 4), seed=i),
                    fps=25.0)
        tmp.rename(p)
    return paths


def make_long_video(cache: Path, frames: int) -> Path:
    """One 1920×1080 video of ``frames`` frames (streamed to the encoder, cached)."""
    from pipeline.io.media import write_video
    from tests.helpers.media import moving_face_frames

    p = cache / f"long-1080p-{frames}.mp4"
    if not p.exists():
        face = _portraits()[2]  # obama2: found in every 1080p frame
        tmp = p.with_suffix(".tmp.mp4")
        write_video(tmp, moving_face_frames(face, n=frames, size=(1920, 1080), gap=(0, 0), seed=0), fps=25.0)
        tmp.rename(p)
    return p


# ------------------------------------------------------------------------------- baseline


def run_baseline(paths: list[Path], out_dir: Path, cfg) -> dict:
    """The per-frame script: one face at a time through the depth engine, JPEG + PNG per frame."""
    import cv2
    import torch

    from pipeline.face.crop import crop_face, transform_points
    from pipeline.reconstruct.depth import render_depth, to_uint8
    from pipeline.face.detect import pick_face
    from pipeline.base.errors import NoFaceDetected
    from pipeline.io.frames import FrameConfig, iter_frames
    from pipeline.run.engines import get_engines

    eng = get_engines(cfg)
    decoded = stored = 0
    for path in paths:
        vdir = out_dir / path.stem
        vdir.mkdir(parents=True, exist_ok=True)
        for frame in iter_frames(str(path), FrameConfig()):
            decoded += 1
            try:
                box = pick_face(eng.detector.detect(frame.image), eng.detector.cfg)
            except NoFaceDetected:
                continue
            lm = eng.landmarker.landmarks(frame.image, box)
            crop = crop_face(frame.image, box, cfg.crop)
            lm_crop = transform_points(crop.affine[None], lm.points[None]).astype(np.float32)
            with torch.inference_mode():
                res = render_depth(eng.sfm, torch.as_tensor(lm_crop), fit_cfg=cfg.fit, depth_cfg=cfg.depth)
            depth = to_uint8(res.depth)[0].numpy()
            cv2.imwrite(str(vdir / f"{frame.index:06d}.jpg"), cv2.cvtColor(crop.image, cv2.COLOR_RGB2BGR))
            cv2.imwrite(str(vdir / f"{frame.index:06d}_depth.png"), depth)
            stored += 1
    return {"decoded": decoded, "stored": stored}


# ---------------------------------------------------------------------------- end to end


class CpuMeter:
    """CPU seconds (user + system) of this process and of its worker processes while running.

    Workers are sampled from ``/proc/<pid>/stat`` every 0.1 s (their last sample counts), since
    fork-server children are not this process's to wait for.
    """

    def __init__(self) -> None:
        self._workers: dict[int, float] = {}
        self._stop = threading.Event()
        self._tick = os.sysconf("SC_CLK_TCK")

    def _sample(self) -> None:
        import multiprocessing as mp

        while not self._stop.is_set():
            for p in mp.active_children():
                try:
                    fields = open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()
                    self._workers[p.pid] = (int(fields[11]) + int(fields[12])) / self._tick
                except (OSError, IndexError, ValueError):
                    pass
            self._stop.wait(0.1)

    def __enter__(self) -> CpuMeter:
        self._c0 = time.process_time()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.main = time.process_time() - self._c0
        self._stop.set()
        self._thread.join()
        self.workers = sum(self._workers.values())


def isolate_prefect(home: Path) -> None:
    """Prefect in this process: its ephemeral API with a temporary ``PREFECT_HOME`` (the user's
    profile, database and settings untouched), no analytics. Before prefect is imported."""
    os.environ["PREFECT_HOME"] = str(home)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")  # a loaded machine
    for name in ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_PROFILES_PATH"):
        os.environ.pop(name, None)


def run_flow(mode: str, paths: list[Path], work: Path, cfg, workers: int, items_per_task: int | None,
             max_frames: int | None = None) -> dict:
    """The ``preprocess`` flow on ``paths`` (a folder of links to them) into ``work/MODE.zarr``."""
    from flows.preprocess import preprocess

    runner, n = FLOW_MODES.get(mode, ("thread", None))
    folder = work / f"{mode}-input"
    folder.mkdir()
    for p in paths:
        (folder / p.name).symlink_to(p.resolve())
    params = {"input": str(folder), "output": str(work / f"{mode}.zarr"), "size": cfg.output_config()["size"],
              "batch_size": cfg.batch_size, "task_runner": runner, "max_workers": n or workers,
              "report": str(work / f"{mode}.report.json")}
    if max_frames:
        params["max_frames"] = max_frames
    if items_per_task:
        params["items_per_task"] = items_per_task
    return preprocess(**params)


def run_mode(mode: str, paths: list[Path], work: Path, cfg, workers: int, items_per_task: int | None = None) -> dict:
    from pipeline.io.items import WorkItem
    from pipeline.run.parallel import ParallelConfig, run_parallel
    from pipeline.run.runners import run_preprocess

    items = [WorkItem(str(p), label="live", video_id=p.stem) for p in paths]
    t0 = time.perf_counter()
    meter = CpuMeter().__enter__()
    if mode == "baseline":
        counts = run_baseline(paths, work / "baseline", cfg)
    else:
        store = str(work / f"{mode}.zarr")
        if mode in FLOW_MODES:
            c = run_flow(mode, paths, work, cfg, workers, items_per_task)["counts"]
            rep = None
        elif mode == "sequential":
            rep = run_preprocess(items, store, cfg)
        else:
            pcfg = ParallelConfig(workers=workers, mix_items=(mode == "pipelined-mix"))
            stop_fork_server()  # timed from a cold start, as every CLI run (a new process) pays it
            rep = run_parallel(items, store, cfg, pcfg=pcfg)
        c = rep.to_dict()["counts"] if rep else c
        if c["failed"]:
            raise SystemExit(f"{mode}: {c['failed']} item(s) failed")
        counts = {"decoded": c["frames_decoded"], "stored": c["frames_stored"]}
    meter.__exit__()
    counts["seconds"] = time.perf_counter() - t0
    counts["cpu"] = meter.main + meter.workers
    return counts


def stop_fork_server() -> None:
    """Stop this process's fork server, so that the next pipelined run starts its own.

    A CLI run is a new process: it starts the fork server (which imports torch, OpenCV and the
    backends) and its workers every time, as a flow run starts its task processes; timing the
    pipelined runs on a server left warm by an earlier run would count that start for the flow
    and not for the CLI. (``ForkServer._stop`` is CPython's own, used by its test suite.)"""
    from multiprocessing import forkserver

    forkserver._forkserver._stop()


def start_fork_server(cfg, paths: list[Path], work: Path, workers: int) -> float:
    """One small pipelined run, untimed in the results: starts the fork server, which imports
    torch, OpenCV and the backends once per process. Returns its wall seconds."""
    from pipeline.io.items import WorkItem
    from pipeline.run.parallel import ParallelConfig, run_parallel

    t0 = time.perf_counter()
    run_parallel([WorkItem(str(paths[0]), label="live", max_frames=2)], str(work / "warmup.zarr"), cfg,
                 pcfg=ParallelConfig(workers=workers))
    return time.perf_counter() - t0


def start_prefect(cfg, paths: list[Path], work: Path) -> float:
    """One tiny flow run, untimed in the results: starts Prefect's ephemeral API server (paid
    once per process). Returns its wall seconds."""
    t0 = time.perf_counter()
    # the flow points its task processes at this process's server (flows.preprocess.shared_api_server)
    run_flow("flow-warmup", paths[:1], work, cfg, 1, None, max_frames=2)
    return time.perf_counter() - t0


def stores_identical(a: Path, b: Path) -> bool:
    """Every array of every part of two stores equal (NaN == NaN)."""
    import zarr

    from storage.layout import Location, read_manifest

    ma = read_manifest(Location.parse(a))["parts"]
    mb = read_manifest(Location.parse(b))["parts"]
    if sorted(ma) != sorted(mb):
        return False
    for pid in ma:
        ga = zarr.open_group(str(a / ma[pid]["path"]), mode="r")
        gb = zarr.open_group(str(b / mb[pid]["path"]), mode="r")
        for sub in ("", "qc", "meta"):
            xa = ga[sub] if sub else ga
            xb = gb[sub] if sub else gb
            names = sorted(n for n, _ in xa.arrays())
            if names != sorted(n for n, _ in xb.arrays()):
                return False
            for n in names:
                u, v = np.asarray(xa[n][:]), np.asarray(xb[n][:])
                if u.dtype.kind in "fc":
                    if not np.array_equal(u, v, equal_nan=True):
                        return False
                elif u.tolist() != v.tolist():
                    return False
    return True


def bench_e2e(args, cfg) -> dict:
    import torch

    paths = make_set(args.cache, args.videos, args.frames)
    rounds = [paths[r :: args.rounds] for r in range(args.rounds)]
    modes = [m for m in MODES if m in args.modes]
    totals = {m: {"decoded": 0, "stored": 0, "seconds": 0.0, "cpu": 0.0} for m in modes}
    from pipeline.run.engines import get_engines

    get_engines(cfg)  # load the in-process backends before timing (workers load theirs inside the timing)
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-", dir=args.work) as tmp:
        if any(m.startswith("pipelined") for m in modes):
            warm = start_fork_server(cfg, paths, Path(tmp), args.workers)
            print(f"  fork server start + first {args.workers} workers (warm-up run, untimed; each timed pipelined run "
                  f"starts its own): {warm:.1f} s", flush=True)
        if any(m in FLOW_MODES for m in modes):
            totals["_prefect_start"] = start_prefect(cfg, paths, Path(tmp))
            print(f"  Prefect ephemeral API start + a 2-frame flow run (untimed warm-up run): "
                  f"{totals['_prefect_start']:.1f} s", flush=True)
        for r, share in enumerate(rounds):
            for m in modes:
                work = Path(tmp) / f"round{r}"
                work.mkdir(exist_ok=True)
                res = run_mode(m, share, work, cfg, args.workers, args.items_per_task)
                for k in totals[m]:
                    totals[m][k] += res[k]
                print(f"  round {r + 1}/{len(rounds)} {m:14s} {res['decoded']:5d} frames {res['seconds']:7.1f} s "
                      f"CPU {res['cpu']:7.1f} s (load {os.getloadavg()[0]:.1f})", flush=True)
            if "sequential" in modes and "pipelined" in modes:
                same = stores_identical(work / "sequential.zarr", work / "pipelined.zarr")
                totals.setdefault("_identical", []).append(same)
                print(f"  round {r + 1}: pipelined parts identical to sequential: {same}", flush=True)
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nend to end: {len(paths)} videos x {args.frames} frames 640x480, crop {cfg.crop.size}, "
          f"batch {cfg.batch_size}, torch threads {torch.get_num_threads()} (baseline/sequential), "
          f"{args.workers} workers, {args.rounds} interleaved rounds")
    base = totals.get("baseline")
    print(f"{'mode':16s} {'frames':>7s} {'stored':>7s} {'seconds':>8s} {'frames/s':>9s} {'vs baseline':>12s} "
          f"{'CPU ms/frame':>13s}")
    for m in modes:
        t = totals[m]
        fps = t["decoded"] / t["seconds"]
        t["fps"] = fps
        ratio = f"{fps / (base['decoded'] / base['seconds']):.2f}x" if base else "-"
        t["ratio"] = ratio
        print(f"{m:16s} {t['decoded']:7d} {t['stored']:7d} {t['seconds']:8.1f} {fps:9.2f} {ratio:>12s} "
              f"{1000 * t['cpu'] / t['decoded']:13.1f}")
    print("(pipelined: wall time includes starting the fork server and the workers; CPU: main process + workers)")
    ref = totals.get("pipelined")
    flows = [m for m in modes if m in FLOW_MODES]
    if ref and flows:
        start = totals["_prefect_start"]
        print(f"\nflow vs pipelined (CLI --workers {args.workers}), frames/s ratio; the Prefect API server's start "
              f"({start:.1f} s, once per process) in the last column only")
        print(f"{'mode':16s} {'frames/s':>9s} {'ratio':>7s} {'with server start':>18s}")
        for m in flows:
            t = totals[m]
            t["ratio_pipelined"] = t["fps"] / ref["fps"]
            with_start = t["decoded"] / (t["seconds"] + start) / ref["fps"]
            print(f"{m:16s} {t['fps']:9.2f} {t['ratio_pipelined']:7.2f} {with_start:18.2f}")
    if "_identical" in totals:
        print(f"pipelined parts identical to sequential: {all(totals['_identical'])}")
    return totals


# --------------------------------------------------------------------------------- memory


def _status_kib(pid: int | str, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def memory_child(args) -> None:
    """Run one preprocessing of ``args.memory_child`` and print peak RSS figures as JSON."""
    import multiprocessing as mp

    import torch

    from pipeline.io.items import WorkItem
    from pipeline.run.parallel import ParallelConfig, run_parallel
    from pipeline.run.config import PreprocessConfig
    from pipeline.run.runners import run_preprocess

    torch.set_num_threads(args.threads)
    cfg = PreprocessConfig.flat(size=args.size, batch_size=args.batch_size)
    item = WorkItem(args.memory_child, label="live")
    workers_hwm: dict[int, int] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for p in mp.active_children():
                v = _status_kib(p.pid, "VmHWM")
                if v:
                    workers_hwm[p.pid] = max(workers_hwm.get(p.pid, 0), v)
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-mem-", dir=args.work) as tmp:
        store = str(Path(tmp) / "store.zarr")
        if args.mode == "sequential":
            rep = run_preprocess([item], store, cfg)
        else:
            rep = run_parallel([item], store, cfg, pcfg=ParallelConfig(workers=args.workers))
    stop.set()
    sampler.join()
    u = rep.units[0]
    print(json.dumps({
        "mode": args.mode, "frames_decoded": u.frames_decoded, "frames_stored": u.frames_stored,
        "status": u.status, "seconds": time.perf_counter() - t0,
        "main_vmhwm_mib": _status_kib("self", "VmHWM") / 1024,
        "worker_vmhwm_mib": max(workers_hwm.values()) / 1024 if workers_hwm else None,
    }))


def bench_memory(args) -> list[dict]:
    rows = []
    videos = {n: make_long_video(args.cache, n) for n in args.memory_frames}
    for mode in [m for m in ("sequential", "pipelined") if m in args.memory_modes]:
        for n, path in videos.items():
            cmd = [sys.executable, "-m", "bench.bench_pipeline", "--memory-child", str(path), "--mode", mode,
                   "--size", str(args.size), "--batch-size", str(args.batch_size), "--threads", str(args.threads),
                   "--workers", str(args.workers), "--work", str(args.work)]
            out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(f"memory child failed ({out.returncode}):\n{out.stderr[-3000:]}")
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            w = f"{row['worker_vmhwm_mib']:.0f}" if row["worker_vmhwm_mib"] else "-"
            print(f"  {mode:10s} {n:5d} frames 1080p: main peak RSS {row['main_vmhwm_mib']:.0f} MiB, "
                  f"worker peak RSS {w} MiB, {row['seconds']:.1f} s ({row['frames_stored']} stored)", flush=True)
    print(f"\nmemory: peak RSS (VmHWM) preprocessing one 1920x1080 video, crop {args.size}, fresh process each")
    print(f"{'mode':12s} {'frames':>7s} {'main MiB':>9s} {'worker MiB':>11s} {'seconds':>8s}")
    for r in rows:
        w = f"{r['worker_vmhwm_mib']:.0f}" if r["worker_vmhwm_mib"] else "-"
        print(f"{r['mode']:12s} {r['frames_decoded']:7d} {r['main_vmhwm_mib']:9.0f} {w:>11s} {r['seconds']:8.1f}")
    return rows


# ----------------------------------------------------------------------------------- main


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} CPUs, {gpu}; load average {os.getloadavg()[0]:.1f}; "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=20)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds over the set")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--size", type=int, default=256, help="crop / depth size S")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--items-per-task", type=int, default=None, help="flow modes: videos per task (default: "
                    "the flow's)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads of the baseline and the sequential path (default 1: on a "
                    "shared 2-core machine more threads only spin; give the baseline its best setting)")
    ap.add_argument("--memory-frames", type=int, nargs="*", default=[600, 1800],
                    help="lengths of the 1080p videos of the memory benchmark (none: skip it)")
    ap.add_argument("--memory-modes", nargs="+", default=["sequential", "pipelined"])
    ap.add_argument("--skip-e2e", action="store_true")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "depthseg-bench-pipeline")
    ap.add_argument("--work", type=Path, default=None, help="folder for the temporary stores")
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    if args.work:
        args.work.mkdir(parents=True, exist_ok=True)
    if args.memory_child:
        memory_child(args)
        return
    if any(m in FLOW_MODES for m in args.modes) and not args.skip_e2e:
        isolate_prefect(Path(tempfile.mkdtemp(prefix="bench-prefect-home-", dir=args.work)))

    import torch

    from pipeline.run.config import PreprocessConfig

    torch.set_num_threads(args.threads)
    print(f"machine: {machine()}")
    print(f"command: {' '.join([Path(sys.executable).name, '-m', 'bench.bench_pipeline', *(argv or sys.argv[1:])])}")
    cfg = PreprocessConfig.flat(size=args.size, batch_size=args.batch_size)
    if not args.skip_e2e:
        bench_e2e(args, cfg)
    if args.memory_frames:
        bench_memory(args)


if __name__ == "__main__":
    main()
