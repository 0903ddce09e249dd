"""Every error that ends a command is ONE line on stderr naming the input, with a non-zero exit
status and no traceback; Ctrl-C during ``preprocess`` exits 130 with the run report written and
the store resumable.

Checkpoints come from a real (tiny) training run on the shared-image store; the damaged ones are
derived from it (garbage bytes, truncated, another architecture's weights). Stores are written by
the real writer; Ctrl-C is a real SIGINT sent to the process group of a ``depthseg-fas
preprocess`` subprocess (as a terminal sends it) once it has committed a part.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import storage
from depthseg.trainer import CheckpointError, TrainConfig, train
from pipeline.cli import main as cli
from tests.conftest import REPO, load_rgb
from tests.helpers.stores import manifest_file, read_manifest, staging_dir, write_manifest, write_store
from tests.helpers.train_store import make_store
from tests.helpers.media import make_face_video
from tests.helpers.signals import sigint_default

torch.set_num_threads(2)

ENV = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}
ENV.pop("DEPTHSEG_DEBUG", None)


def _errors(capsys, command: str) -> list[str]:
    """The command's error lines on stderr (progress bars and logs aside); no traceback anywhere."""
    out = capsys.readouterr()
    assert "Traceback" not in out.err + out.out
    return [ln for ln in out.err.splitlines() if ln.startswith(f"depthseg-fas {command}:")]


