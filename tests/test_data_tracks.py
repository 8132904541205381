"""Tracks, vIoU with the "+1" convention, matching and the OV-MMP tracklet layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sage_model.data import Track, load_ovmmp_tracks, match_tracks, viou, write_ovmmp_tracks


def _track(
    tid: int, frames: list[int], box: list[float], category: str | None = "dog", score: float = 1.0
) -> Track:
    return Track(
        tid, category, np.array(frames, dtype=np.int64), np.array([box] * len(frames), np.float32), score
    )


def test_viou_is_hand_computed_with_inclusive_boxes() -> None:
    a = _track(0, [0, 1], [0, 0, 9, 9])  # 10 x 10 = 100 per frame, volume 200
    b = _track(1, [1, 2], [5, 5, 14, 14])  # overlaps a on frame 1 by 5 x 5 = 25
    assert viou(a, b) == pytest.approx(25 / (200 + 200 - 25))
    assert viou(a, a) == pytest.approx(1.0)
    assert viou(a, _track(2, [5, 6], [0, 0, 9, 9])) == 0.0


def test_viou_handles_fragmented_frames() -> None:
    whole = _track(0, list(range(0, 60)), [0, 0, 9, 9])
    fragmented = _track(0, list(range(0, 15)) + list(range(45, 60)), [0, 0, 9, 9])
    assert viou(whole, fragmented) == pytest.approx(30 / 60)


def test_match_takes_the_best_track_above_threshold() -> None:
    truth = [_track(3, list(range(30)), [0, 0, 99, 99]), _track(7, list(range(30)), [200, 200, 299, 299])]
    detected = [
        _track(0, list(range(2, 30)), [2, 1, 101, 99]),
        _track(1, list(range(30)), [150, 150, 249, 249]),  # IoU with tid 7 well below 0.5
        _track(2, list(range(28)), [201, 201, 299, 299]),
    ]
    assert match_tracks(detected, truth) == [3, -1, 7]


def test_ovmmp_layout_round_trips_with_an_explicit_offset(tmp_path: Path) -> None:
    tracks = {"v1": [_track(0, [3, 4, 5], [1.5, 2, 30, 40], "person", 0.75)], "v0": []}
    path = tmp_path / "tracks.json"
    write_ovmmp_tracks(tracks, path, frame_offset=1)  # written 1-based
    raw = json.loads(path.read_text())
    assert (
        raw["v1"][0]["begin_fid"] == 4 and raw["v1"][0]["end_fid"] == 7 and "4" in raw["v1"][0]["trajectory"]
    )
    loaded = load_ovmmp_tracks(path, frame_offset=-1)
    (track,) = loaded["v1"]
    assert track.frames.tolist() == [3, 4, 5] and track.score == 0.75 and track.category == "person"
    np.testing.assert_allclose(track.boxes, tracks["v1"][0].boxes)
    assert loaded["v0"] == []


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"tid": 0, "begin_fid": 0, "end_fid": 1}, "v[0].trajectory': missing"),
        ({"tid": 0, "begin_fid": 0, "end_fid": 2, "trajectory": {"0": [0, 0, 1, 1]}}, "does not match"),
        ({"tid": 0, "begin_fid": 0, "end_fid": 1, "trajectory": {"0": [0, 0, 1]}}, "v[0].trajectory.0'"),
        ({"begin_fid": 0, "end_fid": 1, "trajectory": {"0": [0, 0, 1, 1]}}, "v[0].tid': missing"),
    ],
)
def test_malformed_tracklets_name_file_and_key(tmp_path: Path, entry: dict, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"v": [entry]}))
    with pytest.raises(ValueError) as info:
        load_ovmmp_tracks(path)
    assert str(path) in str(info.value) and message in str(info.value)
