"""Protocols applied where the pipeline needs them: to a dataset scan before preprocessing, and
to the frames of a store before training and evaluation.

A store keeps every item's *official* split; the protocol's roles are worked out again from
the metadata the store keeps per frame whenever a run asks for ``--protocol``, so one store
serves every fold (and every protocol) of its dataset. No function here does I/O.

* :func:`preprocess_items` - the items of a scan that a protocol uses (all folds when the spec
  names none), unchanged but for ``max_frames`` (SiW P1 trains on the first 60 frames), after
  checking that every fold finds what it requires (:meth:`Protocol.required`).
* :func:`items_from_columns` - one :class:`WorkItem` per video of a store, rebuilt from its
  per-frame columns (``video_id``, ``label``, ``attack_type``, ``subject``, ``session``,
  ``device``, ``split``, ``dataset``). The dataset-specific fields protocols select on are
  parsed again from the official file name kept in ``video_id`` (OULU-NPU phone / session /
  file type, SiW medium) and cross-checked against the stored columns: a store whose names
  and columns disagree is refused, not guessed about.
* :func:`frame_roles` - the protocol role (``train`` / ``dev`` / ``test`` / ``""``) of every
  frame; a role's ``max_frames`` keeps the first frames of each video (by ``frame_index``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from pipeline.base.errors import ConfigError, DatasetLayoutError
from pipeline.io.items import WorkItem
from .oulu_npu import FILE_TYPES as OULU_FILE_TYPES, parse_oulu_name
from .protocols import Protocol, check_required, fold_options, format_protocol_spec, make_protocol
from .siw import parse_siw_name

logger = logging.getLogger(__name__)

#: per-frame columns that hold an item's metadata (constant within a video)
ITEM_COLUMNS = ("label", "attack_type", "subject", "session", "device", "split")


def fold_specs(spec: str) -> list[str]:
    """One spec per fold: ``"oulu-npu-p3"`` -> ``["oulu-npu-p3:fold=1", ...]``; a spec naming
    its fold (or a single-fold protocol) -> itself, normalised."""
    name, folds = fold_options(spec)
    return [format_protocol_spec(name, kw) for kw in folds]


def protocol_for(spec: str) -> Protocol:
    """The protocol of one fold; a spec of a multi-fold protocol that names no fold is refused."""
    folds = fold_specs(spec)
    if len(folds) > 1:
        raise ConfigError(f"protocol {spec!r} has {len(folds)} folds; name one, e.g. {folds[0]!r} "
                          f"(or run them all with `depthseg-fas benchmark`)")
    name, options = fold_options(spec)
    return make_protocol(name, **options[0])


def preprocess_items(spec: str, items: Sequence[WorkItem], where: str) -> list[WorkItem]:
    """The items of ``items`` used by any fold of ``spec``, in their input order.

    Items keep their official split (the store serves every fold); an item whose protocol role
    caps its frames gets the largest cap over its roles (``None``: all frames). Raises
    :class:`ConfigError` naming ``where`` when a fold lacks what it requires.
    """
    name, folds = fold_options(spec)
    cap: dict[str, int | None] = {}
    for kw in folds:
        protocol = make_protocol(name, **kw)
        split = protocol.split(items)
        check_required(protocol, split, where)
        for it in (*split.train, *split.dev, *split.test):
            old = cap.get(it.video_id, 0)
            cap[it.video_id] = None if old is None or it.max_frames is None else max(old, it.max_frames)
    kept = [it if cap[it.video_id] == it.max_frames else replace(it, max_frames=cap[it.video_id])
            for it in items if it.video_id in cap]
    logger.info("protocol %s uses %d of %d item(s) of %s", spec, len(kept), len(items), where)
    return kept


def _oulu_extra(stem: str, item: WorkItem) -> dict:
    phone, session, user, file_id = parse_oulu_name(stem)
    label, attack_type, family = OULU_FILE_TYPES[file_id]
    stored = (item.device, item.session, item.subject, item.label, item.attack_type)
    if stored != (str(phone), str(session), f"{user:02d}", label, attack_type):
        raise ConfigError(f"video {item.video_id}: stored device/session/subject/label/attack type "
                          f"{stored} disagree with its OULU-NPU name")
    return {"phone": phone, "session_id": session, "user": user, "file_id": file_id, "attack_family": family}


def _siw_extra(stem: str, item: WorkItem) -> dict:
    subject, _sensor, _type_id, medium, _session = parse_siw_name(stem)
    if subject != item.subject:
        raise ConfigError(f"video {item.video_id}: stored subject {item.subject!r} disagrees with its SiW name")
    return {"medium": medium}


#: dataset -> rebuilds the ``extra`` fields its protocols select on from the official file stem
_EXTRA_FROM_NAME = {"oulu-npu": _oulu_extra, "siw": _siw_extra}


def items_from_columns(columns: Mapping[str, np.ndarray], where: str) -> tuple[list[WorkItem], np.ndarray]:
    """``(items, item_of_frame)``: one item per ``video_id`` of a store's per-frame columns
    (the first frame's metadata) and, per frame, the index of its item.

    Raises :class:`ConfigError` naming ``where`` when a column is missing, when a video's frames
    disagree on its metadata, or when a known dataset's file name cannot be parsed.
    """
    need = ("video_id", "dataset", *ITEM_COLUMNS)
    missing = [c for c in need if c not in columns]
    if missing:
        raise ConfigError(f"{where}: no per-frame column(s) {missing}; protocols need them "
                          f"(preprocess the dataset with --dataset)")
    vids = np.asarray(columns["video_id"]).astype(str)
    names, first, inverse = np.unique(vids, return_index=True, return_inverse=True)
    cols = {c: np.asarray(columns[c]).astype(str) for c in (*ITEM_COLUMNS, "dataset")}
    for c, col in cols.items():
        odd = np.flatnonzero(col != col[first][inverse])
        if odd.size:
            raise ConfigError(f"{where}: the frames of video {vids[odd[0]]} disagree on {c}")
    items = []
    for vid, row in zip(names, first):
        values = {c: str(col[row]) for c, col in cols.items()}
        dataset = values.pop("dataset")
        if values["label"] not in ("live", "spoof", "unknown"):
            raise ConfigError(f"{where}: video {vid} has label {values['label']!r}")
        item = WorkItem(path=vid, video_id=vid, extra={"dataset": dataset}, **values)
        rebuild = _EXTRA_FROM_NAME.get(dataset)
        if rebuild is not None:
            try:
                item.extra.update(rebuild(vid.rsplit("/", 1)[-1], item))
            except DatasetLayoutError as exc:
                raise ConfigError(f"{where}: video {vid} is not a {dataset} name ({exc})") from exc
        items.append(item)
    return items, inverse


def frame_roles(spec: str, columns: Mapping[str, np.ndarray], where: str) -> np.ndarray:
    """The role of each frame under the protocol fold ``spec`` (``""``: not used).

    Raises :class:`ConfigError` naming ``where`` when the store does not hold what the fold
    requires (e.g. a store preprocessed for another protocol, or items that failed).
    """
    protocol = protocol_for(spec)
    items, inverse = items_from_columns(columns, where)
    try:
        split = protocol.split(items)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    check_required(protocol, split, where)
    role_of = np.full(len(items), "", dtype=object)
    cap = np.zeros(len(items), dtype=np.int64)  # 0: all frames
    index = {it.video_id: k for k, it in enumerate(items)}
    for role, role_items in split.roles().items():
        for it in role_items:
            role_of[index[it.video_id]] = role
            cap[index[it.video_id]] = it.max_frames or 0
    roles = role_of[inverse].astype(str)
    if cap.any():
        order = np.lexsort((np.asarray(columns["frame_index"]), inverse))
        rank = np.empty(len(order), dtype=np.int64)
        starts = np.searchsorted(inverse[order], np.arange(len(items)))
        rank[order] = np.arange(len(order)) - starts[inverse[order]]
        capped = cap[inverse]
        roles[(capped > 0) & (rank >= capped)] = ""
    return roles


__all__ = ["fold_specs", "frame_roles", "items_from_columns", "preprocess_items", "protocol_for"]
