"""Voluminal IoU (vIoU) of box trajectories with the official "+1" inclusive-pixel convention.

Official semantics (VidVRD-helper ``evaluation/common.py``), restated:

* a box ``[x1, y1, x2, y2]`` has area ``(x2 - x1 + 1) * (y2 - y1 + 1)`` (also for float boxes, and
  as is for degenerate boxes);
* the overlap of two trajectories is the sum, over the frames of their temporal intersection, of
  ``max(0, min(x2) - max(x1) + 1) * max(0, min(y2) - max(y1) + 1)``;
* each trajectory's volume is the sum of its areas over its WHOLE duration, so temporal
  misalignment is penalised through the union;
* ``vIoU = overlap / (volume1 + volume2 - overlap)``, and 0 when the durations are disjoint.

Sums are taken frame by frame in frame order (``np.bincount`` and ``np.add.accumulate`` add
sequentially), which is the order of the official Python loop, so results are bit-identical to it,
not merely close: a vIoU of exactly 0.5 stays exactly 0.5.
"""

from __future__ import annotations

import numpy as np


def box_areas(boxes: np.ndarray) -> np.ndarray:
    """(L,) "+1" areas of (L, 4) boxes."""
    return (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)


def trajectory_volume(boxes: np.ndarray) -> float:
    """Sum of the "+1" areas of all boxes, added in frame order."""
    if boxes.shape[0] == 0:
        return 0.0
    return float(np.add.accumulate(box_areas(np.asarray(boxes, np.float64)))[-1])


def viou(
    boxes1: np.ndarray, duration1: tuple[int, int], boxes2: np.ndarray, duration2: tuple[int, int]
) -> float:
    """vIoU of two trajectories, ``boxesN`` (L, 4) covering frames ``[durationN[0], durationN[1])``."""
    return frames_viou(np.arange(*duration1), boxes1, np.arange(*duration2), boxes2)


def frames_viou(frames1: np.ndarray, boxes1: np.ndarray, frames2: np.ndarray, boxes2: np.ndarray) -> float:
    """vIoU of two trajectories with boxes (L, 4) at sorted, distinct frame numbers (L,).

    Frames need not be contiguous (a ground-truth object split into fragments, a tracklet with
    holes); the temporal intersection is the set of frames both have.
    """
    b1 = np.asarray(boxes1, np.float64)
    b2 = np.asarray(boxes2, np.float64)
    _, i1, i2 = np.intersect1d(frames1, frames2, assume_unique=True, return_indices=True)
    if len(i1) == 0:
        return 0.0
    overlap = float(np.add.accumulate(intersection_areas(b1[i1], b2[i2]))[-1])
    return overlap / (trajectory_volume(b1) + trajectory_volume(b2) - overlap)


def intersection_areas(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(F,) "+1" areas of the frame-wise intersections of (F, 4) boxes ``a`` and ``b`` (0 if empty)."""
    w = np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]) + 1
    h = np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]) + 1
    np.maximum(w, 0, out=w)
    np.maximum(h, 0, out=h)
    return w * h


def ragged_arange(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + n)`` for every pair (s, n) with n > 0, vectorised."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    keep = lengths > 0
    starts, lengths = starts[keep], lengths[keep]
    steps = np.ones(total, np.int64)  # cumulative sum of the steps walks every range in turn
    firsts = np.cumsum(lengths) - lengths
    steps[0] = starts[0]
    steps[firsts[1:]] = starts[1:] - (starts[:-1] + lengths[:-1] - 1)
    return np.cumsum(steps)


def paired_overlaps(
    cols_a: np.ndarray, rows_a: np.ndarray, cols_b: np.ndarray, rows_b: np.ndarray, lengths: np.ndarray
) -> np.ndarray:
    """(P,) overlaps of P trajectory pairs, frame-wise and in frame order.

    ``cols_a``/``cols_b`` are (4, F) box columns (x1, y1, x2, y2). Pair p compares frames
    ``rows_a[p] : rows_a[p] + lengths[p]`` of ``cols_a`` with as many frames of ``cols_b`` from
    ``rows_b[p]`` (the frames of the pair's temporal intersection). The arithmetic is the official
    ``(min(right) - max(left) + 1)`` in that order, so integer and float boxes give identical bits.
    """
    n = rows_a.shape[0]
    if n == 0:
        return np.zeros(0, np.float64)
    ia = ragged_arange(rows_a, lengths)  # (F,)
    ib = ia + np.repeat(rows_b - rows_a, lengths)  # (F,)
    x1a, y1a, x2a, y2a = cols_a
    x1b, y1b, x2b, y2b = cols_b
    w = np.minimum(x2a.take(ia), x2b.take(ib))
    w -= np.maximum(x1a.take(ia), x1b.take(ib))
    w += 1
    h = np.minimum(y2a.take(ia), y2b.take(ib))
    h -= np.maximum(y1a.take(ia), y1b.take(ib))
    h += 1
    np.maximum(w, 0, out=w)
    np.maximum(h, 0, out=h)
    w *= h
    return np.bincount(np.repeat(np.arange(n), lengths), weights=w, minlength=n)
