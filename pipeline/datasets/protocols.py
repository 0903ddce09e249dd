"""Evaluation protocols as code: scanned items -> train / dev / test lists.

``make_protocol(name, **kw).split(items) -> ProtocolSplit(train, dev, test)``. Items of the
returned lists are copies of the input items with ``split`` set to their protocol role (the
official split is kept in ``extra["official_split"]``, the protocol name in
``extra["protocol"]``) and, where a protocol says so, ``max_frames`` set. Items the protocol
does not use are dropped (their number is ``ProtocolSplit.excluded``); items of datasets a
protocol does not cover are dropped too, but a protocol raises :class:`ConfigError` when none
of its dataset's items are present.

Registered protocols (``list_protocols()``; ``protocol_folds(name)`` lists the keyword sets
of every fold):

* ``oulu-npu-p1`` ... ``oulu-npu-p4`` (``fold=1..6`` for P3/P4) - Boulkenafet et al.,
  FG 2017, Table 2;
* ``siw-p1``, ``siw-p2`` (``fold=1..4``), ``siw-p3`` (``fold=1..2``) - Liu et al.,
  CVPR 2018, Sec. 5.1 / Table 2;
* ``cross-dataset`` (``target=O|C|I|M``) - the leave-one-dataset-out family over OULU-NPU,
  CASIA-FASD, Replay-Attack (Idiap) and MSU-MFSD ("O&C&I to M", ...) of Shao et al.,
  CVPR 2019 (MADDG) and Jia et al., CVPR 2020 (SSDG);
* ``official`` - each item's own official split (any dataset, CSV manifests included).

``check_subject_disjoint(split)`` raises :class:`SubjectOverlapError` if a subject (qualified
by its dataset) or a video appears in two roles.
"""

from __future__ import annotations

import logging
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from pipeline.base.errors import ConfigError
from pipeline.io.items import WorkItem
from pipeline.base.registry import Registry
from .base import attack_family, item_dataset

logger = logging.getLogger(__name__)

ROLES = ("train", "dev", "test")


@dataclass
class ProtocolSplit:
    """The three item lists of one protocol (one fold)."""

    protocol: str
    train: list[WorkItem] = field(default_factory=list)
    dev: list[WorkItem] = field(default_factory=list)
    test: list[WorkItem] = field(default_factory=list)
    #: input items the protocol does not use
    excluded: int = 0

    def roles(self) -> dict[str, list[WorkItem]]:
        """``{"train": [...], "dev": [...], "test": [...]}``."""
        return {"train": self.train, "dev": self.dev, "test": self.test}


class SubjectOverlapError(ConfigError):
    """A subject or a video appears in more than one role of a protocol split."""

    reason = "subject-overlap"


def subject_key(item: WorkItem) -> tuple[str, str]:
    """``(dataset, subject)``: subjects are only unique within their dataset."""
    return item_dataset(item), item.subject


def check_subject_disjoint(split: ProtocolSplit) -> None:
    """Raise :class:`SubjectOverlapError` if a subject or a video id is in two roles.

    Subjects are compared as ``(dataset, subject)``; items without a subject are checked by
    video id only.
    """
    roles = split.roles()
    problems = []
    for a_i, a in enumerate(ROLES):
        for b in ROLES[a_i + 1 :]:
            subj_a = {subject_key(i) for i in roles[a] if i.subject}
            subj_b = {subject_key(i) for i in roles[b] if i.subject}
            both = sorted(subj_a & subj_b)
            if both:
                shown = ", ".join(f"{d or '?'}:{s}" for d, s in both[:10])
                more = f" and {len(both) - 10} more" if len(both) > 10 else ""
                problems.append(f"{len(both)} subject(s) in both {a} and {b}: {shown}{more}")
            vids = sorted({i.video_id for i in roles[a]} & {i.video_id for i in roles[b]})
            if vids:
                problems.append(f"{len(vids)} video(s) in both {a} and {b}: {', '.join(vids[:5])}")
    if problems:
        raise SubjectOverlapError("; ".join(problems), source=split.protocol)


