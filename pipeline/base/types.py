"""Small typed records passed between preprocessing stages.

Coordinate conventions (used by every stage):

* Images are ``(H, W, 3)`` ``uint8`` RGB, row-major; pixel ``(row=i, col=j)`` has its
  centre at ``x = j, y = i`` (OpenCV convention: x to the right, y downwards).
* Boxes are ``(x0, y0, x1, y1)`` in the same frame-pixel coordinates, ``x1 > x0``, ``y1 > y0``.
* Landmarks are ``(68, 2)`` ``float32`` ``(x, y)`` in frame pixels, iBUG-68 order
  (index 0 is iBUG point 1, index 30 is the nose tip, iBUG point 31).
* An affine is a ``(2, 3)`` ``float32`` matrix ``A`` mapping a frame point ``(x, y, 1)``
  to crop pixels: ``[u, v] = A @ [x, y, 1]``.
* Mesh vertices are ``(V, 3)``: ``x, y`` in the crop's pixels and ``z`` in the same pixel
  units, **larger z = closer to the camera**.
* Depth maps are ``(S, S)`` float in ``[0, 1]``: 0 is background (and every pixel of a
  spoof face), 1 the nearest face point; brighter = closer. See :mod:`pipeline.reconstruct.depth`
  for the far end.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


#: BlazeFace's six keypoints, in its order (the subject's right eye is on the image's left)
KEYPOINT_NAMES = ("right_eye", "left_eye", "nose", "mouth", "right_ear", "left_ear")


@dataclass(frozen=True)
class Frame:
    """One decoded frame (or one still image)."""

    image: np.ndarray  # (H, W, 3) uint8 RGB, rotation metadata already applied
    index: int  # frame index in the source (0-based, before sampling)
    timestamp: float  # seconds from the start of the stream (0.0 for images)
    source: str = ""  # path of the video or image


@dataclass(frozen=True)
class FaceBox:
    """A detected face in frame pixels.

    ``keypoints``: the detector's own ``(K, 2)`` face points in frame pixels when it gives them
    (BlazeFace: ``KEYPOINT_NAMES``), else None; not part of equality.
    """

    x0: float
    y0: float
    x1: float
    y1: float
    score: float = 1.0
    keypoints: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def size(self) -> float:
        """Side of the face: the geometric mean of width and height."""
        return float(np.sqrt(max(self.width, 0.0) * max(self.height, 0.0)))

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    def as_array(self) -> np.ndarray:
        return np.array([self.x0, self.y0, self.x1, self.y1], dtype=np.float32)

    def iou(self, other: "FaceBox") -> float:
        """Intersection over union of the two boxes (0 when either is empty)."""
        w = min(self.x1, other.x1) - max(self.x0, other.x0)
        h = min(self.y1, other.y1) - max(self.y0, other.y0)
        inter = max(w, 0.0) * max(h, 0.0)
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class Landmarks:
    """68 iBUG landmarks in frame pixels."""

    points: np.ndarray  # (68, 2) float32 (x, y)
    scores: np.ndarray | None = None  # (68,) confidence, when the backend gives one

    def __post_init__(self) -> None:
        if self.points.shape != (68, 2):
            raise ValueError(f"landmarks must be (68, 2), got {self.points.shape}")


@dataclass(frozen=True)
class Crop:
    """A square face crop and the affine that made it."""

    image: np.ndarray  # (S, S, 3) uint8 RGB
    affine: np.ndarray  # (2, 3) float32, frame -> crop pixels

    @property
    def size(self) -> int:
        return int(self.image.shape[0])


@dataclass
class FaceRecord:
    """Everything the pipeline knows about one face in one frame (before storage)."""

    frame: Frame
    box: FaceBox
    landmarks: Landmarks
    crop: Crop
    extra: dict = field(default_factory=dict)
