"""Shapes of the synthetic datasets: the small default, and VidVRD's real sizes (``--shape paper``).

A shape decides how many videos each split has, how long each video is and how many objects it
shows (hence how many subject-object pairs each segment has: n objects give up to n(n-1) ordered
pairs). The signal the features carry is the generator's business (``sage_model.data.synth``);
this module only sizes the data, so a CPU rehearsal of a real run meets the memory, the pair
counts and the per-video cost the real data has.

``paper`` (ImageNet-VidVRD, facts derived from the per-video lengths of its 1000 videos and the
ground-truth trajectories of its 200 test videos; numbers only, no data copied):

* splits: 800 train / 200 test videos (``--videos N`` keeps the 4:1 ratio: N train, N // 4 test);
* annotated length: VidVRD's quantiles in 15-frame units (:data:`VIDVRD_LENGTH_QUANTILES`):
  median 135 frames, mean about 240, 5 % longer than 700, the longest 5430;
* objects per video: VidVRD's test distribution (:data:`VIDVRD_OBJECT_COUNTS`): 62 % show 2,
  15 % 3, 12 % 4, a tail up to 22 (mean 2.9); 69 % of the objects span the whole video, the
  others a fraction of it (median a half). VidVRD's test videos then have 87 ground-truth pair
  rows per video (5.2 per segment) under our sampling rules (``sage_model.data.samples``);
* features 512-d in the space of a given CLIP ViT-B/16 checkpoint (its text embeddings give the
  class semantics; its fingerprint is recorded as the root's ``feature_model``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

#: (percentile, annotated length in 15-frame units) of VidVRD's 1000 videos (train + test).
VIDVRD_LENGTH_QUANTILES: tuple[tuple[float, int], ...] = (
    (0, 2), (5, 2), (10, 2), (15, 2), (20, 3), (25, 4), (30, 5), (35, 6), (40, 7), (45, 8),
    (50, 9), (55, 11), (60, 13), (65, 15), (70, 19), (75, 21), (80, 26), (85, 29), (90, 35),
    (95, 46), (97, 57), (99, 72), (99.5, 118), (100, 362),
)  # fmt: skip

#: Objects (distinct ground-truth tids) per video -> videos, VidVRD's 200 test videos.
VIDVRD_OBJECT_COUNTS: dict[int, int] = {2: 124, 3: 29, 4: 25, 5: 6, 6: 9, 7: 4, 9: 2, 22: 1}

#: Share of VidVRD's test objects whose trajectory spans the whole annotated length ...
VIDVRD_FULL_SPAN = 0.69
#: ... and (percentile, fraction of the annotated length) spanned by the others.
VIDVRD_PARTIAL_SPAN_QUANTILES: tuple[tuple[float, float], ...] = (
    (0, 0.04), (10, 0.13), (25, 0.27), (50, 0.5), (75, 0.70), (90, 0.86), (100, 0.97),
)  # fmt: skip

SHAPES = ("default", "paper")


@dataclass(frozen=True)
class VideoShape:
    """How big a synthetic dataset and its videos are."""

    name: str = "default"

    def split_videos(self, videos: int, split: str) -> int:
        """Videos of ``split`` for ``--videos``: the same per split, or VidVRD's 4:1 (paper)."""
        if self.name == "paper" and split == "test":
            return max(2, videos // 4)
        return videos

    def annotated_length(self, rng: np.random.Generator) -> int:
        """Annotated frames of one video (a multiple of 15, at least 30)."""
        if self.name == "paper":
            percentiles, units = zip(*VIDVRD_LENGTH_QUANTILES, strict=True)
            drawn = float(np.interp(100.0 * rng.random(), percentiles, units))
            return 15 * max(2, round(drawn))
        return 15 * int(rng.integers(6, 15))

    def object_span(self, rng: np.random.Generator, index: int, units: int) -> tuple[int, int]:
        """(first unit, units) of object ``index`` in a video of ``units`` 15-frame units; the first
        object always spans the video."""
        if index == 0:
            return 0, units
        if self.name == "paper":
            if rng.random() < VIDVRD_FULL_SPAN:
                return 0, units
            percentiles, fractions = zip(*VIDVRD_PARTIAL_SPAN_QUANTILES, strict=True)
            fraction = float(np.interp(100.0 * rng.random(), percentiles, fractions))
            len_u = min(units, max(2, round(fraction * units)))
        else:
            len_u = int(rng.integers(2, units + 1))
        return int(rng.integers(0, units - len_u + 1)), len_u

    def object_count(self, rng: np.random.Generator) -> int:
        """Distinct objects of one video."""
        if self.name == "paper":
            counts = np.array(list(VIDVRD_OBJECT_COUNTS), dtype=np.int64)
            weights = np.array(list(VIDVRD_OBJECT_COUNTS.values()), dtype=np.float64)
            return int(rng.choice(counts, p=weights / weights.sum()))
        return int(rng.integers(2, 6))


def video_shape(name: str) -> VideoShape:
    if name not in SHAPES:
        raise ValueError(f"--shape: unknown shape {name!r}; valid: {', '.join(SHAPES)}")
    return VideoShape(name)


def default_videos(shape: str) -> int | None:
    """``--videos`` when not given: VidVRD's 800 training videos for ``paper``, else the config default."""
    return 800 if shape == "paper" else None


@cache
def checkpoint_directions(names: tuple[str, ...], checkpoint: str) -> tuple[np.ndarray, dict[str, Any]]:
    """(C, E) centred unit class directions from a CLIP checkpoint's text tower, and the checkpoint's
    identity (what the root records as ``feature_model``); cached per process."""
    from sage_model.clip import class_embeddings, clip_identity

    model = _checkpoint_clip(checkpoint)
    raw = class_embeddings(model, list(names)).numpy().astype(np.float64)  # (C, E)
    centred = raw - raw.mean(axis=0, keepdims=True)
    centred /= np.linalg.norm(centred, axis=1, keepdims=True)
    directions = np.round(centred, 4)
    directions.flags.writeable = False
    return directions, clip_identity(model, "sage_vitb16", Path(checkpoint))


@cache
def _checkpoint_clip(checkpoint: str) -> Any:
    from sage_model.clip import build_clip

    return build_clip("sage_vitb16", Path(checkpoint))


def feature_model_record(fingerprint: str, clip: dict[str, Any] | None, *, root: bool) -> dict[str, Any]:
    """``feature_model`` of a synthetic root (``root``) or of its stores: the tiny CLIP's semantics by
    default (the records synthetic roots always had), else the given checkpoint's identity
    (fingerprint, width, activation), which models are checked against (:mod:`sage_model.compat`)."""
    if clip is None:
        record = {"name": "synthetic-mixing", "class_semantics": "sage_tiny", "fingerprint": fingerprint}
        return record if root else {"name": "synthetic-mixing", "fingerprint": fingerprint}
    record = {"name": "synthetic-mixing", "class_semantics": "sage_vitb16"}
    record.update({k: clip[k] for k in ("checkpoint", "fingerprint", "embed_dim", "quick_gelu")})
    return record