def holdout_subjects(
    items: Sequence[WorkItem], fraction: float, seed: int = 0
) -> tuple[list[WorkItem], list[WorkItem]]:
    """Split ``items`` into (kept, held out) by whole subjects, per dataset.

    ``round(fraction * n_subjects)`` subjects of each dataset are held out (at least one and
    at most ``n - 1`` when ``fraction > 0`` and the dataset has two or more subjects), drawn
    with ``random.Random(f"{seed}:{dataset}")`` from the sorted subject ids, so the choice is
    deterministic and independent of item order. Items without a subject are kept.
    """
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"holdout fraction must be in [0, 1), got {fraction}")
    if fraction == 0.0:
        return list(items), []
    by_ds: dict[str, set[str]] = {}
    for it in items:
        if it.subject:
            by_ds.setdefault(item_dataset(it), set()).add(it.subject)
    held: set[tuple[str, str]] = set()
    for ds, subjects in sorted(by_ds.items()):
        subs = sorted(subjects)
        if len(subs) < 2:
            logger.warning("%s: only %d subject(s); none held out", ds or "?", len(subs))
            continue
        k = min(max(1, round(fraction * len(subs))), len(subs) - 1)
        held.update((ds, s) for s in random.Random(f"{seed}:{ds}").sample(subs, k))
    kept = [i for i in items if subject_key(i) not in held]
    out = [i for i in items if subject_key(i) in held]
    return kept, out


def _assign(item: WorkItem, role: str, protocol: str, max_frames: int | None = None) -> WorkItem:
    extra = dict(item.extra)
    extra.setdefault("official_split", item.split)
    extra["protocol"] = protocol
    return replace(item, split=role, max_frames=max_frames if max_frames is not None else item.max_frames, extra=extra)


class Protocol(ABC):
    """One protocol (one fold). ``split(items)`` is pure: no I/O."""

    #: full name including the fold, e.g. ``oulu-npu-p3/fold2``
    name: str = ""
    #: datasets whose items the protocol uses (``()``: any)
    datasets: tuple[str, ...] = ()
    #: one-paragraph statement of the rules (shown by ``depthseg-fas datasets --protocol``)
    description: str = ""

    def split(self, items: Iterable[WorkItem]) -> ProtocolSplit:
        items = list(items)
        usable = [i for i in items if not self.datasets or item_dataset(i) in self.datasets]
        if self.datasets:
            present = {item_dataset(i) for i in usable}
            missing = [d for d in self.datasets if d not in present]
            if missing:
                found = sorted({item_dataset(i) or "?" for i in items})
                raise ConfigError(
                    f"protocol {self.name} needs items of {', '.join(missing)}; got {len(items)} item(s) of "
                    f"{', '.join(found) or 'no dataset'}"
                )
        train, dev, test = self._split(usable)
        out = ProtocolSplit(
            self.name,
            [_assign(i, "train", self.name, self._train_max_frames()) for i in train],
            [_assign(i, "dev", self.name) for i in dev],
            [_assign(i, "test", self.name) for i in test],
        )
        out.excluded = len(items) - len(out.train) - len(out.dev) - len(out.test)
        return out

    def _train_max_frames(self) -> int | None:
        return None

    def required(self) -> dict[str, dict[str, frozenset]]:
        """What each role must hold for the protocol to be followed: ``{role: {key: values}}``.

        A listed role must be non-empty and hold every value of each key (a WorkItem field,
        else an ``extra`` key; ``dataset`` and ``attack_family`` as :func:`item_dataset` and
        :func:`attack_family` give them). Default: train and test hold live and spoof items.
        A missing attack type would silently shrink APCER's maximum over types, a missing
        role would leave a metric undefined: :func:`check_required` refuses both.
        """
        live_spoof = {"label": frozenset({"live", "spoof"})}
        return {"train": dict(live_spoof), "test": dict(live_spoof)}

    @abstractmethod
    def _split(self, items: list[WorkItem]) -> tuple[list[WorkItem], list[WorkItem], list[WorkItem]]:
        """(train, dev, test) before role assignment."""


def _item_value(item: WorkItem, key: str) -> object:
    if key == "dataset":
        return item_dataset(item)
    if key == "attack_family":
        return attack_family(item)
    if key in ("label", "attack_type", "subject", "session", "device", "split"):
        return getattr(item, key)
    return item.extra.get(key)


