"""CelebA-Spoof adapter (Zhang et al., "CelebA-Spoof: Large-Scale Face Anti-Spoofing Dataset with
Rich Annotations", ECCV 2020).

Layout: images ``<root>/Data/{train,test}/<subject>/{live,spoof}/<image>.{jpg,png}`` (with
``*_BB.txt`` face boxes) and the intra-dataset labels ``<root>/metas/intra_test/
train_label.json`` / ``test_label.json``: a JSON object whose keys are image paths relative
to ``<root>`` (``"Data/train/4980/spoof/494405.png"``) and whose values are lists of 44
integers. Only images listed there become items (one item per image, ``extra["kind"] =
"image"``); the folder tree is not walked.

Attribute indices, as documented in the CelebA-Spoof README ("Annotation in Json File"):

* ``[0:40]``: the 40 CelebA face attributes (not kept);
* ``[40]``: spoof type - 0 live, 1 photo, 2 poster, 3 A4 paper, 4 face mask, 5 upper-body
  mask, 6 region mask (4-6 are *paper* cut-outs), 7 PC screen, 8 pad screen, 9 phone screen,
  10 3D mask;
* ``[41]``: illumination - 0 live, 1 normal, 2 strong, 3 back, 4 dark;
* ``[42]``: environment - 0 live, 1 indoor, 2 outdoor;
* ``[43]``: live/spoof label - 0 live, 1 spoof.

Families: types 1-6 -> ``print`` (printed photo/poster/A4 and paper masks cut from prints),
7-9 -> ``replay`` (display), 10 -> ``mask``; ``extra["pai"]`` keeps the fine type,
``extra["spoof_type"]`` the index. An entry is rejected when its list is not 44 integers,
when ``[43]`` contradicts ``[40]`` (live iff type 0), when its ``live``/``spoof`` folder
contradicts the label, when its ``Data/<split>`` folder contradicts the label file, when the
key leaves the root, or (``check_files=True``) when the image does not exist. There is no
official dev split (items carry ``train``/``test``).
"""

from __future__ import annotations

import json
import logging
import os
import posixpath

from pipeline.base.errors import DatasetLayoutError
from .base import ADAPTERS, DatasetAdapter, ScanResult, make_item

logger = logging.getLogger(__name__)

NAME = "celeba-spoof"
LABEL_FILES = {"train": "metas/intra_test/train_label.json", "test": "metas/intra_test/test_label.json"}
N_ATTRIBUTES = 44
SPOOF_TYPE_INDEX, ILLUMINATION_INDEX, ENVIRONMENT_INDEX, LIVE_SPOOF_INDEX = 40, 41, 42, 43
#: spoof type -> (pai name, attack family)
SPOOF_TYPES = {
    0: ("live", "none"),
    1: ("photo", "print"),
    2: ("poster", "print"),
    3: ("a4", "print"),
    4: ("face_mask", "print"),
    5: ("upper_body_mask", "print"),
    6: ("region_mask", "print"),
    7: ("pc", "replay"),
    8: ("pad", "replay"),
    9: ("phone", "replay"),
    10: ("3d_mask", "mask"),
}
ILLUMINATION = {0: "live", 1: "normal", 2: "strong", 3: "back", 4: "dark"}
ENVIRONMENT = {0: "live", 1: "indoor", 2: "outdoor"}


