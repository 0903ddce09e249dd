"""CSV manifests for the csv dataset adapter."""

from __future__ import annotations

import csv
from pathlib import Path


def write_manifest(path: Path, rows: list[dict]) -> Path:
    cols = ["path", "label", "attack_type", "subject", "session", "device", "split"]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in cols})
    return path