def missing_required(protocol: Protocol, split: ProtocolSplit) -> list[str]:
    """What ``split`` lacks of ``protocol.required()``, one phrase per problem (empty: none)."""
    roles = split.roles()
    problems = []
    for role, needs in protocol.required().items():
        items = roles[role]
        if not items:
            problems.append(f"no {role} items")
            continue
        for key, want in needs.items():
            lack = sorted(want - {_item_value(i, key) for i in items}, key=str)
            if lack:
                problems.append(f"no {role} items with {key} {', '.join(map(str, lack))}")
    return problems


def check_required(protocol: Protocol, split: ProtocolSplit, where: str) -> None:
    """Raise :class:`ConfigError` naming ``where`` (a dataset root, a store) if ``split``
    lacks what ``protocol`` requires (:meth:`Protocol.required`)."""
    problems = missing_required(protocol, split)
    if problems:
        raise ConfigError(f"protocol {protocol.name} does not match {where}: {'; '.join(problems)}")


PROTOCOLS: Registry[Protocol] = Registry("protocol")
_FOLDS: dict[str, list[dict]] = {}


def _register(name: str, folds: list[dict] | None = None) -> Callable:
    def deco(factory: Callable[..., Protocol]) -> Callable[..., Protocol]:
        PROTOCOLS.register(name)(factory)
        _FOLDS[name] = folds if folds is not None else [{}]
        return factory

    return deco


def make_protocol(name: str, **options) -> Protocol:
    """Protocol ``name`` (fold and options as keywords); an unknown name raises UnknownName (a
    ConfigError) listing the valid ones."""
    return PROTOCOLS.create(name, **options)


def list_protocols() -> list[str]:
    """Registered protocol names (sorted)."""
    return PROTOCOLS.names()


def protocol_folds(name: str) -> list[dict]:
    """Keyword sets of every fold of protocol ``name`` (``[{}]`` for single-fold protocols)."""
    if name not in PROTOCOLS:
        PROTOCOLS.create(name)  # raises UnknownName (a config error) listing valid names
    return [dict(f) for f in _FOLDS[name]]


def _need(item: WorkItem, keys: Sequence[str], dataset: str) -> None:
    missing = [k for k in keys if k not in item.extra]
    if missing:
        raise ConfigError(
            f"item {item.path} lacks {dataset} metadata {missing}; scan the dataset with the {dataset} adapter"
        )


# --------------------------------------------------------------------------- OULU-NPU

OULU = "oulu-npu"
OULU_PHONES = frozenset(range(1, 7))
OULU_SESSIONS = frozenset({1, 2, 3})
OULU_ALL_FILES = frozenset({1, 2, 3, 4, 5})
#: real access + print 1 + display (replay) 1
OULU_PAI_1 = frozenset({1, 2, 4})
#: real access + print 2 + display (replay) 2
OULU_PAI_2 = frozenset({1, 3, 5})


@dataclass(frozen=True)
class OuluRule:
    """Which OULU-NPU videos a role uses: sessions, phones and file types (1 real, 2-5 attacks)."""

    sessions: frozenset[int]
    phones: frozenset[int]
    files: frozenset[int]

    def match(self, item: WorkItem) -> bool:
        e = item.extra
        return e["session_id"] in self.sessions and e["phone"] in self.phones and e["file_id"] in self.files


