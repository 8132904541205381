"""The 30-frame / 15-stride segment grid and the keyframes every 30 frames.

Segments of a frame range ``[fstart, fend)`` are the half-open windows ``[i, i + 30)`` for
``i = fstart, fstart + 15, ...`` while ``i + 30 <= fend`` (VidVRD-helper / VidVRD-II / RePro); test
segments cover ``[0, frame_count)``. Ids are ``{video_id}-{start:04d}-{end:04d}``.

OV-MMP (which SAGE extends) cuts the common frames of each track pair into non-overlapping 30-frame
clips instead, keeping a last clip of at least 10 frames (:func:`clip_windows`). The feature store
keeps the 30/15 grid (training reads every window); :func:`non_overlapping_rows` picks, per pair,
the stored windows that make such a chain of non-overlapping clips (``eval.segmentation: ovmmp``).

Keyframes are the frames ``0, 30, 60, ...`` (the paper samples one keyframe every 30 frames). A
30-frame segment starting on the 15-frame grid contains exactly one multiple of 30: that is its
keyframe, and the model sees it with its neighbours ``k - 30`` and ``k + 30`` (T = 3).
"""

from __future__ import annotations

import re

import numpy as np

SEGMENT_LENGTH = 30
SEGMENT_STRIDE = 15
KEYFRAME_STRIDE = 30
NUM_KEYFRAMES = 3
"""T: keyframes per sample, centred on the segment's keyframe (t - 1, t, t + 1)."""

MIN_LAST_CLIP = 10
"""OV-MMP keeps a last, shorter clip of a pair when it has at least this many frames."""

_SEGMENT_ID = re.compile(r"^(?P<vid>.+)-(?P<start>\d{4,})-(?P<end>\d{4,})$")


def segment_windows(fstart: int, fend: int) -> list[tuple[int, int]]:
    """The ``[start, end)`` 30-frame windows with stride 15 inside ``[fstart, fend)``."""
    return [(i, i + SEGMENT_LENGTH) for i in range(fstart, fend - SEGMENT_LENGTH + 1, SEGMENT_STRIDE)]


def segment_count(fstart: int, fend: int) -> int:
    """``len(segment_windows(fstart, fend))`` without building the list."""
    span = fend - fstart
    return 0 if span < SEGMENT_LENGTH else (span - SEGMENT_LENGTH) // SEGMENT_STRIDE + 1


def segment_id(video_id: str, start: int, end: int) -> str:
    """``ILSVRC2015_train_00005003-0015-0045``: start and exclusive end, zero-padded to 4 digits."""
    return f"{video_id}-{start:04d}-{end:04d}"


def parse_segment_id(tag: str) -> tuple[str, int, int]:
    """Inverse of :func:`segment_id`."""
    match = _SEGMENT_ID.match(tag)
    if match is None:
        raise ValueError(f"segment id {tag!r}: expected '<video_id>-<start:04d>-<end:04d>'")
    return match["vid"], int(match["start"]), int(match["end"])


def segment_keyframe(start: int) -> int:
    """The keyframe of segment ``[start, start + 30)``: the multiple of 30 inside it."""
    return -(-start // KEYFRAME_STRIDE) * KEYFRAME_STRIDE


def clip_windows(fstart: int, fend: int, min_last: int = MIN_LAST_CLIP) -> list[tuple[int, int]]:
    """OV-MMP's clips of ``[fstart, fend)``: ``[i, i + 30)`` for ``i = fstart, fstart + 30, ...``, and
    a last, shorter clip when at least ``min_last`` frames remain (fewer are dropped)."""
    clips = [(i, i + SEGMENT_LENGTH) for i in range(fstart, fend - SEGMENT_LENGTH + 1, SEGMENT_LENGTH)]
    tail = clips[-1][1] if clips else fstart
    if fend - tail >= min_last:
        clips.append((tail, fend))
    return clips


def non_overlapping_rows(
    starts: np.ndarray, ends: np.ndarray, spans: np.ndarray, min_last: int = MIN_LAST_CLIP
) -> tuple[np.ndarray, np.ndarray]:
    """Stored windows of ONE track pair that make non-overlapping clips, and where each clip starts.

    ``starts``/``ends`` (k,): the pair's windows, sorted by start; ``spans`` (k, 2): the pair's
    common frames ``[begin, end)`` in each. A window that starts at or after the end of the last kept
    one is kept whole. A window overlapping it is kept from that end on (a last, shorter clip as
    OV-MMP's) when no later window starts there and at least ``min_last`` of its frames are new.
    Returns (indices into the inputs, clip start frame of each kept window).
    """
    keep: list[int] = []
    begin: list[int] = []
    covered = None  # end of the last kept clip
    for i in range(len(starts)):
        start = int(starts[i])
        if covered is None or start >= covered:
            keep.append(i)
            begin.append(start)
            covered = int(ends[i])
            continue
        later = i + 1 < len(starts) and int(starts[i + 1]) <= covered
        if not later and int(spans[i, 1]) - max(int(spans[i, 0]), covered) >= min_last:
            keep.append(i)
            begin.append(covered)
            covered = int(ends[i])
    return np.asarray(keep, dtype=np.int64), np.asarray(begin, dtype=np.int64)
