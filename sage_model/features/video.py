"""Video decoding with PyAV: the RGB frames at a given set of frame indices.

Frame indices are the annotation's (0-based, presentation order), so a keyframe index taken
from an annotation or a segment addresses the same picture the annotators boxed. Decoding is
sequential (no seeking): seeking in H.264 lands on the previous key picture and frame counting
after a seek is unreliable across containers, while a sequential pass over a VidVRD/VidOR video
(at most a few thousand frames) costs little next to the CLIP forward passes. Only the wanted
frames are converted to RGB arrays.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

import av
import numpy as np

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov")
# A container may hold a few frames fewer than the annotation's frame_count (re-encoding drops the
# tail); keyframes that far past the end reuse the last decoded frame, anything further is an error.
MAX_MISSING_TAIL_FRAMES = 30


def find_video(videos_dir: Path, video_id: str, relative_path: str | None = None) -> Path:
    """The video file of ``video_id`` under ``videos_dir``.

    Looks at ``relative_path`` (VidOR annotations carry ``video_path`` = ``<group>/<id>.mp4``),
    then ``<videos_dir>/<id>.<ext>`` (VidVRD) and ``<videos_dir>/*/<id>.<ext>`` (VidOR groups).
    """
    candidates: list[Path] = []
    if relative_path:
        candidates.append(videos_dir / relative_path)
    candidates += [videos_dir / f"{video_id}{suffix}" for suffix in VIDEO_SUFFIXES]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    for suffix in VIDEO_SUFFIXES:
        matches = sorted(videos_dir.glob(f"*/{video_id}{suffix}"))
        if matches:
            return matches[0]
    raise FileNotFoundError(
        f"{videos_dir}: no video file for {video_id!r} (looked for {video_id}.mp4 and */{video_id}.mp4"
        + (f" and {relative_path}" if relative_path else "")
        + ")"
    )


def iter_frames(path: Path, indices: Iterable[int]) -> Iterator[tuple[int, np.ndarray]]:
    """``(index, (H, W, 3) uint8 RGB frame)`` for every requested frame index, in increasing order.

    Streams: only one decoded frame is held at a time, so a long video with many keyframes does
    not fill memory. Raises ``ValueError`` naming the file when it cannot be decoded or is more
    than ``MAX_MISSING_TAIL_FRAMES`` frames shorter than a requested index.
    """
    wanted = sorted({int(i) for i in indices})
    if not wanted:
        return
    if wanted[0] < 0:
        raise ValueError(f"{path}: negative frame index {wanted[0]}")
    wanted_set = set(wanted)
    last: tuple[int, np.ndarray] | None = None
    served = decoded = 0
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for index, frame in enumerate(container.decode(stream)):
                decoded = index + 1
                if index in wanted_set:
                    rgb = frame.to_ndarray(format="rgb24")
                    last = (index, rgb)
                    served += 1
                    yield index, rgb
                elif index > wanted[-1] - MAX_MISSING_TAIL_FRAMES:
                    last = (index, frame.to_ndarray(format="rgb24"))
                if index >= wanted[-1]:
                    return
    except (av.error.FFmpegError, IndexError) as exc:
        raise ValueError(f"{path}: cannot decode video ({exc})") from exc
    if served < len(wanted):
        yield from _missing_tail(path, wanted[served:], last, decoded)


def _missing_tail(
    path: Path, missing: list[int], last: tuple[int, np.ndarray] | None, decoded: int
) -> Iterator[tuple[int, np.ndarray]]:
    """The last decoded frame for wanted indices past the end of a slightly short video."""
    if last is None or missing[-1] - last[0] > MAX_MISSING_TAIL_FRAMES:
        raise ValueError(
            f"{path}: video has {decoded} decodable frames but frame {missing[-1]} was requested "
            f"(annotation and video disagree by more than {MAX_MISSING_TAIL_FRAMES} frames)"
        )
    log.warning("%s: frames %s past the last decoded frame %d reuse it", path, missing, last[0])
    for index in missing:
        yield index, last[1]


def read_frames(path: Path, indices: Iterable[int]) -> dict[int, np.ndarray]:
    """All requested frames at once, ``{index: (H, W, 3) uint8}`` (see :func:`iter_frames`)."""
    return dict(iter_frames(path, indices))

