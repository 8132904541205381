"""The 30-frame / 15-stride segment grid and the keyframes every 30 frames.

Segments of a frame range ``[fstart, fend)`` are the half-open windows ``[i, i + 30)`` for
``i = fstart, fstart + 15, ...`` while ``i + 30 <= fend`` (VidVRD-helper / VidVRD-II / RePro); test
segments cover ``[0, frame_count)``. Ids are ``{video_id}-{start:04d}-{end:04d}``.

Keyframes are the frames ``0, 30, 60, ...`` (the paper samples one keyframe every 30 frames). A
30-frame segment starting on the 15-frame grid contains exactly one multiple of 30: that is its
keyframe, and the model sees it with its neighbours ``k - 30`` and ``k + 30`` (T = 3).
"""

from __future__ import annotations

import re

SEGMENT_LENGTH = 30
SEGMENT_STRIDE = 15
KEYFRAME_STRIDE = 30
NUM_KEYFRAMES = 3
"""T: keyframes per sample, centred on the segment's keyframe (t - 1, t, t + 1)."""

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
