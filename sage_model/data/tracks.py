"""Object trajectories (ground-truth fragments or detected tracklets) and their vIoU.

One representation for every source: a :class:`Track` holds the frame numbers where the object
has a box and the boxes themselves (pixels, ``x1, y1, x2, y2`` inclusive as in VidVRD). Frames are
sorted but need not be contiguous, so a ground-truth tid split into fragments, or a detector
track with holes, needs no special case.

Detected tracklets come in OV-MMP's video-level JSON layout::

    {video_id: [{category, score, tid, begin_fid, end_fid (exclusive),
                 trajectory: {"<frame>": [x1, y1, x2, y2], ...}}, ...]}

Frame numbering of OV-MMP's released VidVRD test tracklets (``test_object_trajectories_meta.json``):
they look 1-based at first sight (no track starts at frame 0; in 159/200 videos the last track ends
one frame after the annotated length), but their boxes line up with the 0-based ground truth: over
the 465 tracks that match a GT trajectory (vIoU >= 0.5) the mean per-frame box IoU is 0.815 at
offset 0 against 0.796 at -1 and 0.799 at +1, and 263 tracks fit best at 0 against 73 at -1. The
"extra" frame is a real frame: it occurs only in videos whose ``frame_count`` exceeds the annotated
length; where the two are equal the tracks end at the annotated length. Every track lies inside
``[0, frame_count)``. So ``OVMMP_DET_FRAME_OFFSET`` is 0; the loader still takes an explicit
``frame_offset`` and ``tests/test_data_real.py`` re-measures this.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sage_model.eval.viou import box_areas, frames_viou, intersection_areas

OVMMP_DET_FRAME_OFFSET = 0
"""Frame offset that maps OV-MMP's released detected VidVRD tracklets onto annotation frames (measured)."""

OVMMP_GT_FRAME_OFFSET = 0
"""OV-MMP's ground-truth trajectory file already uses the annotations' 0-based frames."""


