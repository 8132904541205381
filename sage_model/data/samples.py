"""Training / evaluation samples: one row per (video, segment, subject track, object track).

Rules (written here once; the synthetic generator and the real feature extraction both use them):

* Segments are the 30/15 windows over ``[0, frame_count)``. A pair of tracks is a sample of a segment
  when both have a box on at least ``MIN_PAIR_FRAMES`` (10) common frames of it (OV-MMP's rule).
  ``seg_span`` = [first, last + 1) of those common frames (absolute frame numbers).
* Keyframes (T = 3): the segment keyframe (the multiple of 30 inside it) moved to the nearest common
  frame of the pair, and that frame +- 30 where the pair also exists there; elsewhere (video ends,
  pair not yet/no longer visible) the centre frame is repeated.
* Labels: predicate ``p`` is on when a ground-truth relation ``(subject_tid, object_tid, p)`` overlaps
  ``seg_span`` on at least ``LABEL_MIN_OVERLAP`` (10) frames; multi-hot over the FULL predicate
  vocabulary (novel predicates included; the trainer masks them). On VidVRD's 15-frame grid this is the
  same as ">= half of the segment". Detected tracks take the labels of the ground-truth tid they match
  with vIoU >= 0.5 (``match_tracks``); an unmatched track gives an all-zero label row.
* Object class: vocabulary index of the track's category (ground truth, or the detector's label for
  detected tracks), -1 when unknown.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from sage_model.data.annotations import VideoAnnotation
from sage_model.data.segments import (
    KEYFRAME_STRIDE,
    NUM_KEYFRAMES,
    SEGMENT_LENGTH,
    segment_keyframe,
    segment_windows,
)
from sage_model.data.tracks import Track, match_tracks
from sage_model.data.vocab import Vocabulary

MIN_PAIR_FRAMES = 10
LABEL_MIN_OVERLAP = 10
MATCH_VIOU = 0.5


@dataclass
class PairSamples:
    """Column arrays of N pair samples (everything of a feature-store row except its features)."""

    video_id: np.ndarray  # (N,) str
    segment_start: np.ndarray  # (N,) int32
    segment_end: np.ndarray  # (N,) int32
    subject_tid: np.ndarray  # (N,) int32
    object_tid: np.ndarray  # (N,) int32
    subject_score: np.ndarray  # (N,) float32
    object_score: np.ndarray  # (N,) float32
    gt_subject_tid: np.ndarray  # (N,) int32, -1 = no ground-truth match
    gt_object_tid: np.ndarray  # (N,) int32
    subject_class: np.ndarray  # (N,) int16, -1 unknown
    object_class: np.ndarray  # (N,) int16
    labels: np.ndarray  # (N, P) uint8
    keyframes: np.ndarray  # (N, T) int32 absolute frame numbers
    boxes: np.ndarray  # (N, T, 2, 4) float32 normalised x1, y1, x2, y2
    seg_traj: np.ndarray  # (N, 2, 30, 4) float32 pixels; zeros outside seg_span
    seg_span: np.ndarray  # (N, 2) int32 absolute [begin, end)

    def __len__(self) -> int:
        return len(self.segment_start)

    @classmethod
    def concat(cls, parts: Sequence[PairSamples], num_predicates: int) -> PairSamples:
        """All rows of ``parts`` in order (an empty list gives zero rows)."""
        if not parts:
            return cls.empty(num_predicates)
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)})

    def take(self, index: np.ndarray) -> PairSamples:
        """The rows at ``index`` (a permutation or a subset), as a new object."""
        return PairSamples(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @classmethod
    def empty(cls, num_predicates: int) -> PairSamples:
        return _build_columns([], num_predicates)


@dataclass
class _Row:
    video_id: str
    start: int
    subject: int
    object: int
    span: tuple[int, int]
    keyframes: list[int]


def plan_pair_samples(
    video: VideoAnnotation,
    vocab: Vocabulary,
    tracks: Sequence[Track] | None = None,
    *,
    min_pair_frames: int = MIN_PAIR_FRAMES,
    label_min_overlap: int = LABEL_MIN_OVERLAP,
) -> PairSamples:
    """The pair samples of one video, from its GT tracks (``tracks=None``) or from detected tracks.

    Rows are ordered by (segment_start, subject_tid, object_tid).
    """
    if tracks is None:
        tracks = list(video.tid_tracks().values())
        gt_tids = [t.tid for t in tracks]
    else:
        gt_tids = match_tracks(tracks, video.fragments, MATCH_VIOU)
    relations = relations_by_pair(video, vocab)
    windows = segment_windows(0, video.frame_count)
    blocks = []
    for i, sub in enumerate(tracks):
        for j, obj in enumerate(tracks):
            rows = _pair_rows(video.video_id, i, j, sub, obj, windows, min_pair_frames) if i != j else []
            if rows:
                pair_relations = relations.get((gt_tids[i], gt_tids[j]), [])
                block = _pair_block(rows, sub, obj, video, vocab, pair_relations, label_min_overlap)
                block.gt_subject_tid[:], block.gt_object_tid[:] = gt_tids[i], gt_tids[j]
                blocks.append(block)
    samples = PairSamples.concat(blocks, len(vocab.predicates))
    return samples.take(np.lexsort((samples.object_tid, samples.subject_tid, samples.segment_start)))


def relations_by_pair(
    video: VideoAnnotation, vocab: Vocabulary
) -> dict[tuple[int, int], list[tuple[int, int, int]]]:
    """(subject tid, object tid) -> [(begin_fid, end_fid, predicate index)] of the video's relations."""
    out: dict[tuple[int, int], list[tuple[int, int, int]]] = defaultdict(list)
    for rel in video.relations:
        out[(rel.subject_tid, rel.object_tid)].append(
            (rel.begin_fid, rel.end_fid, vocab.predicate_index(rel.predicate))
        )
    return out