def parse_attributes(key: str, value: object) -> tuple[str, str, str, int, str, str]:
    """(label, family, pai, spoof_type, illumination, environment) of one label entry; raises."""
    if not isinstance(value, list) or len(value) != N_ATTRIBUTES or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise DatasetLayoutError(f"label of {key!r} is not a list of {N_ATTRIBUTES} integers")
    stype, illum, env, spoof = (
        value[SPOOF_TYPE_INDEX], value[ILLUMINATION_INDEX], value[ENVIRONMENT_INDEX], value[LIVE_SPOOF_INDEX]
    )
    if stype not in SPOOF_TYPES:
        raise DatasetLayoutError(f"spoof type [40]={stype} is outside 0-10")
    if spoof not in (0, 1):
        raise DatasetLayoutError(f"live/spoof label [43]={spoof} is not 0 or 1")
    if (spoof == 1) != (stype != 0):
        raise DatasetLayoutError(f"live/spoof label [43]={spoof} contradicts spoof type [40]={stype}")
    pai, family = SPOOF_TYPES[stype]
    return (
        "spoof" if spoof else "live", family, pai, stype,
        ILLUMINATION.get(illum, f"unknown-{illum}"), ENVIRONMENT.get(env, f"unknown-{env}"),
    )


@ADAPTERS.register(NAME)
class CelebaSpoofAdapter(DatasetAdapter):
    """CelebA-Spoof images from the intra-test JSON labels (see module docstring).

    ``check_files``: reject entries whose image is missing (one ``stat`` per image).
    """

    name = NAME

    def __init__(self, check_files: bool = True):
        self.check_files = check_files

    def scan(self, root) -> ScanResult:
        root_abs = self._check_root(root)
        result = ScanResult(dataset=NAME, root=root_abs)
        candidates = {s: os.path.join(root_abs, f) for s, f in LABEL_FILES.items()}
        present = {s: p for s, p in candidates.items() if os.path.isfile(p)}
        if not present:
            raise DatasetLayoutError(
                f"no CelebA-Spoof label file: expected {' and '.join(LABEL_FILES.values())}", source=root_abs
            )
        for split, rel in LABEL_FILES.items():
            if split not in present:
                result.rejected.append((candidates[split], f"label file missing: the {split} split is not scanned"))
        seen: set[str] = set()
        for split, path in present.items():
            with open(path, encoding="utf-8") as fh:
                try:
                    labels = json.load(fh)
                except json.JSONDecodeError as exc:
                    raise DatasetLayoutError(f"not valid JSON: {exc}", source=path) from None
            if not isinstance(labels, dict):
                raise DatasetLayoutError("expected a JSON object {image path: [44 attributes]}", source=path)
            for key in sorted(labels):
                full = os.path.join(root_abs, str(key))
                try:
                    item = self._item(root_abs, str(key), labels[key], split)
                except DatasetLayoutError as exc:
                    result.rejected.append((full, f"{os.path.basename(path)}: {exc}"))
                    continue
                if item.video_id in seen:
                    result.rejected.append((full, f"{os.path.basename(path)}: listed twice"))
                    continue
                if self.check_files and not os.path.isfile(item.path):
                    result.rejected.append((full, f"{os.path.basename(path)}: image file missing"))
                    continue
                seen.add(item.video_id)
                result.items.append(item)
        logger.info("%s: %d items, %d rejected under %s", NAME, len(result.items), len(result.rejected), root_abs)
        return result

    @staticmethod
    def _item(root: str, key: str, value: object, split: str):
        norm = posixpath.normpath(key.replace("\\", "/"))
        if posixpath.isabs(norm) or norm == ".." or norm.startswith("../"):
            raise DatasetLayoutError(f"path {key!r} leaves the dataset root")
        parts = norm.split("/")
        if len(parts) < 4 or parts[-2] not in ("live", "spoof") or not parts[-3].isdigit():
            raise DatasetLayoutError(f"path {key!r} is not Data/<split>/<subject>/<live|spoof>/<image>")
        if parts[-4] in ("train", "test") and parts[-4] != split:
            raise DatasetLayoutError(f"path {key!r} is under {parts[-4]}/ but listed in the {split} labels")
        label, family, pai, stype, illum, env = parse_attributes(key, value)
        if parts[-2] != label:
            raise DatasetLayoutError(f"label [43] says {label} but the image is under {parts[-2]}/")
        return make_item(
            NAME, root, norm,
            label=label, attack_family=family, subject=parts[-3], split=split, kind="image",
            pai=pai, spoof_type=stype, illumination=illum, environment=env,
        )
