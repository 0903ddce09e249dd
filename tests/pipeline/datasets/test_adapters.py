"""Dataset adapters: miniature trees with each dataset's official names, made from one tiny
real video (a shared portrait, 4 frames, 32x32) hard-linked under every name."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path

import pytest

from pipeline.datasets import (
    create_adapter,
    datasets_command,
    format_scan_summary,
    list_adapters,
    scan_dataset,
)
from pipeline.base.errors import DatasetLayoutError, InputNotFound
from tests.helpers.dataset_trees import (
    MSU_TRAIN,
    OULU_FOLDERS,
    REPLAY_SPLITS,
    SIW_TRAIN,
    build_casia,
    build_msu,
    build_oulu,
    build_replay,
    build_siw,
    make_tiny_image,
    make_tiny_video,
    oulu_split_of,
    place,
)

# ----------------------------------------------------------------------------- builders
# (also used by tests/pipeline/datasets/test_protocols.py)


@pytest.fixture(scope="module")
def tiny_video(tmp_path_factory) -> Path:
    return make_tiny_video(tmp_path_factory.mktemp("src") / "tiny.mp4")


def _rel(scan, item_or_path) -> str:
    p = item_or_path if isinstance(item_or_path, str) else item_or_path.path
    return os.path.relpath(p, scan.root).replace(os.sep, "/")


def _rejected(scan) -> dict[str, str]:
    return {_rel(scan, p): why for p, why in scan.rejected}


# ----------------------------------------------------------------------------- registry


def test_registry_lists_every_adapter_and_rejects_unknown_names(tmp_path):
    assert set(list_adapters()) >= {
        "oulu-npu", "siw", "casia-fasd", "replay-attack", "msu-mfsd", "celeba-spoof", "csv", "folder"
    }
    with pytest.raises(KeyError, match="oulu-npu"):
        create_adapter("oulu")
    with pytest.raises(InputNotFound, match="does not exist"):
        scan_dataset("oulu-npu", tmp_path / "nope")


def test_tiny_video_is_a_real_decodable_video(tiny_video):
    import av

    with av.open(str(tiny_video)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 4 and frames[0].shape == (32, 32, 3)
    assert frames[0].std() > 10  # a face, not a flat frame


# ----------------------------------------------------------------------------- OULU-NPU


@pytest.fixture(scope="module")
def oulu_root(tmp_path_factory, tiny_video) -> Path:
    root = build_oulu(tmp_path_factory.mktemp("oulu"), tiny_video)
    place(tiny_video, root / "Train_files" / "1_1_01_6.avi")  # file 6
    place(tiny_video, root / "Train_files" / "7_1_01_1.avi")  # phone 7
    place(tiny_video, root / "Train_files" / "1_1_25_1.avi")  # user 25 (dev) under Train_files
    place(tiny_video, root / "Dev_files" / "1_4_22_1.avi")  # session 4
    place(tiny_video, root / "Test_files" / "clip.avi")  # not an OULU name
    place(tiny_video, root / "1_1_01_1.avi")  # outside the split folders
    (root / "Train_files" / "1_1_01_1.txt").write_text("0, 10, 10, 20, 20\n")  # face-location sidecar
    (root / "README.txt").write_text("OULU-NPU\n")
    return root


def test_oulu_enumerates_every_video_with_labels_attacks_and_splits(oulu_root):
    scan = scan_dataset("oulu-npu", oulu_root)
    assert len(scan.items) == 6 * 3 * 55 * 5
    name_re = re.compile(r"^(\d)_(\d)_(\d\d)_(\d)\.avi$")
    expected_attack = {1: "none", 2: "print1", 3: "print2", 4: "replay1", 5: "replay2"}
    for it in scan.items:
        phone, session, user, f = (int(g) for g in name_re.match(os.path.basename(it.path)).groups())
        assert it.split == oulu_split_of(user)
        assert Path(it.path).parent.name == OULU_FOLDERS[it.split]
        assert it.label == ("live" if f == 1 else "spoof")
        assert it.attack_type == expected_attack[f]
        assert it.extra["attack_family"] == ("none" if f == 1 else "print" if f <= 3 else "replay")
        assert (it.subject, it.session, it.device) == (f"{user:02d}", str(session), str(phone))
        assert it.extra["dataset"] == "oulu-npu" and os.path.isfile(it.path)
    splits = Counter(i.split for i in scan.items)
    assert splits == {"train": 20 * 90, "dev": 15 * 90, "test": 20 * 90}
    assert Counter(i.attack_type for i in scan.items) == {a: 55 * 18 for a in expected_attack.values()}
    assert len({i.video_id for i in scan.items}) == len(scan.items)
    first = next(i for i in scan.items if i.video_id == "oulu-npu/Train_files/1_1_01_1")
    assert first.extra["sidecars"] == [str(oulu_root / "Train_files" / "1_1_01_1.txt")]
    assert str(oulu_root / "README.txt") in scan.ignored


def test_oulu_reports_malformed_names_with_reasons(oulu_root):
    rej = _rejected(scan_dataset("oulu-npu", oulu_root))
    assert set(rej) == {
        "Train_files/1_1_01_6.avi", "Train_files/7_1_01_1.avi", "Train_files/1_1_25_1.avi",
        "Dev_files/1_4_22_1.avi", "Test_files/clip.avi", "1_1_01_1.avi",
    }
    assert "file 6" in rej["Train_files/1_1_01_6.avi"]
    assert "phone 7" in rej["Train_files/7_1_01_1.avi"]
    assert "user 25 belongs to the dev split" in rej["Train_files/1_1_25_1.avi"]
    assert "session 4" in rej["Dev_files/1_4_22_1.avi"]
    assert "Phone_Session_User_File" in rej["Test_files/clip.avi"]
    assert "not under Train_files" in rej["1_1_01_1.avi"]


def test_scan_summary_and_datasets_command(oulu_root):
    scan = scan_dataset("oulu-npu", oulu_root)
    text = format_scan_summary(scan)
    assert f"{len(scan.items)} items, 6 rejected" in text
    train_row = next(line for line in text.splitlines() if line.strip().startswith("train"))
    assert train_row.split()[1:6] == ["360", "1440", "0", "1800", "20"]
    assert "Test_files/clip.avi: name 'clip'" in text
    out = datasets_command(oulu_root, "oulu-npu", "oulu-npu-p3")
    assert out.count("protocol oulu-npu-p3/fold") == 6
    assert out.count("subjects disjoint across train/dev/test: yes") == 6
    one = datasets_command(oulu_root, "oulu-npu", "oulu-npu-p4:fold=2")
    assert "oulu-npu-p4/fold2" in one and "fold1" not in one


# ----------------------------------------------------------------------------- SiW


@pytest.fixture(scope="module")
def siw_root(tmp_path_factory, tiny_video) -> Path:
    root = build_siw(tmp_path_factory.mktemp("siw") / "SiW_release", tiny_video)
    place(tiny_video, root / "Train" / "live" / "001" / "001-1-2-1-1.mov")  # print under live/
    place(tiny_video, root / "Train" / "spoof" / "002" / "003-1-3-1-1.mov")  # subject folder mismatch
    place(tiny_video, root / "Test" / "spoof" / "100" / "100-1-3-5-1.mov")  # replay medium 5
    place(tiny_video, root / "Test" / "spoof" / "100" / "100-1-4-1-1.mov")  # type 4
    place(tiny_video, root / "Test" / "spoof" / "100" / "100_1_3_1_1.mov")  # underscores
    place(tiny_video, root / "Other" / "live" / "001" / "001-1-1-1-9.mov")  # no Train/Test
    (root / "Train" / "live" / "001" / "001-1-1-1-1.face").write_text("1 2 3 4\n")
    return root


def test_siw_enumerates_with_folder_split(siw_root):
    scan = scan_dataset("siw", siw_root)
    assert len(scan.items) == 165 * 14
    for it in scan.items:
        sub, sensor, typ, medium, session = Path(it.path).stem.split("-")
        assert it.split == ("train" if int(sub) in SIW_TRAIN else "test")
        assert it.label == ("live" if typ == "1" else "spoof")
        assert it.attack_type == {"1": "none", "2": "print", "3": "replay"}[typ]
        assert (it.subject, it.device, it.session, it.extra["medium"]) == (sub, sensor, session, int(medium))
    subjects = {s: {i.subject for i in scan.items if i.split == s} for s in ("train", "test")}
    assert (len(subjects["train"]), len(subjects["test"])) == (90, 75)
    one = next(i for i in scan.items if i.video_id == "siw/Train/live/001/001-1-1-1-1")
    assert one.extra["sidecars"][0].endswith("001-1-1-1-1.face")


def test_siw_reports_malformed_names(siw_root):
    rej = _rejected(scan_dataset("siw", siw_root))
    assert set(rej) == {
        "Train/live/001/001-1-2-1-1.mov", "Train/spoof/002/003-1-3-1-1.mov", "Test/spoof/100/100-1-3-5-1.mov",
        "Test/spoof/100/100-1-4-1-1.mov", "Test/spoof/100/100_1_3_1_1.mov", "Other/live/001/001-1-1-1-9.mov",
    }
    assert "under live/" in rej["Train/live/001/001-1-2-1-1.mov"]
    assert "subject folder 002/" in rej["Train/spoof/002/003-1-3-1-1.mov"]
    assert "replay medium 5" in rej["Test/spoof/100/100-1-3-5-1.mov"]
    assert "type 4" in rej["Test/spoof/100/100-1-4-1-1.mov"]
    assert "SubjectID-SensorID" in rej["Test/spoof/100/100_1_3_1_1.mov"]
    assert "not under Train/ or Test/" in rej["Other/live/001/001-1-1-1-9.mov"]


# ----------------------------------------------------------------------------- CASIA-FASD


def test_casia_enumerates_qualities_pais_and_release_qualified_subjects(tmp_path, tiny_video):
    root = build_casia(tmp_path / "CASIA_faceAntisp", tiny_video)
    place(tiny_video, root / "train_release" / "3" / "9.avi")
    place(tiny_video, root / "train_release" / "21" / "1.avi")  # train ids are 1-20
    place(tiny_video, root / "test_release" / "x1" / "1.avi")
    place(tiny_video, root / "devel_release" / "1" / "1.avi")
    scan = scan_dataset("casia-fasd", root)
    assert len(scan.items) == 50 * 12
    expect = {"1": ("live", "none", "low"), "2": ("live", "none", "normal"), "HR_1": ("live", "none", "high"),
              "3": ("spoof", "print", "low"), "4": ("spoof", "print", "normal"), "HR_2": ("spoof", "print", "high"),
              "5": ("spoof", "print", "low"), "6": ("spoof", "print", "normal"), "HR_3": ("spoof", "print", "high"),
              "7": ("spoof", "replay", "low"), "8": ("spoof", "replay", "normal"), "HR_4": ("spoof", "replay", "high")}
    for it in scan.items:
        release, sid, name = Path(it.path).parts[-3], Path(it.path).parts[-2], Path(it.path).stem
        assert (it.label, it.attack_type, it.device) == expect[name]
        assert it.split == release.split("_")[0]
        assert it.subject == f"{it.split}-{int(sid):02d}"
        assert it.extra["pai"] == {"3": "warped_photo", "4": "warped_photo", "HR_2": "warped_photo",
                                   "5": "cut_photo", "6": "cut_photo", "HR_3": "cut_photo"}.get(
            name, "video" if it.attack_type == "replay" else "")
    assert Counter(i.split for i in scan.items) == {"train": 240, "test": 360}
    assert "dev" not in {i.split for i in scan.items}  # no official dev split
    # train subject 1 and test subject 1 are different people
    assert {"train-01", "test-01"} <= {i.subject for i in scan.items}
    rej = _rejected(scan)
    assert set(rej) == {"train_release/3/9.avi", "train_release/21/1.avi", "test_release/x1/1.avi",
                        "devel_release/1/1.avi"}
    assert "'9' is not one of" in rej["train_release/3/9.avi"]
    assert "1-20" in rej["train_release/21/1.avi"]


# ----------------------------------------------------------------------------- Replay-Attack


@pytest.mark.parametrize("screen_photo_as", ["replay", "print"])
def test_replay_attack_enumerates_with_published_counts(tmp_path, tiny_video, screen_photo_as):
    root = build_replay(tmp_path / "replayattack", tiny_video)
    place(tiny_video, root / "enroll" / "train" / "client001_session01_enroll_adverse_1.mov")
    place(tiny_video, root / "train" / "attack" / "fixed" / "attack_print_client001_session01_highdef_video_adverse.mov")
    place(tiny_video, root / "train" / "attack" / "attack_mobile_client001_session01_mobile_video_adverse.mov")
    place(tiny_video, root / "test" / "real" / "client031_session01_webcam_authenticate_dark_1.mov")
    scan = scan_dataset("replay-attack", root, screen_photo_as=screen_photo_as)
    by = Counter((i.split, i.label) for i in scan.items)
    # Chingovska et al. 2012: train 60 real / 300 attacks, devel 60 / 300, test 80 / 400
    assert by == {("train", "live"): 60, ("train", "spoof"): 300, ("dev", "live"): 60,
                  ("dev", "spoof"): 300, ("test", "live"): 80, ("test", "spoof"): 400}
    for it in scan.items:
        name = Path(it.path).stem
        client = re.search(r"client(\d{3})", name).group(1)
        assert it.subject == client and it.session == "01" and it.device == "webcam"
        assert int(client) in REPLAY_SPLITS[{"dev": "devel"}.get(it.split, it.split)]
        if name.startswith("attack_print"):
            assert it.attack_type == "print"
        elif name.endswith(("_video_adverse", "_video_controlled")):
            assert it.attack_type == "replay"
        elif it.label == "spoof":
            assert it.attack_type == screen_photo_as and it.extra["content"] == "photo"
        else:
            assert it.attack_type == "none"
        assert it.extra.get("support", Path(it.path).parent.name) == Path(it.path).parent.name
    rej = _rejected(scan)
    assert len(rej) == 4
    assert "enrollment" in rej["enroll/train/client001_session01_enroll_adverse_1.mov"]
    assert "print attack must show a photo" in rej[
        "train/attack/fixed/attack_print_client001_session01_highdef_video_adverse.mov"]
    assert "attack/fixed|hand/" in rej["train/attack/attack_mobile_client001_session01_mobile_video_adverse.mov"]
    assert "webcam_authenticate" in rej["test/real/client031_session01_webcam_authenticate_dark_1.mov"]


# ----------------------------------------------------------------------------- MSU-MFSD


def test_msu_splits_by_official_subject_lists(tmp_path, tiny_video):
    root = build_msu(tmp_path / "MSU-MFSD", tiny_video)
    place(tiny_video, root / "scene01" / "real" / "real_client004_android_SD_scene01.mp4")  # in no list
    place(tiny_video, root / "scene01" / "attack" / "real_client002_laptop_SD_scene01.mov")  # real under attack/
    place(tiny_video, root / "scene01" / "attack" / "attack_client002_android_SD_paper_mask_scene01.mp4")
    scan = scan_dataset("msu-mfsd", root)
    assert len(scan.items) == 35 * 8
    for it in scan.items:
        client = int(re.search(r"client(\d{3})", it.path).group(1))
        assert it.split == ("train" if client in MSU_TRAIN else "test")
        assert it.subject == f"{client:03d}" and it.session == "01"
        assert it.device in ("android", "laptop") and it.device in Path(it.path).name
        name = Path(it.path).name
        if it.label == "live":
            assert name.startswith("real_") and it.attack_type == "none"
        else:
            assert it.attack_type == ("print" if "printed_photo" in name else "replay")
    assert Counter(i.split for i in scan.items) == {"train": 15 * 8, "test": 20 * 8}
    rej = _rejected(scan)
    assert set(rej) == {"scene01/real/real_client004_android_SD_scene01.mp4",
                        "scene01/attack/real_client002_laptop_SD_scene01.mov",
                        "scene01/attack/attack_client002_android_SD_paper_mask_scene01.mp4"}
    assert "in neither train_sub_list.txt nor test_sub_list.txt" in rej["scene01/real/real_client004_android_SD_scene01.mp4"]
    assert "under attack/" in rej["scene01/attack/real_client002_laptop_SD_scene01.mov"]
    assert not any("sub_list" in p for p in scan.ignored)


def test_msu_without_subject_lists_reports_every_video(tmp_path, tiny_video):
    root = build_msu(tmp_path / "MSU-MFSD", tiny_video, lists=False)
    scan = scan_dataset("msu-mfsd", root)
    assert scan.items == []
    assert len(scan.rejected) == 35 * 8
    assert all("no official subject list" in why and "train_sub_list.txt" in why for _, why in scan.rejected)
    (root / "train_sub_list.txt").write_text("002\nclient x\n")
    (root / "test_sub_list.txt").write_text("001\n")
    with pytest.raises(DatasetLayoutError, match="line 2"):
        scan_dataset("msu-mfsd", root)


# ----------------------------------------------------------------------------- CelebA-Spoof


def _attrs(spoof_type: int, live_spoof: int, illum: int = 1, env: int = 1) -> list[int]:
    a = [0] * 44
    a[40], a[41], a[42], a[43] = spoof_type, illum, env, live_spoof
    return a


def test_celeba_spoof_reads_json_labels_and_checks_them(tmp_path):
    root = tmp_path / "CelebA_Spoof"
    img = make_tiny_image(tmp_path / "src.png")
    train, test = {}, {}
    for sub in ("10", "11"):
        place(img, root / "Data" / "train" / sub / "live" / f"{sub}0001.png")
        train[f"Data/train/{sub}/live/{sub}0001.png"] = _attrs(0, 0, 0, 0)
        for k, stype in enumerate(range(1, 11)):
            place(img, root / "Data" / "train" / sub / "spoof" / f"{sub}1{k:03d}.png")
            train[f"Data/train/{sub}/spoof/{sub}1{k:03d}.png"] = _attrs(stype, 1, 1 + k % 4, 1 + k % 2)
    place(img, root / "Data" / "test" / "20" / "live" / "200001.png")
    test["Data/test/20/live/200001.png"] = _attrs(0, 0, 0, 0)
    place(img, root / "Data" / "test" / "20" / "spoof" / "200002.png")
    test["Data/test/20/spoof/200002.png"] = _attrs(8, 1)
    # malformed entries
    place(img, root / "Data" / "test" / "20" / "spoof" / "bad1.png")
    test["Data/test/20/spoof/bad1.png"] = _attrs(3, 0)  # spoof type 3 but label live
    place(img, root / "Data" / "test" / "20" / "live" / "bad2.png")
    test["Data/test/20/live/bad2.png"] = _attrs(7, 1)  # spoof label under live/
    test["Data/test/20/spoof/missing.png"] = _attrs(9, 1)  # no file
    test["Data/test/20/spoof/short.png"] = [0] * 43
    test["../outside/20/spoof/x.png"] = _attrs(1, 1)
    train["Data/test/20/spoof/200002.png"] = _attrs(8, 1)  # test image listed in train labels
    (root / "metas" / "intra_test").mkdir(parents=True)
    (root / "metas" / "intra_test" / "train_label.json").write_text(json.dumps(train))
    (root / "metas" / "intra_test" / "test_label.json").write_text(json.dumps(test))

    scan = scan_dataset("celeba-spoof", root)
    assert len(scan.items) == 2 * 11 + 2
    fam = {0: "none", 1: "print", 2: "print", 3: "print", 4: "print", 5: "print", 6: "print",
           7: "replay", 8: "replay", 9: "replay", 10: "mask"}
    labels = {**train, **test}
    for it in scan.items:
        a = labels[it.extra["relpath"]]
        assert it.attack_type == fam[a[40]] and it.extra["spoof_type"] == a[40]
        assert it.label == ("spoof" if a[43] else "live") == Path(it.path).parent.name
        assert it.subject == Path(it.path).parent.parent.name and it.extra["kind"] == "image"
        assert it.split == Path(it.path).parts[-4]
    assert Counter(i.attack_type for i in scan.items) == {"none": 3, "print": 12, "replay": 7, "mask": 2}
    pais = {i.extra["pai"] for i in scan.items}
    assert {"photo", "poster", "a4", "face_mask", "upper_body_mask", "region_mask", "pc", "pad", "phone", "3d_mask"} <= pais
    rej = {os.path.basename(p): why for p, why in scan.rejected}
    assert "contradicts spoof type" in rej["bad1.png"]
    assert "under live/" in rej["bad2.png"]
    assert "image file missing" in rej["missing.png"]
    assert "44 integers" in rej["short.png"]
    assert "leaves the dataset root" in rej["x.png"]
    assert "listed in the train labels" in rej["200002.png"]
    with pytest.raises(DatasetLayoutError, match="train_label.json"):
        scan_dataset("celeba-spoof", tmp_path)


# ----------------------------------------------------------------------------- CSV


@pytest.fixture()
def csv_tree(tmp_path, tiny_video):
    root = tmp_path / "data"
    place(tiny_video, root / "videos" / "live1.mp4")
    place(tiny_video, root / "videos" / "spoof1.avi")
    place(tiny_video, root / "videos" / "spoof2.mov")
    place(tiny_video, tmp_path / "outside.mp4")
    make_tiny_image(root / "stills" / "a.jpg")
    make_tiny_image(root / "stills" / "b.jpg")
    (root / "notes.txt").write_text("x")
    return root


def _write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(rows) + "\n")
    return path


def test_csv_rows_become_items_and_bad_rows_are_rejected(csv_tree):
    outside = str(csv_tree.parent / "outside.mp4")
    csv_path = _write_csv(csv_tree / "list.csv", [
        "path,label,attack_type,subject,session,device,split,camera",
        "videos/live1.mp4,live,,s1,1,phone,train,front",
        "videos/spoof1.avi,Spoof,print1,s2,1,phone,test,back",
        f"{outside},spoof,replay,s3,,,test,",
        "../outside.mp4,live,,s3,,,train,",
        "videos/spoof2.mov,real,,s4,,,train,",
        "videos/missing.mp4,live,,s5,,,train,",
        "videos/spoof2.mov,live,print,s4,,,train,",
        "videos/spoof2.mov,spoof,paper,s4,,,train,",
        "videos/spoof2.mov,spoof,replay,s4,,,val,",
        "notes.txt,live,,s6,,,train,",
        "stills,unknown,,,,,,",
        "videos/live1.mp4,live,,s1,1,phone,train,front",
    ])
    scan = scan_dataset("csv", csv_path)
    assert [(_rel(scan, i), i.label, i.attack_type, i.split) for i in scan.items] == [
        ("videos/live1.mp4", "live", "none", "train"),
        ("videos/spoof1.avi", "spoof", "print1", "test"),
        ("stills", "unknown", "unknown", ""),
    ]
    live, spoof, stills = scan.items
    assert (live.subject, live.session, live.device, live.extra["camera"]) == ("s1", "1", "phone", "front")
    assert spoof.extra["attack_family"] == "print" and stills.extra["kind"] == "image_folder"
    reasons = [why for _, why in scan.rejected]
    assert len(reasons) == 9
    assert sum("outside the input root" in r for r in reasons) == 2
    assert any("row 6: unknown label 'real'" in r for r in reasons)
    assert any("row 7: file not found" in r for r in reasons)
    assert any("row 8: label live with attack type 'print'" in r for r in reasons)
    assert any("row 9: unknown attack type 'paper'" in r for r in reasons)
    assert any("row 10: unknown split 'val'" in r for r in reasons)
    assert any("row 11: not a video or image" in r for r in reasons)
    assert any("row 13: path already listed in row 2" in r for r in reasons)


def test_csv_outside_root_allowed_on_request_and_root_option(csv_tree):
    outside = csv_tree.parent / "outside.mp4"
    csv_path = _write_csv(csv_tree / "list.csv", ["path,label", f"{outside},spoof", "../outside.mp4,live"])
    scan = scan_dataset("csv", csv_path, allow_outside_root=True)
    assert len(scan.items) == 1 and scan.items[0].path == str(outside)  # the second row repeats the path
    assert "already listed" in scan.rejected[0][1]
    # the CLI's call: explicit input root, here one level up, so the path is inside
    scan = scan_dataset("csv", csv_path, root=csv_tree.parent)
    assert [i.path for i in scan.items] == [str(outside)]
    # a narrower root than the CSV's folder
    csv2 = _write_csv(csv_tree / "list2.csv", ["path,label", "videos/live1.mp4,live", "stills/a.jpg,live"])
    scan = scan_dataset("csv", csv2, root=csv_tree / "videos")
    assert [os.path.basename(i.path) for i in scan.items] == ["live1.mp4"]
    assert "outside the input root" in scan.rejected[0][1]


def test_csv_missing_columns_is_a_clear_error(csv_tree):
    csv_path = _write_csv(csv_tree / "bad.csv", ["file,subject", "videos/live1.mp4,s1"])
    with pytest.raises(DatasetLayoutError) as exc:
        scan_dataset("csv", csv_path)
    assert "missing required column(s): path, label" in str(exc.value) and "bad.csv" in str(exc.value)
    with pytest.raises(InputNotFound):
        scan_dataset("csv", csv_tree / "none.csv")


# ----------------------------------------------------------------------------- folder


@pytest.mark.timeout(60)
def test_folder_items_images_grouped_and_symlink_loops_terminate(tmp_path, tiny_video):
    root = tmp_path / "in"
    place(tiny_video, root / "a.mp4")
    place(tiny_video, root / "sub" / "B.MOV")
    place(tiny_video, root / "sub" / "deeper" / "c.webm")
    for n in ("1.jpg", "2.png", "3.jpeg"):
        make_tiny_image(root / "stills" / n)
    make_tiny_image(root / "sub" / "loose.jpg")
    (root / "sub" / "notes.txt").write_text("x")
    os.symlink(root, root / "sub" / "deeper" / "loop")  # a loop back to the root
    os.symlink(root / "sub", root / "alias")  # a second way into sub/
    os.symlink(root / "nowhere.mp4", root / "broken.mp4")
    scan = scan_dataset("folder", root)
    got = sorted((_rel(scan, i), i.extra["kind"], i.extra.get("n_images")) for i in scan.items)
    assert got == [
        ("a.mp4", "video", None),
        ("stills", "image_folder", 3),
        ("sub", "image_folder", 1),
        ("sub/B.MOV", "video", None),
        ("sub/deeper/c.webm", "video", None),
    ]
    assert all(i.label == "unknown" and i.attack_type == "unknown" and i.split == "" for i in scan.items)
    rej = _rejected(scan)
    assert "broken link" in rej["broken.mp4"]
    loops = [p for p, why in rej.items() if "already-scanned folder" in why]
    assert len(loops) == 2  # the loop and the alias, each reported once
    assert scan.ignored == [str(root / "sub" / "notes.txt")]
    single = scan_dataset("folder", root / "a.mp4")
    assert len(single.items) == 1 and single.items[0].path == str(root / "a.mp4")