class OuluProtocol(Protocol):
    """OULU-NPU protocols 1-4 (Boulkenafet et al., FG 2017, Sec. 4 and Table 2).

    Users always follow the official split (train 1-20, dev 21-35, test 36-55); dev uses the
    same sessions / phones / attacks as train.

    * **P1** (illumination / environment): train+dev sessions 1, 2; test session 3; all six
      phones, all attacks (print 1, 2, display 1, 2). Counts (real/attack): train 240/960,
      dev 180/720, test 120/480.
    * **P2** (unseen PAI): all sessions and phones; train+dev print 1 + display 1, test
      print 2 + display 2. Counts: 360/720, 270/540, 360/720.
    * **P3** (cross-device, leave one phone out, six folds): fold k trains (and develops) on
      the five other phones and tests on phone k; all sessions, all attacks.
      Counts per fold: 300/1200, 225/900, 60/240.
    * **P4** (all three): fold k: train+dev sessions 1, 2, the five other phones, print 1 +
      display 1; test session 3, phone k, print 2 + display 2. Counts: 200/400, 150/300, 20/40.
    """

    datasets = (OULU,)

    def __init__(self, number: int, fold: int | None = None):
        if number in (3, 4):
            if fold is None or fold not in OULU_PHONES:
                raise ConfigError(f"oulu-npu-p{number}: fold must be the held-out phone 1-6, got {fold!r}")
        elif fold is not None:
            raise ConfigError(f"oulu-npu-p{number} has a single fold; got fold={fold!r}")
        self.number, self.fold = number, fold
        self.name = f"oulu-npu-p{number}" + (f"/fold{fold}" if fold else "")
        every = OuluRule(OULU_SESSIONS, OULU_PHONES, OULU_ALL_FILES)
        if number == 1:
            self.train_rule = replace(every, sessions=frozenset({1, 2}))
            self.test_rule = replace(every, sessions=frozenset({3}))
        elif number == 2:
            self.train_rule = replace(every, files=OULU_PAI_1)
            self.test_rule = replace(every, files=OULU_PAI_2)
        elif number == 3:
            self.train_rule = replace(every, phones=OULU_PHONES - {fold})
            self.test_rule = replace(every, phones=frozenset({fold}))
        elif number == 4:
            self.train_rule = OuluRule(frozenset({1, 2}), OULU_PHONES - {fold}, OULU_PAI_1)
            self.test_rule = OuluRule(frozenset({3}), frozenset({fold}), OULU_PAI_2)
        else:
            raise ConfigError(f"OULU-NPU has protocols 1-4, got {number!r}")
        self.description = (
            f"OULU-NPU protocol {number}{f' fold {fold}' if fold else ''}: train/dev = official train/dev users, "
            f"{_rule_text(self.train_rule)}; test = official test users, {_rule_text(self.test_rule)}"
        )

    def required(self) -> dict[str, dict[str, frozenset]]:
        """Every role holds every file type (real + the attacks) of its rule."""
        train, test = self.train_rule.files, self.test_rule.files
        return {"train": {"file_id": train}, "dev": {"file_id": train}, "test": {"file_id": test}}

    def _split(self, items):
        for it in items:
            _need(it, ("session_id", "phone", "file_id"), OULU)
        train = [i for i in items if i.split == "train" and self.train_rule.match(i)]
        dev = [i for i in items if i.split == "dev" and self.train_rule.match(i)]
        test = [i for i in items if i.split == "test" and self.test_rule.match(i)]
        return train, dev, test


def _rule_text(rule: OuluRule) -> str:
    names = {1: "real", 2: "print1", 3: "print2", 4: "replay1", 5: "replay2"}
    return (
        f"sessions {sorted(rule.sessions)}, phones {sorted(rule.phones)}, "
        f"files {[names[f] for f in sorted(rule.files)]}"
    )


for _n in (1, 2):
    _register(f"oulu-npu-p{_n}")(lambda _n=_n, **kw: OuluProtocol(_n, **kw))
for _n in (3, 4):
    _register(f"oulu-npu-p{_n}", [{"fold": k} for k in sorted(OULU_PHONES)])(
        lambda _n=_n, **kw: OuluProtocol(_n, **kw)
    )


# --------------------------------------------------------------------------- SiW

SIW = "siw"
SIW_REPLAY_MEDIA = (1, 2, 3, 4)


