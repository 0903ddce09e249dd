"""Frames from videos, images and folders: sampling, timestamps, orientation, modes, errors.

The videos are written here with PyAV from the shared portraits; each frame carries its own
index as the grey level of a flat block, so the tests can tell which source frame came out.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from PIL import Image

from pipeline.base.errors import ConfigError, CorruptVideo, InputNotFound, UnreadableImage, UnsupportedInput
from pipeline.io.frames import (
    FrameConfig,
    is_image_path,
    is_video_path,
    iter_frames,
    probe,
    read_image,
)
from tests.conftest import SHARED

FACES = SHARED / "data" / "faces"
PAD = SHARED / "data" / "pad-samples"

W, H = 96, 128  # small portrait frames: quick to encode and decode
N_FRAMES = 20


def marker_level(i: int) -> int:
    return 10 + 12 * i


def read_marker(img: np.ndarray) -> int:
    """Index written by :func:`make_frames` into the top-left 16x16 block."""
    return int(round((float(img[2:14, 2:14].mean()) - 10) / 12))


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    img = read_image(FACES / "obama.jpg")
    return cv2.resize(img, (W, H), interpolation=cv2.INTER_AREA)


def make_frames(portrait: np.ndarray, n: int) -> list[np.ndarray]:
    frames = []
    for i in range(n):
        f = portrait.copy()
        f[:16, :16] = marker_level(i)
        frames.append(f)
    return frames


def write_video(
    path: Path,
    frames: list[np.ndarray],
    codec: str = "libx264",
    rate: int = 10,
    pts_ms: list[int] | None = None,
    rotation: float | None = None,
    hflip: bool = False,
) -> Path:
    """Encode RGB frames with PyAV; ``pts_ms`` gives variable timestamps in milliseconds."""
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=rate)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        if pts_ms is not None:
            s.time_base = Fraction(1, 1000)
            s.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None or hflip:
            s.set_display_rotation(rotation or 0, hflip=hflip)
        for i, a in enumerate(frames):
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(a), format="rgb24")
            if pts_ms is not None:
                f.pts, f.time_base = pts_ms[i], Fraction(1, 1000)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory, portrait) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("videos")
    frames = make_frames(portrait, N_FRAMES)
    return {
        "mp4": write_video(d / "clip.mp4", frames, "libx264"),
        "mkv": write_video(d / "clip.mkv", frames, "mpeg4"),
        "avi": write_video(d / "clip.avi", frames, "mpeg4"),
    }


# --------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("container", ["mp4", "mkv", "avi"])
def test_all_frames_in_order_with_timestamps(videos, portrait, container):
    frames = list(iter_frames(videos[container]))
    assert [f.index for f in frames] == list(range(N_FRAMES))
    assert [read_marker(f.image) for f in frames] == list(range(N_FRAMES))
    np.testing.assert_allclose([f.timestamp for f in frames], np.arange(N_FRAMES) / 10, atol=1e-3)
    f = frames[0]
    assert f.image.shape == (H, W, 3) and f.image.dtype == np.uint8
    assert f.source == str(videos[container])
    # RGB order and content survive the codec (face region, away from the marker)
    diff = np.abs(f.image[32:, :].astype(int) - portrait[32:, :].astype(int)).mean()
    assert diff < 8


def test_every_n(videos):
    frames = list(iter_frames(videos["mp4"], FrameConfig(every_n=3)))
    assert [f.index for f in frames] == [0, 3, 6, 9, 12, 15, 18]
    assert [read_marker(f.image) for f in frames] == [0, 3, 6, 9, 12, 15, 18]
    np.testing.assert_allclose([f.timestamp for f in frames], [0, 0.3, 0.6, 0.9, 1.2, 1.5, 1.8], atol=1e-3)


def test_max_frames_with_every_n(videos):
    frames = list(iter_frames(videos["mkv"], FrameConfig(every_n=2, max_frames=4)))
    assert [f.index for f in frames] == [0, 2, 4, 6]


def test_fps_sampling_constant_rate(videos):
    # 10 fps source, 4 fps target: ticks at 0, .25, .5, .75, ... s; keep the first frame at or past each
    frames = list(iter_frames(videos["mp4"], FrameConfig(fps=4)))
    assert [f.index for f in frames] == [0, 3, 5, 8, 10, 13, 15, 18]
    assert [read_marker(f.image) for f in frames] == [0, 3, 5, 8, 10, 13, 15, 18]
    # a target above the source rate keeps every frame
    assert len(list(iter_frames(videos["mp4"], FrameConfig(fps=30)))) == N_FRAMES


@pytest.mark.parametrize("codec,ext", [("libx264", "mp4"), ("mpeg4", "mkv")])
def test_fps_sampling_variable_frame_rate(tmp_path, portrait, codec, ext):
    pts = [0, 50, 100, 190, 210, 400, 420, 900, 1000]
    path = write_video(tmp_path / f"vfr.{ext}", make_frames(portrait, len(pts)), codec, pts_ms=pts)
    every = list(iter_frames(path))
    np.testing.assert_allclose([f.timestamp for f in every], np.array(pts) / 1000, atol=1e-3)
    # 5 fps ticks at 0, 200, 400, 600, 800, 1000 ms: 0 | 210 | 400 | 900 (past 600 and 800) | 1000
    kept = list(iter_frames(path, FrameConfig(fps=5)))
    assert [f.index for f in kept] == [0, 4, 5, 7, 8]
    assert [read_marker(f.image) for f in kept] == [0, 4, 5, 7, 8]


def test_frame_config_validation():
    with pytest.raises(ConfigError, match="every_n"):
        FrameConfig(every_n=0)
    with pytest.raises(ConfigError, match="fps"):
        FrameConfig(fps=-1)
    with pytest.raises(ConfigError, match="either every_n or fps"):
        FrameConfig(every_n=2, fps=5)
    with pytest.raises(ConfigError, match="max_frames"):
        FrameConfig(max_frames=0)


def test_probe_video(videos):
    info = probe(videos["mp4"])
    assert info.kind == "video"
    assert info.frames == N_FRAMES
    assert info.fps == pytest.approx(10)
    assert info.duration == pytest.approx(2.0, abs=0.11)
    assert (info.width, info.height, info.rotation, info.mirrored) == (W, H, 0, False)
    assert info.codec == "h264"
    mkv = probe(videos["mkv"])  # Matroska records no frame count: estimated from duration
    assert mkv.frames == N_FRAMES and mkv.codec == "mpeg4"


# --------------------------------------------------------------------------- orientation


@pytest.mark.parametrize(
    "rotation,hflip,stored",
    [
        (90, False, lambda a: np.rot90(a, -1)),  # phone held upright: stored sideways
        (-90, False, lambda a: np.rot90(a, 1)),
        (180, False, lambda a: np.rot90(a, 2)),
        (0, True, lambda a: a[:, ::-1]),  # mirrored front camera
    ],
)
def test_display_matrix_applied(tmp_path, portrait, rotation, hflip, stored):
    """A video stored sideways/mirrored with display metadata comes out upright."""
    upright = make_frames(portrait, 3)
    path = write_video(
        tmp_path / "rot.mp4", [np.ascontiguousarray(stored(a)) for a in upright], rotation=rotation, hflip=hflip
    )
    frames = list(iter_frames(path))
    assert len(frames) == 3
    for f, ref in zip(frames, upright):
        assert f.image.shape == ref.shape
        assert np.abs(f.image.astype(int) - ref.astype(int)).mean() < 6
        assert f.image.flags["C_CONTIGUOUS"]
    info = probe(path)
    assert (info.width, info.height) == (W, H)
    assert info.mirrored == hflip


def test_exif_rotated_phone_jpeg():
    """The real PAD samples are stored landscape with EXIF orientation 6 (rotate 90 deg clockwise)."""
    raw = np.asarray(Image.open(PAD / "image_T1.jpg").convert("RGB"))
    assert raw.shape == (480, 640, 3)
    (frame,) = list(iter_frames(PAD / "image_T1.jpg"))
    assert frame.image.shape == (640, 480, 3)
    np.testing.assert_array_equal(frame.image, np.rot90(raw, -1))
    assert (frame.index, frame.timestamp) == (0, 0.0)
    info = probe(PAD / "image_T1.jpg")
    assert (info.kind, info.width, info.height, info.rotation) == ("image", 480, 640, -90)


# EXIF orientation -> how the stored pixels relate to the upright picture (EXIF 2.3, tag 0x0112)
STORED_FOR_ORIENTATION = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, 1),
    7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],
    8: lambda a: np.rot90(a, -1),
}


@pytest.mark.parametrize("orientation", sorted(STORED_FOR_ORIENTATION))
def test_exif_orientations(tmp_path, portrait, orientation):
    stored = np.ascontiguousarray(STORED_FOR_ORIENTATION[orientation](portrait))
    im = Image.fromarray(stored)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.png"  # lossless, so the comparison is exact
    im.save(path, exif=exif)
    np.testing.assert_array_equal(read_image(path), portrait)


# --------------------------------------------------------------------------- image modes


def test_cmyk_jpeg(tmp_path, portrait):
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(portrait).convert("CMYK").save(path, quality=95)
    assert Image.open(path).mode == "CMYK"
    img = read_image(path)
    assert img.shape == portrait.shape and img.dtype == np.uint8
    assert np.abs(img.astype(int) - portrait.astype(int)).mean() < 4


def test_png_with_alpha_composited_over_black(tmp_path, portrait):
    alpha = np.zeros(portrait.shape[:2], np.uint8)
    alpha[:, W // 2 :] = 255
    alpha[:20, W // 2 :] = 128
    path = tmp_path / "alpha.png"
    Image.fromarray(np.dstack([portrait, alpha]), "RGBA").save(path)
    img = read_image(path)
    assert img.shape == (H, W, 3)
    assert img[:, : W // 2].max() == 0
    np.testing.assert_array_equal(img[20:, W // 2 :], portrait[20:, W // 2 :])
    half = np.round(portrait[:20, W // 2 :].astype(float) * 128 / 255)
    assert np.abs(img[:20, W // 2 :] - half).max() <= 1


def test_16bit_png_scaled_not_clipped(tmp_path, portrait):
    gray8 = cv2.cvtColor(portrait, cv2.COLOR_RGB2GRAY)
    noise = np.random.default_rng(0).integers(0, 256, gray8.shape)
    gray16 = (gray8.astype(np.uint16) * 256 + noise).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "g16.png"), gray16)
    assert Image.open(tmp_path / "g16.png").mode.startswith("I;16")
    img = read_image(tmp_path / "g16.png")
    for c in range(3):
        np.testing.assert_array_equal(img[..., c], gray8)
    rgb16 = portrait.astype(np.uint16) * 257
    cv2.imwrite(str(tmp_path / "rgb16.png"), rgb16[..., ::-1])
    np.testing.assert_array_equal(read_image(tmp_path / "rgb16.png"), portrait)


def test_grayscale_and_palette(tmp_path, portrait):
    gray = cv2.cvtColor(portrait, cv2.COLOR_RGB2GRAY)
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    img = read_image(tmp_path / "g.png")
    assert img.shape == (H, W, 3)
    for c in range(3):
        np.testing.assert_array_equal(img[..., c], gray)
    pal = Image.fromarray(portrait).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    pal.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_image(tmp_path / "p.png"), np.asarray(pal.convert("RGB")))


def test_image_folder(tmp_path, portrait):
    folder = tmp_path / "seq"
    folder.mkdir()
    frames = make_frames(portrait, 4)
    # natural order: img1, img2, img3, img10, whatever the format
    Image.fromarray(frames[0]).save(folder / "img1.png")
    Image.fromarray(frames[1]).save(folder / "img2.bmp")
    Image.fromarray(frames[2]).save(folder / "img3.webp", lossless=True)
    Image.fromarray(frames[3]).save(folder / "img10.tif")
    (folder / "notes.txt").write_text("not an image")
    Image.fromarray(portrait).save(folder / ".hidden.png")
    (folder / "sub").mkdir()
    Image.fromarray(portrait).save(folder / "sub" / "img0.png")

    out = list(iter_frames(folder))
    assert [f.index for f in out] == [0, 1, 2, 3]
    assert [Path(f.source).name for f in out] == ["img1.png", "img2.bmp", "img3.webp", "img10.tif"]
    assert all(f.timestamp == 0.0 for f in out)
    for f, ref in zip(out, frames):
        np.testing.assert_array_equal(f.image, ref)
    assert [f.index for f in iter_frames(folder, FrameConfig(every_n=2))] == [0, 2]
    assert len(list(iter_frames(folder, FrameConfig(max_frames=3)))) == 3
    info = probe(folder)
    assert (info.kind, info.frames, info.width, info.height) == ("folder", 4, W, H)


# --------------------------------------------------------------------------- type detection


def test_path_kind_by_extension_and_content(tmp_path, videos, portrait):
    assert is_video_path(videos["mp4"]) and is_video_path(videos["mkv"]) and is_video_path(videos["avi"])
    assert not is_image_path(videos["mp4"])
    assert is_image_path(PAD / "image_F1.jpg") and not is_video_path(PAD / "image_F1.jpg")
    # names only, for paths that do not exist
    assert is_video_path(tmp_path / "nothing.MOV") and is_image_path(tmp_path / "nothing.JPEG")
    assert not is_video_path(tmp_path / "nothing.txt") and not is_image_path(tmp_path / "nothing.txt")
    # content wins over a wrong extension
    disguised = tmp_path / "really_a_png.mp4"
    Image.fromarray(portrait).save(disguised, format="PNG")
    assert is_image_path(disguised) and not is_video_path(disguised)
    (frame,) = list(iter_frames(disguised))
    np.testing.assert_array_equal(frame.image, portrait)
    no_ext = tmp_path / "clip_without_extension"
    no_ext.write_bytes(videos["mkv"].read_bytes())
    assert is_video_path(no_ext)
    assert len(list(iter_frames(no_ext))) == N_FRAMES


# --------------------------------------------------------------------------- bad inputs


def test_missing_path(tmp_path):
    with pytest.raises(InputNotFound, match="missing.mp4"):
        iter_frames(tmp_path / "missing.mp4")
    with pytest.raises(InputNotFound):
        probe(tmp_path / "missing.jpg")


def test_empty_files(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(CorruptVideo, match=r"empty\.mp4.*empty file"):
        iter_frames(tmp_path / "empty.mp4")
    with pytest.raises(UnreadableImage, match=r"empty\.jpg.*empty file"):
        iter_frames(tmp_path / "empty.jpg")


def test_text_file_named_mp4(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 20)
    with pytest.raises(CorruptVideo, match="notes.mp4.*not a readable video"):
        list(iter_frames(path))
    with pytest.raises(CorruptVideo):
        probe(path)


def test_unknown_garbage_is_unsupported(tmp_path):
    path = tmp_path / "blob.xyz"
    path.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(UnsupportedInput, match="blob.xyz"):
        list(iter_frames(path))


def test_truncated_mp4_raises(tmp_path, videos):
    data = videos["mp4"].read_bytes()  # PyAV writes the index (moov) last: cutting it loses everything
    for frac in (0.3, 0.6, 0.95):
        path = tmp_path / f"cut{int(frac * 100)}.mp4"
        path.write_bytes(data[: int(len(data) * frac)])
        with pytest.raises(CorruptVideo, match=path.name):
            list(iter_frames(path))


def test_truncated_mkv_keeps_good_frames(tmp_path, videos, caplog):
    data = videos["mkv"].read_bytes()  # Matroska streams: the frames before the cut decode
    with av.open(str(videos["mkv"])) as c:
        positions = [p.pos for p in c.demux(video=0) if p.size]
    path = tmp_path / "cut.mkv"
    path.write_bytes(data[: positions[14] + 10])  # inside the 15th frame's packet
    with caplog.at_level(logging.WARNING, logger="pipeline.io.frames"):
        frames = list(iter_frames(path))
    assert 0 < len(frames) < N_FRAMES
    assert [f.index for f in frames] == list(range(len(frames)))
    assert [read_marker(f.image) for f in frames] == list(range(len(frames)))
    assert any("cut.mkv" in r.getMessage() and "truncated" in r.getMessage() for r in caplog.records)
    # a cut inside the header leaves nothing to decode
    head = tmp_path / "head.mkv"
    head.write_bytes(data[:200])
    with pytest.raises(CorruptVideo, match="head.mkv"):
        list(iter_frames(head))


def test_audio_only_files(tmp_path):
    for name, codec in [("tone.m4a", "aac"), ("tone.wav", "pcm_s16le")]:
        path = tmp_path / name
        with av.open(str(path), "w") as c:
            s = c.add_stream(codec, rate=16000)
            t = np.arange(16000) / 16000
            samples = (np.sin(2 * np.pi * 440 * t) * 10000).astype(np.int16)[None]
            fmt = "s16" if codec == "pcm_s16le" else "fltp"
            data = samples if fmt == "s16" else (samples.astype(np.float32) / 32768)
            frame = av.AudioFrame.from_ndarray(data, format=fmt, layout="mono")
            frame.sample_rate = 16000
            for p in s.encode(frame):
                c.mux(p)
            for p in s.encode():
                c.mux(p)
        assert not is_video_path(path) and not is_image_path(path)
        with pytest.raises(UnsupportedInput, match=f"{name}.*no video stream.*audio"):
            list(iter_frames(path))


def test_unreadable_images(tmp_path):
    garbage = tmp_path / "garbage.jpg"
    garbage.write_text("definitely not a jpeg")
    with pytest.raises(UnreadableImage, match="garbage.jpg"):
        list(iter_frames(garbage))
    cut = tmp_path / "cut.jpg"
    data = (FACES / "obama-240p.jpg").read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnreadableImage, match="cut.jpg"):
        list(iter_frames(cut))
    # inside a folder the bad file is named too
    folder = tmp_path / "seq"
    folder.mkdir()
    (folder / "a.jpg").write_bytes((FACES / "obama-240p.jpg").read_bytes())
    (folder / "b.jpg").write_bytes(data[: len(data) // 2])
    it = iter_frames(folder)
    assert next(it).image.shape == (240, 427, 3)
    with pytest.raises(UnreadableImage, match="b.jpg"):
        next(it)


def test_folder_without_images(tmp_path):
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(UnsupportedInput, match="no image files"):
        iter_frames(tmp_path)
