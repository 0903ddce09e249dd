"""Run :func:`depthseg.trainer.train` in N data-parallel processes from Python (the train flow).

``train_distributed(cfg, nproc, resume)`` writes the config as JSON into ``cfg.out_dir`` and
starts ``torchrun --standalone --nproc_per_node N -m depthseg.ddp_run CONFIG``; every rank
trains (see :mod:`depthseg.distributed`) and rank 0 writes the :class:`TrainResult` as JSON
beside the config, which is returned. A separate module, so that ``depthseg.distributed``
(imported by the trainer) never imports the trainer.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from .trainer import TrainConfig, TrainingError, TrainResult, json_safe, train

log = logging.getLogger(__name__)


def train_distributed(cfg: TrainConfig, nproc: int, *, resume: bool = False) -> TrainResult:
    """Train with ``nproc`` processes on this machine; raises TrainingError naming the run's log."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg_path, result_path = out / "ddp-config.json", out / "ddp-result.json"
    cfg_path.write_text(json.dumps(cfg.to_dict()))
    result_path.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "depthseg.ddp_run", str(cfg_path), *(["--resume"] if resume else [])]
    log.info("launching: %s", " ".join(cmd))
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))}
    with open(out / "ddp.log", "w") as logf:
        rc = subprocess.call(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT)
    if rc != 0 or not result_path.is_file():
        raise TrainingError(f"{out}: distributed training ({nproc} processes) failed with exit code {rc}; "
                            f"see {out / 'ddp.log'}")
    r = json.loads(result_path.read_text())
    return TrainResult(Path(r["best_checkpoint"]), Path(r["last_checkpoint"]), r["metrics"], r["history"])


def main(argv: list[str]) -> int:
    cfg = TrainConfig.from_dict(json.loads(Path(argv[0]).read_text()))
    res = train(cfg, resume="--resume" in argv[1:])
    if int(os.environ.get("RANK", "0")) == 0:
        out = Path(argv[0]).with_name("ddp-result.json")
        out.write_text(json.dumps(json_safe({"best_checkpoint": str(res.best_checkpoint),
                                             "last_checkpoint": str(res.last_checkpoint),
                                             "metrics": res.metrics, "history": res.history})))
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    raise SystemExit(main(sys.argv[1:]))