def _pair_rows(
    video_id: str, i: int, j: int, sub: Track, obj: Track, windows: list[tuple[int, int]], min_frames: int
) -> list[_Row]:
    """One row per window in which the pair has >= ``min_frames`` common frames."""
    common = np.intersect1d(sub.frames, obj.frames, assume_unique=True)
    if len(common) < min_frames:
        return []
    common_set = set(common.tolist())
    rows = []
    for start, end in windows:
        if end <= common[0] or start > common[-1]:
            continue
        lo, hi = np.searchsorted(common, [start, end])
        if hi - lo < min_frames:
            continue
        inside = common[lo:hi]
        key = segment_keyframe(start)
        centre = int(inside[np.argmin(np.abs(inside - key))])
        before = centre - KEYFRAME_STRIDE if centre - KEYFRAME_STRIDE in common_set else centre
        after = centre + KEYFRAME_STRIDE if centre + KEYFRAME_STRIDE in common_set else centre
        assert NUM_KEYFRAMES == 3
        rows.append(
            _Row(video_id, start, i, j, (int(inside[0]), int(inside[-1]) + 1), [before, centre, after])
        )
    return rows


def _build_columns(rows: list[_Row], num_predicates: int) -> PairSamples:
    n = len(rows)
    return PairSamples(
        video_id=np.array([r.video_id for r in rows], dtype=object),
        segment_start=np.array([r.start for r in rows], dtype=np.int32),
        segment_end=np.array([r.start + SEGMENT_LENGTH for r in rows], dtype=np.int32),
        subject_tid=np.zeros(n, dtype=np.int32),
        object_tid=np.zeros(n, dtype=np.int32),
        subject_score=np.zeros(n, dtype=np.float32),
        object_score=np.zeros(n, dtype=np.float32),
        gt_subject_tid=np.full(n, -1, dtype=np.int32),
        gt_object_tid=np.full(n, -1, dtype=np.int32),
        subject_class=np.full(n, -1, dtype=np.int16),
        object_class=np.full(n, -1, dtype=np.int16),
        labels=np.zeros((n, num_predicates), dtype=np.uint8),
        keyframes=np.array([r.keyframes for r in rows], dtype=np.int32).reshape(n, NUM_KEYFRAMES),
        boxes=np.zeros((n, NUM_KEYFRAMES, 2, 4), dtype=np.float32),
        seg_traj=np.zeros((n, 2, SEGMENT_LENGTH, 4), dtype=np.float32),
        seg_span=np.array([r.span for r in rows], dtype=np.int32).reshape(n, 2),
    )


def _pair_block(
    rows: list[_Row],
    sub: Track,
    obj: Track,
    video: VideoAnnotation,
    vocab: Vocabulary,
    relations: list[tuple[int, int, int]],
    label_min_overlap: int,
) -> PairSamples:
    """The rows of one ordered track pair, filled in with array operations."""
    block = _build_columns(rows, len(vocab.predicates))
    k = len(rows)
    scale = np.array([video.width, video.height, video.width, video.height], dtype=np.float32)
    spans, starts = block.seg_span, block.segment_start  # (k, 2), (k,)
    first, last = int(spans[:, 0].min()), int(spans[:, 1].max())
    for index, track in enumerate((sub, obj)):
        present, boxes = track.box_lookup(block.keyframes.reshape(-1))
        assert present.all(), "keyframes are common frames of the pair"
        block.boxes[:, :, index] = boxes.reshape(k, NUM_KEYFRAMES, 4) / scale
        dense = _interpolated(track, np.arange(first, last))  # (last - first, 4)
        for r in range(k):
            block.seg_traj[r, index, spans[r, 0] - starts[r] : spans[r, 1] - starts[r]] = dense[
                spans[r, 0] - first : spans[r, 1] - first
            ]
    block.subject_tid[:], block.object_tid[:] = sub.tid, obj.tid
    block.subject_score[:], block.object_score[:] = sub.score, obj.score
    block.subject_class[:] = _class_index(vocab, sub.category)
    block.object_class[:] = _class_index(vocab, obj.category)
    for begin, end, pred in relations:
        overlap = np.minimum(end, spans[:, 1]) - np.maximum(begin, spans[:, 0])  # (k,)
        block.labels[overlap >= label_min_overlap, pred] = 1
    return block


def _interpolated(track: Track, frames: np.ndarray) -> np.ndarray:
    """Boxes at ``frames`` (inside the track's time range); holes are filled linearly."""
    present, boxes = track.box_lookup(frames)
    if present.all():
        return boxes
    return np.stack([np.interp(frames, track.frames, track.boxes[:, c]) for c in range(4)], axis=1)


def _class_index(vocab: Vocabulary, category: str | None) -> int:
    return vocab.objects.index(category) if category in vocab.objects else -1
