"""Install MediaPipe's face-landmark model for the ``mediapipe68`` landmark backend (a setup step).

Downloads the ``mediapipe==0.10.21`` wheel with pip (no dependencies, nothing installed), takes
``face_landmark.tflite`` out of it, checks its sha256 and writes it to
``DEST/mediapipe/face_landmark.tflite``; DEST defaults to this environment's
``share/depthseg-fas/models`` (where the backend looks after the model directory). Already there
with the right checksum: nothing is done. ``make setup`` runs it.

    python scripts/fetch_mediapipe_model.py [--dest MODEL_DIR] [--wheel-dir DIR_WITH_THE_WHEEL]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file from a checkout
from pipeline.face.mediapipe_model import RELATIVE, SHA256, WHEEL, WHEEL_MEMBER, installed_dir  # noqa: E402
from storage import file_checksum  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dest", type=Path, default=installed_dir(), help="model directory to write into")
    ap.add_argument("--wheel-dir", type=Path, default=None,
                    help="a folder already holding the mediapipe 0.10.21 wheel (offline); else pip downloads it")
    args = ap.parse_args(argv)
    target = args.dest / RELATIVE
    if target.is_file() and file_checksum(target) == SHA256:
        print(f"{target}: present")
        return 0
    with tempfile.TemporaryDirectory(prefix="mediapipe-wheel-") as tmp:
        folder = args.wheel_dir
        if folder is None:
            folder = Path(tmp)
            cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                   "--dest", str(folder), WHEEL]
            rc = subprocess.run(cmd).returncode
            if rc != 0:
                print(f"fetch_mediapipe_model: `{' '.join(cmd)}` failed (exit {rc})", file=sys.stderr)
                return 1
        wheels = sorted(folder.glob("mediapipe-0.10.21-*.whl"))
        if not wheels:
            print(f"fetch_mediapipe_model: no mediapipe-0.10.21 wheel in {folder}", file=sys.stderr)
            return 1
        with zipfile.ZipFile(wheels[0]) as zf:
            data = zf.read(WHEEL_MEMBER)
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256:
        print(f"fetch_mediapipe_model: {WHEEL_MEMBER} of {wheels[0].name} has sha256 "
              f"{digest}, expected {SHA256}", file=sys.stderr)
        return 1
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = target.with_name(target.name + ".part")
    tmp_path.write_bytes(data)
    os.replace(tmp_path, target)
    print(f"{target}: written ({len(data)} bytes, sha256 {SHA256[:12]}...)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
