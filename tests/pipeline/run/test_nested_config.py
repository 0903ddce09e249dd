"""The preprocess config is nested per stage, flat outside (issue 12, item 3).

Flat values → config → ``output_config`` → JSON → ``from_dict`` gives the same config, each value
in its stage's group; every stage group refuses a bad value naming its flat name; a group can be
given whole. The stages' own rules now hold at the config (they disagreed before: a far value of
0 or 1, or ``every_n`` with ``fps``, passed the CLI and failed later).
"""

from __future__ import annotations

import json
import math

import pytest

from pipeline.base.errors import ConfigError
from pipeline.cli import main as cli
from pipeline.face.qc import QCConfig
from pipeline.run.config import PreprocessConfig
from tests.conftest import FACES

CHANGED = {"every_n": 3, "max_frames": 9, "detector": "dlib-hog", "landmarks": "fan2d", "score_threshold": 0.3,
           "min_face_size": 12.5, "size": 128, "crop_scale": 1.5, "fit_iterations": 7, "depth_far_value": 0.2,
           "qc_max_yaw": 30.0, "qc_confirm": False, "qc_drop": ["blurry", "small-face"]}


@pytest.mark.parametrize("values", [{}, CHANGED, {"fps": 4.0, "size": 64}], ids=["defaults", "changed", "fps"])
def test_flat_values_round_trip_through_the_stored_config(values):
    cfg = PreprocessConfig.flat(**values, device="cpu", batch_size=8, max_pixels=1000)
    stage = {"every_n": cfg.frames.every_n, "fps": cfg.frames.fps, "max_frames": cfg.frames.max_frames,
             "detector": cfg.detect.detector, "landmarks": cfg.detect.landmarks,
             "score_threshold": cfg.detect.score_threshold, "min_face_size": cfg.detect.min_face_size,
             "size": cfg.crop.size, "crop_scale": cfg.crop.crop_scale, "fit_iterations": cfg.fit.iterations,
             "depth_far_value": cfg.depth.far_value, "qc_max_yaw": cfg.qc.max_yaw, "qc_confirm": cfg.qc.confirm,
             "qc_drop": list(cfg.qc.drop)}
    assert {k: stage[k] for k in values} == values
    assert cfg.depth.size == cfg.crop.size  # labels at the crop's side
    out = json.loads(json.dumps(cfg.output_config()))  # as the store keeps it
    assert {k for k in out} == {"detector", "landmarks", "every_n", "fps", "max_frames", "size", "crop_scale",
                                "score_threshold", "min_face_size", "fit_iterations", "depth_far_value", "qc",
                                "kind", "label_version"}
    assert {k: out[k] for k in values if not k.startswith("qc_")} == {k: v for k, v in values.items()
                                                                      if not k.startswith("qc_")}
    assert {f"qc_{k}": out["qc"][k] for k in ("max_yaw", "confirm", "drop")} == \
        {k: stage[k] for k in ("qc_max_yaw", "qc_confirm", "qc_drop")}
    back = PreprocessConfig.from_dict({**out, "batch_size": 8, "max_pixels": 1000})
    assert back == cfg
    assert PreprocessConfig.from_dict(out) == PreprocessConfig.flat(**values)


@pytest.mark.parametrize("name, bad", [
    ("every_n", 0), ("every_n", 1.5), ("fps", -1.0), ("max_frames", 0), ("max_pixels", 0),  # frames
    ("detector", "nope"), ("landmarks", "nope"), ("min_face_size", -1.0), ("score_threshold", math.nan),  # detect
    ("size", 8), ("size", 64.5), ("crop_scale", 9.0),  # crop
    ("fit_iterations", 0), ("depth_far_value", 0.0), ("depth_far_value", 1.0),  # fit, depth
    ("qc_max_yaw", math.inf), ("qc_drop", ["wobbly"]),  # qc
    ("batch_size", 0), ("workers", -1),  # execution
])
def test_each_stage_refuses_a_bad_value_by_its_flat_name(name, bad):
    with pytest.raises(ConfigError, match=f"parameter '{name}'"):
        PreprocessConfig.flat(**{name: bad})


def test_a_stored_qc_dict_is_checked_by_flat_name():
    out = PreprocessConfig().output_config()
    with pytest.raises(ConfigError, match="parameter 'qc_min_blur'"):
        PreprocessConfig.from_dict({**out, "qc": {**out["qc"], "min_blur": math.nan}})


def test_a_group_given_whole():
    assert PreprocessConfig.flat(qc=QCConfig(max_yaw=30.0), size=64).qc.max_yaw == 30.0
    with pytest.raises(ConfigError, match="qc_max_yaw"):
        PreprocessConfig.flat(qc=QCConfig(), qc_max_yaw=30.0)
    with pytest.raises(ConfigError, match="must be a QCConfig"):
        PreprocessConfig.flat(qc={"max_yaw": 30.0})
    with pytest.raises(ConfigError, match="sise"):
        PreprocessConfig.flat(sise=64)


def test_every_n_with_fps_is_refused_before_any_work(tmp_path, capsys):
    """Before, the config took both and every item failed later, inside the run."""
    store = tmp_path / "store.zarr"
    code = cli(["preprocess", "--input", str(FACES), "--output", str(store), "--every-n", "2", "--fps", "5"])
    err = capsys.readouterr().err
    assert code != 0 and "either every_n or fps" in err and "Traceback" not in err
    assert not store.exists() and list(tmp_path.iterdir()) == []
