"""Checks against the real peer files in ../shared/peer_data (skipped where ../shared is absent)."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from sage_model.data import (
    OVMMP_DET_FRAME_OFFSET,
    OVMMP_GT_FRAME_OFFSET,
    load_ovmmp_tracks,
    load_vocabulary,
    match_tracks,
    segment_count,
)
from sage_model.data.tracks import box_iou


@pytest.fixture(scope="module")
def peer(shared_dir: Path) -> Path:
    return shared_dir / "peer_data"


@pytest.fixture(scope="module")
def lengths(peer: Path) -> dict[str, dict[str, int | str]]:
    with (peer / "vidvrd_video_lengths.csv").open() as handle:
        return {
            row["video_id"]: {
                "split": row["split"],
                "annotated_len": int(row["annotated_len"]),
                "frame_count": int(row["frame_count"]),
            }
            for row in csv.DictReader(handle)
        }


@pytest.fixture(scope="module")
def ground_truth(peer: Path):
    return load_ovmmp_tracks(peer / "ovmmp_vidvrd_test_object_trajectories_gt.json", OVMMP_GT_FRAME_OFFSET)


@pytest.mark.parametrize(
    ("dataset", "objects_file", "predicates_file"),
    [
        ("vidvrd", "vidvrd_object_split.json", "vidvrd_predicate_split_v2.json"),
        ("vidor", "vidor_object_split_v2.json", "vidor_predicate_split_v2.json"),
    ],
)
def test_vocabularies_match_the_peer_split_files(
    peer: Path, dataset: str, objects_file: str, predicates_file: str
) -> None:
    vocab = load_vocabulary(dataset)
    for names, base, novel, file in (
        (vocab.objects, vocab.base_objects, vocab.novel_objects, objects_file),
        (vocab.predicates, vocab.base_predicates, vocab.novel_predicates, predicates_file),
    ):
        raw = json.loads((peer / file).read_text())
        ordered = [n for n, _ in sorted(raw["cls2id"].items(), key=lambda kv: kv[1]) if n != "__background__"]
        assert list(names) == ordered  # base ids 1..B then novel B+1..
        assert set(base) == {n for n in ordered if raw["cls2split"][n] == "base"}
        assert set(novel) == {n for n in ordered if raw["cls2split"][n] == "novel"}
    expected = {"vidvrd": (25, 10, 71, 61), "vidor": (50, 30, 30, 20)}[dataset]
    sizes = (
        len(vocab.base_objects),
        len(vocab.novel_objects),
        len(vocab.base_predicates),
        len(vocab.novel_predicates),
    )
    assert sizes == expected


def test_ovmmp_ground_truth_has_200_videos_and_636_fragments(ground_truth, lengths) -> None:
    assert len(ground_truth) == 200
    assert sum(len(tracks) for tracks in ground_truth.values()) == 636
    fragments_per_tid = Counter((vid, t.tid) for vid, tracks in ground_truth.items() for t in tracks)
    assert sum(1 for n in fragments_per_tid.values() if n > 1) == 43
    for vid, tracks in ground_truth.items():  # 0-based, on the 15-frame grid, inside the annotated frames
        assert lengths[vid]["split"] == "test"
        assert max(t.end for t in tracks) == lengths[vid]["annotated_len"]
        assert all(t.begin % 15 == 0 and len(t) % 15 == 0 for t in tracks)


def test_segments_over_frame_count_of_all_1000_videos(lengths) -> None:
    per_split = Counter()
    for row in lengths.values():
        per_split[row["split"]] += segment_count(0, int(row["frame_count"]))
    assert len(lengths) == 1000
    assert (per_split["train"], per_split["test"], sum(per_split.values())) == (15146, 3202, 18348)


def test_detected_tracklets_frame_offset_is_measured_against_ground_truth(
    peer: Path, ground_truth, lengths
) -> None:
    """OV-MMP's detected tracks look 1-based (none starts at 0) but their boxes align at offset 0."""
    raw = load_ovmmp_tracks(peer / "ovmmp_vidvrd_test_object_trajectories_det.json", frame_offset=0)
    assert len(raw) == 200 and sum(len(t) for t in raw.values()) == 919
    assert min(t.begin for tracks in raw.values() for t in tracks) == 1
    mean_iou = {offset: [] for offset in (-1, 0, 1)}
    for vid, tracks in raw.items():
        for track, tid in zip(tracks, match_tracks(tracks, ground_truth[vid]), strict=True):
            assert track.end <= lengths[vid]["frame_count"]  # every detected frame exists in the video
            if tid < 0:
                continue
            truth = max(
                (g for g in ground_truth[vid] if g.tid == tid),
                key=lambda g: len(np.intersect1d(g.frames, track.frames)),
            )
            for offset in mean_iou:
                moved = track.shifted(offset)
                _, ia, ib = np.intersect1d(moved.frames, truth.frames, return_indices=True)
                mean_iou[offset].append(
                    box_iou(moved.boxes[ia].astype(float), truth.boxes[ib].astype(float)).mean()
                )
    scores = {offset: float(np.mean(values)) for offset, values in mean_iou.items()}
    assert len(mean_iou[0]) > 400
    assert max(scores, key=scores.get) == OVMMP_DET_FRAME_OFFSET == 0, scores


def test_real_trajectories_in_the_official_layout_give_636_fragments(
    tmp_path: Path, ground_truth, lengths
) -> None:
    """The OV-MMP GT trajectories rewritten as official per-frame annotation files (no relations):
    the loader's own fragment detection finds the same 636 fragments, and check counts 3,202 segments."""
    from sage_model.data.checks import check_annotation_folder

    folder = tmp_path / "test"
    folder.mkdir()
    for vid, tracks in ground_truth.items():
        frames: list[list[dict]] = [[] for _ in range(int(lengths[vid]["annotated_len"]))]
        for track in tracks:
            for f, box in zip(track.frames.tolist(), track.boxes.tolist(), strict=True):
                frames[f].append(
                    {"tid": track.tid, "bbox": dict(zip(("xmin", "ymin", "xmax", "ymax"), box, strict=True))}
                )
        raw = {
            "video_id": vid, "frame_count": lengths[vid]["frame_count"], "fps": 30, "width": 1280, "height": 720,
            "subject/objects": [{"tid": t, "category": c} for t, c in sorted({(t.tid, t.category) for t in tracks})],
            "trajectories": frames, "relation_instances": [],
        }  # fmt: skip
        (folder / f"{vid}.json").write_text(json.dumps(raw))
    counts = check_annotation_folder(tmp_path, "vidvrd")["splits"]["test"]
    assert (counts["videos"], counts["trajectories"], counts["relation_instances"], counts["segments"]) == (
        200,
        636,
        0,
        3202,
    )
