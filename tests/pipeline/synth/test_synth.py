"""The synthetic live/print/replay sample set (:mod:`pipeline.synth`, the ``synth`` CLI).

Real behaviour on real data: the faces come from the shared portraits, scikit-image's astronaut
and insightface's group photo; videos are decoded with PyAV; faces are found with the project's
BlazeFace detector and dlib landmarks.
"""

from __future__ import annotations

import csv
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from pipeline.base.errors import ConfigError
from pipeline.synth.generator import SynthGenerator, generate
from pipeline.synth.plan import CLIP_NAMES, MANIFEST_COLUMNS, ClipSpec, IdentityPlan, SynthConfig, plan_identities
from pipeline.synth.sources import load_sources

from tests.conftest import MODELS, SHARED

SMALL = dict(identities=3, seed=0, seconds=1.0, fps=10.0, shared_dir=str(SHARED), model_dir=str(MODELS))


@pytest.fixture(scope="module")
def sources(shared_dir):
    return load_sources(SynthConfig(shared_dir=str(shared_dir), model_dir=str(MODELS)))


@pytest.fixture(scope="module")
def small_gen(sources):
    from pipeline.reconstruct.sfm import load_sfm

    cfg = SynthConfig(**SMALL)
    return SynthGenerator(cfg, sources, load_sfm(str(MODELS)).to_torch("cpu", torch.float32))


@pytest.fixture(scope="module")
def small_run(small_gen, tmp_path_factory):
    out = tmp_path_factory.mktemp("synth_small")
    return generate(small_gen.cfg, out, generator=small_gen)