class SiwProtocol(Protocol):
    """SiW protocols 1-3 (Liu, Jourabloo, Liu, CVPR 2018, Sec. 5.1 and Table 2).

    Subjects follow the official split (``Train``: 90 subjects, ``Test``: 75).

    * **P1** (pose / expression): train on the *first 60 frames* of every training video
      (``max_frames=60`` on the train items: mostly frontal faces), test on all frames of
      every test video.
    * **P2** (cross replay medium, leave one out, four folds): fold k trains on live videos
      and replay attacks shown on the three media other than k, and tests on live videos and
      replay attacks on medium k. Print attacks are not used.
    * **P3** (cross PAI, two folds): fold 1 trains on live + print and tests on live + replay;
      fold 2 trains on live + replay and tests on live + print.

    SiW has no development set; ``dev_holdout`` (a fraction, default 0: no dev) holds out that
    share of the training subjects, with all their protocol-selected videos, as dev (see
    :func:`holdout_subjects`). Dev items keep all frames (they are for thresholds).
    """

    datasets = (SIW,)

    def __init__(self, number: int, fold: int | None = None, dev_holdout: float = 0.0, seed: int = 0,
                 train_frames: int = 60):
        folds = {1: (None,), 2: SIW_REPLAY_MEDIA, 3: (1, 2)}
        if number not in folds:
            raise ConfigError(f"SiW has protocols 1-3, got {number!r}")
        if fold not in folds[number]:
            raise ConfigError(f"siw-p{number}: fold must be one of {list(folds[number])}, got {fold!r}")
        if train_frames < 1:
            raise ConfigError(f"train_frames must be positive, got {train_frames}")
        holdout_subjects([], dev_holdout)  # validates the fraction
        self.number, self.fold, self.dev_holdout, self.seed = number, fold, dev_holdout, seed
        self.train_frames = train_frames
        self.name = f"siw-p{number}" + (f"/fold{fold}" if fold else "")
        if number == 1:
            self.description = (
                f"SiW P1: train = Train/ videos, first {train_frames} frames; test = Test/ videos, all frames"
            )
        elif number == 2:
            others = [m for m in SIW_REPLAY_MEDIA if m != fold]
            self.description = (
                f"SiW P2 fold {fold}: train = Train/ live + replay media {others}; "
                f"test = Test/ live + replay medium {fold}"
            )
        else:
            a, b = ("print", "replay") if fold == 1 else ("replay", "print")
            self.description = f"SiW P3 fold {fold}: train = Train/ live + {a}; test = Test/ live + {b}"
        if dev_holdout:
            self.description += f"; dev = {dev_holdout:.0%} of the training subjects (seed {seed})"

    def _train_max_frames(self) -> int | None:
        return self.train_frames if self.number == 1 else None

    def required(self) -> dict[str, dict[str, frozenset]]:
        """Live faces and the attack families of each role (dev only when held out)."""
        fams = {1: ({"print", "replay"},) * 2, 2: ({"replay"},) * 2}.get(self.number)
        if fams is None:
            fams = ({"print"}, {"replay"}) if self.fold == 1 else ({"replay"}, {"print"})
        out = {role: {"attack_family": frozenset({"none", *f})} for role, f in zip(("train", "test"), fams)}
        if self.dev_holdout:
            out["dev"] = {"label": frozenset({"live", "spoof"})}
        return out

    def _uses(self, item: WorkItem, role: str) -> bool:
        fam = attack_family(item)
        if self.number == 1 or fam == "none":
            return True
        if self.number == 2:
            if fam != "replay":
                return False
            on_fold = item.extra["medium"] == self.fold
            return on_fold if role == "test" else not on_fold
        train_fam = "print" if self.fold == 1 else "replay"
        test_fam = "replay" if self.fold == 1 else "print"
        return fam == (test_fam if role == "test" else train_fam)

    def _split(self, items):
        for it in items:
            _need(it, ("medium",), SIW)
        train = [i for i in items if i.split == "train" and self._uses(i, "train")]
        test = [i for i in items if i.split == "test" and self._uses(i, "test")]
        train, dev = holdout_subjects(train, self.dev_holdout, self.seed)
        return train, dev, test


_register("siw-p1")(lambda **kw: SiwProtocol(1, **kw))
_register("siw-p2", [{"fold": k} for k in SIW_REPLAY_MEDIA])(lambda **kw: SiwProtocol(2, **kw))
_register("siw-p3", [{"fold": 1}, {"fold": 2}])(lambda **kw: SiwProtocol(3, **kw))


# --------------------------------------------------------------------------- cross-dataset

#: the letters of the leave-one-dataset-out family
CROSS_DATASETS = {"O": "oulu-npu", "C": "casia-fasd", "I": "replay-attack", "M": "msu-mfsd"}
_LETTER = {v: k for k, v in CROSS_DATASETS.items()}


