"""Pipelined preprocessing: worker processes decode, detect, landmark and crop; the main process
fits, renders, checks and writes.

:func:`run_parallel` does what :func:`pipeline.run.runners.run_preprocess` does (same parts — by
default array for array the same, see "Batches" — and the same run report) with the work split
in two overlapping halves::

    worker process 1..W (one item at a time, torch/OpenCV on 1 thread each):
        decode → detect (``detect_batch`` frames per detector call) → pick face → 68 landmarks
        → S×S crop → chunks of ``chunk_frames`` faces sent to the main process
    main process (the device):
        faces of several frames gathered into batches of ``cfg.batch_size`` faces → batched 3D
        fit + z-buffer render (``pipeline.reconstruct.depth.render_depth`` via ``stages.render_faces``)
        → QC + metadata (``stages.finish_chunk``) → each item's frames streamed into its own
        part (``DatasetWriter.begin_part(...).append(...)``, ``append_frames`` frames per
        append) → commit when the item's worker reports it done.

Every item becomes exactly one part, with its frames in source order: a worker processes one
item at a time and its messages arrive in order. Workers run their backends on ``cfg.device``
too (on CUDA each worker holds its own context).

Batches: by default (``mix_items=False``) each fit+render call gets exactly the faces the
sequential path gives it — faces ``k*B .. (k+1)*B - 1`` of one item, ``B = cfg.batch_size`` — so
the parts are identical, array for array, to ``run_preprocess``'s. With ``mix_items=True``
batches also take faces of several items (short videos, single images: fewer, fuller device
calls), in ``B``-face calls. The engine is not bitwise batch-invariant (float32 GEMMs take other
kernel paths for other batch sizes and row positions: a face's fitted angles and residual can
change in the last bit, very rarely a depth pixel by one grey level), so parts then equal the
sequential ones only up to that rounding. Detection in batches of ``detect_batch`` frames relies
on the detector giving a frame the same boxes alone or in a batch (true of BlazeFace on CPU, which
the tests check); ``detect_batch=1`` makes exactly the sequential path's detector calls.

Memory is bounded whatever the length of the videos: each worker holds at most ``detect_batch``
decoded frames, one chunk being built and ``queue_chunks`` chunks waiting to be sent (a pipe per
worker, blocking when full); the main process holds, per item in progress, fewer than
``cfg.batch_size + chunk_frames`` faces waiting for the fit and fewer than ``append_frames``
frames not yet appended. At most ``1 + prefetch`` items are assigned to a worker at a time.

Failures, as in the sequential path: an item whose input is bad (unreadable, corrupt, no face)
or whose processing raises ``InputError``/``OSError``/``ValueError``/``RuntimeError`` is
reported as ``status="failed"`` with its reason and the run goes on; its part is aborted, so
nothing half-written becomes visible. A worker process that dies (killed, crashed) fails the
item it was processing (reason ``"worker-died"``) and is replaced; the items queued for it go to
the others. Errors of the store (``StoreError``), a config/model problem found when a worker
loads its backends, and any other exception end the run (open parts aborted, workers stopped),
as they do in the sequential path (a ``SetupError`` at any point too). Items already committed with the same input checksum and
config are skipped. Ctrl-C (SIGINT to the main process or the whole process group; workers
ignore it) ends the run the same way and raises ``RunInterrupted`` with the report of the items
finished so far.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import pickle
import queue
import signal
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, Callable

import cv2
import torch

from pipeline.base.errors import ConfigError, InputError, WorkerError
from pipeline.face.batch import FaceBatch, Rebatcher, rebatch
from pipeline.io.items import WorkItem
from pipeline.run.engines import Engines, fit_engines, get_engines
from pipeline.run.heap import frame_heap
from pipeline.run.config import PreprocessConfig
from pipeline.run.report import RunReport, interruptible, version_mix
from pipeline.run.stages import FrameCounts, finish_chunk, iter_faces, render_faces
from pipeline.run.timing import StageTimer
from pipeline.run.unit import Unit, UnitResult, item_failure
from storage import DatasetWriter, PartData, refuse_if_locked, run_lock

log = logging.getLogger(__name__)

START_METHODS = ("forkserver", "spawn")
#: modules the fork server imports once (it ignores those that fail to import)
FORKSERVER_PRELOAD = ["torch", "cv2", "av", "dlib", "pipeline.run.parallel", "pipeline.face.detect", "pipeline.face.landmarks",
                      "pipeline.io.frames", "pipeline.face.crop", "face_alignment.detection.blazeface"]
WORKER_DIED = "worker-died"


@dataclass(frozen=True)
class ParallelConfig:
    """How :func:`run_parallel` runs (nothing here changes what is written).

    Attributes:
        workers: worker processes (decode, detect, landmarks, crop), each with its own backends.
        chunk_frames: faces per message from a worker to the main process.
        detect_batch: frames per detector call in a worker (1: one call per frame, as the
            sequential path does).
        append_frames: frames per ``PartBuilder.append`` (fewer appends rewrite the image/depth
            shards fewer times; memory: up to this many frames per item in progress).
        prefetch: items queued to a worker beyond the one it is processing.
        queue_chunks: chunks a worker may hold ready while the main process is busy.
        main_threads: torch intra-op threads of the main process for the duration of the run
            (restored afterwards); None: ``max(1, os.cpu_count() - workers)``. Workers always
            use 1 thread (torch and OpenCV).
        start_method: ``"forkserver"`` (default: the fork server imports torch, OpenCV and the
            backends' modules once per process, so each worker only loads its models) or
            ``"spawn"``; never plain fork (torch and zarr threads). As with any multiprocessing
            program, a script that starts a run must guard its entry point with
            ``if __name__ == "__main__":``.
        max_restarts: worker processes that may be replaced after dying before the run gives
            up (None: ``2 * workers + 2``).
        mix_items: let one fit+render batch take faces of several items (see the module
            docstring: parts then equal the sequential path's up to float rounding). False:
            batches exactly as the sequential path, parts identical.
    """

    workers: int = 2
    chunk_frames: int = 16
    detect_batch: int = 8
    append_frames: int = 256
    prefetch: int = 1
    queue_chunks: int = 2
    main_threads: int | None = None
    start_method: str = "forkserver"
    max_restarts: int | None = None
    mix_items: bool = False

    def __post_init__(self) -> None:
        for name in ("workers", "chunk_frames", "detect_batch", "append_frames", "queue_chunks"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"parameter {name!r}: must be >= 1, got {getattr(self, name)}")
        if self.prefetch < 0:
            raise ConfigError(f"parameter 'prefetch': must be >= 0, got {self.prefetch}")
        if self.main_threads is not None and self.main_threads < 1:
            raise ConfigError(f"parameter 'main_threads': must be >= 1 or None, got {self.main_threads}")
        if self.start_method not in START_METHODS:
            raise ConfigError(f"parameter 'start_method': must be one of {START_METHODS}, "
                              f"got {self.start_method!r}")
        if self.max_restarts is not None and self.max_restarts < 0:
            raise ConfigError(f"parameter 'max_restarts': must be >= 0 or None, got {self.max_restarts}")


# ============================================================================ worker side


class _Outbox:
    """A worker's sending side: a thread sends the queued messages, so the worker goes on
    decoding while the main process is busy; at most ``size`` messages wait (memory bound)."""

    def __init__(self, wid: int, results: Connection, size: int):
        self._results = results
        self._queue: queue.Queue = queue.Queue(maxsize=size)
        self._broken = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"depthseg-worker-{wid}-send", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            msg = self._queue.get()
            if msg is None:
                return
            try:
                self._results.send(msg)
            except (BrokenPipeError, EOFError, OSError):
                self._broken.set()  # the main process is gone or gave up on this worker
                return

    def send(self, msg: tuple | None) -> None:
        """Queue ``msg`` (blocks while full); SystemExit when the main process is gone."""
        while True:
            if self._broken.is_set():
                raise SystemExit(0)
            try:
                self._queue.put(msg, timeout=0.5)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        """Send what is queued, then stop the thread."""
        try:
            self.send(None)
        except SystemExit:
            pass
        self._thread.join(timeout=60)


def _worker_item(idx: int, item: WorkItem, out: _Outbox, cfg: PreprocessConfig, pcfg: ParallelConfig,
                 eng: Engines) -> None:
    """Faces of one item, ``chunk_frames`` at a time, then ``done`` (or ``failed`` for bad input)."""
    out.send(("start", idx))
    timer, counts = StageTimer(), FrameCounts()
    try:
        faces = iter_faces(item, cfg, eng, timer, counts, detect_frames=pcfg.detect_batch)
        for chunk in rebatch(faces, pcfg.chunk_frames):
            out.send(("faces", idx, chunk))
    except Exception as exc:  # noqa: BLE001 - bad input fails the item; anything else is fatal
        failure = item_failure(exc, item.path)
        if failure is None:
            raise
        log.debug("%s failed", item.path, exc_info=True)
        out.send(("failed", idx, *failure, counts, timer.as_dict()))
    else:
        out.send(("done", idx, counts, timer.as_dict()))


def _worker_main(wid: int, tasks: Connection, results: Connection, cfg: PreprocessConfig,
                 pcfg: ParallelConfig) -> None:
    """Entry point of a worker process: load the backends once, then process assigned items.

    Receives ``("item", idx, WorkItem)`` or ``None`` (stop) on ``tasks``; sends on ``results``
    ``("ready",)``, then per item ``("start", idx)``, ``("faces", idx, FaceBatch)``... and
    ``("done", idx, FrameCounts, seconds)`` or ``("failed", idx, reason, message, FrameCounts,
    seconds)``; ``("fatal", exception, traceback)`` when it cannot go on.
    """
    # Ctrl-C reaches the whole process group; the main process alone handles it (module docstring)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    out = _Outbox(wid, results, pcfg.queue_chunks)
    try:
        try:
            eng = get_engines(cfg)
        except Exception as exc:  # noqa: BLE001 - reported to the main process, which re-raises
            out.send(("fatal", _picklable(exc), traceback.format_exc()))
            return
        out.send(("ready",))
        with torch.inference_mode(), frame_heap():
            while True:
                try:
                    task = tasks.recv()
                except EOFError:
                    return
                if task is None:
                    return
                _worker_item(task[1], task[2], out, cfg, pcfg, eng)
    except SystemExit:
        return
    except BaseException as exc:  # noqa: BLE001 - a bug: the main process ends the run with it
        with_tb = traceback.format_exc()
        try:
            out.send(("fatal", _picklable(exc), with_tb))
        except SystemExit:
            pass
    finally:
        out.close()


def _picklable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else a RuntimeError with its text."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001
        return RuntimeError(f"{type(exc).__name__}: {exc}")


# ============================================================================ main side


@dataclass
class _Unit(Unit):
    """An item in progress in the main process (the unit runner's record, plus its place in the
    pipeline)."""

    idx: int = -1
    worker: int | None = None
    started: bool = False
    done: bool = False  # its worker sent everything
    batcher: Rebatcher | None = None  # its faces not yet in a render group
    pending: int = 0  # its groups waiting in the runner's render queue
    appended: bool = False  # frames were handed to the part writer (its part was begun)
    committing: bool = False  # the commit was handed to the part writer
    buffer: list = field(default_factory=list)  # PartData chunks not yet appended
    buffered: int = 0
    frames: int = 0  # frames kept so far (appended + buffered)


@dataclass
class _Worker:
    wid: int
    proc: Any
    tasks: Connection
    results: Connection
    ready: bool = False
    assigned: deque = field(default_factory=deque)  # item indices, in processing order
    closed: bool = False


class _PartWriter:
    """A thread that owns every part of the run: begins, appends, commits and aborts them in
    the order they were submitted, while the main thread fits and renders.

    ``submit`` blocks when ``max_ops`` operations are waiting (memory stays bounded). Outcomes
    (``("committed", idx, PartInfo, seconds)`` / ``("error", idx, exception, seconds)``) are
    collected with :meth:`outcomes`; :meth:`fileno` becomes readable when there are some (for
    ``multiprocessing.connection.wait``).
    """

    def __init__(self, writer: Any, max_ops: int = 2):
        self.writer = writer
        self._ops: queue.Queue = queue.Queue(maxsize=max_ops)
        self._out: queue.Queue = queue.Queue()
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        os.set_blocking(self._wfd, False)  # a wake-up only: a full pipe already wakes the reader
        self._parts: dict[int, Any] = {}  # writer thread only
        self._thread = threading.Thread(target=self._run, name="depthseg-part-writer", daemon=True)
        self._thread.start()

    def fileno(self) -> int:
        return self._rfd

    def submit(self, op: tuple) -> None:
        self._ops.put(op)

    def outcomes(self) -> list[tuple]:
        try:
            while os.read(self._rfd, 4096):
                pass
        except BlockingIOError:
            pass
        out = []
        while True:
            try:
                out.append(self._out.get_nowait())
            except queue.Empty:
                return out

    def close(self, *, abort: bool) -> None:
        """Stop the thread after the submitted operations (``abort``: discard every open part)."""
        if self._thread.is_alive():
            if abort:
                self._ops.put(("abort-all",))
            self._ops.put(None)
            self._thread.join()
        for fd in (self._rfd, self._wfd):
            try:
                os.close(fd)
            except OSError:
                pass

    def _post(self, msg: tuple) -> None:
        self._out.put(msg)
        try:
            os.write(self._wfd, b"x")
        except OSError:
            pass

    def _run(self) -> None:
        failed: set[int] = set()
        while True:
            op = self._ops.get()
            if op is None:
                return
            kind = op[0]
            if kind == "abort-all":
                for part in self._parts.values():
                    part.abort()
                self._parts.clear()
                continue
            idx = op[1]
            if kind == "abort":
                part = self._parts.pop(idx, None)
                if part is not None:
                    part.abort()
                failed.add(idx)
                continue
            if idx in failed:
                continue
            t0 = time.perf_counter()
            try:
                if kind == "append":
                    _, _, begin, data = op
                    part = self._parts.get(idx)
                    if part is None:
                        part = self._parts[idx] = self.writer.begin_part(**begin)
                    part.append(data)
                    self._post(("seconds", idx, time.perf_counter() - t0))
                elif kind == "commit":
                    part = self._parts.pop(idx)
                    part.update_extra(op[2])
                    info = part.commit()
                    self._post(("committed", idx, info, time.perf_counter() - t0))
            except BaseException as exc:  # noqa: BLE001 - reported to the main thread
                part = self._parts.pop(idx, None)
                if part is not None:
                    part.abort()
                failed.add(idx)
                self._post(("error", idx, exc, time.perf_counter() - t0))


class _Runner:
    def __init__(self, items: list[WorkItem], output: str, cfg: PreprocessConfig, pcfg: ParallelConfig,
                 input_root: str | None, report: RunReport, on_unit: Callable[[UnitResult], None] | None,
                 replace: bool = False):
        self.items = items
        self.replace = replace
        self.output = output
        self.cfg = cfg
        self.pcfg = pcfg
        self.input_root = input_root
        self.report = report
        self.on_unit = on_unit
        self.results: list[UnitResult | None] = [None] * len(items)
        self.queue: deque[int] = deque(range(len(items)))  # items not yet checked / assigned
        self.units: dict[int, _Unit] = {}  # assigned, not finished
        self.ready: list[tuple[int, dict]] = []  # (item index, faces group) waiting for fit+render
        self.ready_faces = 0
        self.workers: dict[int, _Worker] = {}
        self.next_wid = 0
        self.restarts = 0
        self.ctx = mp.get_context(pcfg.start_method)
        if pcfg.start_method == "forkserver":
            self.ctx.set_forkserver_preload(FORKSERVER_PRELOAD)  # takes effect when the server starts
        self.writer: Any = None
        self.parts: _PartWriter | None = None
        self.eng: Engines | None = None

    # -- workers ------------------------------------------------------------------------

    def _spawn(self) -> None:
        wid = self.next_wid
        self.next_wid += 1
        task_r, task_w = self.ctx.Pipe(duplex=False)
        res_r, res_w = self.ctx.Pipe(duplex=False)
        proc = self.ctx.Process(target=_worker_main, args=(wid, task_r, res_w, self.cfg, self.pcfg),
                                name=f"depthseg-preprocess-{wid}", daemon=True)
        proc.start()
        task_r.close()
        res_w.close()
        self.workers[wid] = _Worker(wid, proc, task_w, res_r)
        log.debug("started worker %d (pid %s)", wid, proc.pid)

    def _stop_workers(self, kill: bool) -> None:
        for w in self.workers.values():
            if not kill:
                try:
                    w.tasks.send(None)
                except OSError:
                    pass
        deadline = time.monotonic() + (0 if kill else 30)
        for w in self.workers.values():
            if not kill:
                # drain so that a worker blocked on a full pipe can see the stop
                while w.proc.is_alive() and time.monotonic() < deadline:
                    self._drain_quietly(w)
                    w.proc.join(timeout=0.05)
            if w.proc.is_alive():
                w.proc.terminate()
                w.proc.join(timeout=5)
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join(timeout=5)
            for conn in (w.tasks, w.results):
                conn.close()
        self.workers.clear()

    @staticmethod
    def _drain_quietly(w: _Worker) -> None:
        try:
            while w.results.poll():
                w.results.recv()
        except (EOFError, OSError):
            pass
        except Exception:  # noqa: BLE001 - a torn message of a dying worker
            pass

    def _assign(self) -> None:
        """Give every ready worker items up to ``1 + prefetch`` (checking / skipping as we go)."""
        limit = 1 + self.pcfg.prefetch
        for w in self.workers.values():
            while w.ready and len(w.assigned) < limit:
                idx = self._next_item()
                if idx is None:
                    return
                w.assigned.append(idx)
                self.units[idx].worker = w.wid
                try:
                    w.tasks.send(("item", idx, self.items[idx]))
                except OSError:  # the worker just died: _reap re-queues the item
                    return

    def _next_item(self) -> int | None:
        """The next item that needs processing; items that are missing, committed or in
        conflict are resolved on the way by the unit runner's check (failed / skipped)."""
        while self.queue:
            idx = self.queue.popleft()
            if idx in self.units:  # re-queued after its worker died before starting it
                return idx
            unit = _Unit.check(self.items[idx], self.writer, input_root=self.input_root, replace=self.replace)
            unit.idx = idx
            if unit.settled:
                self._finish(unit)
                continue
            unit.batcher = Rebatcher(self.cfg.batch_size)
            self.units[idx] = unit
            return idx
        return None

    def _finish(self, unit: Unit) -> None:
        res = unit.summary()
        self.results[unit.idx] = res
        if self.on_unit:
            self.on_unit(res)

    # -- the loop -----------------------------------------------------------------------

    def run(self) -> None:
        self.writer = DatasetWriter.open(self.output, self.cfg.output_config())
        # resolve leading skips / missing inputs before paying for worker start-up
        first = self._next_item()
        if first is None:
            return
        self.queue.appendleft(first)
        self.parts = _PartWriter(self.writer)
        try:
            for _ in range(min(self.pcfg.workers, len(self.items))):
                self._spawn()
            self.eng = fit_engines(self.cfg)  # while the workers load theirs
            while self.units or self.queue:
                self._assign()
                if not self.units and not self.queue:
                    break
                self._step()
        except BaseException:
            self.parts.close(abort=True)
            self._stop_workers(kill=True)
            raise
        self.parts.close(abort=False)
        self._stop_workers(kill=False)

    def _step(self) -> None:
        """Render when the batch is full (or nothing more can join it), else wait for messages
        (or a worker's death) and handle them."""
        if self._should_render():
            self._flush()
            return
        conns = {w.results: w for w in self.workers.values() if not w.closed}
        sentinels = {w.proc.sentinel: w for w in self.workers.values()}
        ready = wait([self.parts, *conns, *sentinels])
        if self.parts in ready:
            self._written()
        for obj in ready:
            w = conns.get(obj)
            if w is not None:
                self._receive(w)
        for obj in ready:
            w = sentinels.get(obj)
            if w is not None and w.wid in self.workers:
                self._reap(w)

    def _receive(self, w: _Worker) -> None:
        """Handle every message waiting from ``w`` (rendering whenever the batch fills up)."""
        while not w.closed:
            try:
                if not w.results.poll():
                    return
                msg = w.results.recv()
            except (EOFError, OSError):
                w.closed = True
                return
            except Exception as exc:  # noqa: BLE001 - a torn message of a killed worker
                w.proc.join(timeout=1)
                if w.proc.is_alive():
                    raise WorkerError(f"worker {w.wid}: unreadable message ({exc!r})") from exc
                log.warning("worker %d: unreadable last message (%r)", w.wid, exc)
                w.closed = True
                return
            self._handle(w, msg)
            if self._should_render():
                self._flush()

    def _should_render(self) -> bool:
        if not self.ready:
            return False
        if not self.pcfg.mix_items:  # groups are complete batches already
            return True
        return self.ready_faces >= self.cfg.batch_size or all(u.done for u in self.units.values())

    def _handle(self, w: _Worker, msg: tuple) -> None:
        kind = msg[0]
        if kind == "ready":
            w.ready = True
            return
        if kind == "fatal":
            _, exc, tb = msg
            log.error("worker %d failed:\n%s", w.wid, tb)
            if isinstance(exc, BaseException):
                raise exc
            raise WorkerError(f"worker {w.wid} failed: {exc}")
        idx = msg[1]
        unit = self.units.get(idx)
        if unit is None:  # already resolved (failed in the main process): drop the rest
            if kind in ("done", "failed") and w.assigned and w.assigned[0] == idx:
                w.assigned.popleft()
            return
        if kind == "start":
            unit.started = True
        elif kind == "faces":
            self._take_faces(unit, msg[2])
        elif kind == "done":
            _, _, counts, seconds = msg
            w.assigned.popleft()
            unit.timer.merge(seconds)
            unit.counts.add(counts)
            unit.done = True
            self._last_group(unit)
            if unit.pending == 0 and not unit.committing:
                self._complete(unit)
        elif kind == "failed":
            _, _, reason, message, counts, seconds = msg
            w.assigned.popleft()
            unit.timer.merge(seconds)
            unit.counts.add(counts)
            self._fail(unit, reason, message)
        else:
            raise WorkerError(f"worker {w.wid}: unexpected message {kind!r}")

    def _reap(self, w: _Worker) -> None:
        """A worker process ended: fail the item it was processing, re-queue the others."""
        self._drain_after_death(w)
        code = w.proc.exitcode
        del self.workers[w.wid]
        for conn in (w.tasks, w.results):
            conn.close()
        if not w.ready and not any(x.ready for x in self.workers.values()) and not w.assigned:
            raise WorkerError(f"worker process {w.wid} exited with code {code} before it was ready (a script "
                              "starting a run must guard its entry point with if __name__ == '__main__':)")
        lost = list(w.assigned)
        if lost and lost[0] in self.units and self.units[lost[0]].started:
            unit = self.units[lost[0]]
            self._fail(unit, WORKER_DIED, f"{unit.item.path}: worker process exited with code {code} while processing it")
            lost = lost[1:]
        for idx in reversed(lost):  # not started: back to the front of the queue
            if idx in self.units:
                self.units[idx].worker = None
                self.queue.appendleft(idx)
        if self.units or self.queue:
            self.restarts += 1
            limit = self.pcfg.max_restarts if self.pcfg.max_restarts is not None else 2 * self.pcfg.workers + 2
            if self.restarts > limit:
                raise WorkerError(f"{self.restarts} worker processes died (limit {limit}); giving up")
            log.warning("worker %d died (exit code %s); starting a replacement", w.wid, code)
            self._spawn()

    def _drain_after_death(self, w: _Worker) -> None:
        self._receive(w)
        w.closed = True

    # -- fit, render, write ---------------------------------------------------------------

    def _take_faces(self, unit: _Unit, faces: FaceBatch) -> None:
        """A chunk of ``unit``'s faces arrived: into the render queue (mixed batches, spoof
        items) or into the item's next group of ``cfg.batch_size`` faces."""
        if self.pcfg.mix_items or unit.item.is_spoof:
            self._enqueue(unit, faces)
            return
        for group in unit.batcher.push(faces):
            self._enqueue(unit, group)

    def _last_group(self, unit: _Unit) -> None:
        """The item's last, short group (the sequential path's batches: faces
        k*B .. (k+1)*B - 1 of the item, cut by its ``Rebatcher``)."""
        for group in unit.batcher.flush():
            self._enqueue(unit, group)

    def _enqueue(self, unit: _Unit, faces: FaceBatch) -> None:
        self.ready.append((unit.idx, faces))
        self.ready_faces += len(faces)
        unit.pending += 1

    def _flush(self) -> None:
        """Fit + render the waiting faces, then QC, append, and commit the items that are done.

        Not mixing: one fit+render call per group (one item's batch). Mixing: one call over
        every waiting face (``fit_and_render`` splits it into ``cfg.batch_size`` faces)."""
        if not self.ready:
            return
        batch, self.ready, self.ready_faces = self.ready, [], 0
        live = [(pos, idx, faces) for pos, (idx, faces) in enumerate(batch) if not self.items[idx].is_spoof]
        calls = [live] if self.pcfg.mix_items else [[x] for x in live]
        rendered: dict[int, tuple] = {}
        for call in calls:
            if call:
                rendered.update(self._render(call))
        for pos, (idx, faces) in enumerate(batch):
            unit = self.units.get(idx)
            if unit is None:  # failed on an earlier group of this batch
                continue
            unit.pending -= 1
            got = rendered.get(pos)
            try:
                data = finish_chunk(faces, unit.item, self.cfg, self.eng, unit.timer, unit.counts, rendered=got,
                                    root=self.input_root)
                if data.frames:
                    unit.buffer.append(data)
                    unit.buffered += data.frames
                    unit.frames += data.frames
                    if unit.buffered >= self.pcfg.append_frames:
                        self._append(unit)
            except Exception as exc:
                self._fail_from(unit, exc)
                continue
        for unit in [u for u in self.units.values() if u.done and u.pending == 0 and not u.committing]:
            self._complete(unit)

    def _render(self, call: list[tuple[int, int, FaceBatch]]) -> dict[int, tuple]:
        """Fit + render the faces of ``call`` ((position, item index, faces)...) together;
        returns ``{position: (depth, measures)}`` and charges the time to the items by faces.
        A batch that fails with an InputError returns nothing: ``finish_chunk`` then renders
        each group alone, so only the culprit item fails."""
        timer = StageTimer()
        total = sum(len(f) for _, _, f in call)
        try:
            depth, meas = render_faces([f for _, _, f in call], self.cfg, self.eng, timer)
        except InputError as exc:
            log.warning("fit+render of a batch of %d faces failed (%s); rendering item by item", total, exc)
            return {}
        out = {}
        start = 0
        for pos, idx, faces in call:
            sl = slice(start, start + len(faces))
            out[pos] = (depth[sl], {k: v[sl] for k, v in meas.items()})
            self.units[idx].timer.merge({k: v * len(faces) / total for k, v in timer.seconds.items()})
            start += len(faces)
        return out

    def _append(self, unit: _Unit) -> None:
        """Hand the item's buffered frames to the part writer (which begins the part first)."""
        if not unit.buffer:
            return
        begin = unit.begin_args(self.replace)
        chunk = PartData.concat(unit.buffer) if len(unit.buffer) > 1 else unit.buffer[0]
        unit.buffer, unit.buffered = [], 0
        unit.appended = True
        self.parts.submit(("append", unit.idx, begin, chunk))

    def _complete(self, unit: _Unit) -> None:
        """All of the item's frames are in: have its part committed (or fail it when it has none)."""
        if unit.frames == 0:
            self._fail_from(unit, unit.counts.no_frame_error(unit.item.path))
            return
        self._append(unit)
        unit.committing = True
        self.parts.submit(("commit", unit.idx, unit.counts.as_dict()))

    def _written(self) -> None:
        """Outcomes of the part writer: commits (the item is written) and errors."""
        for msg in self.parts.outcomes():
            kind, idx = msg[0], msg[1]
            unit = self.units.get(idx)
            if unit is None:  # failed meanwhile
                continue
            if kind == "seconds":
                unit.timer.merge({"write": msg[2]})
            elif kind == "error":
                unit.timer.merge({"write": msg[3]})
                unit.appended = False  # the writer discarded the part
                self._fail_from(unit, msg[2])
            elif kind == "committed":
                unit.timer.merge({"write": msg[3]})
                self._written_unit(unit, msg[2])

    def _written_unit(self, unit: _Unit, info: Any) -> None:
        unit.record(info.frames)
        del self.units[unit.idx]
        self._finish(unit)

    def _fail_from(self, unit: _Unit, exc: BaseException) -> None:
        """Sequential semantics (``item_failure``): bad input fails the item; store errors and
        bugs end the run."""
        failure = item_failure(exc, unit.item.path)
        if failure is None:
            raise exc
        log.debug("%s failed", unit.item.path, exc_info=exc)
        self._fail(unit, *failure)

    def _fail(self, unit: _Unit, reason: str, message: str) -> None:
        if unit.appended:
            self.parts.submit(("abort", unit.idx))
            unit.appended = False
        unit.buffer, unit.buffered = [], 0
        unit.batcher = None
        if unit.pending:
            self.ready = [(i, f) for i, f in self.ready if i != unit.idx]
            self.ready_faces = sum(len(f) for _, f in self.ready)
            unit.pending = 0
        unit.fail_with(reason, message)
        del self.units[unit.idx]
        self._finish(unit)


def run_parallel(
    items: list[WorkItem],
    output: str,
    cfg: PreprocessConfig,
    *,
    pcfg: ParallelConfig | None = None,
    input_root: str | None = None,
    rejected: list[dict] | None = None,
    on_unit: Callable[[UnitResult], None] | None = None,
    replace: bool = False,
) -> RunReport:
    """Process every item into ``output`` with worker processes, under the store's run lock.

    Same contract as :func:`pipeline.run.runners.run_preprocess` (same parts, report, skip and
    failure semantics); ``pcfg`` defaults to ``ParallelConfig(workers=cfg.workers or 2)``.
    ``report.units`` is in the order of ``items``; ``on_unit`` is called as items finish.
    """
    pcfg = pcfg or ParallelConfig(workers=cfg.workers or 2)
    refuse_if_locked(output)  # at once, even while the holder sits in a commit
    writer = DatasetWriter.open(output, cfg.output_config())  # fail fast on a config mismatch
    report = RunReport(output=output, config=cfg.output_config(), rejected=list(rejected or []),
                       version_mix=version_mix(writer))
    threads = pcfg.main_threads or max(1, (os.cpu_count() or 1) - pcfg.workers)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    runner = _Runner(list(items), output, cfg, pcfg, input_root, report, on_unit, replace)
    try:
        with run_lock(output, owner="depthseg-fas preprocess"), interruptible(report, writer), frame_heap():
            try:
                runner.run()
            finally:  # on Ctrl-C too: the report holds the items finished so far
                report.units = [r for r in runner.results if r is not None]
    finally:
        torch.set_num_threads(before)
    return report