def _decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def _manifest(run) -> list[dict[str, str]]:
    with open(run.manifest, newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == MANIFEST_COLUMNS
        return list(reader)


# ----------------------------------------------------------------------------- sources and plan


@pytest.mark.slow  # dlib on every source photo (~10 s)
def test_sources_are_distinct_real_faces(sources):
    people = {s.person for s in sources}
    names = [s.name for s in sources]
    assert {"obama", "biden", "astronaut", "padlive"} <= people
    assert sum(n.startswith("t1-") for n in names) >= 4  # faces of the insightface group photo
    assert len(people) >= 8
    # obama2.jpg is another photo of the same person; the 240p/1080p copies are not used
    assert next(s for s in sources if s.name == "obama2").person == "obama"
    assert not any("240p" in s.origin or "1080p" in s.origin for s in sources)
    for s in sources:
        h, w = s.image.shape[:2]
        assert s.image.dtype == np.uint8 and s.landmarks.shape == (68, 2)
        assert (s.landmarks >= 0).all() and (s.landmarks[:, 0] < w).all() and (s.landmarks[:, 1] < h).all()
        # eyes above the nose tip above the chin: an upright face
        assert s.landmarks[36:48, 1].mean() < s.landmarks[30, 1] < s.landmarks[8, 1]


@pytest.mark.slow  # dlib on every source photo (~10 s)
def test_identity_plan_derivatives_and_person_disjoint_splits(sources):
    n_people = len({s.person for s in sources})
    plan = plan_identities(sources, 12, seed=0)
    assert len(plan) == 12 and len({p.subject for p in plan}) == 12
    assert len({p.person for p in plan}) == n_people
    derived = [p for p in plan if p.derived]
    assert len(derived) == 12 - n_people
    for p in derived:  # a derivative is visibly different and named after its person
        assert p.subject.startswith(p.person + "-d")
        assert abs(p.hue_shift) > 1 and len(p.shape_offset) > 0
    first_obama_derivative = next(p for p in plan if p.person == "obama" and p.derived)
    assert first_obama_derivative.source == "obama2"  # the person's second photo is used
    counts = {s: sum(p.split == s for p in plan) for s in ("train", "dev", "test")}
    assert counts == {"train": 6, "dev": 3, "test": 3}
    split_of_person: dict[str, set[str]] = {}
    for p in plan:
        split_of_person.setdefault(p.person, set()).add(p.split)
    assert all(len(v) == 1 for v in split_of_person.values())  # people never straddle splits
    other = plan_identities(sources, 12, seed=5)
    assert [(p.split, p.hue_shift) for p in other] != [(p.split, p.hue_shift) for p in plan]


def test_config_validation():
    with pytest.raises(ConfigError, match="identities"):
        SynthConfig(identities=0)
    with pytest.raises(ConfigError, match="width"):
        SynthConfig(width=321)
    with pytest.raises(ConfigError, match="seconds"):
        SynthConfig(seconds=0)
    with pytest.raises(ConfigError, match="clip name"):
        ClipSpec(IdentityPlan(0, "x", "x", "x"), "mask1")
    with pytest.raises(ConfigError, match="workers"):
        generate(SynthConfig(), "/nonexistent", workers=0)


# ----------------------------------------------------------------------------- rasteriser


# ----------------------------------------------------------------------------- generated set


@pytest.mark.slow  # renders and encodes 15 clips
def test_manifest_counts_labels_and_subject_disjoint_splits(small_run):
    rows = _manifest(small_run)
    assert len(rows) == 3 * len(CLIP_NAMES)
    by_subject: dict[str, list[dict]] = {}
    for r in rows:
        by_subject.setdefault(r["subject"], []).append(r)
        assert (small_run.out_dir / r["path"]).is_file() and not Path(r["path"]).is_absolute()
        assert (r["label"], r["attack_type"]) in {("live", "none"), ("spoof", "print"), ("spoof", "replay")}
    assert len(by_subject) == 3
    for subject_rows in by_subject.values():
        kinds = sorted(r["attack_type"] for r in subject_rows)
        assert kinds == ["none", "print", "print", "replay", "replay"]
        assert len({r["split"] for r in subject_rows}) == 1
    splits = {r["split"] for r in rows}
    assert splits == {"train", "dev", "test"}  # 3 identities -> one per split
    for a in splits:
        for b in splits - {a}:
            sa = {r["subject"] for r in rows if r["split"] == a}
            sb = {r["subject"] for r in rows if r["split"] == b}
            assert not sa & sb


@pytest.mark.slow  # renders and encodes 15 clips
def test_generic_csv_adapter_reads_the_manifest(small_run):
    from pipeline.io.inputs import collect_items

    inputs = collect_items(small_run.manifest)
    assert not inputs.rejected
    rows = {str((small_run.out_dir / r["path"]).resolve()): r for r in _manifest(small_run)}
    assert len(inputs.items) == len(rows) == 15
    for item in inputs.items:
        r = rows[str(Path(item.path).resolve())]
        assert (item.label, item.attack_type, item.subject, item.split) == (
            r["label"], r["attack_type"], r["subject"], r["split"])


@pytest.mark.slow  # renders and encodes 15 clips
def test_videos_decode_with_frame_count_and_size(small_run):
    cfg = SynthConfig(**SMALL)
    for r in _manifest(small_run):
        frames = _decode(small_run.out_dir / r["path"])
        assert len(frames) == cfg.num_frames == 10
        assert frames[0].shape == (cfg.height, cfg.width, 3)


@pytest.mark.slow  # renders and encodes 15 clips
def test_blazeface_finds_the_face_in_95_percent_of_frames(small_run):
    from pipeline.face.detect import create_detector

    det = create_detector("blazeface", model_dir=str(MODELS))
    hits: dict[str, list[bool]] = {"none": [], "print": [], "replay": []}
    heights = []
    for r in _manifest(small_run):
        frames = _decode(small_run.out_dir / r["path"])
        for boxes in det.detect_batch(frames):
            hits[r["attack_type"]].append(bool(boxes))
            if boxes:
                heights.append(max(boxes, key=lambda b: b.area).height / frames[0].shape[0])
    for kind, h in hits.items():
        assert np.mean(h) >= 0.95, (kind, np.mean(h))
    assert 0.3 <= np.median(heights) <= 0.7  # faces reasonably large in the frame


# ----------------------------------------------------------------------------- determinism


@pytest.mark.slow  # renders clips
def test_same_seed_same_frames_and_other_seed_differs(small_gen, sources):
    cfg = SynthConfig(**{**SMALL, "seconds": 0.6})
    gen = SynthGenerator(cfg, sources, small_gen.sfm)
    ident = gen.identities[0]
    names = ("live", "print1", "replay2")
    first = [gen.render(ClipSpec(ident, n)) for n in names]
    gen.release()  # prepare the identity again from scratch
    second = [gen.render(ClipSpec(ident, n)) for n in names]
    for name, a, b in zip(names, first, second):
        assert a.dtype == np.uint8 and a.shape == (6, 240, 320, 3)
        assert np.array_equal(a, b), name
    fresh = SynthGenerator(cfg, sources, small_gen.sfm)  # a new generator, same seed
    assert np.array_equal(fresh.render(ClipSpec(fresh.identities[0], "replay2")), first[2])
    other = SynthGenerator(SynthConfig(**{**SMALL, "seconds": 0.6, "seed": 1}), sources, small_gen.sfm)
    c = other.render(ClipSpec(other.identities[0], "replay2"))
    assert other.identities[0].person == ident.person
    assert np.abs(c.astype(np.int16) - first[2].astype(np.int16)).mean() > 5


# ----------------------------------------------------------------------------- geometry


def _landmarks(frames: list[np.ndarray]) -> list[np.ndarray]:
    from pipeline.face.detect import create_detector
    from pipeline.face.landmarks import create_landmarker

    det = create_detector("dlib-hog", upsample=0)
    lmk = create_landmarker("dlib68")
    out = []
    for f in frames:
        boxes = det.detect(f)
        if boxes:
            out.append(lmk.landmarks(f, max(boxes, key=lambda b: b.area)).points.astype(np.float64))
    return out


#: iBUG points roughly on one plane of the face (brows, eyes, outer mouth) and the nose
_FACE_PLANE = np.r_[17:27, 36:48, 48:60]
_NOSE = np.r_[27:36]


def _nose_parallax(pts: list[np.ndarray]) -> float:
    """Largest, over frame pairs, mean distance (in inter-ocular distances) between the nose
    landmarks and where the homography of the face-plane landmarks puts them. A flat picture
    moved around keeps the nose on that homography (only landmark noise remains); a head that
    turns in 3D moves the nose off it (parallax)."""
    worst = 0.0
    for i in range(len(pts)):
        for j in range(i + 1, len(pts)):
            h, _ = cv2.findHomography(pts[i][_FACE_PLANE], pts[j][_FACE_PLANE], 0)
            pred = cv2.perspectiveTransform(pts[i][_NOSE][None], h)[0]
            iod = np.linalg.norm(pts[j][36:42].mean(0) - pts[j][42:48].mean(0))
            worst = max(worst, float(np.linalg.norm(pred - pts[j][_NOSE], axis=1).mean() / iod))
    return worst


@pytest.mark.slow  # renders clips
def test_live_face_turns_in_3d_while_the_print_stays_planar(sources, small_gen):
    cfg = SynthConfig(**{**SMALL, "seconds": 2.0, "fps": 5.0})
    gen = SynthGenerator(cfg, sources, small_gen.sfm)
    ident = gen.identities[0]
    live = _landmarks(list(gen.render(ClipSpec(ident, "live"))))
    prnt = _landmarks(list(gen.render(ClipSpec(ident, "print1"))))
    assert len(live) >= 9 and len(prnt) >= 9
    # the head really moves: landmarks change between frames
    motion = max(np.abs(p - live[0]).mean() for p in live[1:])
    assert motion > 3.0
    p_live, p_print = _nose_parallax(live), _nose_parallax(prnt)
    # a 20 deg head turn moves the nose tip ~0.1 inter-ocular distances off the face plane
    assert p_live > 0.045 and p_live > 1.8 * p_print, (p_live, p_print)


# ----------------------------------------------------------------------------- CLI


@pytest.mark.slow  # the CLI in a subprocess, renders and encodes
def test_cli_synth_writes_videos_and_manifest(tmp_path, capsys):
    from pipeline.cli import main

    out = tmp_path / "set"
    rc = main(["synth", "--out", str(out), "--identities", "2", "--seed", "3", "--seconds", "0.4",
               "--size", "256x192", "--workers", "2", "--model-dir", str(MODELS), "--shared-dir", str(SHARED)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "manifest:" in text and "10 clips" in text
    rows = list(csv.DictReader(open(out / "manifest.csv", newline="")))
    assert len(rows) == 10
    frames = _decode(out / rows[0]["path"])
    assert len(frames) == 6 and frames[0].shape == (192, 256, 3)
    with pytest.raises(SystemExit):
        main(["synth", "--out", str(out), "--size", "big"])


def test_cli_flags_come_from_the_config(tmp_path, capsys):
    """The synth flags, their defaults and bounds are SynthConfig's (one declaration): the parsed
    defaults build the default config, and an out-of-range value stops at parse time, naming it."""
    from pipeline.base.options import build
    from pipeline.cli import build_parser, main

    args = build_parser().parse_args(["synth", "--out", str(tmp_path / "set")])
    width, height = args.size
    assert build(SynthConfig, dict(vars(args), width=width, height=height)) == SynthConfig()
    args = build_parser().parse_args(["synth", "--out", "x", "--identities", "3", "--size", "256x192",
                                      "--crf", "30", "--fps", "10", "--model-dir", "m"])
    cfg = build(SynthConfig, dict(vars(args), width=256, height=192))
    assert (cfg.identities, cfg.crf, cfg.fps, cfg.model_dir) == (3, 30, 10.0, "m")
    for flag, value, bound in (("--crf", "60", "<= 51"), ("--identities", "0", ">= 1"), ("--seconds", "0", "> 0")):
        with pytest.raises(SystemExit) as exc:
            main(["synth", "--out", str(tmp_path / "set"), flag, value])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert f"parameter '{flag[2:]}': must be {bound}" in err, err
    assert not (tmp_path / "set").exists()
