"""Print what the demo produced: the store's contents, the checkpoint and the test metrics."""

from __future__ import annotations

import json
import sys
from pathlib import Path

KEYS = ("acer", "apcer_max", "apcer_max_type", "apcer_pooled", "bpcer", "hter", "eer", "auc")


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def main(run_dir: str) -> int:
    import storage
    from storage.inspect import format_summary

    root = Path(run_dir)
    print(format_summary(storage.summary(str(root / "store.zarr"))))
    train = root / "train"
    for name in ("best.pt", "last.pt"):
        if (train / name).exists():
            print(f"checkpoint:     {(train / name).resolve()}")
    for metrics in sorted(train.glob("eval-*/metrics.json")):
        data = json.loads(metrics.read_text())
        print(f"\nmetrics on split '{data.get('split')}' (threshold: {data.get('threshold_source')}); "
              f"full file: {metrics.resolve()}")
        print(f"  {'level':<6}" + "".join(f"{k:>15}" for k in KEYS))
        for level in ("frame", "video"):
            m = data.get(level, {})
            print(f"  {level:<6}" + "".join(f"{_fmt(m.get(k)):>15}" for k in KEYS))
        print(f"  outputs: {', '.join(sorted(p.name for p in metrics.parent.iterdir()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "runs/sample"))
