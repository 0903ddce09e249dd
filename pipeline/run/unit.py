"""The unit runner: one work item (video, image, image folder) → one store part.

Every runner (in-process, pipelined, the Prefect task) takes an item through the same steps,
all of them here:

* **check** (:meth:`Unit.check`): checksum the input; an item committed with that checksum and
  config is *skipped*; a missing input, or a part id committed from another input (unless
  ``replace``), *fails* before anything is decoded;
* **fail** (:meth:`Unit.fail`): bad input (``InputError``, an unreadable file, a part
  conflict) fails the item with its reason and the run goes on; the part being written is
  aborted by its owner, so nothing half-written is visible. Errors of the store and bugs are
  re-raised: they concern the whole run;
* **record** (:meth:`Unit.record`): the committed part's frames and the frame counts.

:func:`preprocess_unit` runs the whole thing in-process for one item.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipeline.base.errors import InputError, InputNotFound, SetupError
from pipeline.io.items import WorkItem
from pipeline.run.engines import Engines, get_engines
from pipeline.run.config import PreprocessConfig
from pipeline.run.stages import FrameCounts, iter_part_chunks, relative_source
from pipeline.run.timing import StageTimer
from storage import DatasetWriter, PartConflict, StoreError, file_checksum

log = logging.getLogger(__name__)


@dataclass
class UnitResult:
    """Small summary of one work item (what a Prefect task returns)."""

    path: str
    part_id: str
    status: str  # written | skipped | failed
    frames_decoded: int = 0
    frames_stored: int = 0
    frames_no_face: int = 0
    frames_dropped_qc: int = 0
    frames_flagged_qc: int = 0
    reason: str = ""
    message: str = ""
    seconds: dict = field(default_factory=dict)
    input_checksum: str = ""  # of the input, when it could be read (what the part is committed with)

    def to_dict(self) -> dict:
        return asdict(self)


def part_id_for(item: WorkItem, root: str | Path | None = None) -> str:
    """Stable, filesystem-safe part id, unique per input of a run: readable name + short hash.

    The hash covers the item's path relative to the input ``root`` (its whole path, also where
    the readable name is shortened or sanitised), so two items of one input never share an id,
    and the id is the same on every re-run (and after the input root moves), which is what lets
    resume skip committed parts. The root itself as an item (a folder of loose images given as
    ``--input``) is named by the folder's own name, so two such folders get two ids. Two inputs
    that map to one relative path from different roots (``A/face.jpg``, then ``B/face.jpg``)
    do get one id: the writer tells them apart by their input checksum and refuses the second
    (:class:`storage.PartConflict`) unless replacing is asked for.
    """
    rel = relative_source(item.path, root)
    if rel == ".":
        rel = Path(os.path.abspath(item.path)).name or "root"
        base = rel
    else:
        base = item.video_id or rel
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", base.replace("/", "__").replace("\\", "__"))[-80:]
    digest = hashlib.sha1(rel.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{readable.strip('._') or 'item'}-{digest}"


def item_failure(exc: BaseException, path: str) -> tuple[str, str] | None:
    """``(reason, message)`` when ``exc`` fails only the item at ``path``; None when it concerns
    the whole run (errors of the store, bugs): the caller re-raises it."""
    if isinstance(exc, SetupError):  # a missing model file or a bad parameter: the run stops
        return None
    if isinstance(exc, InputError):
        return exc.reason, str(exc)
    if isinstance(exc, PartConflict):  # this item's id is another input's part
        return exc.reason, f"{path}: {exc}"
    if isinstance(exc, (OSError, ValueError, RuntimeError)) and not isinstance(exc, StoreError):
        return "error", f"{path}: {type(exc).__name__}: {exc}"
    return None


@dataclass
class Unit:
    """One item on its way through the steps; ``settled`` once its result is final."""

    item: WorkItem
    result: UnitResult
    checksum: str = ""
    timer: StageTimer = field(default_factory=StageTimer)
    counts: FrameCounts = field(default_factory=FrameCounts)
    settled: bool = False

    @classmethod
    def check(cls, item: WorkItem, writer: DatasetWriter, *, input_root: str | None = None,
              replace: bool = False) -> Unit:
        """Checksum, then skip or refuse before any decoding (see the module docstring)."""
        unit = cls(item, UnitResult(path=item.path, part_id=part_id_for(item, input_root), status="failed"))
        res = unit.result
        try:
            with unit.timer.stage("checksum"):
                if not Path(item.path).exists():
                    raise InputNotFound("input path does not exist", source=item.path)
                unit.checksum = res.input_checksum = file_checksum(item.path)
        except (InputError, OSError) as exc:
            unit.fail(exc)
            return unit
        if writer.has_part(res.part_id, unit.checksum):
            res.status, unit.settled = "skipped", True
            res.frames_stored = writer.parts[res.part_id].frames
            log.info("%s: already committed as part %s, skipped", item.path, res.part_id)
            return unit
        old = writer.parts.get(res.part_id)
        if old is not None and old.input_checksum != unit.checksum and not replace:
            unit.fail_with("part-conflict", f"{item.path}: part {res.part_id} is already committed from another "
                           f"input ({old.extra.get('source', '?')}); pass --replace to replace it")
        return unit

    def begin_args(self, replace: bool) -> dict:
        """Keyword arguments of ``DatasetWriter.begin_part`` for this item's part."""
        extra = {"source": self.item.path, "item": {k: v for k, v in self.item.to_dict().items() if k != "extra"}}
        return dict(part_id=self.result.part_id, input_checksum=self.checksum, extra=extra, overwrite=True,
                    replace=replace)

    def fail(self, exc: BaseException) -> None:
        """Fail the item with ``exc``'s reason, or re-raise ``exc`` when it concerns the run."""
        failure = item_failure(exc, self.item.path)
        if failure is None:
            raise exc
        log.debug("%s failed", self.item.path, exc_info=exc)
        self.fail_with(*failure)

    def fail_with(self, reason: str, message: str) -> None:
        log.warning("%s failed: %s", self.item.path, message)  # one line; the run goes on
        res = self.result
        res.status, res.reason, res.message = "failed", reason, message
        res.frames_decoded, res.frames_no_face = self.counts.decoded, self.counts.no_face
        self.settled = True

    def record(self, frames: int) -> None:
        """The item's part is committed with ``frames`` frames."""
        res = self.result
        res.status, res.frames_stored = "written", frames
        res.frames_decoded, res.frames_no_face = self.counts.decoded, self.counts.no_face
        res.frames_dropped_qc, res.frames_flagged_qc = self.counts.dropped_qc, self.counts.flagged_qc
        self.settled = True

    def summary(self) -> UnitResult:
        """The result, with the seconds spent per stage."""
        self.result.seconds = self.timer.as_dict()
        return self.result