def _dataset_name(x: str) -> str:
    """A letter of :data:`CROSS_DATASETS` or a dataset name -> the dataset name."""
    if len(x) == 1:
        if x.upper() not in CROSS_DATASETS:
            raise ConfigError(f"unknown dataset letter {x!r}; use one of {sorted(CROSS_DATASETS)}")
        return CROSS_DATASETS[x.upper()]
    return x


def _source_list(sources: Sequence[str] | str) -> list[str]:
    """``"OCI"``, ``"O&C&I"``, ``"oulu-npu,casia-fasd"`` or a list -> dataset names."""
    if isinstance(sources, str):
        if "," in sources or "&" in sources:
            sources = [s.strip() for s in sources.replace("&", ",").split(",") if s.strip()]
        elif sources.isupper() and all(c in CROSS_DATASETS for c in sources):
            sources = list(sources)
        else:
            sources = [sources]
    return [_dataset_name(s) for s in sources]


class CrossDatasetProtocol(Protocol):
    """Leave-one-dataset-out over OULU-NPU (O), CASIA-FASD (C), Replay-Attack (I), MSU-MFSD (M).

    "O&C&I to M" and its siblings (Shao et al., CVPR 2019; Jia et al., CVPR 2020): train on
    the source datasets, test on the held-out target. Following those papers' public label
    generation, the *train and test* splits of each source are training data and the target
    is tested on its train and test splits; official dev splits are left out of both
    (``source_splits``/``target_splits`` change this, e.g. ``target_splits=("test",)``).

    Dev: each source's official dev split (``dev_splits``; OULU-NPU ``Dev_files``,
    Replay-Attack ``devel``); a source without one (CASIA-FASD, MSU-MFSD) gives
    ``holdout_fraction`` of its training subjects instead (default 0.2, drawn by
    :func:`holdout_subjects` with ``seed``; 0 gives those sources no dev share).

    ``target``: a letter or dataset name; ``sources``: default the three other letters, or
    any dataset names (e.g. to add CelebA-Spoof as a source).
    """

    def __init__(self, target: str | None = None, sources: Sequence[str] | str | None = None,
                 source_splits: Sequence[str] = ("train", "test"), dev_splits: Sequence[str] = ("dev",),
                 target_splits: Sequence[str] = ("train", "test"), holdout_fraction: float = 0.2, seed: int = 0):
        if not target:
            raise ConfigError(f"cross-dataset: target is required (one of {sorted(CROSS_DATASETS)} or a dataset name)")
        self.target = _dataset_name(target)
        srcs = [d for d in CROSS_DATASETS.values() if d != self.target] if sources is None else _source_list(sources)
        if self.target in srcs:
            raise ConfigError(f"cross-dataset: target {self.target} is also a source")
        if not srcs:
            raise ConfigError("cross-dataset: no source dataset")
        split_opts = {"source_splits": source_splits, "dev_splits": dev_splits, "target_splits": target_splits}
        for name, val in split_opts.items():
            bad = [s for s in val if s not in ROLES]
            if bad:
                raise ConfigError(f"cross-dataset: {name} has unknown split(s) {bad}; valid: {list(ROLES)}")
        holdout_subjects([], holdout_fraction)
        self.sources = tuple(srcs)
        self.source_splits, self.dev_splits = tuple(source_splits), tuple(dev_splits)
        self.target_splits = tuple(target_splits)
        self.holdout_fraction, self.seed = holdout_fraction, seed
        self.datasets = (*self.sources, self.target)
        tag = "".join(_LETTER.get(s, s) for s in self.sources)
        self.name = f"cross-dataset/{tag}-to-{_LETTER.get(self.target, self.target)}"
        self.description = (
            f"train = {', '.join(self.sources)} splits {list(self.source_splits)}; dev = their {list(self.dev_splits)} "
            f"splits, or {holdout_fraction:.0%} of the training subjects where they have none; "
            f"test = {self.target} splits {list(self.target_splits)}"
        )

    def required(self) -> dict[str, dict[str, frozenset]]:
        """Every source in train, a dev set for the threshold (HTER), the target in test."""
        both = frozenset({"live", "spoof"})
        return {"train": {"label": both, "dataset": frozenset(self.sources)}, "dev": {"label": both},
                "test": {"label": both, "dataset": frozenset({self.target})}}

    def _split(self, items):
        train, dev = [], []
        for ds in self.sources:
            own = [i for i in items if item_dataset(i) == ds]
            tr = [i for i in own if i.split in self.source_splits]
            dv = [i for i in own if i.split in self.dev_splits]
            if not dv:
                tr, dv = holdout_subjects(tr, self.holdout_fraction, self.seed)
            train += tr
            dev += dv
        test = [i for i in items if item_dataset(i) == self.target and i.split in self.target_splits]
        return train, dev, test


