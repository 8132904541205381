"""Official annotation files: what the real files do is handled, malformed files fail clearly."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sage_model.data import (
    AnnotationError,
    annotation_to_json,
    ground_truth_relations,
    load_annotation_file,
    load_annotation_folder,
    novel_ground_truth,
    parse_annotation,
)
from sage_model.data.checks import check_annotation_folder


def _box(x: int, y: int) -> dict[str, int]:
    return {"xmin": x, "ymin": y, "xmax": x + 20, "ymax": y + 10}


def vidvrd_video(video_id: str = "ILSVRC2015_train_00005003") -> dict[str, Any]:
    """90 annotated frames of a 100-frame video; tid 1 is absent on frames 30..44 (two fragments)."""
    frames = []
    for f in range(90):
        entries = [{"tid": 0, "bbox": _box(f, 5), "unknown_key": "ignored"}]
        if not 30 <= f < 45:
            entries.append({"tid": 1, "bbox": _box(100 + f, 50)})
        frames.append(entries)
    return {
        "video_id": video_id,
        "frame_count": 100,
        "fps": 30,
        "width": 640,
        "height": 360,
        "subject/objects": [{"tid": 0, "category": "dog"}, {"tid": 1, "category": "horse"}],
        "trajectories": frames,
        "relation_instances": [
            {"subject_tid": 0, "object_tid": 1, "predicate": "chase", "begin_fid": 0, "end_fid": 30},
            {"subject_tid": 1, "object_tid": 0, "predicate": "sit_behind", "begin_fid": 45, "end_fid": 90},
        ],
        "tags": ["unknown top-level keys are ignored"],
    }


def vidor_video(video_id: str = "2401075277") -> dict[str, Any]:
    raw = vidvrd_video(video_id)
    raw.pop("tags")
    raw.update(version="VERSION 1.0", video_hash="abc", video_path=f"0001/{video_id}.mp4")
    raw["subject/objects"] = [{"tid": 0, "category": "adult"}, {"tid": 1, "category": "dog"}]
    raw["relation_instances"] = [
        {"subject_tid": 0, "object_tid": 1, "predicate": "watch", "begin_fid": 0, "end_fid": 30},
        {"subject_tid": 0, "object_tid": 1, "predicate": "kick", "begin_fid": 60, "end_fid": 90},
    ]
    for entries in raw["trajectories"]:
        for entry in entries:
            entry.update(generated=0, tracker="none")
    return raw


def _write(path: Path, raw: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(raw) if not isinstance(raw, str) else raw)
    return path


def test_vidvrd_file_keeps_annotated_length_fragments_and_relations(tmp_path: Path) -> None:
    _write(tmp_path / "train" / "ILSVRC2015_train_00005003.json", vidvrd_video())
    (video,) = load_annotation_folder(tmp_path, "vidvrd", "train")
    assert (video.frame_count, video.annotated_len) == (100, 90)
    spans = sorted((f.tid, f.begin, f.end) for f in video.fragments)
    assert spans == [(0, 0, 90), (1, 0, 30), (1, 45, 90)]
    assert [r.predicate for r in video.relations] == ["chase", "sit_behind"]
    merged = video.tid_tracks()[1]
    assert len(merged) == 75 and merged.begin == 0 and merged.end == 90


def test_vidor_layout_with_groups_and_version(tmp_path: Path) -> None:
    _write(tmp_path / "annotation" / "validation" / "0001" / "2401075277.json", vidor_video())
    (video,) = load_annotation_folder(tmp_path, "vidor", "test")  # test = the validation folder
    assert video.version == "VERSION 1.0" and video.group == "0001"
    assert load_annotation_folder(tmp_path, "vidor", "validation")[0].video_id == "2401075277"


def test_ground_truth_relations_follow_the_official_format() -> None:
    video = parse_annotation(vidvrd_video(), "vidvrd")
    gt = ground_truth_relations([video])
    first, second = gt["ILSVRC2015_train_00005003"]
    assert first["triplet"] == ["dog", "chase", "horse"]
    assert first["duration"] == [0, 30] and len(first["sub_traj"]) == 30 == len(first["obj_traj"])
    assert first["sub_traj"][7] == [7.0, 5.0, 27.0, 15.0]
    assert second["triplet"] == ["horse", "sit_behind", "dog"] and second["obj_traj"][0] == [
        45.0,
        5.0,
        65.0,
        15.0,
    ]


def test_novel_split_keeps_novel_predicates_and_drops_empty_videos() -> None:
    gt = ground_truth_relations([parse_annotation(vidvrd_video(), "vidvrd")])
    gt["other"] = [dict(gt["ILSVRC2015_train_00005003"][0])]  # 'chase' is a base predicate
    novel = novel_ground_truth(gt, {"sit_behind"})
    assert list(novel) == ["ILSVRC2015_train_00005003"]
    assert [r["triplet"][1] for r in novel["ILSVRC2015_train_00005003"]] == ["sit_behind"]


def test_annotation_json_round_trips() -> None:
    for dataset, raw in (("vidvrd", vidvrd_video()), ("vidor", vidor_video())):
        video = parse_annotation(raw, dataset)
        again = parse_annotation(annotation_to_json(video, dataset), dataset)
        assert ground_truth_relations([again]) == ground_truth_relations([video])
        assert [(f.tid, f.begin, f.end) for f in again.fragments] == [
            (f.tid, f.begin, f.end) for f in video.fragments
        ]


def _drop(key: str):
    def mutate(raw: dict) -> None:
        del raw[key]

    return mutate


MALFORMED = [
    (
        "missing relation begin",
        lambda r: r["relation_instances"][1].pop("begin_fid"),
        "relation_instances[1].begin_fid': missing",
    ),
    ("missing frame_count", _drop("frame_count"), "'frame_count': missing"),
    ("string frame count", lambda r: r.update(frame_count="100"), "'frame_count': expected int"),
    (
        "unknown tid in a frame",
        lambda r: r["trajectories"][3].append({"tid": 9, "bbox": _box(0, 0)}),
        "trajectories[3][2].tid': tid 9 is not declared",
    ),
    (
        "box without xmax",
        lambda r: r["trajectories"][2][0]["bbox"].pop("xmax"),
        "trajectories[2][0].bbox.xmax': missing",
    ),
    ("flipped box", lambda r: r["trajectories"][2][0]["bbox"].update(xmin=500), "trajectories[2][0].bbox'"),
    (
        "relation past the annotation",
        lambda r: r["relation_instances"][0].update(end_fid=95),
        "relation_instances[0].end_fid'",
    ),
    (
        "relation on a missing box",
        lambda r: r["relation_instances"][0].update(end_fid=40),
        "relation_instances[0].object_tid': tid 1 has no box in frame 30",
    ),
    (
        "unknown predicate",
        lambda r: r["relation_instances"][0].update(predicate="dance_with"),
        "relation_instances[0].predicate'",
    ),
    (
        "unknown category",
        lambda r: r["subject/objects"][0].update(category="unicorn"),
        "subject/objects[0].category'",
    ),
    (
        "duplicate tid",
        lambda r: r["subject/objects"].append({"tid": 0, "category": "dog"}),
        "subject/objects[2].tid'",
    ),
    ("too many frames", lambda r: r.update(frame_count=50), "'trajectories': 90 annotated frames exceed"),
    ("video id differs from file", lambda r: r.update(video_id="other"), "'video_id'"),
]


@pytest.mark.parametrize(("case", "mutate", "message"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_file_names_file_and_key(tmp_path: Path, case: str, mutate, message: str) -> None:
    raw = copy.deepcopy(vidvrd_video())
    mutate(raw)
    path = _write(tmp_path / "train" / "ILSVRC2015_train_00005003.json", raw)
    with pytest.raises(AnnotationError) as info:
        load_annotation_file(path, "vidvrd")
    assert str(path) in str(info.value) and message in str(info.value)


def test_vidor_without_version_is_rejected(tmp_path: Path) -> None:
    raw = vidor_video()
    raw.pop("version")
    path = _write(tmp_path / "annotation" / "training" / "0001" / "2401075277.json", raw)
    with pytest.raises(AnnotationError, match=rf"{path}: key 'version': missing"):
        load_annotation_folder(tmp_path, "vidor", "train")


def test_invalid_json_and_empty_folders_fail(tmp_path: Path) -> None:
    path = _write(tmp_path / "train" / "broken.json", "{not json")
    with pytest.raises(AnnotationError, match="broken.json: not valid JSON"):
        load_annotation_folder(tmp_path, "vidvrd", "train")
    (tmp_path / "test").mkdir()
    with pytest.raises(FileNotFoundError, match="no annotation files"):
        load_annotation_folder(tmp_path, "vidvrd", "test")
    with pytest.raises(ValueError, match="unknown vidvrd split 'val'"):
        load_annotation_folder(tmp_path, "vidvrd", "val")
    assert path.exists()


def test_check_counts_videos_fragments_relations_segments(tmp_path: Path) -> None:
    _write(tmp_path / "train" / "ILSVRC2015_train_00005003.json", vidvrd_video())
    _write(tmp_path / "test" / "ILSVRC2015_val_00000001.json", vidvrd_video("ILSVRC2015_val_00000001"))
    counts = check_annotation_folder(tmp_path)
    assert counts["dataset"] == "vidvrd"
    # segments over frame_count 100: windows start at 0, 15, ..., 60 -> 5
    expected = {"videos": 1, "trajectories": 3, "relation_instances": 2, "segments": 5}
    for split in ("train", "test"):
        assert {k: counts["splits"][split][k] for k in expected} == expected


def test_cli_check_prints_json_and_exits_2_on_malformed_input(tmp_path: Path) -> None:
    from harness.cli import app  # imports every command module: only here

    _write(tmp_path / "ok" / "train" / "ILSVRC2015_train_00005003.json", vidvrd_video())
    runner = CliRunner()
    result = runner.invoke(app, ["data", "check", str(tmp_path / "ok")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["splits"]["train"]["relation_instances"] == 2

    raw = vidvrd_video()
    del raw["relation_instances"][0]["predicate"]
    bad = _write(tmp_path / "bad" / "train" / "ILSVRC2015_train_00005003.json", raw)
    result = runner.invoke(app, ["data", "check", str(tmp_path / "bad")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert (
        len(lines) == 1 and str(bad) in lines[0] and "relation_instances[0].predicate': missing" in lines[0]
    )
