"""Seconds spent per stage, accumulated over a run."""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager


class StageTimer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def stage(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - t0

    def merge(self, other: "StageTimer | dict[str, float]") -> None:
        items = other.seconds.items() if isinstance(other, StageTimer) else other.items()
        for k, v in items:
            self.seconds[k] += v

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in sorted(self.seconds.items())}
