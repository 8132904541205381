"""The 30/15 segment grid, segment ids and keyframes."""

from __future__ import annotations

import pytest

from sage_model.data import parse_segment_id, segment_count, segment_id, segment_keyframe, segment_windows


def test_windows_are_half_open_30_frames_with_stride_15() -> None:
    assert segment_windows(0, 72) == [(0, 30), (15, 45), (30, 60)]
    assert segment_windows(15, 75) == [(15, 45), (30, 60), (45, 75)]
    assert segment_windows(0, 29) == []
    assert segment_windows(0, 30) == [(0, 30)]


@pytest.mark.parametrize("length", [0, 1, 29, 30, 44, 45, 46, 59, 60, 61, 219, 5430])
def test_segment_count_matches_the_windows(length: int) -> None:
    assert segment_count(0, length) == len(segment_windows(0, length))
    assert segment_count(7, 7 + length) == len(segment_windows(7, 7 + length))


def test_segment_ids_are_zero_padded_and_parse_back() -> None:
    tag = segment_id("ILSVRC2015_train_00005003", 15, 45)
    assert tag == "ILSVRC2015_train_00005003-0015-0045"
    assert parse_segment_id(tag) == ("ILSVRC2015_train_00005003", 15, 45)
    assert parse_segment_id(segment_id("1010_8872539414", 10815, 10845)) == ("1010_8872539414", 10815, 10845)
    with pytest.raises(ValueError, match="expected '<video_id>-<start:04d>-<end:04d>'"):
        parse_segment_id("video-15-45")


def test_each_segment_has_the_multiple_of_30_inside_it_as_keyframe() -> None:
    assert [segment_keyframe(s) for s in (0, 15, 30, 45, 60)] == [0, 30, 30, 60, 60]
    for start in range(0, 600, 15):
        key = segment_keyframe(start)
        assert key % 30 == 0 and start <= key < start + 30
