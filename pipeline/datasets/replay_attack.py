"""Idiap Replay-Attack adapter (Chingovska, Anjos, Marcel, "On the effectiveness of local binary
patterns in face anti-spoofing", BIOSIG 2012).

Layout (the official split is the folder; ``devel`` becomes ``dev``)::

    <root>/{train,devel,test}/real/client001_session01_webcam_authenticate_adverse_1.mov
    <root>/{train,devel,test}/attack/{fixed,hand}/attack_<pai>_client001_session01_<src>_<photo|video>_<light>.mov

with ``<pai>`` = ``print`` (A4 hard copy of a high-resolution photo), ``mobile`` (iPhone 3GS
screen) or ``highdef`` (iPad screen); ``<src>`` ``highdef``/``mobile`` the resolution of the
shown content; ``<light>`` ``adverse``/``controlled``. 50 clients: 15 train, 15 devel,
20 test (``item.subject`` = the three-digit client id, e.g. ``"001"``; ``item.session`` the
two-digit session; ``item.device`` is always ``webcam``, the capture camera).

Attack family: ``attack_print_*`` is ``print``; ``*_video_*`` on a screen is ``replay``.
A *photo shown on a screen* (``attack_highdef_..._photo_*``, ``attack_mobile_..._photo_*``)
is physically a display attack, so its family defaults to ``replay``; pass
``screen_photo_as="print"`` to count it with the print attacks instead (some papers group
Replay-Attack attacks as photo vs video). ``extra`` keeps ``pai``, ``content``
(``photo``/``video``), ``support`` (``fixed``/``hand``) and ``lighting``.

Enrollment videos (``enroll/``) serve face verification, not anti-spoofing; they are
rejected with that reason.
"""

from __future__ import annotations

import re

from pipeline.base.errors import ConfigError
from pipeline.io.items import WorkItem
from .base import ADAPTERS, VideoDatasetAdapter, layout_error, make_item, rel_parts

NAME = "replay-attack"
SPLIT_FOLDERS = {"train": "train", "devel": "dev", "test": "test"}

_REAL_RE = re.compile(r"^client(\d{3})_session(\d{2})_webcam_authenticate_(adverse|controlled)_(\d+)$")
_ATTACK_RE = re.compile(
    r"^attack_(highdef|mobile|print)_client(\d{3})_session(\d{2})_(highdef|mobile)_(photo|video)_(adverse|controlled)$"
)


@ADAPTERS.register(NAME)
class ReplayAttackAdapter(VideoDatasetAdapter):
    """Replay-Attack: ``{train,devel,test}/{real,attack/{fixed,hand}}/*.mov`` (see module docstring)."""

    name = NAME

    def __init__(self, screen_photo_as: str = "replay"):
        if screen_photo_as not in ("replay", "print"):
            raise ConfigError(f"screen_photo_as must be 'replay' or 'print', got {screen_photo_as!r}")
        self.screen_photo_as = screen_photo_as

    def parse(self, root: str, relpath: str, context: object) -> WorkItem:
        parts = rel_parts(relpath)
        if "enroll" in parts[:-1]:
            raise layout_error("enrollment video (face verification), not part of the anti-spoofing sets")
        idx = [i for i, p in enumerate(parts[:-1]) if p in SPLIT_FOLDERS]
        if not idx:
            raise layout_error("not under train/, devel/ or test/")
        if len(idx) > 1:
            raise layout_error("more than one split folder (train/devel/test) in the path")
        i = idx[0]
        split = SPLIT_FOLDERS[parts[i]]
        below = parts[i + 1 : -1]
        stem = parts[-1].rsplit(".", 1)[0]
        if below == ["real"]:
            m = _REAL_RE.match(stem)
            if not m:
                raise layout_error(
                    f"real-access name {stem!r} does not follow "
                    "clientNNN_sessionNN_webcam_authenticate_<adverse|controlled>_<n>"
                )
            client, session, lighting, take = m.groups()
            return make_item(
                NAME, root, relpath,
                label="live", attack_family="none",
                subject=client, session=session, device="webcam", split=split,
                lighting=lighting, take=int(take),
            )
        if len(below) == 2 and below[0] == "attack" and below[1] in ("fixed", "hand"):
            m = _ATTACK_RE.match(stem)
            if not m:
                raise layout_error(
                    f"attack name {stem!r} does not follow "
                    "attack_<highdef|mobile|print>_clientNNN_sessionNN_<highdef|mobile>_<photo|video>_<light>"
                )
            pai, client, session, source, content, lighting = m.groups()
            if pai == "print":
                if content != "photo":
                    raise layout_error("a print attack must show a photo, the name says video")
                family = "print"
            elif content == "video":
                family = "replay"
            else:
                family = self.screen_photo_as
            return make_item(
                NAME, root, relpath,
                label="spoof", attack_family=family,
                subject=client, session=session, device="webcam", split=split,
                pai=pai, source=source, content=content, support=below[1], lighting=lighting,
            )
        raise layout_error(
            f"expected {parts[i]}/real/ or {parts[i]}/attack/fixed|hand/ above the video, "
            f"got {parts[i]}/{'/'.join(below)}"
        )
