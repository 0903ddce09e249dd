"""Print what the demo produced: the store's contents and the trained model's metrics."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(run_dir: str) -> int:
    import storage
    from storage.inspect import format_summary

    root = Path(run_dir)
    store = root / "store.zarr"
    print(f"store: {store.resolve()}")
    print(format_summary(storage.summary(str(store))))
    train = root / "train"
    for name in ("best.pt", "last.pt"):
        if (train / name).exists():
            print(f"checkpoint: {(train / name).resolve()}")
    for metrics in sorted(train.glob("**/metrics*.json")):
        print(f"metrics ({metrics.relative_to(root)}):")
        data = json.loads(metrics.read_text())
        print(json.dumps(data, indent=2)[:3000])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "runs/sample"))
