"""The preprocess configuration: one group of options per stage (:mod:`pipeline.base.options`).

:class:`PreprocessConfig` is what the core runs with. It holds each stage's own config, declared
in the stage's module: :class:`~pipeline.io.frames.FrameConfig` (``frames``: sampling, pixel
limit), :class:`~pipeline.face.config.DetectConfig` (``detect``: backends, detector thresholds),
:class:`~pipeline.face.crop.CropConfig` (``crop``), :class:`~pipeline.reconstruct.fit.FitConfig`
(``fit``), :class:`~pipeline.reconstruct.depth.DepthConfig` (``depth``) and
:class:`~pipeline.face.qc.QCConfig` (``qc``), plus where and how it runs (device, model
directory, batch size, workers). A stage function takes its own group (``iter_frames(path,
cfg.frames)``, ``crop_face(..., cfg.crop)``). The ``preprocess`` CLI flags and the flow's flat
parameters are generated from it and from :class:`PreprocessRun` (what to read and where to
write), so a default, a description, a closed set of names or a bound exists only in the stage.

Outside, the options stay flat: the groups' flat names are the field names (``--size``,
``every_n``), prefixed for ``fit`` (``fit_iterations``), ``depth`` (``depth_far_value``) and
``qc`` (``qc_min_face_size``). :meth:`PreprocessConfig.flat` builds one from those names.
The depth labels are rendered at the crop's side: ``depth.size`` follows ``crop.size``.

``output_config()`` is the part that decides the stored arrays: its canonical JSON is hashed
into the store's manifest (resume, refusing mixed configurations), so its form (flat fields in
the order stores have always had, the QC thresholds as one ``qc`` dict, ``kind``,
``label_version``) must not change. ``label_version``
(:data:`pipeline.reconstruct.LABEL_VERSION`) is not an option: it says what the depth labels mean,
so a store of older labels is refused by the resume check (``from_dict``) and the flow's cache
key changes with it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Any

from pipeline.base.errors import ConfigError
from pipeline.base.options import build, check_device, check_fields, flat_fields, group, opt
from pipeline.datasets import list_adapters
from pipeline.face.config import DetectConfig
from pipeline.face.crop import CropConfig
from pipeline.face.qc import QCConfig
from pipeline.io.frames import FrameConfig
from pipeline.reconstruct import LABEL_VERSION
from pipeline.reconstruct.depth import DepthConfig
from pipeline.reconstruct.fit import FitConfig

#: the order of the stored config's keys (stores written before the stages were nested have it;
#: the hash sorts the keys, the store's attributes keep them as written)
STORED_ORDER = ("detector", "landmarks", "every_n", "fps", "max_frames", "size", "crop_scale", "score_threshold",
                "min_face_size", "fit_iterations", "depth_far_value")


@dataclass(frozen=True)
class PreprocessConfig:
    """Everything that decides what the preprocessing writes (plus where/how it runs)."""

    frames: FrameConfig = group(FrameConfig, "")
    detect: DetectConfig = group(DetectConfig, "")
    crop: CropConfig = group(CropConfig, "")
    fit: FitConfig = group(FitConfig, "fit")
    depth: DepthConfig = group(DepthConfig, "depth")
    qc: QCConfig = group(QCConfig, "qc")
    # --- execution only (not part of the output config) ---
    device: str = opt("cpu", help="torch device: cpu | cuda | cuda:N")
    model_dir: str | None = opt(None, help="model directory (default $DEPTHSEG_MODEL_DIR, else ../shared/models)")
    batch_size: int = opt(64, help="faces per batched fit+render", ge=1)
    workers: int = opt(0, help="decode/detect/landmark worker processes (0: sequential in-process)", ge=0,
                       flow=False)

    #: flat options that do not change the stored arrays (the frames' pixel limit only refuses inputs)
    EXECUTION_ONLY = ("device", "model_dir", "batch_size", "workers", "max_pixels")

    def __post_init__(self) -> None:
        check_fields(self)
        check_device(self.device)
        if self.depth.size != self.crop.size:  # labels are rendered at the crop's side
            object.__setattr__(self, "depth", dataclasses.replace(self.depth, size=self.crop.size))

    @classmethod
    def flat(cls, **values: Any) -> PreprocessConfig:
        """A config from flat option names (``size=128, qc_max_yaw=30``) and/or whole groups by
        field name (``qc=QCConfig(...)``); an unknown name is a ConfigError."""
        return build(cls, values, strict=True)

    def flat_values(self) -> dict[str, Any]:
        """Every option by its flat name (tuples as lists, as JSON has them)."""
        out = {}
        for fl in flat_fields(type(self)):
            value: Any = self
            for name in fl.path:
                value = getattr(value, name)
            out[fl.name] = list(value) if isinstance(value, tuple) else value
        return out

    def output_config(self) -> dict:
        qc = {f"qc_{k}" for k in asdict(self.qc)}
        values = {k: v for k, v in self.flat_values().items() if k not in self.EXECUTION_ONLY and k not in qc}
        out = {k: values.pop(k) for k in STORED_ORDER if k in values}
        out.update(values)
        out["qc"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.qc).items()}
        out["kind"] = "depthseg-fas/preprocess"
        out["label_version"] = LABEL_VERSION
        return out

    @classmethod
    def from_dict(cls, data: dict) -> PreprocessConfig:
        """The config of a stored ``output_config()`` (flat names, ``qc`` a dict), plus any
        execution options by their flat names."""
        data = dict(data)
        data.pop("kind", None)
        version = data.pop("label_version", LABEL_VERSION)
        if version != LABEL_VERSION:
            raise ConfigError(f"config of label version {version!r}: this code writes labels of version "
                              f"{LABEL_VERSION} (see pipeline.reconstruct.depth); use a new store")
        if isinstance(data.get("qc"), dict):
            data.update({f"qc_{k}": v for k, v in data.pop("qc").items()})
        return cls.flat(**data)


@dataclass(frozen=True)
class PreprocessRun:
    """What a preprocess run reads and writes, and how the items are found (CLI and flow)."""

    input: str = opt(help="a video/image, a folder, a CSV manifest or a dataset root")
    output: str = opt(help="store path (local folder or fsspec URL, s3://...)")
    manifest: str | None = opt(None, help="CSV: path,label,attack_type,subject,session,device,split")
    dataset: str | None = opt(None, help="dataset adapter for input", choices=list_adapters)
    allow_outside_root: bool = opt(False, help="accept CSV paths outside the input root")
    protocol: str | None = opt(None, help="only the items this protocol uses, all folds unless one is named "
                                          "(oulu-npu-p3, siw-p1, cross-dataset:target=oulu-npu; see `datasets`)")
    replace: bool = opt(False, help="replace a part committed from another input under the same part id "
                                    "(default: that item fails with reason part-conflict)")
    report: str | None = opt(None, help="run report JSON path (default <output>.report.json beside the store)")
    config: PreprocessConfig = group(PreprocessConfig, "")

    def __post_init__(self) -> None:
        check_fields(self)