@dataclass(frozen=True, eq=False)
class Track:
    """One object trajectory: ``boxes[i]`` is the box at frame ``frames[i]``.

    ``frames`` (n,) int64 strictly increasing; ``boxes`` (n, 4) float32 pixels x1, y1, x2, y2.
    ``score`` is 1.0 for ground truth; ``category`` may be ``None`` when unknown.
    """

    tid: int
    category: str | None
    frames: np.ndarray
    boxes: np.ndarray
    score: float = 1.0
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        assert self.frames.ndim == 1 and self.boxes.shape == (len(self.frames), 4)

    @property
    def begin(self) -> int:
        return int(self.frames[0])

    @property
    def end(self) -> int:
        """Exclusive end frame."""
        return int(self.frames[-1]) + 1

    def __len__(self) -> int:
        return len(self.frames)

    def box_lookup(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(present (k,) bool, boxes (k, 4)) at the given frames; absent frames get zero boxes."""
        pos = np.searchsorted(self.frames, frames)
        pos_c = np.minimum(pos, len(self.frames) - 1)
        present = (pos < len(self.frames)) & (self.frames[pos_c] == frames)
        boxes = np.where(present[:, None], self.boxes[pos_c], 0.0).astype(np.float32)
        return present, boxes

    def shifted(self, offset: int) -> Track:
        """The same track with every frame number moved by ``offset``."""
        return Track(self.tid, self.category, self.frames + offset, self.boxes, self.score, dict(self.meta))


def merge_tracks(tracks: Sequence[Track]) -> Track:
    """One track from the fragments of one tid (frames must not overlap)."""
    frames = np.concatenate([t.frames for t in tracks])
    boxes = np.concatenate([t.boxes for t in tracks])
    order = np.argsort(frames, kind="stable")
    frames, boxes = frames[order], boxes[order]
    if np.any(np.diff(frames) <= 0):
        raise ValueError(f"tid {tracks[0].tid}: fragments overlap in time")
    return Track(tracks[0].tid, tracks[0].category, frames, boxes, tracks[0].score)


def contiguous_runs(frames: np.ndarray) -> list[tuple[int, int]]:
    """[begin, end) index ranges of the runs of consecutive frame numbers."""
    if len(frames) == 0:
        return []
    breaks = np.flatnonzero(np.diff(frames) != 1) + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks, [len(frames)]])
    return [(int(s), int(e)) for s, e in zip(starts, ends, strict=True)]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise IoU of (n, 4) boxes with the "+1" convention, (n,)."""
    inter = intersection_areas(a, b)
    return inter / (box_areas(a) + box_areas(b) - inter)


def viou(a: Track, b: Track) -> float:
    """Voluminal IoU as the VidVRD helper defines it ("+1" boxes), for tracks with any frame sets."""
    return frames_viou(a.frames, a.boxes, b.frames, b.boxes)


def match_tracks(detected: Sequence[Track], truth: Sequence[Track], threshold: float = 0.5) -> list[int]:
    """GT tid of each detected track: its best-vIoU ground-truth track if vIoU >= threshold, else -1.

    Matching is per track and not one-to-one (two detections of one object both take its labels),
    as in OV-MMP's label assignment.
    """
    matched = []
    for det in detected:
        best, best_tid = threshold, -1
        for gt in truth:
            if gt.end <= det.begin or det.end <= gt.begin:
                continue
            value = viou(det, gt)
            if value >= best:
                best, best_tid = value, gt.tid
        matched.append(best_tid)
    return matched


def load_ovmmp_tracks(path: Path | str, frame_offset: int = 0) -> dict[str, list[Track]]:
    """Video-level tracks from an OV-MMP trajectory JSON; ``frame_offset`` is added to every frame.

    ``OVMMP_DET_FRAME_OFFSET`` (0, measured) for OV-MMP's released detected VidVRD tracklets,
    ``OVMMP_GT_FRAME_OFFSET`` (0) for its ground-truth file; the synthetic tracklets use 0.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: tracklet file does not exist")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: key '<root>': expected an object {{video_id: [track, ...]}}")
    return {
        vid: [
            _parse_ovmmp_track(path, f"{vid}[{i}]", t, frame_offset)
            for i, t in enumerate(_as_list(path, vid, ts))
        ]
        for vid, ts in raw.items()
    }


def _as_list(path: Path, key: str, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"{path}: key '{key}': expected a list, got {type(value).__name__}")
    return value


def _parse_ovmmp_track(path: Path, key: str, raw: Any, frame_offset: int) -> Track:
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: key '{key}': expected an object")
    for name in ("tid", "begin_fid", "end_fid", "trajectory"):
        if name not in raw:
            raise ValueError(f"{path}: key '{key}.{name}': missing")
    traj = raw["trajectory"]
    if not isinstance(traj, dict) or not traj:
        raise ValueError(f"{path}: key '{key}.trajectory': expected a non-empty object {{frame: box}}")
    try:
        items = sorted((int(f), box) for f, box in traj.items())
    except ValueError:
        raise ValueError(f"{path}: key '{key}.trajectory': frame keys must be integers") from None
    frames = np.array([f for f, _ in items], dtype=np.int64)
    boxes = _boxes(path, key, items)
    if frames[0] != raw["begin_fid"] or frames[-1] + 1 != raw["end_fid"]:
        raise ValueError(
            f"{path}: key '{key}.begin_fid': [begin_fid, end_fid) = [{raw['begin_fid']}, {raw['end_fid']}) "
            f"does not match the trajectory's frames {frames[0]}..{frames[-1]}"
        )
    category = raw.get("category")
    score = float(raw.get("score", 1.0))
    return Track(int(raw["tid"]), category, frames + frame_offset, boxes, score)


def _boxes(path: Path, key: str, items: list[tuple[int, Any]]) -> np.ndarray:
    """(n, 4) float32 boxes; the per-box check runs only when the fast conversion finds a problem."""
    try:
        boxes = np.array([box for _, box in items], dtype=np.float64)
        good = boxes.shape == (len(items), 4) and all(
            type(v) in (int, float) for _, box in items for v in box
        )
    except (TypeError, ValueError):
        good = False
    if not good or np.any(boxes[:, 0] > boxes[:, 2]) or np.any(boxes[:, 1] > boxes[:, 3]):
        boxes = np.array([_box4(path, f"{key}.trajectory.{f}", box) for f, box in items], dtype=np.float64)
    return boxes.astype(np.float32)


def _box4(path: Path, key: str, box: Any) -> list[float]:
    if not isinstance(box, list | tuple) or len(box) != 4 or not all(_is_number(v) for v in box):
        raise ValueError(f"{path}: key '{key}': expected [x1, y1, x2, y2] numbers, got {box!r}")
    if box[0] > box[2] or box[1] > box[3]:
        raise ValueError(f"{path}: key '{key}': x1 > x2 or y1 > y2 in {box!r}")
    return [float(v) for v in box]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def tracks_to_ovmmp(tracks: Mapping[str, Sequence[Track]], frame_offset: int = 0) -> dict[str, list[dict]]:
    """The OV-MMP JSON layout of video-level tracks (frames written as ``frame + frame_offset``)."""
    out: dict[str, list[dict]] = {}
    for vid, video_tracks in tracks.items():
        out[vid] = [
            {
                "category": t.category,
                "score": round(float(t.score), 6),
                "tid": int(t.tid),
                "begin_fid": t.begin + frame_offset,
                "end_fid": t.end + frame_offset,
                "trajectory": {
                    str(int(f) + frame_offset): [round(float(v), 2) for v in b]
                    for f, b in zip(t.frames, t.boxes, strict=True)
                },
            }
            for t in video_tracks
        ]
    return out


def write_ovmmp_tracks(
    tracks: Mapping[str, Sequence[Track]], path: Path | str, frame_offset: int = 0
) -> None:
    """Write video-level tracks as OV-MMP JSON (compact, sorted video ids)."""
    data = tracks_to_ovmmp({k: tracks[k] for k in sorted(tracks)}, frame_offset)
    Path(path).write_text(json.dumps(data, separators=(",", ":")), encoding="utf-8")
