"""The preprocess configuration: each option declared once (:mod:`pipeline.base.options`).

:class:`PreprocessConfig` is what the core runs with; the ``preprocess`` CLI flags and the
``preprocess`` flow's flat parameters are generated from it and from :class:`PreprocessRun`
(what to read and where to write), so a default, a description, a closed set of names or a
bound exists only here. QC thresholds are the nested :class:`~pipeline.face.qc.QCConfig`
(flat names ``qc_*``).

``output_config()`` is the part that decides the stored arrays: its canonical JSON is hashed
into the store's manifest (resume, refusing mixed configurations), so its form (flat fields, the
QC thresholds as one ``qc`` dict, ``kind``) must not change.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from pipeline.base.options import check_device, check_fields, group, opt
from pipeline.datasets import list_adapters
from pipeline.face.crop import CropConfig
from pipeline.face.detect import DETECTORS
from pipeline.face.landmarks import LANDMARKERS
from pipeline.face.qc import QCConfig
from pipeline.io.frames import DEFAULT_MAX_PIXELS, FrameConfig
from pipeline.io.items import WorkItem

@dataclass(frozen=True)
class PreprocessConfig:
    """Everything that decides what the preprocessing writes (plus where/how it runs)."""

    detector: str = opt("blazeface", help="face detector", choices=DETECTORS.names)
    landmarks: str = opt("dlib68", help="68-point landmark detector", choices=LANDMARKERS.names)
    every_n: int = opt(1, help="keep every n-th frame", ge=1)
    fps: float | None = opt(None, help="keep frames at this rate instead of every_n (videos)", gt=0)
    max_frames: int | None = opt(None, help="at most this many frames per item", ge=1)
    size: int = opt(256, help="crop side in pixels", ge=16, le=1024)
    crop_scale: float = opt(1.3, help="crop side / face box side", ge=0.5, le=4.0)
    score_threshold: float | None = opt(None, help="detector score threshold (none: the detector's own)")
    min_face_size: float = opt(32.0, help="smallest face box side the detector keeps, pixels")
    fit_iterations: int = opt(5, help="iterations of the 3D model fit", ge=1)
    depth_far_value: float = opt(0.1, help="depth of the farthest visible face point (0-1)", ge=0, le=1)
    qc: QCConfig = group(QCConfig, "qc")
    # --- execution only (not part of the output config) ---
    device: str = opt("cpu", help="torch device: cpu | cuda | cuda:N")
    model_dir: str | None = opt(None, help="model directory (default $DEPTHSEG_MODEL_DIR, else ../shared/models)")
    batch_size: int = opt(64, help="faces per batched fit+render", ge=1)
    workers: int = opt(0, help="decode/detect/landmark worker processes (0: sequential in-process)", ge=0,
                       flow=False)
    max_pixels: int | None = opt(DEFAULT_MAX_PIXELS, help="images and video frames with more pixels fail",
                                 ge=1)

    EXECUTION_ONLY = ("device", "model_dir", "batch_size", "workers", "max_pixels")

    def __post_init__(self) -> None:
        check_fields(self)
        check_device(self.device)

    def frame_config(self, item: WorkItem) -> FrameConfig:
        """Frame sampling for ``item``: this config's, capped by the item's own ``max_frames``."""
        caps = [c for c in (self.max_frames, item.max_frames) if c]
        return FrameConfig(every_n=self.every_n, fps=self.fps, max_frames=min(caps) if caps else None,
                           max_pixels=self.max_pixels)

    def crop_config(self) -> CropConfig:
        return CropConfig(size=self.size, crop_scale=self.crop_scale)

    def output_config(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in self.EXECUTION_ONLY}
        out["qc"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.qc).items()}
        out["kind"] = "depthseg-fas/preprocess"
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "PreprocessConfig":
        data = dict(data)
        data.pop("kind", None)
        if isinstance(data.get("qc"), dict):
            qc = dict(data["qc"])
            if "drop" in qc:
                qc["drop"] = tuple(qc["drop"])
            data["qc"] = QCConfig(**qc)
        return cls(**data)


@dataclass(frozen=True)
class PreprocessRun:
    """What a preprocess run reads and writes, and how the items are found (CLI and flow)."""

    input: str = opt(help="a video/image, a folder, a CSV manifest or a dataset root")
    output: str = opt(help="store path (local folder or fsspec URL, s3://...)")
    manifest: str | None = opt(None, help="CSV: path,label,attack_type,subject,session,device,split")
    dataset: str | None = opt(None, help="dataset adapter for input", choices=list_adapters)
    allow_outside_root: bool = opt(False, help="accept CSV paths outside the input root")
    replace: bool = opt(False, help="replace a part committed from another input under the same part id "
                                    "(default: that item fails with reason part-conflict)")
    report: str | None = opt(None, help="run report JSON path (default <output>.report.json beside the store)")
    config: PreprocessConfig = group(PreprocessConfig, "")

    def __post_init__(self) -> None:
        check_fields(self)
