"""Safe loading: no code runs from a checkpoint, model file, store or manifest; local stack only.

* Source scan (AST, so multi-line calls count) of ``storage/``, ``pipeline/``, ``depthseg/``
  and ``flows/``: every ``torch.load`` passes ``weights_only=True``; no ``pickle``/``marshal``/
  ``dill`` load (except the in-memory ``pickle.loads(pickle.dumps(x))`` round-trip check), no
  ``np.load(..., allow_pickle=True)``, no ``yaml.load`` without a safe loader, no ``shell=True``,
  no ``os.system``/``os.popen``, no ``eval``/``exec``.
* Behaviour: a checkpoint (and a detector weights file) carrying a pickled object whose
  unpickling would run code is refused, and the code does not run (the same file *does* run it
  under a plain ``pickle`` load: the trap is real). Stores hold no pickle codec.
* ``scripts/stack.sh`` starts the Prefect server bound to 127.0.0.1 only.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import REPO
from tests.helpers.stores import read_manifest

SCANNED = ("storage", "pipeline", "depthseg", "flows")


# --------------------------------------------------------------------------- source scan


def _sources() -> list[Path]:
    files = [p for d in SCANNED for p in sorted((REPO / d).rglob("*.py"))]
    assert len(files) > 20, files  # the scan really looked at the packages
    return files


def _dotted(node: ast.AST) -> str:
    """``a.b.c`` of a Name/Attribute chain ('' for anything else)."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _kw(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def unsafe_calls(tree: ast.AST) -> list[tuple[int, str]]:
    """``(line, why)`` for every unsafe loading / shell call in a module's AST."""
    bad: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        last = name.rsplit(".", 1)[-1]
        if name == "torch.load" and not _is_true(_kw(node, "weights_only")):
            bad.append((node.lineno, "torch.load without weights_only=True"))
        if name in ("pickle.load", "pickle.loads", "cPickle.load", "cPickle.loads", "dill.load", "dill.loads",
                    "cloudpickle.load", "cloudpickle.loads", "marshal.load", "marshal.loads", "pickle.Unpickler",
                    "joblib.load", "pd.read_pickle", "pandas.read_pickle"):
            arg = node.args[0] if node.args else None
            roundtrip = (name == "pickle.loads" and isinstance(arg, ast.Call) and _dotted(arg.func) == "pickle.dumps")
            if not roundtrip:
                bad.append((node.lineno, f"{name} (unpickling runs code)"))
        if last == "load" and name.split(".")[0] in ("np", "numpy") and _is_true(_kw(node, "allow_pickle")):
            bad.append((node.lineno, "np.load(allow_pickle=True)"))
        if name in ("yaml.load", "yaml.load_all", "yaml.unsafe_load", "yaml.full_load"):
            loader = _kw(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            if name in ("yaml.unsafe_load", "yaml.full_load") or "Safe" not in _dotted(loader or ast.Constant(0)):
                bad.append((node.lineno, f"{name} without SafeLoader"))
        if _is_true(_kw(node, "shell")):
            bad.append((node.lineno, f"{name or 'call'}(shell=True)"))
        if name in ("os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput"):
            bad.append((node.lineno, f"{name} (runs a shell)"))
        if name in ("eval", "exec"):
            bad.append((node.lineno, f"{name}()"))
    return bad


def test_scanner_catches_unsafe_code():
    """The scanner itself: each unsafe form is caught, each safe form passes."""
    unsafe = '''
import pickle, torch, numpy as np, yaml, os, subprocess
pickle.load(open("x", "rb"))
torch.load("m.pt")
torch.load(
    "m.pt", map_location="cpu", weights_only=False)
np.load("a.npy", allow_pickle=True)
yaml.load(text, Loader=yaml.Loader)
yaml.load(text)
subprocess.run("ls", shell=True)
os.system("ls")
eval("1")
'''
    found = unsafe_calls(ast.parse(unsafe))
    assert [line for line, _ in found] == [3, 4, 5, 7, 8, 9, 10, 11, 12], found
    safe = '''
import pickle, torch, numpy as np, yaml, subprocess
torch.load("m.pt", map_location="cpu",
           weights_only=True)
np.load("a.npy")
np.load("a.npy", allow_pickle=False)
yaml.safe_load(text)
yaml.load(text, Loader=yaml.SafeLoader)
subprocess.run(["ls"])
pickle.loads(pickle.dumps(exc))
model.eval()
'''
    assert unsafe_calls(ast.parse(safe)) == []


def test_no_unsafe_loading_or_shell_in_sources():
    found = []
    for path in _sources():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        found += [f"{path.relative_to(REPO)}:{line}: {why}" for line, why in unsafe_calls(tree)]
    assert not found, "unsafe calls:\n" + "\n".join(found)


def test_grep_level_patterns_absent():
    """The plain-text view of the same rules (catches uses the AST scan could miss, e.g. aliases)."""
    patterns = {
        "allow_pickle=True": re.compile(r"allow_pickle\s*=\s*True"),
        "shell=True": re.compile(r"shell\s*=\s*True"),
        "os.system": re.compile(r"\bos\.system\s*\("),
        "pickle.load(": re.compile(r"\bpickle\.load\s*\("),
        "yaml.load(": re.compile(r"\byaml\.load\s*\("),
        "weights_only=False": re.compile(r"weights_only\s*=\s*False"),
        "import dill/cloudpickle": re.compile(r"^\s*(import|from)\s+(dill|cloudpickle|marshal)\b", re.M),
    }
    hits = []
    torch_loads = 0
    for path in _sources():
        text = path.read_text(encoding="utf-8")
        for what, rx in patterns.items():
            hits += [f"{path.relative_to(REPO)}: {what}" for _ in rx.finditer(text)]
        # every torch.load( call carries weights_only=True before its closing parenthesis
        for m in re.finditer(r"\btorch\.load\(", text):
            torch_loads += 1
            depth, i = 1, m.end()
            while depth and i < len(text):
                depth += {"(": 1, ")": -1}.get(text[i], 0)
                i += 1
            if not re.search(r"weights_only\s*=\s*True", text[m.end():i]):
                hits.append(f"{path.relative_to(REPO)}: torch.load without weights_only=True")
    assert not hits, hits
    assert torch_loads >= 3  # trainer, encoder weights, detector/landmark weights


# --------------------------------------------------------------------------- behaviour


class _Trap:
    """Unpickling this calls ``os.makedirs(marker)``: visible proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def _tiny_checkpoint() -> dict:
    from depthseg.models import build_model
    from depthseg.trainer import CHECKPOINT_FORMAT, CHECKPOINT_VERSION

    model = build_model("unet", encoder="resnet18", num_classes=4, label_size=8, in_size=64)
    return {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "epoch": 1,
        "model_state": model.state_dict(),
        "model_kwargs": dict(model.arch_kwargs),
        "class_centres": [0.1, 0.4, 0.6, 0.9],
        "threshold": 0.5,
        "config": {"lr": 1e-3},
        "history": [{"epoch": 1, "dev_acer": 0.25}],
    }


def test_checkpoint_with_pickled_object_is_refused_and_runs_nothing(tmp_path):
    from depthseg.trainer import CheckpointError, load_checkpoint, load_checkpoint_dict

    ckpt = _tiny_checkpoint()
    good = tmp_path / "good.pt"
    torch.save(ckpt, good)
    model, meta = load_checkpoint(good)  # a plain-data checkpoint loads
    assert meta["model_kwargs"]["arch"] == "unet" and meta["history"][0]["epoch"] == 1
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64)).shape == (1, 4, 8, 8)

    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pt"
    torch.save(dict(ckpt, config={"lr": 1e-3, "note": _Trap(marker)}), evil)
    with pytest.raises(CheckpointError, match="evil.pt.*not a readable checkpoint"):
        load_checkpoint(evil)
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint_dict(evil)
    assert not marker.exists(), "loading the checkpoint ran code from it"
    # the trap is real: an unrestricted load of the same file runs it
    torch.load(evil, map_location="cpu", weights_only=False)
    assert marker.is_dir()


def test_encoder_weights_file_with_pickled_object_is_refused(tmp_path):
    from depthseg.models import build_model

    net = build_model("unet", encoder="resnet18", num_classes=4, label_size=8, in_size=64)
    good = tmp_path / "enc.pt"
    torch.save(net.net.encoder.state_dict(), good)
    build_model("unet", encoder="resnet18", num_classes=4, label_size=8, in_size=64, encoder_weights=good)
    marker = tmp_path / "code-ran"
    evil = tmp_path / "enc_evil.pt"
    torch.save({**net.net.encoder.state_dict(), "trap": _Trap(marker)}, evil)
    with pytest.raises(Exception, match="(?i)weights_only|unpickl|global"):
        build_model("unet", encoder="resnet18", num_classes=4, label_size=8, in_size=64, encoder_weights=evil)
    assert not marker.exists()


def test_detector_model_files_with_pickles_are_refused(tmp_path, model_dir):
    """BlazeFace weights (``torch.load``) and anchors (``np.load``) from a model folder: a pickle
    in either is refused, nothing runs; the real files load."""
    from pipeline.face.detect import create_detector

    create_detector("blazeface", model_dir=str(model_dir))  # the shared files load
    bad = tmp_path / "models"
    shutil.copytree(model_dir / "blazeface", bad / "blazeface")
    marker = tmp_path / "code-ran"
    state = torch.load(model_dir / "blazeface" / "blazeface.pth", map_location="cpu", weights_only=True)
    torch.save({**state, "trap": _Trap(marker)}, bad / "blazeface" / "blazeface.pth")
    with pytest.raises(Exception, match="(?i)weights_only|unpickl|global"):
        create_detector("blazeface", model_dir=str(bad))
    assert not marker.exists()
    # anchors as an object array (a pickle inside the .npy)
    torch.save(state, bad / "blazeface" / "blazeface.pth")
    anchors = np.empty(1, dtype=object)
    anchors[0] = _Trap(marker)
    np.save(bad / "blazeface" / "anchors.npy", anchors, allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle"):
        create_detector("blazeface", model_dir=str(bad))
    assert not marker.exists()


def test_stores_hold_no_pickle_codec(tmp_path):
    """Every array of a written store (and its HDF5 export) uses plain codecs: reading a store
    never unpickles. The store here is written through the storage writer with string columns."""
    import h5py

    import storage
    from storage.hdf5 import export_hdf5
    from tests.helpers.stores import write_store

    store = tmp_path / "s.zarr"
    write_store(store)
    metas = list(store.rglob("zarr.json"))
    arrays = 0
    for meta_path in metas:
        meta = json.loads(meta_path.read_text())
        if meta.get("node_type") != "array":
            continue
        arrays += 1
        text = json.dumps(meta).lower()
        assert "pickle" not in text and '"object"' not in text, meta_path
        assert meta["data_type"] != "object"
    assert arrays >= 20
    manifest = read_manifest(store)  # plain JSON
    assert manifest["parts"]
    ds = storage.open_dataset(str(store))
    assert all(col.dtype != object or all(isinstance(v, str) for v in col) for col in ds.meta.values())
    h5 = tmp_path / "s.h5"
    export_hdf5(store, h5)
    with h5py.File(h5, "r") as f:
        kinds = []
        f.visititems(lambda name, obj: kinds.append(obj.dtype.kind) if isinstance(obj, h5py.Dataset) else None)
    assert kinds and "V" not in kinds  # no opaque (pickled) blobs


# --------------------------------------------------------------------------- local stack


def test_prefect_stack_binds_localhost_only():
    script = (REPO / "scripts" / "stack.sh").read_text()
    starts = [ln for ln in script.splitlines() if re.search(r"\bserver start\b", ln) and not ln.lstrip().startswith("#")]
    assert starts, "scripts/stack.sh does not start a Prefect server"
    for ln in starts:
        assert re.search(r"--host[ =]127\.0\.0\.1\b", ln), ln
    assert "0.0.0.0" not in script and "[::]" not in script
    assert re.search(r'PREFECT_API_URL="http://127\.0\.0\.1:', script)
    # nothing else in the project starts a server on another interface
    for path in [*(REPO / "scripts").iterdir(), REPO / "Makefile", REPO / "prefect.yaml"]:
        if path.is_file():
            text = path.read_text(errors="replace")
            assert "0.0.0.0" not in text, path
            for ln in text.splitlines():
                if re.search(r"\bserver start\b", ln) and not ln.lstrip().startswith("#"):
                    assert "--host 127.0.0.1" in ln, (path, ln)