def write_unit(unit: Unit, writer: DatasetWriter, cfg: PreprocessConfig, eng: Engines, *,
               input_root: str | None = None, replace: bool = False, detect_frames: int = 1) -> None:
    """Process a checked ``unit`` in-process into its part, streamed chunk by chunk; the part
    is committed (``unit.record``) or aborted by its ``with`` block (``unit.fail``).
    ``detect_frames``: frames per detector call (``stages.iter_faces``)."""
    try:
        with writer.begin_part(**unit.begin_args(replace)) as part:
            for chunk in iter_part_chunks(unit.item, cfg, eng, unit.timer, unit.counts, root=input_root,
                                          detect_frames=detect_frames):
                with unit.timer.stage("write"):
                    part.append(chunk)
            if part.frames == 0:
                raise unit.counts.no_frame_error(unit.item.path)
            part.update_extra(unit.counts.as_dict())
            with unit.timer.stage("write"):
                info = part.commit()
        unit.record(info.frames)
    except Exception as exc:  # noqa: BLE001 - sorted by Unit.fail: item errors recorded, others re-raised
        unit.fail(exc)


def preprocess_unit(item: WorkItem, output: str, cfg: PreprocessConfig, *, input_root: str | None = None,
                    engines: Engines | None = None, replace: bool = False) -> UnitResult:
    """Process one item into ``output`` unless already committed; never raises for bad input.

    Bad input (unreadable, corrupt, no face) is returned as ``status="failed"`` with its reason;
    so is a part id already committed from another input (``part-conflict``, unless ``replace``).
    Other errors of the store itself (``StoreError``) propagate, since they concern the whole run.
    """
    writer = DatasetWriter.open(output, cfg.output_config())
    unit = Unit.check(item, writer, input_root=input_root, replace=replace)
    if not unit.settled:
        write_unit(unit, writer, cfg, engines or get_engines(cfg), input_root=input_root, replace=replace)
    return unit.summary()
