"""OULU-NPU adapter (Boulkenafet et al., "OULU-NPU: A mobile face presentation attack database
with real-world variations", FG 2017).

Layout: ``<root>/{Train_files,Dev_files,Test_files}/Phone_Session_User_File.avi``, e.g.
``Train_files/1_1_01_1.avi`` (face-location ``.txt`` files of the same stem are attached as
sidecars).

* Phone 1-6: Samsung Galaxy S6 edge, HTC Desire EYE, MEIZU X5, ASUS Zenfone Selfie,
  Sony XPERIA C5 Ultra Dual, OPPO N3 (``item.device`` = the phone number as a string).
* Session 1-3: three illumination / background scenarios (``item.session``).
* User 1-55: users 1-20 train, 21-35 development, 36-55 test (``item.subject`` = two-digit
  user id as in the name, e.g. ``"01"``).
* File 1-5: 1 real access; 2, 3 print attacks with printers 1 and 2 (``print1``/``print2``);
  4, 5 video-replay (display) attacks with displays 1 and 2 (``replay1``/``replay2``).

A file whose split folder disagrees with its user id (e.g. user 25 under ``Train_files``) is
rejected with the reason, as are names outside the ranges above.
"""

from __future__ import annotations

import re

from pipeline.io.items import WorkItem
from .base import ADAPTERS, VideoDatasetAdapter, layout_error, make_item, rel_parts

NAME = "oulu-npu"
SPLIT_FOLDERS = {"Train_files": "train", "Dev_files": "dev", "Test_files": "test"}
PHONES = {
    1: "Samsung Galaxy S6 edge",
    2: "HTC Desire EYE",
    3: "MEIZU X5",
    4: "ASUS Zenfone Selfie",
    5: "Sony XPERIA C5 Ultra Dual",
    6: "OPPO N3",
}
SESSIONS = (1, 2, 3)
#: file id -> (label, attack_type, attack family)
FILE_TYPES = {
    1: ("live", "none", "none"),
    2: ("spoof", "print1", "print"),
    3: ("spoof", "print2", "print"),
    4: ("spoof", "replay1", "replay"),
    5: ("spoof", "replay2", "replay"),
}
USER_SPLITS = {"train": range(1, 21), "dev": range(21, 36), "test": range(36, 56)}

_NAME_RE = re.compile(r"^(\d+)_(\d+)_(\d+)_(\d+)$")


def user_split(user: int) -> str:
    """Official split of OULU-NPU user ``user`` (1-20 train, 21-35 dev, 36-55 test)."""
    for split, users in USER_SPLITS.items():
        if user in users:
            return split
    raise layout_error(f"user {user} is outside 1-55")


def parse_oulu_name(stem: str) -> tuple[int, int, int, int]:
    """``"1_2_03_4"`` -> (phone, session, user, file); raises DatasetLayoutError on a bad name."""
    m = _NAME_RE.match(stem)
    if not m:
        raise layout_error(f"name {stem!r} does not follow Phone_Session_User_File (e.g. 1_1_01_1)")
    phone, session, user, file_id = (int(g) for g in m.groups())
    if phone not in PHONES:
        raise layout_error(f"phone {phone} is outside 1-6")
    if session not in SESSIONS:
        raise layout_error(f"session {session} is outside 1-3")
    if not 1 <= user <= 55:
        raise layout_error(f"user {user} is outside 1-55")
    if file_id not in FILE_TYPES:
        raise layout_error(f"file {file_id} is outside 1-5 (1 real, 2-3 print, 4-5 replay)")
    return phone, session, user, file_id


@ADAPTERS.register(NAME)
class OuluNpuAdapter(VideoDatasetAdapter):
    """OULU-NPU: ``{Train,Dev,Test}_files/Phone_Session_User_File.avi`` (see module docstring)."""

    name = NAME

    def parse(self, root: str, relpath: str, context: object) -> WorkItem:
        parts = rel_parts(relpath)
        folders = [p for p in parts[:-1] if p in SPLIT_FOLDERS]
        if not folders:
            raise layout_error("not under Train_files/, Dev_files/ or Test_files/")
        if len(folders) > 1:
            raise layout_error(f"more than one split folder in the path: {folders}")
        folder_split = SPLIT_FOLDERS[folders[0]]
        stem = parts[-1].rsplit(".", 1)[0]
        phone, session, user, file_id = parse_oulu_name(stem)
        official = user_split(user)
        if official != folder_split:
            raise layout_error(
                f"user {user} belongs to the {official} split but the file is under {folders[0]}/"
            )
        label, attack_type, family = FILE_TYPES[file_id]
        return make_item(
            NAME, root, relpath,
            label=label, attack_type=attack_type, attack_family=family,
            subject=f"{user:02d}", session=str(session), device=str(phone), split=official,
            phone=phone, phone_name=PHONES[phone], session_id=session, user=user, file_id=file_id,
        )
