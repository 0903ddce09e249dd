"""Bad parameters refused up front, big and 16-bit images handled within bounded memory (issue 11, item 10).

Parse-time refusal: exit 2 and no store. 16-bit PNGs: converted to uint8 without a whole-image
int64 copy (tracemalloc peak against the int64 size, on a real face photo saved as 16-bit).
Pixel limit: a header that declares a huge image is refused before any pixel is decoded.
"""

from __future__ import annotations

import json
import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.cli import main as cli
from pipeline.base.errors import ConfigError, ImageTooLarge
from pipeline.io.frames import read_image
from pipeline.run.config import PreprocessConfig
from tests.conftest import FACES


@pytest.mark.parametrize("flag, value", [
    ("--fps", "nan"), ("--fps", "inf"), ("--fps", "-inf"), ("--fps", "0"), ("--fps", "-2"),
    ("--every-n", "0"), ("--every-n", "-1"), ("--every-n", "1.5"), ("--max-frames", "0"),
    ("--crop-scale", "nan"), ("--size", "0"), ("--batch-size", "0"), ("--workers", "-1"), ("--max-pixels", "0"),
    ("--depth-far-value", "0"), ("--depth-far-value", "1"), ("--min-face-size", "-1"),  # the stages' own bounds
])
def test_bad_numbers_rejected_at_parse_time_without_a_store(tmp_path, capsys, flag, value):
    store = tmp_path / "store.zarr"
    with pytest.raises(SystemExit) as exc:
        cli(["preprocess", "--input", str(FACES), "--output", str(store), f"{flag}={value}"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and value in err and "Traceback" not in err
    assert not store.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kw", [{"fps": float("nan")}, {"fps": float("inf")}, {"crop_scale": float("nan")},
                                {"min_face_size": float("nan")}, {"max_pixels": 0}])
def test_config_dataclass_rejects_non_finite_values(kw):
    with pytest.raises(ConfigError, match=next(iter(kw))):
        PreprocessConfig.flat(**kw)


@pytest.mark.parametrize("kw", [{"fps": "nan"}, {"fps": float("inf")}, {"crop_scale": float("nan")},
                                {"max_pixels": 0}])
def test_flow_params_reject_non_finite_values(kw):
    pytest.importorskip("prefect")
    from prefect.utilities.callables import get_call_parameters

    from flows.preprocess import preprocess

    given = get_call_parameters(preprocess.fn, (), {"input": str(FACES), "output": "unused.zarr", **kw})
    with pytest.raises(ConfigError, match=next(iter(kw))):
        preprocess.fn(**preprocess.validate_parameters(given))  # as a flow run calls it


def _png16(path: Path, scale: int) -> np.ndarray:
    """A real face photo as a 16-bit grayscale PNG ``scale`` times its size; returns its 16-bit pixels."""
    with Image.open(FACES / "obama-1080p.jpg") as im:
        gray = im.convert("L")
        gray = gray.resize((gray.width * scale, gray.height * scale), Image.BILINEAR)
    a16 = np.asarray(gray, dtype=np.uint16) * 257 + np.arange(gray.width, dtype=np.uint16) % 251
    Image.fromarray(a16).save(path)  # mode I;16
    with Image.open(path) as check:
        assert check.mode.startswith("I;16")
    return a16


def test_16bit_png_converted_without_widening(tmp_path):
    path = tmp_path / "face16.png"
    a16 = _png16(path, 1)
    h, w = a16.shape
    tracemalloc.start()
    try:
        rgb = read_image(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the values: the high byte of each 16-bit pixel, in all three channels
    assert rgb.shape == (h, w, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[..., 0], (a16 >> 8).astype(np.uint8))
    assert (rgb[..., 0] == rgb[..., 2]).all()
    int64_size = h * w * 8
    # the output (3 bytes a pixel) plus a block of scratch; the old path held whole int64 copies (2x int64_size)
    assert peak < rgb.nbytes + 0.25 * int64_size, f"peak {peak / 2**20:.1f} MiB for a {w}x{h} image (int64: {int64_size / 2**20:.1f} MiB)"


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header declares ``width`` x ``height`` 8-bit RGB, with 1 KB of (bad) pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1024))
                     + chunk(b"IEND", b""))


@pytest.mark.parametrize("side, limit", [(11_000, 100_000_000), (11_000, None), (30_000, None), (30_000, 10**10)])
def test_huge_header_refused_before_decoding(tmp_path, side, limit):
    """121 MP: over our limit; 900 MP: Pillow's decompression-bomb guard, also reported as too large."""
    path = tmp_path / "huge.png"
    _png_header_only(path, side, side)
    if limit is None and side * side < 2 * Image.MAX_IMAGE_PIXELS:  # no limit, within Pillow's: decoding fails
        with pytest.raises(Exception) as exc:
            read_image(path, max_pixels=None)
        assert not isinstance(exc.value, ImageTooLarge)
        return
    tracemalloc.start()
    try:
        with pytest.raises(ImageTooLarge, match=f"{side}x{side}|decompression bomb") as exc:
            read_image(path, max_pixels=limit)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(path) in str(exc.value) and exc.value.reason == "image-too-large"
    assert peak < 16 * 2**20


def test_pixel_limit_fails_the_item_with_a_clear_reason(tmp_path):
    """CLI: the limit is configurable; an image over it fails with its reason, the others are written."""
    data = tmp_path / "in"
    (data / "big").mkdir(parents=True)
    (data / "small").mkdir()
    _png_header_only(data / "big" / "huge.png", 11_000, 11_000)
    (data / "small" / "face.jpg").write_bytes((FACES / "obama.jpg").read_bytes())
    store = tmp_path / "store.zarr"
    rc = cli(["preprocess", "--input", str(data), "--output", str(store), "--size", "64"])
    assert rc == 0
    rep = json.loads(Path(f"{store}.report.json").read_text())
    assert rep["counts"]["written"] == 1 and rep["counts"]["failed"] == 1
    (failure,) = rep["failures"]
    assert failure["reason"] == "image-too-large" and "huge.png" in failure["message"]
    assert "121.0 megapixels" in failure["message"] and "--max-pixels" in failure["message"]
    # a lower limit refuses the real photo too
    with Image.open(FACES / "obama.jpg") as im:
        pixels = im.width * im.height
    store2 = tmp_path / "store2.zarr"
    rc = cli(["preprocess", "--input", str(data / "small"), "--output", str(store2), "--size", "64",
              "--max-pixels", str(pixels - 1)])
    rep = json.loads(Path(f"{store2}.report.json").read_text())
    assert rc == 1 and [f["reason"] for f in rep["failures"]] == ["image-too-large"]
