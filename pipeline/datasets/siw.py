"""SiW (Spoof in the Wild) adapter (Liu, Jourabloo, Liu, "Learning Deep Models for Face
Anti-Spoofing: Binary or Auxiliary Supervision", CVPR 2018).

Layout: ``<root>/{Train,Test}/{live,spoof}/<subject>/<subject>-<sensor>-<type>-<medium>-<session>.mov``
(e.g. ``Train/spoof/041/041-2-3-3-1.mov``; ``.face`` box files of the same stem become
sidecars). 165 subjects: the official split is 90 train / 75 test and is taken from the
``Train``/``Test`` folder (SiW has no development set).

Name fields (per the SiW release notes):

* subject: three digits (``item.subject``, e.g. ``"041"``);
* sensor: the capture camera (``item.device``);
* type: 1 live, 2 print, 3 replay (display);
* medium: for print attacks the print quality, for replay attacks one of the four display
  devices (1-4; protocol 2 leaves one of them out); kept as ``extra["medium"]``;
* session: the recording condition (``item.session``).

Checks (violations are rejected with the reason): the type must agree with the ``live``/
``spoof`` folder, a numeric subject folder must agree with the name's subject, type is 1-3 and
a replay medium is 1-4 (the protocols rely on it). Sensor, print medium and session are kept
as given (positive integers) without further range checks.
"""

from __future__ import annotations

import re

from pipeline.io.items import WorkItem
from .base import ADAPTERS, VideoDatasetAdapter, layout_error, make_item, rel_parts

NAME = "siw"
SPLIT_FOLDERS = {"Train": "train", "Test": "test"}
TYPES = {1: ("live", "none"), 2: ("spoof", "print"), 3: ("spoof", "replay")}
REPLAY_MEDIA = (1, 2, 3, 4)

_NAME_RE = re.compile(r"^(\d{3})-(\d+)-(\d+)-(\d+)-(\d+)$")


def parse_siw_name(stem: str) -> tuple[str, int, int, int, int]:
    """``"041-2-3-3-1"`` -> (subject, sensor, type, medium, session); raises on a bad name."""
    m = _NAME_RE.match(stem)
    if not m:
        raise layout_error(
            f"name {stem!r} does not follow SubjectID-SensorID-TypeID-MediumID-SessionID (e.g. 003-1-1-1-1)"
        )
    subject = m.group(1)
    sensor, type_id, medium, session = (int(g) for g in m.groups()[1:])
    if type_id not in TYPES:
        raise layout_error(f"type {type_id} is not 1 (live), 2 (print) or 3 (replay)")
    if min(sensor, medium, session) < 1 or int(subject) < 1:
        raise layout_error("subject, sensor, medium and session ids start at 1")
    if type_id == 3 and medium not in REPLAY_MEDIA:
        raise layout_error(f"replay medium {medium} is outside 1-4")
    return subject, sensor, type_id, medium, session


@ADAPTERS.register(NAME)
class SiwAdapter(VideoDatasetAdapter):
    """SiW: ``{Train,Test}/{live,spoof}/<subject>/<name>.mov`` (see module docstring)."""

    name = NAME

    def parse(self, root: str, relpath: str, context: object) -> WorkItem:
        parts = rel_parts(relpath)
        idx = [i for i, p in enumerate(parts[:-1]) if p in SPLIT_FOLDERS]
        if not idx:
            raise layout_error("not under Train/ or Test/")
        if len(idx) > 1:
            raise layout_error("more than one Train/ or Test/ folder in the path")
        i = idx[0]
        split = SPLIT_FOLDERS[parts[i]]
        if i + 1 >= len(parts) - 1 or parts[i + 1] not in ("live", "spoof"):
            raise layout_error(f"expected {parts[i]}/live/ or {parts[i]}/spoof/ above the video")
        folder_label = parts[i + 1]
        subject, sensor, type_id, medium, session = parse_siw_name(parts[-1].rsplit(".", 1)[0])
        label, family = TYPES[type_id]
        if label != folder_label:
            raise layout_error(f"type {type_id} ({label}) but the file is under {folder_label}/")
        parent = parts[-2]
        if parent != folder_label and parent.isdigit() and int(parent) != int(subject):
            raise layout_error(f"subject folder {parent}/ disagrees with the name's subject {subject}")
        return make_item(
            NAME, root, relpath,
            label=label, attack_family=family,
            subject=subject, session=str(session), device=str(sensor), split=split,
            sensor=sensor, type_id=type_id, medium=medium, session_id=session,
        )