_register("cross-dataset", [{"target": k} for k in CROSS_DATASETS])(lambda **kw: CrossDatasetProtocol(**kw))


# --------------------------------------------------------------------------- official


class OfficialProtocol(Protocol):
    """Each item's own official split (``item.split``); items without a split are excluded.

    ``dev_holdout`` (fraction, default 0): for a dataset with no ``dev`` items, hold out
    that share of its training subjects as dev (CASIA-FASD, MSU-MFSD, SiW, CelebA-Spoof have
    no official dev split).
    """

    name = "official"

    def __init__(self, dev_holdout: float = 0.0, seed: int = 0):
        holdout_subjects([], dev_holdout)
        self.dev_holdout, self.seed = dev_holdout, seed
        self.description = "train/dev/test = each item's official split" + (
            f"; datasets without dev: {dev_holdout:.0%} of training subjects held out (seed {seed})"
            if dev_holdout
            else ""
        )

    def _split(self, items):
        train = [i for i in items if i.split == "train"]
        dev = [i for i in items if i.split == "dev"]
        test = [i for i in items if i.split == "test"]
        if self.dev_holdout:
            has_dev = {item_dataset(i) for i in dev}
            keep = [i for i in train if item_dataset(i) in has_dev]
            pool = [i for i in train if item_dataset(i) not in has_dev]
            kept, held = holdout_subjects(pool, self.dev_holdout, self.seed)
            train, dev = keep + kept, dev + held
        return train, dev, test


_register("official")(lambda **kw: OfficialProtocol(**kw))


def fold_options(spec: str) -> tuple[str, list[dict]]:
    """``(name, [options of each fold])`` of a spec: the fold it names, or every fold of the
    protocol (each with the spec's other options), e.g. ``"oulu-npu-p3"`` -> six folds."""
    name, options = parse_protocol_spec(spec)
    folds = protocol_folds(name)
    if {k for f in folds for k in f} & options.keys():
        return name, [options]
    return name, [{**f, **options} for f in folds]


def format_protocol_spec(name: str, options: dict) -> str:
    """The inverse of :func:`parse_protocol_spec`: ``("oulu-npu-p3", {"fold": 2})`` -> ``"oulu-npu-p3:fold=2"``."""
    def text(v: object) -> str:
        return "+".join(map(str, v)) if isinstance(v, (tuple, list)) else str(v)

    return name + (":" + ",".join(f"{k}={text(v)}" for k, v in options.items()) if options else "")


def parse_protocol_spec(spec: str) -> tuple[str, dict]:
    """``"oulu-npu-p3:fold=2"`` -> ``("oulu-npu-p3", {"fold": 2})``.

    Options are ``key=value`` pairs separated by ``,``; integers and floats are converted;
    a value with ``+`` becomes a tuple (``target_splits=test``, ``source_splits=train+test``).
    """
    name, _, opts = spec.partition(":")
    kw: dict = {}
    for part in filter(None, (p.strip() for p in opts.split(","))):
        key, eq, val = part.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"protocol option {part!r} is not key=value (in {spec!r})")
        key, val = key.strip(), val.strip()
        if key.endswith("_splits"):
            kw[key] = tuple(v for v in val.split("+") if v)
            continue
        for conv in (int, float):
            try:
                kw[key] = conv(val)
                break
            except ValueError:
                continue
        else:
            kw[key] = val
    return name.strip(), kw
