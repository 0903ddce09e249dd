"""Work items: one input (a video, an image, or a folder of images) with its labels."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

LABELS = ("live", "spoof", "unknown")
#: attack types used across adapters ("none" for live faces)
ATTACK_TYPES = ("none", "print", "replay", "mask", "other", "unknown")


@dataclass(frozen=True)
class WorkItem:
    """One unit of input with the metadata every frame of it inherits.

    ``label`` is ``live``, ``spoof`` or ``unknown`` (a plain folder; depth is rendered as for
    live faces). ``attack_type`` is ``none`` for live faces, else e.g. ``print``/``replay``;
    adapters may refine it (``print1``, ``replay2``) and keep the family in ``extra``.
    ``max_frames`` (when set) caps the frames used from this item, e.g. SiW protocol 1's
    first-60-frames training rule.
    """

    path: str
    label: str = "unknown"
    attack_type: str = "none"
    subject: str = ""
    session: str = ""
    device: str = ""
    split: str = ""
    video_id: str = ""
    max_frames: int | None = None
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.label not in LABELS:
            raise ValueError(f"{self.path}: label must be one of {LABELS}, got {self.label!r}")

    @property
    def is_spoof(self) -> bool:
        return self.label == "spoof"

    def to_dict(self) -> dict:
        return asdict(self)
