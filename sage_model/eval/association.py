"""Video-level relations from segment-level predictions: greedy relational association (SGDet).

Our restatement of VidVRD-II's ``greedy_relation_association`` (Shang et al., ACM MM 2021), the
association used by the open-vocabulary VidVRD baselines:

1. Segments are processed in increasing start frame. ``active`` holds the video-level relations
   created or extended in the previous segment.
2. In each segment, ``active`` is ordered by current score (descending) and the segment's
   relations by score (descending, stable); only the first ``per_segment_top_k`` are used.
3. Each segment relation, in that order, extends the first active relation with the same triplet
   whose subject AND object trajectories both have a cubic IoU ``> linkage_threshold`` with its own
   (temporal tolerance below); the extended relation leaves ``active`` for this segment, so it absorbs
   at most one relation per segment. Without such a partner the segment relation starts a new
   video-level relation.
4. Relations neither created nor extended in a segment stop growing.
5. Score of a video-level relation: ``aggregation="sum"`` (default, as VidVRD-II: relations that
   persist over more segments rank higher) or ``"mean"`` of its segment scores.
6. Joining two trajectories: frame-wise mean where both have a box, the single box where one has,
   linear interpolation across a gap.
7. Output: duration = intersection of the subject and object spans, both cut to it; a relation
   shorter than 2 frames is dropped (VidVRD-II treats it as invalid); sorted by score, first
   ``top_k`` (200) kept. VidVRD-II's optional NMS (off by default there) is not applied.

``associate_pairs`` is OV-MMP's linking instead: the relations of one track pair (``pair`` =
subject and object track ids) with the same triplet, in time order, are linked while each one's
window starts no later than the previous one's window ends (consecutive clips, or overlapping
windows); a gap starts a new video-level relation. Score by ``aggregation`` as above (OV-MMP:
``s * o * mean(p)``, i.e. "mean"); trajectories joined as in 6., output as in 7.

Cubic IoU of two trajectories: over their common frames, sum of "+1" intersection areas divided by
(sum of both "+1" areas - intersection), denominator at least 1e-8. If they do not overlap in time
but the gap is shorter than ``temporal_tolerance`` frames, the IoU of the facing boxes (last box of
the earlier one, first box of the later one); otherwise 0.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from sage_model.eval.viou import box_areas, intersection_areas

Aggregation = Literal["sum", "mean"]
Method = Literal["greedy", "pair"]
Triplet = tuple[str, str, str]


@dataclass(frozen=True, eq=False)
class SegmentRelation:
    """A relation predicted inside one segment of a video.

    ``sub_traj``/``obj_traj`` are (end - begin, 4) boxes ``[x1, y1, x2, y2]`` for frames
    ``[begin, end)``. ``segment`` is the (start, end) window the relation was predicted in; relations
    of the same window are associated together. It defaults to ``(begin, end)``, which is right when
    relations span their whole segment; give it when durations are cut to the subject/object overlap.
    ``pair`` (subject track id, object track id) identifies the track pair for :func:`associate_pairs`.
    """

    video_id: str
    triplet: Triplet
    score: float
    begin: int
    end: int
    sub_traj: np.ndarray
    obj_traj: np.ndarray
    segment: tuple[int, int] | None = None
    pair: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        where = f"segment relation {self.triplet} of video {self.video_id!r} [{self.begin}, {self.end})"
        if len(self.triplet) != 3 or not all(isinstance(x, str) for x in self.triplet):
            raise ValueError(f"{where}: triplet must be three strings")
        if self.end <= self.begin:
            raise ValueError(f"{where}: end must be greater than begin")
        if not np.isfinite(self.score):
            raise ValueError(f"{where}: score must be finite, got {self.score}")
        for name in ("sub_traj", "obj_traj"):
            boxes = np.asarray(getattr(self, name), np.float64)
            if boxes.shape != (self.end - self.begin, 4):
                raise ValueError(
                    f"{where}: {name} must have shape ({self.end - self.begin}, 4), got {boxes.shape}"
                )
            object.__setattr__(self, name, boxes)
        object.__setattr__(self, "triplet", tuple(self.triplet))

    @property
    def window(self) -> tuple[int, int]:
        return self.segment if self.segment is not None else (self.begin, self.end)


@dataclass
class _Trajectory:
    """Boxes (L, 4) for frames [start, start + L)."""

    start: int
    boxes: np.ndarray

    @property
    def end(self) -> int:
        return self.start + self.boxes.shape[0]


@dataclass
class _VideoRelation:
    triplet: Triplet
    sub: _Trajectory
    obj: _Trajectory
    scores: list[float] = field(default_factory=list)

    def score(self, aggregation: Aggregation) -> float:
        return float(sum(self.scores)) if aggregation == "sum" else float(sum(self.scores) / len(self.scores))


def cubic_iou(a: _Trajectory, b: _Trajectory, temporal_tolerance: int = 30) -> float:
    """Cubic IoU over the common frames, or of the facing boxes across a gap < tolerance (else 0)."""
    start, stop = max(a.start, b.start), min(a.end, b.end)
    if start < stop:
        boxes_a = a.boxes[start - a.start : stop - a.start]
        boxes_b = b.boxes[start - b.start : stop - b.start]
    elif start - stop < temporal_tolerance:
        first, second = (a, b) if a.end <= b.start else (b, a)
        boxes_a, boxes_b = first.boxes[-1:], second.boxes[:1]
    else:
        return 0.0
    inter = float(intersection_areas(boxes_a, boxes_b).sum())
    union = float(box_areas(boxes_a).sum() + box_areas(boxes_b).sum()) - inter
    return inter / max(union, 1e-8)


def join_trajectories(a: _Trajectory, b: _Trajectory) -> _Trajectory:
    """One trajectory over [min start, max end): mean where both have boxes, interpolation in a gap."""
    start, stop = min(a.start, b.start), max(a.end, b.end)
    boxes = np.zeros((stop - start, 4))
    count = np.zeros(stop - start)
    for t in (a, b):
        boxes[t.start - start : t.end - start] += t.boxes
        count[t.start - start : t.end - start] += 1
    covered = count > 0
    boxes[covered] /= count[covered, None]
    if not covered.all():  # a gap between the earlier and the later trajectory
        first, second = (a, b) if a.end <= b.start else (b, a)
        frames = np.arange(first.end, second.start)
        xs = [first.end - 1, second.start]
        for c in range(4):
            boxes[frames - start, c] = np.interp(frames, xs, [first.boxes[-1, c], second.boxes[0, c]])
    return _Trajectory(start, boxes)


def associate_segments(
    segment_relations: Iterable[SegmentRelation],
    top_k: int = 200,
    *,
    per_segment_top_k: int = 200,
    linkage_threshold: float = 0.5,
    temporal_tolerance: int = 30,
    aggregation: Aggregation = "sum",
) -> list[dict[str, Any]]:
    """Video-level relations (official prediction entries) of ONE video from its segment relations.

    Returns at most ``top_k`` entries ``{triplet, score, duration, sub_traj, obj_traj}``, by score
    (trajectories as (L, 4) float arrays).
    """
    if aggregation not in ("sum", "mean"):
        raise ValueError(f"aggregation: must be 'sum' or 'mean', got {aggregation!r}")
    relations = list(segment_relations)
    videos = {r.video_id for r in relations}
    if len(videos) > 1:
        raise ValueError(
            f"associate_segments: relations of several videos {sorted(videos)[:3]}; use associate_videos"
        )
    by_segment: dict[tuple[int, int], list[SegmentRelation]] = defaultdict(list)
    for r in relations:
        by_segment[r.window].append(r)
    tracks: list[_VideoRelation] = []
    active: list[_VideoRelation] = []
    for window in sorted(by_segment):
        ranked = sorted(by_segment[window], key=lambda r: r.score, reverse=True)[:per_segment_top_k]
        active = _associate_segment(
            ranked, active, tracks, linkage_threshold, temporal_tolerance, aggregation
        )
    return _top_entries(tracks, aggregation, top_k)


def _associate_segment(
    ranked: Sequence[SegmentRelation],
    active: list[_VideoRelation],
    tracks: list[_VideoRelation],
    threshold: float,
    tolerance: int,
    aggregation: Aggregation,
) -> list[_VideoRelation]:
    """Link one segment's relations to the active video relations; returns the next active list."""
    candidates: dict[Triplet, list[_VideoRelation]] = defaultdict(list)
    for track in sorted(active, key=lambda t: t.score(aggregation), reverse=True):
        candidates[track.triplet].append(track)
    next_active: list[_VideoRelation] = []
    for r in ranked:
        sub, obj = _Trajectory(r.begin, r.sub_traj), _Trajectory(r.begin, r.obj_traj)
        pool = candidates.get(r.triplet, [])
        for i, track in enumerate(pool):
            if (
                cubic_iou(track.sub, sub, tolerance) > threshold
                and cubic_iou(track.obj, obj, tolerance) > threshold
            ):
                track.sub = join_trajectories(track.sub, sub)
                track.obj = join_trajectories(track.obj, obj)
                track.scores.append(float(r.score))
                next_active.append(pool.pop(i))
                break
        else:
            track = _VideoRelation(r.triplet, sub, obj, [float(r.score)])
            tracks.append(track)
            next_active.append(track)
    return next_active


