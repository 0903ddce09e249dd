"""Entry points that run many items: the CLI's :func:`run_preprocess` (under the store's run
lock, in-process or pipelined) and :func:`run_units`, the body of the Prefect task (the flow
holds the lock). Both take every item through the unit runner (:mod:`pipeline.run.unit`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from pipeline.io.items import WorkItem
from pipeline.run.engines import Engines, get_engines
from pipeline.run.heap import frame_heap
from pipeline.run.parallel import run_parallel
from pipeline.run.config import PreprocessConfig
from pipeline.run.report import RunReport, interruptible, version_mix
from pipeline.run.unit import Unit, UnitResult, write_unit
from storage import DatasetWriter, refuse_if_locked, run_lock


def _each_unit(items: list[WorkItem], writer: DatasetWriter, cfg: PreprocessConfig, *, input_root: str | None,
               replace: bool, detect_frames: int = 1) -> Iterator[UnitResult]:
    """Check and process ``items`` one after the other in this process; the backends are loaded
    at the first item that needs them (a run of skips loads nothing)."""
    eng: Engines | None = None
    for item in items:
        unit = Unit.check(item, writer, input_root=input_root, replace=replace)
        if not unit.settled:
            eng = eng or get_engines(cfg)
            write_unit(unit, writer, cfg, eng, input_root=input_root, replace=replace, detect_frames=detect_frames)
        yield unit.summary()


def run_preprocess(
    items: list[WorkItem],
    output: str,
    cfg: PreprocessConfig,
    *,
    input_root: str | None = None,
    rejected: list[dict] | None = None,
    on_unit: Callable[[UnitResult], None] | None = None,
    replace: bool = False,
) -> RunReport:
    """Process every item into ``output`` under the store's run lock (sequential in-process).

    With ``cfg.workers > 0`` the pipelined runner :func:`pipeline.run.parallel.run_parallel` does it
    instead (same parts, same report). ``replace``: an item whose part id is committed from
    another input replaces that part (else the item fails with reason ``part-conflict``).
    """
    if cfg.workers > 0:
        return run_parallel(items, output, cfg, input_root=input_root, rejected=rejected, on_unit=on_unit,
                            replace=replace)
    refuse_if_locked(output)  # at once, even while the holder sits in a commit
    writer = DatasetWriter.open(output, cfg.output_config())  # fail fast on a config mismatch
    report = RunReport(output=output, config=cfg.output_config(), rejected=list(rejected or []),
                       version_mix=version_mix(writer))
    with run_lock(output, owner="depthseg-fas preprocess"), interruptible(report, writer), frame_heap():
        for unit in _each_unit(items, writer, cfg, input_root=input_root, replace=replace):
            report.units.append(unit)
            if on_unit:
                on_unit(unit)
    return report


def run_units(items: list[dict], output: str, cfg: PreprocessConfig, *, input_root: str | None = None,
              replace: bool = False, detect_frames: int = 1) -> list[dict]:
    """Process ``items`` (``WorkItem.to_dict()`` form) into ``output``; one summary dict per item.

    The body of the Prefect task: paths and config in, small summaries out; the caller holds
    the store's run lock. Bad input fails its item (in the summaries); setup and store errors
    raise. ``detect_frames``: frames per detector call, as the pipelined workers' ``detect_batch``
    (same boxes as one frame at a time, see :mod:`pipeline.run.parallel`).
    """
    writer = DatasetWriter.open(output, cfg.output_config())
    units = [WorkItem(**it) for it in items]
    with frame_heap():  # a Dask worker's malloc settings made every frame a fresh mmap (pipeline.run.heap)
        return [u.to_dict() for u in _each_unit(units, writer, cfg, input_root=input_root, replace=replace,
                                                detect_frames=detect_frames)]
