"""``FaceBatch``: the faces of an item's sampled frames, one face per frame, as parallel arrays.

What the face stage hands the fit and the writer, and what a worker process sends the main
process (it pickles as a handful of arrays). Coordinates follow :mod:`pipeline.base.types`:
boxes and landmarks in frame pixels, the affine maps frame pixels to crop pixels.
:meth:`FaceBatch.crop_landmarks` is the one place landmarks are taken to crop pixels (what
the 3D fit works in); :func:`rebatch` is the one place faces are cut into device batches.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields

import numpy as np

from pipeline.base.types import Crop, FaceBox, Frame, Landmarks
from pipeline.face.crop import transform_points


@dataclass(frozen=True)
class FaceBatch:
    """``N`` faces in frame order (``N >= 1``).

    Attributes:
        image: ``(N, S, S, 3)`` uint8 RGB crops.
        landmarks: ``(N, 68, 2)`` float32 ``(x, y)``, frame pixels.
        bbox: ``(N, 4)`` float32 ``(x0, y0, x1, y1)``, frame pixels.
        affine: ``(N, 2, 3)`` float32, frame pixels → crop pixels.
        det_score: ``(N,)`` float32 detector confidence.
        face_size: ``(N,)`` float32 side of the box (frame pixels, ``FaceBox.size``).
        frame_index: ``(N,)`` int64 index of the frame in its source (before sampling).
        timestamp: ``(N,)`` float64 seconds from the start of the stream.
        source: ``(N,)`` object (str) path of the video or image each face comes from.
    """

    image: np.ndarray
    landmarks: np.ndarray
    bbox: np.ndarray
    affine: np.ndarray
    det_score: np.ndarray
    face_size: np.ndarray
    frame_index: np.ndarray
    timestamp: np.ndarray
    source: np.ndarray

    @classmethod
    def single(cls, frame: Frame, box: FaceBox, landmarks: Landmarks, crop: Crop) -> FaceBatch:
        """The batch of one face: ``box`` of ``frame`` with its landmarks and crop."""
        return cls(
            image=crop.image[None], landmarks=landmarks.points.astype(np.float32)[None],
            bbox=box.as_array()[None], affine=crop.affine.astype(np.float32)[None],
            det_score=np.array([box.score], dtype=np.float32), face_size=np.array([box.size], dtype=np.float32),
            frame_index=np.array([frame.index], dtype=np.int64), timestamp=np.array([frame.timestamp], dtype=np.float64),
            source=np.array([frame.source], dtype=object),
        )

    @classmethod
    def concat(cls, batches: list[FaceBatch]) -> FaceBatch:
        """The faces of ``batches``, in order."""
        if len(batches) == 1:
            return batches[0]
        return cls(**{f.name: np.concatenate([getattr(b, f.name) for b in batches]) for f in fields(cls)})

    def __len__(self) -> int:
        return len(self.image)

    def take(self, index: slice | np.ndarray) -> FaceBatch:
        """The faces selected by ``index`` (a slice or a boolean / integer array)."""
        return FaceBatch(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def crop_landmarks(self) -> np.ndarray:
        """``(N, 68, 2)`` float32 landmarks in crop pixels (``affine`` applied): the fit's input."""
        return transform_points(self.affine, self.landmarks)


class Rebatcher:
    """Cuts a stream of faces, pushed in batches of any size, into batches of exactly ``size``
    faces (the last one, from :meth:`flush`, shorter). The one place faces are batched for the
    device: every path (in-process, pipelined, prediction) gives the 3D fit faces
    ``k*size .. (k+1)*size - 1`` of an item per call, whatever the chunks they arrived in.
    """

    def __init__(self, size: int):
        self.size = size
        self._pending: list[FaceBatch] = []
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def push(self, batch: FaceBatch) -> list[FaceBatch]:
        """Add ``batch``; returns the whole batches now complete."""
        self._pending.append(batch)
        self._count += len(batch)
        out = []
        while self._count >= self.size:
            whole = FaceBatch.concat(self._pending)
            out.append(whole.take(slice(0, self.size)))
            self._count -= self.size
            self._pending = [whole.take(slice(self.size, None))] if self._count else []
        return out

    def flush(self) -> list[FaceBatch]:
        """The faces left (fewer than ``size``), as one batch; empties the rebatcher."""
        out = [FaceBatch.concat(self._pending)] if self._count else []
        self._pending, self._count = [], 0
        return out


def rebatch(batches: Iterable[FaceBatch], size: int) -> Iterator[FaceBatch]:
    """``batches`` cut into batches of exactly ``size`` faces, the last one shorter (:class:`Rebatcher`)."""
    cutter = Rebatcher(size)
    for batch in batches:
        yield from cutter.push(batch)
    yield from cutter.flush()
