"""Pair samples: segments x ordered track pairs, keyframes, labels, and detected-track label transfer."""

from __future__ import annotations

import numpy as np

from sage_model.data import Track, load_vocabulary, parse_annotation, plan_pair_samples
from tests.test_data_annotations import vidvrd_video


def _rows(samples) -> dict[tuple[int, int, int], int]:
    return {
        (int(s), int(a), int(b)): i
        for i, (s, a, b) in enumerate(
            zip(samples.segment_start, samples.subject_tid, samples.object_tid, strict=True)
        )
    }


def test_ground_truth_pairs_keyframes_and_labels() -> None:
    vocab = load_vocabulary("vidvrd")
    video = parse_annotation(vidvrd_video(), "vidvrd")  # tid 1 absent on frames 30..44
    samples = plan_pair_samples(video, vocab)
    rows = _rows(samples)
    assert sorted({s for s, _, _ in rows}) == [0, 15, 30, 45, 60]  # windows over frame_count 100
    assert len(samples) == 10 and samples.labels.shape == (10, 132)
    chase, sit_behind = vocab.predicate_index("chase"), vocab.predicate_index("sit_behind")

    expected_keyframes = {
        0: [0, 0, 0],
        15: [29, 29, 59],
        30: [15, 45, 75],
        45: [60, 60, 60],
        60: [60, 60, 60],
    }
    expected_spans = {0: [0, 30], 15: [15, 30], 30: [45, 60], 45: [45, 75], 60: [60, 90]}
    for start, keyframes in expected_keyframes.items():
        row = rows[(start, 0, 1)]
        assert samples.keyframes[row].tolist() == keyframes
        assert samples.seg_span[row].tolist() == expected_spans[start]
    on = {key: set(np.flatnonzero(samples.labels[row]).tolist()) for key, row in rows.items()}
    assert on[(0, 0, 1)] == on[(15, 0, 1)] == {chase}  # [15, 30) overlaps chase [0, 30) on 15 frames
    assert on[(30, 0, 1)] == set() and on[(15, 1, 0)] == set()
    assert on[(30, 1, 0)] == on[(45, 1, 0)] == on[(60, 1, 0)] == {sit_behind}
    assert samples.subject_class[rows[(0, 0, 1)]] == vocab.object_index("dog")
    assert samples.object_class[rows[(0, 0, 1)]] == vocab.object_index("horse")


def test_segment_trajectories_and_normalised_keyframe_boxes() -> None:
    video = parse_annotation(vidvrd_video(), "vidvrd")
    samples = plan_pair_samples(video, load_vocabulary("vidvrd"))
    row = _rows(samples)[(15, 0, 1)]  # span [15, 30) of segment [15, 45)
    np.testing.assert_array_equal(samples.seg_traj[row, 0, :15, 0], np.arange(15, 30))  # subject xmin = frame
    assert not samples.seg_traj[row, :, 15:].any()  # zeros outside the span
    np.testing.assert_allclose(samples.boxes[row, 1, 0], [29 / 640, 5 / 360, 49 / 640, 15 / 360])


def test_detected_tracks_take_labels_of_matched_ground_truth() -> None:
    vocab = load_vocabulary("vidvrd")
    video = parse_annotation(vidvrd_video(), "vidvrd")
    gt = video.tid_tracks()
    frames0, frames1 = gt[0].frames, gt[1].frames[gt[1].frames >= 45]
    detections = [
        Track(0, "dog", frames0, gt[0].boxes + 1.0, 0.9),
        Track(1, "bear", frames1, gt[1].boxes[-len(frames1) :] - 1.0, 0.8),  # wrong detector class
        Track(
            2, "car", np.arange(0, 90), np.tile(np.float32([500, 300, 560, 350]), (90, 1)), 0.2
        ),  # false positive
    ]
    samples = plan_pair_samples(video, vocab, detections)
    rows = _rows(samples)
    sit_behind = vocab.predicate_index("sit_behind")
    assert samples.gt_subject_tid[rows[(45, 1, 0)]] == 1 and samples.gt_object_tid[rows[(45, 1, 0)]] == 0
    assert set(np.flatnonzero(samples.labels[rows[(45, 1, 0)]])) == {sit_behind}
    assert samples.subject_class[rows[(45, 1, 0)]] == vocab.object_index("bear")  # the detector's label
    assert samples.subject_score[rows[(45, 1, 0)]] == np.float32(0.8)
    false_positive_rows = [i for (s, a, b), i in rows.items() if 2 in (a, b)]
    assert false_positive_rows and not samples.labels[false_positive_rows].any()
    assert (samples.gt_subject_tid[[rows[k] for k in rows if k[1] == 2]] == -1).all()