def _one_line(capsys, command: str, rc: int, expect_rc: int, *names: str) -> str:
    lines = _errors(capsys, command)
    assert rc == expect_rc, (rc, lines)
    assert len(lines) == 1, lines
    for name in names:
        assert str(name) in lines[0], (name, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(store, out dir with best.pt / last.pt) of a one-epoch tiny training run."""
    root = tmp_path_factory.mktemp("cli_errors")
    store = make_store(root, size=64)
    out = root / "train"
    cfg = TrainConfig(store=store, out_dir=str(out), arch="pspnet", encoder="resnet18", input_size=64,
                      label_size=32, num_classes=8, batch_size=8, epochs=1, max_steps_per_epoch=2,
                      device="cpu", progress=False, augment=None)
    train(cfg)
    return store, out


@pytest.fixture(scope="module")
def bad_checkpoints(trained, tmp_path_factory) -> dict[str, Path]:
    _, out = trained
    root = tmp_path_factory.mktemp("bad_ckpt")
    good = (out / "best.pt").read_bytes()
    paths = {name: root / f"{name}.pt" for name in ("missing", "garbage", "truncated", "wrong_arch")}
    paths["garbage"].write_bytes(os.urandom(4096))
    paths["truncated"].write_bytes(good[: len(good) // 2])
    ckpt = torch.load(out / "best.pt", weights_only=True)
    ckpt["model_kwargs"] = {**ckpt["model_kwargs"], "arch": "unet"}  # pspnet weights, unet model
    torch.save(ckpt, paths["wrong_arch"])
    return paths


@pytest.mark.parametrize("kind", ["missing", "garbage", "truncated", "wrong_arch"])
def test_bad_checkpoint_is_one_line_for_evaluate_and_predict(kind, trained, bad_checkpoints, tmp_path,
                                                            capsys, pad_samples):
    store, _ = trained
    ckpt = bad_checkpoints[kind]
    capsys.readouterr()
    rc = cli(["evaluate", "--checkpoint", str(ckpt), "--store", store, "--split", "test",
              "--out-dir", str(tmp_path / "ev"), "--device", "cpu"])
    _one_line(capsys, "evaluate", rc, 2, ckpt)
    rc = cli(["predict", str(pad_samples["print"]), "--checkpoint", str(ckpt), "--out", str(tmp_path / "p.png")])
    _one_line(capsys, "predict", rc, 2, ckpt)
    assert not (tmp_path / "p.png").exists()


def test_bad_checkpoint_for_resume_is_one_line_and_kept(trained, tmp_path, capsys):
    store, _ = trained
    out = tmp_path / "resume"
    out.mkdir()
    (out / "last.pt").write_bytes(b"PK\x03\x04 not really a zip")
    rc = cli(["train", "--store", store, "--out-dir", str(out), "--input-size", "64", "--label-size", "32",
              "--epochs", "1", "--batch-size", "8", "--device", "cpu", "--resume"])
    _one_line(capsys, "train", rc, 2, out / "last.pt")
    assert (out / "last.pt").read_bytes() == b"PK\x03\x04 not really a zip"  # refused, not replaced


def test_debug_shows_the_traceback(bad_checkpoints, trained, tmp_path):
    store, _ = trained
    with pytest.raises(CheckpointError, match="garbage.pt"):
        cli(["--debug", "evaluate", "--checkpoint", str(bad_checkpoints["garbage"]), "--store", store,
             "--out-dir", str(tmp_path / "ev")])


def test_hdf5_errors_are_one_line(tmp_path, capsys):
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(os.urandom(3000))
    for h5 in (garbage, tmp_path / "absent.h5"):
        rc = cli(["import-hdf5", str(h5), str(tmp_path / "new.zarr")])
        _one_line(capsys, "import-hdf5", rc, 2, h5)
    assert not manifest_file(tmp_path / "new.zarr").exists()


def test_manifest_entry_of_wrong_type_is_one_line(tmp_path, capsys):
    """A manifest whose part entry is a string: every command reading it fails in one line that
    names the store (exit 1 or 2: the storage layer types it as a store error)."""
    store = tmp_path / "s.zarr"
    write_store(str(store))
    manifest = read_manifest(store)
    manifest["parts"][sorted(manifest["parts"])[0]] = "parts/oops"
    write_manifest(store, manifest)
    for argv in (["inspect", str(store)], ["export-hdf5", str(store), str(tmp_path / "x.h5")]):
        rc = cli(argv)
        line = _one_line(capsys, argv[0], rc, rc, store)
        assert rc in (1, 2), (rc, line)


@pytest.mark.slow  # CLI subprocesses importing torch (~6 s idle)
def test_real_stderr_is_one_line(bad_checkpoints, trained, tmp_path):
    """The console script as a user runs it: stderr is exactly one line, exit status 2."""
    store, _ = trained
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "evaluate", "--checkpoint",
                           str(bad_checkpoints["truncated"]), "--store", store, "--out-dir", str(tmp_path)],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("depthseg-fas evaluate: error: "), proc.stderr[-3000:]
    assert str(bad_checkpoints["truncated"]) in lines[0]


# --------------------------------------------------------------------------- Ctrl-C in preprocess


@pytest.fixture(scope="module")
def videos(tmp_path_factory, portraits) -> Path:
    root = tmp_path_factory.mktemp("sigint_videos")
    by_name = {p.name: p for p in portraits}
    for i, name in enumerate(("obama.jpg", "biden.jpg", "obama2.jpg", "obama.jpg", "biden.jpg", "obama2.jpg")):
        make_face_video(root / f"clip{i}.mp4", load_rgb(by_name[name]), n=8, gap=(8, 8))
    return root


def _committed(store: Path) -> set[str]:
    try:
        return set(read_manifest(store)["parts"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return set()


def _interrupt_after_first_commit(args: list[str], store: Path, log: Path) -> subprocess.CompletedProcess:
    """Run ``depthseg-fas ARGS`` in its own session; SIGINT its whole process group (a terminal's
    Ctrl-C) as soon as a part is committed; its exit status and output."""
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args], cwd=REPO, env=ENV,
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=sigint_default)
        deadline = time.monotonic() + 400
        while proc.poll() is None and not _committed(store) and time.monotonic() < deadline:
            time.sleep(0.02)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return subprocess.CompletedProcess(args, proc.returncode, log.read_text(errors="replace"), "")


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("workers", [0, 2])
def test_ctrl_c_preprocess_reports_and_resumes(workers, videos, tmp_path):
    n_items = len(list(videos.glob("*.mp4")))
    for attempt in range(3):  # a SIGINT that lands after the run ended (fast machine) is redone
        store = tmp_path / f"s{attempt}.zarr"
        report_path = tmp_path / f"s{attempt}.report.json"
        args = ["preprocess", "--input", str(videos), "--output", str(store), "--size", "64",
                "--workers", str(workers), "--report", str(report_path)]
        got = _interrupt_after_first_commit(args, store, tmp_path / f"run{attempt}.log")
        if got.returncode != 0 or len(_committed(store)) < n_items:
            break
    out = got.stdout
    assert got.returncode == 130, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    lines = [ln for ln in out.splitlines() if ln.startswith("depthseg-fas preprocess:")]
    assert len(lines) == 1 and "interrupted" in lines[0] and str(report_path) in lines[0], out[-3000:]

    committed = _committed(store)
    assert 1 <= len(committed) < n_items
    report = json.loads(report_path.read_text())
    assert report["interrupted"] is True
    written = {u["part_id"] for u in report["units"] if u["status"] == "written"}
    assert written == committed, (written, committed)  # the report tells exactly what is in the store
    assert report["counts"]["written"] == len(committed)
    assert storage.verify(str(store)) == []
    assert not (staging_dir(store) / "run.lock").exists()  # the run lock was released

    rerun = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=REPO, env=ENV,
                           capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    final = json.loads(report_path.read_text())
    assert final["interrupted"] is False
    assert final["counts"]["skipped"] == len(committed)
    assert final["counts"]["written"] == n_items - len(committed)
    assert len(_committed(store)) == n_items and storage.verify(str(store)) == []