def _top_entries(tracks: list[_VideoRelation], aggregation: Aggregation, top_k: int) -> list[dict[str, Any]]:
    """The ``top_k`` best-scored tracks with > 1 common frame as official entries, by score.

    Only the kept tracks are turned into entries (a video often has several times ``top_k``
    candidates). The trajectories stay (L, 4) float arrays, views of the tracks' boxes: the
    evaluator and :func:`sage_model.model.predict.write_predictions` take arrays, and turning every
    box into Python floats cost more than the whole association (`benchmarks/bench_eval.py`).
    The sort is stable, so ties keep the order in which the tracks were made, as before.
    """
    scored = []
    for track in tracks:
        start, stop = max(track.sub.start, track.obj.start), min(track.sub.end, track.obj.end)
        if stop - start > 1:  # frames where both trajectories have boxes
            scored.append((track.score(aggregation), start, stop, track))
    scored.sort(key=lambda item: item[0], reverse=True)
    return [
        {
            "triplet": list(track.triplet),
            "score": score,
            "duration": [start, stop],
            "sub_traj": track.sub.boxes[start - track.sub.start : stop - track.sub.start],  # (L, 4)
            "obj_traj": track.obj.boxes[start - track.obj.start : stop - track.obj.start],  # (L, 4)
        }
        for score, start, stop, track in scored[:top_k]
    ]


