"""The run report: one ``UnitResult`` per item, the inputs the adapter rejected, totals.

:func:`interruptible` makes Ctrl-C end a run with the report of what it finished."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, field

from pipeline.base.errors import RunInterrupted
from pipeline.run.timing import StageTimer
from pipeline.run.unit import UnitResult

log = logging.getLogger(__name__)


@dataclass
class RunReport:
    output: str
    config: dict
    units: list[UnitResult] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)  # inputs the adapter could not parse
    interrupted: bool = False  # Ctrl-C ended the run: ``units`` are the items finished before it
    #: packages whose version differs between the store's parts and this run (:func:`version_mix`)
    version_mix: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        seconds = StageTimer()
        for u in self.units:
            seconds.merge(u.seconds)
        by_status: dict[str, int] = {}
        for u in self.units:
            by_status[u.status] = by_status.get(u.status, 0) + 1
        return {
            "output": self.output,
            "config": self.config,
            "interrupted": self.interrupted,
            "counts": {
                "items": len(self.units),
                "written": by_status.get("written", 0),
                "skipped": by_status.get("skipped", 0),
                "failed": by_status.get("failed", 0),
                "rejected": len(self.rejected),
                "frames_decoded": sum(u.frames_decoded for u in self.units),
                "frames_stored": sum(u.frames_stored for u in self.units if u.status == "written"),
                "frames_no_face": sum(u.frames_no_face for u in self.units),
                "frames_dropped_qc": sum(u.frames_dropped_qc for u in self.units),
                "frames_flagged_qc": sum(u.frames_flagged_qc for u in self.units),
            },
            "seconds_per_stage": seconds.as_dict(),
            "failures": [
                {"path": u.path, "reason": u.reason, "message": u.message}
                for u in self.units if u.status == "failed"
            ] + [dict(r, reason=r.get("reason", "rejected")) for r in self.rejected],
            "units": [u.to_dict() for u in self.units],
            "version_mix": self.version_mix,
        }


def version_mix(writer) -> dict[str, dict[str, int]]:
    """Packages whose version differs between the store's committed parts and this process
    (``{package: {version: parts}}``, :meth:`storage.DatasetWriter.version_mix`), each logged as
    a warning: the same config with another OpenCV, torch or landmark runtime can store slightly
    different crops and labels, and a resumed store would mix them without a word. The run goes
    on (an upgrade is common and the differences are small); the report carries the mix."""
    mix = writer.version_mix()
    for name, found in sorted(mix.items()):
        mine, *_ = found  # this process's version comes first
        seen = ", ".join(f"{v} ({n} part{'s' if n != 1 else ''})" for v, n in sorted(found.items()))
        log.warning("%s: its parts were made with other %s versions than this run's %s: %s; the crops and "
                    "labels of parts made with other versions may differ slightly (rebuild the store under "
                    "one environment for identical parts)", writer.url, name, mine, seen)
    return mix


@contextmanager
def interruptible(report: RunReport, writer):
    """Ctrl-C inside the block becomes :class:`RunInterrupted` carrying ``report`` (flagged
    ``interrupted``). By then the part being written was aborted by its ``with`` block, so the
    store holds exactly the parts committed before; a rerun skips them and does the rest.

    A Ctrl-C that lands between a part's commit and its entry in the report would leave a
    committed part unreported: parts whose manifest entry changed since ``writer`` was opened
    (this run's commits) and that the report lacks are added as written, so the report lists
    exactly what the run added to the store."""
    before = {pid: info.checksum for pid, info in writer.parts.items()}
    try:
        yield
    except KeyboardInterrupt as exc:
        report.interrupted = True
        writer.refresh()
        reported = {u.part_id for u in report.units if u.status == "written"}
        for pid, info in writer.parts.items():
            if before.get(pid) != info.checksum and pid not in reported:
                report.units.append(UnitResult(
                    path=str(info.extra.get("source", "")), part_id=pid, status="written",
                    frames_stored=info.frames, frames_decoded=int(info.extra.get("decoded", 0)),
                    frames_no_face=int(info.extra.get("no_face", 0)),
                    message="committed just before Ctrl-C"))
        raise RunInterrupted(str(exc), report=report) from None
