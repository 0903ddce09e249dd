"""MSU-MFSD adapter (Wen, Han, Jain, "Face Spoof Detection with Image Distortion Analysis",
IEEE TIFS 2015).

Layout::

    <root>/scene01/real/real_client002_android_SD_scene01.mp4
    <root>/scene01/attack/attack_client002_laptop_SD_ipad_video_scene01.mov
    <root>/train_sub_list.txt, <root>/test_sub_list.txt   (official subject lists, one id a line)

Names: ``real_client<NNN>_<camera>_<quality>_scene<NN>`` and
``attack_client<NNN>_<camera>_<quality>_<pai>_scene<NN>`` with ``<camera>`` ``android``
(Google Nexus 5) or ``laptop`` (MacBook Air built-in camera) -> ``item.device``;
``<quality>`` ``SD``/``HD``; ``<pai>`` ``ipad_video`` (HD video replayed on an iPad) and
``iphone_video`` (video replayed on an iPhone) -> ``replay``, ``printed_photo`` (A3 print)
-> ``print``. ``item.subject`` is the three-digit client id, ``item.session`` the scene number.

The official split comes from the subject lists (ids parsed as integers: ``2``, ``02``,
``002`` and ``client002`` are the same id). Without the list files every video is rejected
with that reason (the split is never guessed); a video whose client is in neither list is
rejected too. MSU-MFSD has no development split (see :mod:`.casia_fasd` for how protocols
form one).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from pipeline.base.errors import DatasetLayoutError
from pipeline.io.items import WorkItem
from .base import ADAPTERS, VideoDatasetAdapter, layout_error, make_item, rel_parts

NAME = "msu-mfsd"
LIST_FILES = {"train": "train_sub_list.txt", "test": "test_sub_list.txt"}
PAIS = {"ipad_video": "replay", "iphone_video": "replay", "printed_photo": "print"}

_REAL_RE = re.compile(r"^real_client(\d{3})_(android|laptop)_(SD|HD)_scene(\d{2})$")
_ATTACK_RE = re.compile(
    r"^attack_client(\d{3})_(android|laptop)_(SD|HD)_(ipad_video|iphone_video|printed_photo)_scene(\d{2})$"
)
_LIST_LINE = re.compile(r"^(?:client)?(\d+)$", re.IGNORECASE)


@dataclass(frozen=True)
class SubjectLists:
    """Official MSU-MFSD subject ids per split (``None``: the list files are missing)."""

    split_of: dict[int, str] | None
    missing: tuple[str, ...] = ()


def read_subject_list(path: str) -> list[int]:
    """Integer subject ids of a list file (one a line; blank lines skipped)."""
    ids = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            s = line.strip()
            if not s:
                continue
            m = _LIST_LINE.match(s)
            if not m:
                raise DatasetLayoutError(f"line {n}: {s!r} is not a subject id", source=path)
            ids.append(int(m.group(1)))
    return ids


@ADAPTERS.register(NAME)
class MsuMfsdAdapter(VideoDatasetAdapter):
    """MSU-MFSD: ``scene01/{real,attack}/*`` split by the official subject lists (see module docstring).

    ``train_list``/``test_list`` override the list files' locations (default: in the root).
    """

    name = NAME

    def __init__(self, train_list: str | None = None, test_list: str | None = None):
        self.lists = {"train": train_list, "test": test_list}

    def _list_path(self, root: str, split: str) -> str:
        return os.path.abspath(self.lists[split] or os.path.join(root, LIST_FILES[split]))

    def prepare(self, root: str, rejected: list[tuple[str, str]]) -> SubjectLists:
        paths = {s: self._list_path(root, s) for s in LIST_FILES}
        missing = tuple(p for p in paths.values() if not os.path.isfile(p))
        if missing:
            return SubjectLists(None, missing)
        split_of: dict[int, str] = {}
        for split, path in paths.items():
            for sid in read_subject_list(path):
                if split_of.get(sid, split) != split:
                    raise DatasetLayoutError(
                        f"subject {sid} is in both {LIST_FILES['train']} and {LIST_FILES['test']}", source=path
                    )
                split_of[sid] = split
        return SubjectLists(split_of)

    def _is_metadata(self, dirpath: str, filename: str, root: str) -> bool:
        full = os.path.abspath(os.path.join(dirpath, filename))
        return full in {self._list_path(root, s) for s in LIST_FILES}

    def parse(self, root: str, relpath: str, context: object) -> WorkItem:
        assert isinstance(context, SubjectLists)
        parts = rel_parts(relpath)
        folder = parts[-2] if len(parts) >= 2 else ""
        stem = parts[-1].rsplit(".", 1)[0]
        if folder not in ("real", "attack"):
            raise layout_error("not in a real/ or attack/ folder (expected scene01/real/ or scene01/attack/)")
        prefix = stem.split("_", 1)[0]
        if prefix in ("real", "attack") and prefix != folder:
            raise layout_error(f"the name says {prefix} but the file is under {folder}/")
        if folder == "real":
            m = _REAL_RE.match(stem)
            if not m:
                raise layout_error(
                    f"real-access name {stem!r} does not follow real_clientNNN_<android|laptop>_<SD|HD>_sceneNN"
                )
            client, camera, quality, scene = m.groups()
            label, family, pai = "live", "none", ""
        else:
            m = _ATTACK_RE.match(stem)
            if not m:
                raise layout_error(
                    f"attack name {stem!r} does not follow attack_clientNNN_<android|laptop>_<SD|HD>_"
                    "<ipad_video|iphone_video|printed_photo>_sceneNN"
                )
            client, camera, quality, pai, scene = m.groups()
            label, family = "spoof", PAIS[pai]
        if context.split_of is None:
            raise layout_error(
                f"no official subject list ({', '.join(context.missing)} missing): cannot assign the split"
            )
        split = context.split_of.get(int(client))
        if split is None:
            raise layout_error(f"client {client} is in neither {LIST_FILES['train']} nor {LIST_FILES['test']}")
        return make_item(
            NAME, root, relpath,
            label=label, attack_family=family,
            subject=client, session=scene, device=camera, split=split,
            pai=pai, quality=quality,
        )