def associate_pairs(
    segment_relations: Iterable[SegmentRelation], top_k: int = 200, *, aggregation: Aggregation = "mean"
) -> list[dict[str, Any]]:
    """Video-level relations of ONE video by track-pair linking (OV-MMP); every relation needs ``pair``.

    Returns at most ``top_k`` entries ``{triplet, score, duration, sub_traj, obj_traj}``, by score
    (trajectories as (L, 4) float arrays).
    """
    if aggregation not in ("sum", "mean"):
        raise ValueError(f"aggregation: must be 'sum' or 'mean', got {aggregation!r}")
    chains: dict[tuple[tuple[int, int], Triplet], list[SegmentRelation]] = defaultdict(list)
    for r in segment_relations:
        if r.pair is None:
            raise ValueError(
                f"associate_pairs: relation {r.triplet} of video {r.video_id!r} has no track pair"
            )
        chains[(r.pair, r.triplet)].append(r)
    if len({r.video_id for rels in chains.values() for r in rels}) > 1:
        raise ValueError("associate_pairs: relations of several videos; associate one video at a time")
    tracks: list[_VideoRelation] = []
    for (_, triplet), rels in chains.items():
        reach = None  # end of the window of the last linked relation
        for r in sorted(rels, key=lambda r: (r.window, r.begin)):
            sub, obj = _Trajectory(r.begin, r.sub_traj), _Trajectory(r.begin, r.obj_traj)
            if reach is not None and r.window[0] <= reach:  # consecutive: extend this chain's relation
                track = tracks[-1]
                track.sub, track.obj = join_trajectories(track.sub, sub), join_trajectories(track.obj, obj)
                track.scores.append(float(r.score))
                reach = max(reach, r.window[1])
            else:
                tracks.append(_VideoRelation(triplet, sub, obj, [float(r.score)]))
                reach = r.window[1]
    return _top_entries(tracks, aggregation, top_k)


def associate(
    segment_relations: Iterable[SegmentRelation],
    top_k: int = 200,
    *,
    method: Method = "greedy",
    aggregation: Aggregation = "sum",
    **greedy_options: Any,
) -> list[dict[str, Any]]:
    """One video's relations by ``method``: ``greedy`` (:func:`associate_segments`, which takes
    ``greedy_options``) or ``pair`` (:func:`associate_pairs`)."""
    if method == "greedy":
        return associate_segments(segment_relations, top_k, aggregation=aggregation, **greedy_options)
    if method == "pair":
        return associate_pairs(segment_relations, top_k, aggregation=aggregation)
    raise ValueError(f"association: must be 'greedy' or 'pair', got {method!r}")


def associate_videos(
    segment_relations: Iterable[SegmentRelation], top_k: int = 200, **options: Any
) -> dict[str, list[dict[str, Any]]]:
    """``{video_id: associate_segments(relations of that video)}``, videos in first-seen order."""
    per_video: dict[str, list[SegmentRelation]] = defaultdict(list)
    for r in segment_relations:
        per_video[r.video_id].append(r)
    return {vid: associate_segments(rels, top_k, **options) for vid, rels in per_video.items()}
