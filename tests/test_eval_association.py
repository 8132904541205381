"""Greedy relational association of segment predictions into video-level relations (hand-made cases)."""

from __future__ import annotations

import numpy as np
import pytest

from sage_model.eval import SegmentRelation, associate_segments, associate_videos, evaluate_relations


def seg(
    triplet: str,
    begin: int,
    end: int,
    score: float,
    sub=(0, 0, 9, 9),
    obj=(20, 20, 29, 29),
    video="v",
    segment=None,
):
    n = end - begin
    return SegmentRelation(
        video_id=video,
        triplet=tuple(triplet.split("-")),
        score=score,
        begin=begin,
        end=end,
        sub_traj=np.tile(np.asarray(sub, float), (n, 1)),
        obj_traj=np.tile(np.asarray(obj, float), (n, 1)),
        segment=segment,
    )


def test_overlapping_segments_of_one_relation_merge() -> None:
    out = associate_segments([seg("a-p-b", 0, 30, 0.6), seg("a-p-b", 15, 45, 0.4)])
    assert len(out) == 1
    entry = out[0]
    assert entry["triplet"] == ["a", "p", "b"]
    assert entry["duration"] == [0, 45]
    assert entry["score"] == pytest.approx(1.0)  # default aggregation: sum
    assert entry["sub_traj"].shape == (45, 4) and entry["sub_traj"][20].tolist() == [0, 0, 9, 9]


def test_mean_aggregation() -> None:
    out = associate_segments([seg("a-p-b", 0, 30, 0.6), seg("a-p-b", 15, 45, 0.4)], aggregation="mean")
    assert out[0]["score"] == pytest.approx(0.5)


def test_different_triplets_do_not_merge() -> None:
    out = associate_segments([seg("a-p-b", 0, 30, 0.6), seg("a-q-b", 15, 45, 0.4)])
    assert sorted(tuple(e["triplet"]) for e in out) == [("a", "p", "b"), ("a", "q", "b")]


def test_trajectories_that_do_not_overlap_enough_do_not_merge() -> None:
    moved = seg("a-p-b", 15, 45, 0.4, sub=(6, 6, 15, 15))  # IoU with (0,0,9,9) = 16 / 184
    assert len(associate_segments([seg("a-p-b", 0, 30, 0.6), moved])) == 2


def test_gap_shorter_than_tolerance_links_with_interpolation() -> None:
    later = seg("a-p-b", 40, 70, 0.5, sub=(2, 0, 11, 9), obj=(22, 20, 31, 29))  # facing-box IoU 80/120 > 0.5
    out = associate_segments([seg("a-p-b", 0, 30, 0.5), later])
    assert len(out) == 1 and out[0]["duration"] == [0, 70]
    sub = np.asarray(out[0]["sub_traj"])
    # frames 30..39 interpolate linearly between x1 = 0 at frame 29 and x1 = 2 at frame 40
    assert sub[35, 0] == pytest.approx(2 * (35 - 29) / 11)
    assert sub[29, 0] == 0 and sub[40, 0] == 2


def test_gap_longer_than_tolerance_does_not_link() -> None:
    out = associate_segments([seg("a-p-b", 0, 30, 0.5), seg("a-p-b", 60, 90, 0.5)])
    assert len(out) == 2
    assert (
        len(associate_segments([seg("a-p-b", 0, 30, 0.5), seg("a-p-b", 60, 90, 0.5)], temporal_tolerance=31))
        == 1
    )


def test_one_video_relation_absorbs_at_most_one_relation_per_segment() -> None:
    window = (15, 45)
    rels = [
        seg("a-p-b", 0, 30, 0.6),
        seg("a-p-b", 15, 45, 0.5, segment=window),
        seg("a-p-b", 15, 45, 0.4, segment=window),
    ]
    out = associate_segments(rels)
    assert [e["score"] for e in out] == [pytest.approx(1.1), pytest.approx(0.4)]


def test_top_k_and_short_relations() -> None:
    rels = [seg(f"a-p{i}-b", 0, 30, i / 10) for i in range(5)] + [seg("a-x-b", 0, 1, 0.99)]
    out = associate_segments(rels, top_k=3)
    assert [e["triplet"][1] for e in out] == ["p4", "p3", "p2"]  # the 1-frame relation is dropped


def test_associated_relations_evaluate() -> None:
    gt = {
        "v": [
            {
                "triplet": ["a", "p", "b"],
                "duration": [0, 45],
                "sub_traj": [[0, 0, 9, 9]] * 45,
                "obj_traj": [[20, 20, 29, 29]] * 45,
            }
        ]
    }
    pred = associate_videos([seg("a-p-b", 0, 30, 0.6), seg("a-p-b", 15, 45, 0.4)])
    assert evaluate_relations(gt, pred).mean_ap == 1.0


def test_relations_of_several_videos_need_associate_videos() -> None:
    rels = [seg("a-p-b", 0, 30, 0.6), seg("a-p-b", 0, 30, 0.6, video="w")]
    with pytest.raises(ValueError, match="several videos"):
        associate_segments(rels)
    assert set(associate_videos(rels)) == {"v", "w"}


def test_segment_relation_checks_its_shape() -> None:
    with pytest.raises(ValueError, match="sub_traj must have shape"):
        SegmentRelation("v", ("a", "p", "b"), 0.5, 0, 3, np.zeros((2, 4)), np.zeros((3, 4)))
