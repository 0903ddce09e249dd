"""Shared machinery of the dataset adapters: scan results, the adapter registry, tree walking.

An adapter turns a dataset root into :class:`~pipeline.io.items.WorkItem` records following the
dataset's official layout. Every file that looks like an input (a video, or an image for
image datasets) but does not follow the layout is *reported* in :attr:`ScanResult.rejected`
with a reason; nothing is silently guessed. Files that are not inputs at all (face-location
``.txt``/``.face`` sidecars, READMEs, ...) are listed in :attr:`ScanResult.ignored`; a sidecar
sharing a video's stem is attached to that video's item as ``extra["sidecars"]``.

Conventions shared by every adapter (so protocols and summaries can rely on them):

* ``item.path`` is an absolute, normalised path (``os.path.abspath``; symlinks not resolved).
* ``item.split`` is ``train``, ``dev``, ``test`` or ``""`` (no official split).
* ``item.attack_type`` is ``none`` for live faces, else a family from
  :data:`pipeline.io.items.ATTACK_TYPES` or a refinement of one (OULU-NPU: ``print1``...);
  ``extra["attack_family"]`` always holds the family (``none``/``print``/``replay``/``mask``/
  ``other``/``unknown``).
* ``extra["dataset"]`` is the adapter name (subjects are only unique within a dataset),
  ``extra["relpath"]`` the path relative to the dataset root (``/`` separated) and
  ``extra["kind"]`` one of ``video``, ``image``, ``image_folder``.
* ``item.video_id`` is ``"<dataset>/<relpath>"`` (official datasets drop the extension, whose
  stem is the official name; generic adapters keep it); unique within a scan.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field

from pipeline.base.errors import DatasetLayoutError, InputNotFound
from pipeline.io.items import ATTACK_TYPES, WorkItem
from pipeline.base.registry import Registry

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp"}
)
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
#: extensions of per-video side files (face boxes, eye positions) shipped with datasets
SIDECAR_EXTENSIONS = frozenset({".txt", ".face", ".pos", ".json", ".csv", ".xml"})

SPLITS = ("train", "dev", "test")
ATTACK_FAMILIES = ATTACK_TYPES


@dataclass
class ScanResult:
    """What an adapter found under a dataset root.

    ``items``: the work items, in sorted path order. ``rejected``: ``(path, reason)`` for
    every candidate input that does not follow the layout (or is a duplicate, a broken link,
    an unreadable folder...). ``ignored``: paths of files that are not inputs of this
    dataset (sidecars without a matching video, documentation, ...).
    """

    items: list[WorkItem] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    dataset: str = ""
    root: str = ""

    def by_split(self) -> dict[str, list[WorkItem]]:
        """Items grouped by ``item.split`` (``""`` for items without an official split)."""
        out: dict[str, list[WorkItem]] = {}
        for it in self.items:
            out.setdefault(it.split, []).append(it)
        return out


def attack_family(item: WorkItem) -> str:
    """The attack family of an item (``none``, ``print``, ``replay``, ``mask``, ...)."""
    fam = item.extra.get("attack_family") if item.extra else None
    if fam:
        return str(fam)
    base = item.attack_type.rstrip("0123456789")
    return base if base in ATTACK_FAMILIES else "unknown"


def item_dataset(item: WorkItem) -> str:
    """The dataset an item came from (``extra["dataset"]``; ``""`` when unknown)."""
    return str(item.extra.get("dataset", "")) if item.extra else ""


def rel_parts(relpath: str) -> list[str]:
    """Split a relative path into its components (``/`` or the OS separator)."""
    return [p for p in relpath.replace(os.sep, "/").split("/") if p not in ("", ".")]


def make_item(
    dataset: str,
    root: str,
    relpath: str,
    *,
    label: str,
    attack_family: str,
    attack_type: str | None = None,
    subject: str = "",
    session: str = "",
    device: str = "",
    split: str = "",
    keep_extension: bool = False,
    kind: str = "video",
    **extra,
) -> WorkItem:
    """Build a :class:`WorkItem` with the shared conventions (see the module docstring)."""
    rel = "/".join(rel_parts(relpath))
    stem = rel if keep_extension else os.path.splitext(rel)[0]
    ex = {"dataset": dataset, "relpath": rel, "kind": kind, "attack_family": attack_family}
    ex.update(extra)
    return WorkItem(
        path=os.path.normpath(os.path.join(root, rel)) if rel else os.path.normpath(root),
        label=label,
        attack_type=attack_type if attack_type is not None else attack_family,
        subject=subject,
        session=session,
        device=device,
        split=split,
        video_id=f"{dataset}/{stem}" if stem else dataset,
        extra=ex,
    )


def walk_tree(root: str, rejected: list[tuple[str, str]]) -> Iterator[tuple[str, list[str]]]:
    """Yield ``(dirpath, sorted file names)`` for every folder under ``root``.

    Real folders are walked first (sorted, deterministic); symlinked folders are followed
    afterwards, each real folder being entered once: a link back to an ancestor (a loop) or
    to a folder already scanned is not descended and is reported in ``rejected``, so link
    loops terminate. Unreadable folders are reported too.
    """
    visited: set[str] = set()
    pending: list[str] = []

    def onerror(err: OSError) -> None:
        rejected.append((str(err.filename or root), f"unreadable folder: {err.strerror or err}"))

    def walk_real(top: str) -> Iterator[tuple[str, list[str]]]:
        for dirpath, dirnames, filenames in os.walk(top, topdown=True, onerror=onerror, followlinks=False):
            real = os.path.realpath(dirpath)
            if real in visited:
                rejected.append((dirpath, f"folder already scanned through another path ({real}); not repeated"))
                dirnames[:] = []
                continue
            visited.add(real)
            links = {d for d in dirnames if os.path.islink(os.path.join(dirpath, d))}
            pending.extend(os.path.join(dirpath, d) for d in sorted(links))
            dirnames[:] = sorted(d for d in dirnames if d not in links)
            yield dirpath, sorted(filenames)

    yield from walk_real(root)
    while pending:
        link = pending.pop(0)
        real = os.path.realpath(link)
        if real in visited:
            rejected.append((link, f"symlink to an already-scanned folder (loop or alias of {real}); not followed"))
            continue
        yield from walk_real(link)


class DatasetAdapter(ABC):
    """Turns a dataset root into work items. Options are constructor keyword arguments."""

    #: registry name of the adapter (also ``extra["dataset"]`` of its items)
    name: str = ""

    @abstractmethod
    def scan(self, root: str | os.PathLike) -> ScanResult:
        """Enumerate the dataset under ``root``; raises InputNotFound if it does not exist."""

    @staticmethod
    def _check_root(root: str | os.PathLike, *, want_dir: bool = True) -> str:
        path = os.path.abspath(os.fspath(root))
        if want_dir and not os.path.isdir(path):
            if os.path.exists(path):
                raise InputNotFound("dataset root is not a folder", source=path)
            raise InputNotFound("dataset root does not exist", source=path)
        return path


class VideoDatasetAdapter(DatasetAdapter):
    """Base of the adapters whose inputs are video files named by an official scheme.

    Subclasses implement :meth:`parse` (pure: a relative path -> item, or raise
    :class:`DatasetLayoutError` with the reason) and may override :meth:`prepare` to read
    metadata files (subject lists) once per scan.
    """

    def prepare(self, root: str, rejected: list[tuple[str, str]]) -> object:
        """Read per-dataset metadata before parsing (default: nothing)."""
        return None

    @abstractmethod
    def parse(self, root: str, relpath: str, context: object) -> WorkItem:
        """Item for the video at ``relpath`` (relative to ``root``), or raise DatasetLayoutError."""

    def scan(self, root: str | os.PathLike) -> ScanResult:
        root_abs = self._check_root(root)
        result = ScanResult(dataset=self.name, root=root_abs)
        context = self.prepare(root_abs, result.rejected)
        seen: dict[str, str] = {}
        for dirpath, files in walk_tree(root_abs, result.rejected):
            videos = [f for f in files if os.path.splitext(f)[1].lower() in VIDEO_EXTENSIONS]
            video_set = set(videos)
            by_stem = {os.path.splitext(f)[0]: f for f in videos}
            sidecars: dict[str, list[str]] = {}
            for f in files:
                full = os.path.join(dirpath, f)
                stem, ext = os.path.splitext(f)
                if f in video_set:
                    continue
                if ext.lower() in SIDECAR_EXTENSIONS and stem in by_stem:
                    sidecars.setdefault(by_stem[stem], []).append(full)
                elif self._is_metadata(dirpath, f, root_abs):
                    continue
                else:
                    result.ignored.append(full)
            for f in videos:
                full = os.path.join(dirpath, f)
                rel = os.path.relpath(full, root_abs)
                if not os.path.isfile(full):
                    result.rejected.append((full, "broken link or not a regular file"))
                    continue
                try:
                    item = self.parse(root_abs, rel, context)
                except DatasetLayoutError as exc:
                    result.rejected.append((full, str(exc)))
                    continue
                if item.video_id in seen:
                    result.rejected.append(
                        (full, f"duplicate video id {item.video_id!r} (already given by {seen[item.video_id]})")
                    )
                    continue
                seen[item.video_id] = full
                if f in sidecars:
                    item.extra["sidecars"] = sorted(sidecars[f])
                result.items.append(item)
        logger.info(
            "%s: %d items, %d rejected, %d ignored under %s",
            self.name, len(result.items), len(result.rejected), len(result.ignored), root_abs,
        )
        return result

    def _is_metadata(self, dirpath: str, filename: str, root: str) -> bool:
        """Files the adapter itself reads (subject lists...): neither items nor ignored."""
        return False


ADAPTERS: Registry[DatasetAdapter] = Registry("dataset adapter")


def create_adapter(name: str, **options) -> DatasetAdapter:
    """Adapter ``name`` built with ``options``; an unknown name raises UnknownName (a ConfigError)
    listing the valid ones."""
    return ADAPTERS.create(name, **options)


def list_adapters() -> list[str]:
    """Names of the registered dataset adapters (sorted)."""
    return ADAPTERS.names()


def scan_dataset(name: str, root: str | os.PathLike, /, **options) -> ScanResult:
    """Scan ``root`` with adapter ``name`` built with ``options`` (e.g. ``allow_outside_root``).

    ``name`` and ``root`` are positional-only so that adapter options may use any keyword
    (the CSV adapter's ``root=`` is the folder paths must stay within).
    """
    return create_adapter(name, **options).scan(root)


def layout_error(message: str) -> DatasetLayoutError:
    """A DatasetLayoutError carrying only the reason (the scan records the path beside it)."""
    return DatasetLayoutError(message)
