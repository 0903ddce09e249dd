"""Frames from videos, still images and image folders.

:func:`iter_frames` streams :class:`~pipeline.base.types.Frame` records, one decoded picture at a
time (a video is never held in memory), from

* any container/codec FFmpeg reads, through PyAV; the stream's display matrix (phone
  rotation, mirroring) is applied so frames come out upright;
* a single image file (jpg/png/bmp/webp/tif/gif/...), through Pillow, with its EXIF
  orientation applied and any mode (CMYK, grayscale, palette, alpha, 16-bit) converted to
  RGB ``uint8``;
* a folder of images, in natural name order (``img2.png`` before ``img10.png``), each image a
  frame whose ``index`` is its position in that order.

Every frame is ``(H, W, 3)`` ``uint8`` RGB. ``Frame.index`` is the 0-based position of the
picture in the source before sampling; ``Frame.timestamp`` is seconds from the start of the
video stream (``0.0`` for images, which have no time axis).

Errors (all :mod:`pipeline.base.errors`, each naming the file): a missing path raises
:class:`InputNotFound`; an empty, truncated or non-media file given as a video, or a video of
which no frame decodes, raises :class:`CorruptVideo`; a media file without a video stream
(audio only) or a folder without images raises :class:`UnsupportedInput`; an image Pillow
cannot decode raises :class:`UnreadableImage`. A video that decodes some frames and then
fails yields the good frames, logs a warning and stops.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageOps

from pipeline.base.errors import (
    ConfigError,
    CorruptVideo,
    ImageTooLarge,
    InputNotFound,
    UnreadableImage,
    UnsupportedInput,
)
from pipeline.base.options import check_fields, opt
from pipeline.base.types import Frame

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(
    ".jpg .jpeg .jpe .jfif .png .bmp .dib .webp .tif .tiff .gif .ppm .pgm .pbm .pnm "
    ".jp2 .j2k .tga .avif".split()
)
VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mov .qt .avi .mkv .webm .wmv .asf .flv .mpg .mpeg .m2v .ts .mts .m2ts "
    ".3gp .3g2 .ogv .mxf .vob .y4m .h264 .264 .h265 .hevc .ivf .dv .rm .rmvb .nut".split()
)
AUDIO_EXTENSIONS = frozenset(".wav .mp3 .m4a .aac .flac .ogg .opus .wma .aiff .amr".split())

#: default limit on the pixels of one image or video frame (``FrameConfig.max_pixels``, ``--max-pixels``)
DEFAULT_MAX_PIXELS = 100_000_000

#: EXIF orientation tag value -> rotation in degrees counter-clockwise applied to display it
_EXIF_ROTATION = {1: 0, 2: 0, 3: 180, 4: 180, 5: -90, 6: -90, 7: 90, 8: 90}


@dataclass(frozen=True)
class FrameConfig:
    """Which frames :func:`iter_frames` yields: the frame stage's options (:mod:`pipeline.base.options`;
    the preprocess flags ``--every-n`` etc.).

    ``every_n`` keeps frames whose source index is a multiple of it. ``fps`` instead keeps a
    frame each time its timestamp reaches the next ``1/fps`` tick (so it works with variable
    frame rate; a target above the source rate keeps every frame); it is ignored for images,
    which have no time axis. ``max_frames`` caps the number of frames yielded. ``threads`` is
    the decoder thread count (0: FFmpeg chooses; not an option). An image or video whose pictures
    have more than ``max_pixels`` pixels (None: no limit) is refused with :class:`ImageTooLarge`
    before any pixel is decoded (the size comes from the header / stream parameters).
    """

    every_n: int = opt(1, help="keep every n-th frame", ge=1)
    fps: float | None = opt(None, help="keep frames at this rate instead of every_n (videos)", gt=0)
    max_frames: int | None = opt(None, help="at most this many frames per item", ge=1)
    max_pixels: int | None = opt(DEFAULT_MAX_PIXELS, help="images and video frames with more pixels fail", ge=1)
    threads: int = 0

    def __post_init__(self) -> None:
        check_fields(self)
        if self.fps is not None and self.every_n != 1:
            raise ConfigError("set either every_n or fps, not both")
        if self.threads < 0:
            raise ConfigError(f"threads must be >= 0, got {self.threads!r}")

    def capped(self, max_frames: int | None) -> FrameConfig:
        """This sampling with ``max_frames`` capped at ``max_frames`` too (an item's own cap; None: none)."""
        caps = [c for c in (self.max_frames, max_frames) if c]
        return dataclasses.replace(self, max_frames=min(caps) if caps else None)


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` learns about an input without decoding it all.

    ``width``/``height`` are those of the frames :func:`iter_frames` yields (orientation
    applied). ``rotation`` is the display rotation in degrees counter-clockwise (videos: the
    display matrix, as ``av.VideoFrame.rotation``; images: the EXIF orientation), ``mirrored``
    whether the display transform also flips. ``frames`` is the container's frame count when it
    records one, else ``round(duration * fps)``; for a folder, the number of images.
    """

    path: str
    kind: str  # "video", "image" or "folder"
    frames: int
    fps: float | None
    duration: float | None  # seconds; None for images and folders
    width: int
    height: int
    rotation: int = 0
    mirrored: bool = False
    codec: str | None = None


# --------------------------------------------------------------------------- type detection


def _sniff(path: Path) -> str | None:
    """``"image"``, ``"video"`` or ``"audio"`` from the file's first bytes; None when unknown."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError:
        return None
    if head.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")):
        return "image"
    if head.startswith((b"II*\x00", b"MM\x00*", b"\x00\x00\x00\x0cjP  \r\n\x87\n")):
        return "image"
    if head[:4] == b"RIFF":
        return {b"WEBP": "image", b"AVI ": "video", b"WAVE": "audio"}.get(head[8:12])
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis", b"heic", b"heix", b"mif1", b"msf1"):
            return "image"
        if brand in (b"M4A ", b"M4B "):
            return "audio"
        return "video"
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free"):
        return "video"
    if head.startswith(
        (b"\x1a\x45\xdf\xa3", b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3", b"FLV", b"OggS",
         b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", b"YUV4MPEG2", b"DKIF")
    ):
        return "video"
    if len(head) > 376 and head[0] == head[188] == head[376] == 0x47:  # MPEG-TS sync bytes
        return "video"
    if head.startswith((b"ID3", b"fLaC")):
        return "audio"
    return None


def _kind(path: Path) -> str | None:
    """The content's kind when the first bytes tell it, else the extension's; None if neither."""
    sniffed = _sniff(path) if path.is_file() else None
    if sniffed is not None:
        return sniffed
    ext = path.suffix.lower()
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in VIDEO_EXTENSIONS:
        return "video"
    if ext in AUDIO_EXTENSIONS:
        return "audio"
    return None


def is_image_path(path: str | os.PathLike) -> bool:
    """True for a still image: by content when the file exists and its magic bytes are known,
    else by extension."""
    return _kind(Path(path)) == "image"


def is_video_path(path: str | os.PathLike) -> bool:
    """True for a video container: by content when the file exists and its magic bytes are
    known, else by extension (audio-only containers such as ``.m4a``/``.wav`` are not videos)."""
    return _kind(Path(path)) == "video"


def _natural_key(name: str) -> list:
    return [(0, int(tok), "") if tok.isdigit() else (1, 0, tok.lower()) for tok in re.split(r"(\d+)", name)]


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly in ``folder`` (not recursive, hidden files skipped), in natural
    name order."""
    folder = Path(folder)
    files = [
        p for p in folder.iterdir() if not p.name.startswith(".") and p.is_file() and is_image_path(p)
    ]
    return sorted(files, key=lambda p: _natural_key(p.name))


# --------------------------------------------------------------------------- images


#: pixels of a 16/32-bit or float image converted per block (bounds the conversion's scratch memory)
_BLOCK_PIXELS = 1 << 18


def _gray_blocks(im: Image.Image):
    """Row blocks of a single-band Pillow image as numpy arrays, about ``_BLOCK_PIXELS`` each."""
    w, h = im.size
    rows = max(1, _BLOCK_PIXELS // max(w, 1))
    for y in range(0, h, rows):
        yield y, np.asarray(im.crop((0, y, w, min(h, y + rows))))


def _gray_to_rgb8(im: Image.Image, scale) -> np.ndarray:
    """``(H, W, 3)`` uint8 of a single-band image, ``scale(block) -> uint8 block`` per row block.

    Converting block by block writes straight into the uint8 output: the scratch memory is one
    block, whatever the image size (a whole-image int64 copy of a 12000x12000 16-bit PNG is
    1.1 GB, and the clipping temporaries as much again).
    """
    w, h = im.size
    out = np.empty((h, w, 3), dtype=np.uint8)
    for y, block in _gray_blocks(im):
        out[y : y + len(block)] = scale(block)[..., None]
    return out


def _int_to_rgb8(im: Image.Image) -> np.ndarray:
    """16-bit grayscale: the high byte; 32-bit integer: as is up to 255, else scaled down (not clipped)."""
    if im.mode.startswith("I;16"):
        return _gray_to_rgb8(im, lambda b: (b >> 8).astype(np.uint8))
    top = int(im.getextrema()[1]) if im.size[0] * im.size[1] else 0
    if top <= 255:
        return _gray_to_rgb8(im, lambda b: np.clip(b, 0, 255).astype(np.uint8))
    if top <= 65535:
        return _gray_to_rgb8(im, lambda b: np.clip(b >> 8, 0, 255).astype(np.uint8))
    return _gray_to_rgb8(im, lambda b: (np.clip(b, 0, None).astype(np.int64) * 255 // top).astype(np.uint8))


def _float_to_rgb8(im: Image.Image) -> np.ndarray:
    """Float grayscale: ``[0, 1]`` when its maximum is at most 1, else ``[0, 255]``; NaN -> 0."""
    top = max((float(np.nanmax(b)) for _, b in _gray_blocks(im) if b.size and not np.isnan(b).all()), default=0.0)
    gain = 255.0 if top <= 1.0 else 1.0
    return _gray_to_rgb8(
        im, lambda b: np.clip(np.nan_to_num(b.astype(np.float64) * gain), 0, 255).round().astype(np.uint8)
    )


def _image_to_rgb8(im: Image.Image) -> np.ndarray:
    """Any Pillow image (orientation already applied) as ``(H, W, 3)`` uint8 RGB.

    16-bit and 32-bit integer grayscale are scaled down (not clipped); float images are taken
    as ``[0, 1]`` when their maximum is at most 1; transparent pixels are composited over
    black (0), the background value used throughout the pipeline. Integer and float grayscale
    are converted block by block, never widened whole (see :func:`_gray_to_rgb8`).
    """
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        return _int_to_rgb8(im)
    if mode == "F":
        return _float_to_rgb8(im)
    if "A" in mode or "a" in mode or (mode == "P" and "transparency" in im.info):
        rgba = np.asarray(im.convert("RGBA"), dtype=np.uint16)
        alpha = rgba[..., 3:4]
        return ((rgba[..., :3] * alpha + 127) // 255).astype(np.uint8)
    return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))


def _check_pixels(width: int, height: int, max_pixels: int | None, source: str) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLarge(
            f"{width}x{height} = {width * height / 1e6:.1f} megapixels, over the limit of "
            f"{max_pixels / 1e6:g} megapixels (raise it with --max-pixels)", source=source)


def read_image(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """One image file as ``(H, W, 3)`` uint8 RGB, EXIF orientation applied.

    Multi-frame files (GIF, multi-page TIFF) give their first frame. An image of more than
    ``max_pixels`` pixels (None: no limit) raises :class:`ImageTooLarge` after reading only its
    header (Pillow's own decompression-bomb refusal is reported the same way). Raises
    :class:`InputNotFound` or :class:`UnreadableImage` (naming the file and the decoder's
    complaint).
    """
    path = Path(path)
    if not path.exists():
        raise InputNotFound("no such image file", source=str(path))
    if path.is_file() and path.stat().st_size == 0:
        raise UnreadableImage("empty file (0 bytes)", source=str(path))
    try:
        with Image.open(path) as im:
            _check_pixels(*im.size, max_pixels, str(path))
            im.load()
            upright = ImageOps.exif_transpose(im)
            return _image_to_rgb8(upright)
    except (MemoryError, ImageTooLarge):
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"refused by Pillow as a decompression bomb ({exc})", source=str(path)) from exc
    except Exception as exc:  # Pillow raises OSError, ValueError, SyntaxError, struct.error...
        raise UnreadableImage(f"cannot decode image ({type(exc).__name__}: {exc})", source=str(path)) from exc


def _image_info(path: Path) -> tuple[int, int, int, bool]:
    """(width, height, rotation, mirrored) of an image with its EXIF orientation applied."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = int(im.getexif().get(0x0112, 1) or 1)
    except Exception as exc:
        raise UnreadableImage(f"cannot read image header ({type(exc).__name__}: {exc})", source=str(path)) from exc
    if orientation in (5, 6, 7, 8):
        w, h = h, w
    return w, h, _EXIF_ROTATION.get(orientation, 0), orientation in (2, 4, 5, 7)


# --------------------------------------------------------------------------- videos


@dataclass(frozen=True)
class _Orientation:
    """A right-angle display transform: transpose, then mirror left-right, then top-bottom."""

    transpose: bool = False
    flip_h: bool = False
    flip_v: bool = False

    def apply(self, img: np.ndarray) -> np.ndarray:
        if self.transpose:
            img = img.transpose(1, 0, 2)
        if self.flip_h:
            img = img[:, ::-1]
        if self.flip_v:
            img = img[::-1]
        return np.ascontiguousarray(img)

    @property
    def mirrored(self) -> bool:
        # transpose is itself a reflection; an odd number of reflections mirrors
        return (self.transpose + self.flip_h + self.flip_v) % 2 == 1


_UPRIGHT = _Orientation()


def _orientation_from_display_matrix(matrix: np.ndarray, source: str) -> _Orientation:
    """Display transform of FFmpeg's 3x3 display matrix (``AV_PKT_DATA_DISPLAYMATRIX``).

    FFmpeg maps a source pixel ``(x, y)`` to ``x' = a x + c y + u``, ``y' = b x + d y + v`` with
    ``[a b u c d v ...]`` the matrix in 16.16 fixed point. Only right angles are supported; other
    rotations are rounded to the nearest right angle with a warning.
    """
    a, b, c, d = (float(v) / 65536.0 for v in (matrix[0], matrix[1], matrix[3], matrix[4]))
    diagonal = abs(a) + abs(d) >= abs(b) + abs(c)
    if min(abs(a) + abs(d), abs(b) + abs(c)) > 1e-3:
        angle = math.degrees(math.atan2(b, a))
        logger.warning("%s: display rotation %.1f deg is not a right angle; rounded", source, angle)
    if diagonal:
        return _Orientation(False, a < 0, d < 0)
    return _Orientation(True, c < 0, b < 0)


def _frame_orientation(frame: av.VideoFrame, source: str) -> _Orientation:
    side = frame.side_data.get("DISPLAYMATRIX")
    if side is None:
        return _UPRIGHT
    matrix = np.frombuffer(bytes(side), dtype="<i4")
    if matrix.size < 9:
        return _UPRIGHT
    return _orientation_from_display_matrix(matrix, source)


def _open_video(path: Path) -> tuple[av.container.InputContainer, av.VideoStream]:
    """Open ``path`` and pick its first real video stream (cover art is skipped)."""
    source = str(path)
    try:
        container = av.open(source, mode="r", metadata_errors="ignore")
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise CorruptVideo(f"not a readable video file ({exc})", source=source) from exc
    attached = av.stream.Disposition.attached_pic
    videos = [s for s in container.streams.video if not (s.disposition & attached)]
    if not videos:
        kinds = sorted({s.type for s in container.streams})
        container.close()
        if "audio" in kinds:
            raise UnsupportedInput(
                f"no video stream in the file (streams: {', '.join(kinds)}): audio only", source=source
            )
        raise CorruptVideo(
            f"no video stream found (streams: {', '.join(kinds) or 'none'}); truncated or damaged file?",
            source=source,
        )
    return container, videos[0]


def _stream_duration(container: av.container.InputContainer, stream: av.VideoStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _stream_fps(stream: av.VideoStream) -> float | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    return None


class _Sampler:
    """Decides which source frames to keep (every_n, or the next ``1/fps`` tick)."""

    def __init__(self, cfg: FrameConfig, timed: bool):
        self.every_n = cfg.every_n
        self.fps = cfg.fps if timed else None
        self._next_tick = -math.inf

    def keep(self, index: int, timestamp: float) -> bool:
        if self.fps is None:
            return index % self.every_n == 0
        pos = timestamp * self.fps
        if pos + 1e-6 < self._next_tick:
            return False
        self._next_tick = math.floor(pos + 1e-6) + 1
        return True


def _iter_video(path: Path, cfg: FrameConfig) -> Iterator[Frame]:
    source = str(path)
    container, stream = _open_video(path)
    with container:
        _check_pixels(int(stream.codec_context.width or 0), int(stream.codec_context.height or 0),
                      cfg.max_pixels, source)
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = cfg.threads
        fps = _stream_fps(stream)
        t0 = float(stream.start_time * stream.time_base) if stream.start_time is not None else None
        sampler = _Sampler(cfg, timed=True)
        decoded = kept = 0
        frames = container.decode(stream)
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                break
            except av.FFmpegError as exc:
                if decoded == 0:
                    raise CorruptVideo(f"no frame could be decoded ({exc})", source=source) from exc
                logger.warning(
                    "%s: decoding stopped after %d frames (%s); keeping the frames before it",
                    source, decoded, exc,
                )
                break
            index = decoded
            decoded += 1
            if frame.time is not None:
                if t0 is None:
                    t0 = frame.time
                timestamp = frame.time - t0
            else:
                timestamp = index / fps if fps else 0.0
            if not sampler.keep(index, timestamp):
                continue
            image = _frame_orientation(frame, source).apply(frame.to_ndarray(format="rgb24"))
            yield Frame(image=image, index=index, timestamp=float(timestamp), source=source)
            kept += 1
            if cfg.max_frames is not None and kept >= cfg.max_frames:
                return
        if decoded == 0:
            raise CorruptVideo("no frame could be decoded (empty or truncated video stream)", source=source)
        duration = _stream_duration(container, stream)
        if duration and fps and timestamp + 2.0 / fps < duration:
            logger.warning(
                "%s: stream ended at %.2f s of the %.2f s the container declares (truncated file?)",
                source, timestamp, duration,
            )


def _iter_images(paths: list[Path], cfg: FrameConfig) -> Iterator[Frame]:
    if cfg.fps is not None:
        logger.debug("fps sampling does not apply to still images; every image is a frame")
    sampler = _Sampler(cfg, timed=False)
    kept = 0
    for index, p in enumerate(paths):
        if not sampler.keep(index, 0.0):
            continue
        yield Frame(image=read_image(p, cfg.max_pixels), index=index, timestamp=0.0, source=str(p))
        kept += 1
        if cfg.max_frames is not None and kept >= cfg.max_frames:
            return


# --------------------------------------------------------------------------- public API


def iter_frames(path: str | os.PathLike, cfg: FrameConfig | None = None) -> Iterator[Frame]:
    """Stream the frames of a video, an image file or a folder of images.

    Missing paths, empty files and image-less folders raise at once; decoding errors raise when
    iteration reaches them (see the module docstring). Frames are decoded one at a time, so a
    caller may stop early (``max_frames``, ``break``) without decoding the rest; the container is
    closed when the iterator is exhausted or closed.
    """
    cfg = cfg or FrameConfig()
    p = Path(path)
    if not p.exists():
        raise InputNotFound("no such file or folder", source=str(p))
    if p.is_dir():
        images = list_images(p)
        if not images:
            raise UnsupportedInput("folder contains no image files", source=str(p))
        return _iter_images(images, cfg)
    kind = _kind(p)
    if p.stat().st_size == 0:
        if kind == "image":
            raise UnreadableImage("empty file (0 bytes)", source=str(p))
        raise CorruptVideo("empty file (0 bytes)", source=str(p))
    if kind == "image":
        return _iter_images([p], cfg)
    if kind is None:
        return _iter_unknown(p, cfg)
    return _iter_video(p, cfg)


def _iter_unknown(path: Path, cfg: FrameConfig) -> Iterator[Frame]:
    """A file neither its name nor its first bytes identify: let FFmpeg try it."""
    try:
        yield from _iter_video(path, cfg)
    except CorruptVideo as exc:
        raise UnsupportedInput(
            f"not a recognised image or video file ({exc.args[0]})", source=str(path)
        ) from exc


def probe(path: str | os.PathLike) -> VideoInfo:
    """Frame count estimate, rate, duration, upright size and rotation of an input.

    For a video this opens the container and decodes its first frame (which also checks that it
    decodes); for images it reads the header only. Raises the same errors as
    :func:`iter_frames`.
    """
    p = Path(path)
    source = str(p)
    if not p.exists():
        raise InputNotFound("no such file or folder", source=source)
    if p.is_dir():
        images = list_images(p)
        if not images:
            raise UnsupportedInput("folder contains no image files", source=source)
        w, h, rot, mir = _image_info(images[0])
        return VideoInfo(source, "folder", len(images), None, None, w, h, rot, mir)
    kind = _kind(p)
    if kind == "image":
        if p.stat().st_size == 0:
            raise UnreadableImage("empty file (0 bytes)", source=source)
        w, h, rot, mir = _image_info(p)
        return VideoInfo(source, "image", 1, None, None, w, h, rot, mir)
    if p.stat().st_size == 0:
        raise CorruptVideo("empty file (0 bytes)", source=source)
    container, stream = _open_video(p)
    with container:
        fps = _stream_fps(stream)
        duration = _stream_duration(container, stream)
        try:
            first = next(container.decode(stream))
        except (StopIteration, av.FFmpegError) as exc:
            raise CorruptVideo(f"no frame could be decoded ({exc or 'empty stream'})", source=source) from exc
        orient = _frame_orientation(first, source)
        w, h = (first.height, first.width) if orient.transpose else (first.width, first.height)
        frames = int(stream.frames or 0)
        if frames <= 0 and duration and fps:
            frames = int(round(duration * fps))
        rotation = int(round(first.rotation or 0))
        return VideoInfo(
            source, "video", frames, fps, duration, w, h, rotation, orient.mirrored,
            stream.codec_context.name,
        )


__all__ = [
    "FrameConfig",
    "VideoInfo",
    "iter_frames",
    "probe",
    "read_image",
    "list_images",
    "is_image_path",
    "is_video_path",
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
]
