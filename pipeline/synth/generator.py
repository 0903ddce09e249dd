"""Rendering clips of the synthetic set and writing them (videos + manifest): :func:`generate`
drives the other modules."""

from __future__ import annotations

import csv
import ctypes
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.base.errors import ConfigError
from pipeline.io.media import write_video
from pipeline.reconstruct.sfm import load_sfm
from pipeline.synth.attacks import render_print, render_replay
from pipeline.synth.camera import camera_model
from pipeline.synth.geometry import PreparedIdentity, prepare_identity
from pipeline.synth.live import clean_live
from pipeline.synth.plan import (
    CLIP_NAMES,
    ClipSpec,
    IdentityPlan,
    MANIFEST_COLUMNS,
    SynthConfig,
    clip_rng,
    plan_clips,
    plan_identities,
)
from pipeline.synth.sources import SourcePhoto, load_sources

logger = logging.getLogger(__name__)


_KIND_RENDER = {"print": render_print, "replay": render_replay}


def render_clip(prep: PreparedIdentity, sfm, name: str) -> np.ndarray:
    """Frames of one clip of an identity: ``(T, H, W, 3)`` uint8 RGB. Deterministic (module doc)."""
    if name not in CLIP_NAMES:
        raise ConfigError(f"clip name must be one of {CLIP_NAMES}, got {name!r}")
    with torch.inference_mode():
        if name == "live":
            clean = clean_live(prep, sfm)
        else:
            clean = _KIND_RENDER[name[:-1]](prep, sfm, int(name[-1]))
        return camera_model(clean, clip_rng(prep.cfg.seed, prep.plan.index, f"camera-{name}"), prep.cfg.fps)


class SynthGenerator:
    """Plans identities and clips and renders them (caches the current identity's preparation).

    ``sources`` come from :func:`load_sources`, ``sfm`` is :class:`pipeline.reconstruct.sfm.SFMTensors`.
    """

    def __init__(self, cfg: SynthConfig, sources: Sequence[SourcePhoto], sfm=None):
        self.cfg = cfg
        self.sources = {s.name: s for s in sources}
        self._sfm = sfm
        self.identities = plan_identities(list(sources), cfg.identities, cfg.seed)
        self._prep: PreparedIdentity | None = None

    @classmethod
    def from_config(cls, cfg: SynthConfig) -> "SynthGenerator":
        """Load the sources for ``cfg`` (reads files; the SFM is loaded on first use)."""
        return cls(cfg, load_sources(cfg))

    @property
    def sfm(self):
        """:class:`pipeline.reconstruct.sfm.SFMTensors` on ``cfg.device`` (read from the model directory on first use)."""
        if self._sfm is None:
            self._sfm = load_sfm(self.cfg.model_dir).to_torch(self.cfg.device, torch.float32)
        return self._sfm

    def clips(self) -> list[ClipSpec]:
        return plan_clips(self.identities)

    def prepare(self, ident: IdentityPlan) -> PreparedIdentity:
        if self._prep is None or self._prep.plan != ident:
            with torch.inference_mode():
                self._prep = prepare_identity(ident, self.sources[ident.source], self.sfm, self.cfg)
        return self._prep

    def render(self, clip: ClipSpec) -> np.ndarray:
        """``(T, H, W, 3)`` uint8 frames of ``clip``."""
        return render_clip(self.prepare(clip.identity), self.sfm, clip.name)

    def release(self) -> None:
        """Drop the cached identity preparation (and its rendered live frames)."""
        self._prep = None


@dataclass
class SynthResult:
    """What :func:`generate` wrote: the manifest, its rows, timing."""

    out_dir: Path
    manifest: Path
    rows: list[dict[str, str]]
    identities: list[IdentityPlan]
    seconds: float


def write_manifest(rows: Sequence[dict[str, str]], path: str | os.PathLike) -> Path:
    """Write ``manifest.csv`` with :data:`MANIFEST_COLUMNS`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(MANIFEST_COLUMNS))
        w.writeheader()
        for r in rows:
            w.writerow({k: r[k] for k in MANIFEST_COLUMNS})
    return path


def _write_identity(gen: SynthGenerator, index: int, out: Path) -> list[tuple[ClipSpec, float]]:
    """Render and write the five clips of identity ``index``; (clip, seconds) of each."""
    done = []
    for clip in plan_clips([gen.identities[index]]):
        t1 = time.perf_counter()
        frames = gen.render(clip)
        write_video(out / clip.relpath, iter(frames), gen.cfg.fps, crf=gen.cfg.crf)
        done.append((clip, time.perf_counter() - t1))
    gen.release()  # free the identity's frames
    return done


_WORKER: SynthGenerator | None = None


def _worker_init(cfg: SynthConfig, sources: list[SourcePhoto]) -> None:  # pragma: no cover - subprocess
    global _WORKER
    torch.set_num_threads(1)  # one core per worker process
    _keep_freed_memory()
    _WORKER = SynthGenerator(cfg, sources)


def _keep_freed_memory() -> None:  # pragma: no cover - subprocess, glibc only
    """In a worker process: let glibc keep freed large blocks on the heap instead of unmapping
    them, so each clip's ~40 MB tensors are not page-faulted in again (saves ~15% CPU)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def _worker_identity(args: tuple[int, str]) -> list[tuple[ClipSpec, float]]:  # pragma: no cover - subprocess
    assert _WORKER is not None
    return _write_identity(_WORKER, args[0], Path(args[1]))


def generate(cfg: SynthConfig, out_dir: str | os.PathLike, *, workers: int = 1,
             on_clip: Callable[[ClipSpec, float], None] | None = None,
             generator: SynthGenerator | None = None) -> SynthResult:
    """Render every clip of ``cfg`` into ``out_dir`` (mp4, H.264) and write ``manifest.csv``.

    ``workers > 1`` renders identities in that many spawned processes (one torch thread each);
    the frames do not depend on the worker an identity lands on beyond torch's own float
    reduction order. ``on_clip(clip, seconds)`` is called after each clip is written (in the
    calling process; progress bars). Returns the manifest rows in identity order.
    """
    if int(workers) != workers or workers < 1:
        raise ConfigError(f"parameter 'workers' must be an integer >= 1, got {workers!r}")
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    gen = generator or SynthGenerator.from_config(cfg)
    n = len(gen.identities)
    done: list[tuple[ClipSpec, float]] = []
    workers = min(int(workers), n)
    if workers <= 1:
        for i in range(n):
            for item in _write_identity(gen, i, out):
                done.append(item)
                if on_clip is not None:
                    on_clip(*item)
    else:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(workers, initializer=_worker_init, initargs=(cfg, list(gen.sources.values()))) as pool:
            for items in pool.imap_unordered(_worker_identity, [(i, str(out)) for i in range(n)]):
                for item in items:
                    done.append(item)
                    if on_clip is not None:
                        on_clip(*item)
    order = {(c.identity.index, c.name): k for k, c in enumerate(gen.clips())}
    done.sort(key=lambda it: order[(it[0].identity.index, it[0].name)])
    rows = [clip.manifest_row() for clip, _ in done]
    manifest = write_manifest(rows, out / "manifest.csv")
    dt = time.perf_counter() - t0
    logger.info("synthetic set: %d clips of %d identities in %s (%.1f s)", len(rows), n, out, dt)
    return SynthResult(out, manifest, rows, gen.identities, dt)
