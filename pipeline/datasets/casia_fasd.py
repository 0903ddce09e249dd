"""CASIA-FASD adapter (Zhang et al., "A face antispoofing database with diverse attacks",
ICB 2012).

Layout: ``<root>/{train_release,test_release}/<id>/<name>.avi`` with 20 train subjects
(ids 1-20) and 30 test subjects (ids 1-30; *different people* from the train ids, so the
subject is qualified by the release: ``item.subject`` = ``"train-01"`` / ``"test-07"``).

Per subject, 12 videos at three imaging qualities (``item.device`` = ``low``/``normal``/
``high``: the low- and normal-quality USB cameras and the high-resolution camera):

=========  =====  ======  ======  =====================================
name       label  family  PAI     quality
=========  =====  ======  ======  =====================================
1, 2       live   none    -       low, normal
HR_1       live   none    -       high
3, 4       spoof  print   warped  low, normal (warped photo attack)
HR_2       spoof  print   warped  high
5, 6       spoof  print   cut     low, normal (cut photo, eye holes)
HR_3       spoof  print   cut     high
7, 8       spoof  replay  video   low, normal (video replay on a tablet)
HR_4       spoof  replay  video   high
=========  =====  ======  ======  =====================================

``extra["pai"]`` is ``warped_photo``/``cut_photo``/``video``. There is **no official
development split**: items carry ``split`` ``train`` or ``test`` only; protocols that need a
dev set hold out training subjects (see :mod:`pipeline.datasets.protocols`, option
``dev_holdout``/``holdout_fraction``).
"""

from __future__ import annotations

from pipeline.io.items import WorkItem
from .base import ADAPTERS, VideoDatasetAdapter, layout_error, make_item, rel_parts

NAME = "casia-fasd"
RELEASES = {"train_release": ("train", 20), "test_release": ("test", 30)}
#: name -> (label, attack family, pai, quality)
NAMES = {
    "1": ("live", "none", "", "low"),
    "2": ("live", "none", "", "normal"),
    "HR_1": ("live", "none", "", "high"),
    "3": ("spoof", "print", "warped_photo", "low"),
    "4": ("spoof", "print", "warped_photo", "normal"),
    "HR_2": ("spoof", "print", "warped_photo", "high"),
    "5": ("spoof", "print", "cut_photo", "low"),
    "6": ("spoof", "print", "cut_photo", "normal"),
    "HR_3": ("spoof", "print", "cut_photo", "high"),
    "7": ("spoof", "replay", "video", "low"),
    "8": ("spoof", "replay", "video", "normal"),
    "HR_4": ("spoof", "replay", "video", "high"),
}


@ADAPTERS.register(NAME)
class CasiaFasdAdapter(VideoDatasetAdapter):
    """CASIA-FASD: ``{train,test}_release/<id>/{1..8,HR_1..HR_4}.avi`` (see module docstring)."""

    name = NAME

    def parse(self, root: str, relpath: str, context: object) -> WorkItem:
        parts = rel_parts(relpath)
        idx = [i for i, p in enumerate(parts[:-1]) if p in RELEASES]
        if not idx:
            raise layout_error("not under train_release/ or test_release/")
        if len(idx) > 1:
            raise layout_error("more than one *_release folder in the path")
        i = idx[0]
        if len(parts) != i + 3:
            raise layout_error(f"expected {parts[i]}/<subject id>/<video>, got {'/'.join(parts[i:])}")
        split, n_subjects = RELEASES[parts[i]]
        sid = parts[i + 1]
        if not sid.isdigit() or not 1 <= int(sid) <= n_subjects:
            raise layout_error(f"subject folder {sid!r} is not an id in 1-{n_subjects} for {parts[i]}")
        stem = parts[-1].rsplit(".", 1)[0]
        if stem not in NAMES:
            raise layout_error(f"video name {stem!r} is not one of {sorted(NAMES)}")
        label, family, pai, quality = NAMES[stem]
        return make_item(
            NAME, root, relpath,
            label=label, attack_family=family,
            subject=f"{split}-{int(sid):02d}", session="", device=quality, split=split,
            pai=pai, quality=quality, subject_folder=int(sid),
        )
