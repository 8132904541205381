"""The embedded synthetic VidVRD / VidOR datasets (for CPU smoke runs, tests and benchmarks).

Its numbers are NOT comparable to the paper's: the videos, boxes and features are generated. What it
keeps from the real datasets: the official annotation formats, the real vocabularies and base/novel
splits, the 30/15 segment grid, GT fragments, OV-MMP-layout detected tracklets, and the feature and
teacher store formats. The full generator spec is in ``docs/data.md`` (section 8); in short:

* Geometry: 2-5 objects per video moving smoothly (drift + sway + depth change); annotated length a
  multiple of 15 (90-210 frames), ``frame_count`` up to 14 frames longer; tids may be fragmented.
* Relation *events* on the 15-frame grid (>= 30 frames, 1-2 predicates), predicates drawn among
  those the geometry allows (``left`` needs the subject left of the object, ...); 20 % novel.
* Class semantics = centred, re-normalised tiny-CLIP text embeddings of the class names
  (``E_obj``, ``E_pred``); visual features live in a fixed random orthogonal mixing ``Q`` of them.
* Each event is shown through ONE signal channel (:class:`Signals`), one per SAGE component:
  appearance (union token, readable by anything), spatial (evidence on the subject or object token
  beside a decoy; the frame token says which by role), temporal (evidence at the segment's own
  keyframe, other predicates at its neighbours), semantic (evidence on the subject or object token
  beside a decoy; only the teacher's description names the true one). Novel predicates are
  reachable only through the class text (``E_pred``) in every channel. With ``sign_marks`` > 0 the
  two decoy channels are told apart by a sign instead (marks +-sign * m on the two tokens; the
  frame token or the teacher's description carries the sign).
* Teachers live in the text space; they describe appearance and semantic events, right with
  probability ``accuracy`` per event: ``asmv2`` more often and less noisily than ``blip2``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from sage_model.data.annotations import (
    RelationInstance,
    VideoAnnotation,
    load_annotation_folder,
    write_annotation_folder,
)
from sage_model.data.dataset import SOURCES, SPLITS
from sage_model.data.samples import PairSamples, plan_pair_samples
from sage_model.data.segments import segment_count
from sage_model.data.shapes import VideoShape, checkpoint_directions, feature_model_record, video_shape
from sage_model.data.store import write_feature_store, write_teacher_store
from sage_model.data.tracks import Track, contiguous_runs, load_ovmmp_tracks, write_ovmmp_tracks
from sage_model.data.vocab import Vocabulary, load_vocabulary

logger = logging.getLogger(__name__)

GENERATOR = "sage-synthetic"
GENERATOR_VERSION = 2
DEFAULT_SHAPE = VideoShape()
NOVEL_PREDICATE_RATE = 0.2
NOVEL_OBJECT_RATE = 0.2
RELATION_RATE = 0.7
SECOND_PREDICATE_RATE = 0.35
PREDICATE_ZIPF = 1.0  # exponent of the long-tailed predicate frequencies (0 = uniform)

# Visual feature noise (norm of the noise vector relative to one unit class direction), before the
# `Signals.visual_noise` factor.
VIS_OBJECT_NOISE = 0.5
VIS_UNION_NOISE = 0.7
VIS_UNION_CLASS_WEIGHT = 0.5
VIS_FRAME_NOISE = 0.5

CHANNELS = ("appearance", "spatial", "temporal", "semantic")
APPEARANCE, SPATIAL, TEMPORAL, SEMANTIC = range(4)
NO_EVENT = -1


@dataclass(frozen=True)
class Signals:
    """Strength of each signal channel (docs/data.md section 8.2): a generator setting.

    ``appearance``/``spatial``/``temporal``/``semantic`` are the shares of relation events shown
    through each channel (they sum to 1; 0 switches a channel off). ``class_text`` (0..1) is how far
    a predicate's visual direction is its class-text direction (1: equal, so novel predicates are
    reachable through the text side; 0: unrelated). ``visual_noise`` scales every visual noise level.
    """

    appearance: float = 0.25
    spatial: float = 0.25
    temporal: float = 0.25
    semantic: float = 0.25
    class_text: float = 1.0
    visual_noise: float = 1.0
    #: 0: spatial/semantic decoys told apart by role (frame token) and by content (the teacher names
    #: the predicates); > 0: by a sign, marks of this norm (docs/data.md section 8.2, "sign marks")
    sign_marks: float = 0.0

    def __post_init__(self) -> None:
        shares = self.shares()
        if (shares < 0).any() or abs(float(shares.sum()) - 1.0) > 1e-6:
            raise ValueError(
                f"Signals: channel shares must be >= 0 and sum to 1, got {dict(zip(CHANNELS, shares, strict=True))}"
            )
        if not 0.0 <= self.class_text <= 1.0:
            raise ValueError(f"Signals.class_text: must be in 0..1, got {self.class_text}")
        if self.visual_noise < 0:
            raise ValueError(f"Signals.visual_noise: must be >= 0, got {self.visual_noise}")
        if self.sign_marks < 0:
            raise ValueError(f"Signals.sign_marks: must be >= 0, got {self.sign_marks}")

    def shares(self) -> np.ndarray:
        """(4,) event shares in ``CHANNELS`` order."""
        return np.array([self.appearance, self.spatial, self.temporal, self.semantic], np.float64)

    def settings(self) -> dict[str, float]:
        """What ``dataset.json`` records; ``sign_marks`` only when on, so roots made before it match."""
        marks = {"sign_marks": self.sign_marks} if self.sign_marks else {}
        return {
            "appearance": self.appearance,
            "spatial": self.spatial,
            "temporal": self.temporal,
            "semantic": self.semantic,
            "class_text": self.class_text,
            "visual_noise": self.visual_noise,
            **marks,
        }


DEFAULT_SIGNALS = Signals()


@dataclass(frozen=True)
class TeacherNoise:
    """How well a synthetic teacher sees: each fact right with ``accuracy``, plus text-space noise."""

    accuracy: float
    noise: float


TEACHERS: dict[str, TeacherNoise] = {"asmv2": TeacherNoise(0.9, 0.3), "blip2": TeacherNoise(0.65, 0.6)}
_DATASET_CODE = {"vidvrd": 1, "vidor": 2}
_SPLIT_CODE = {"train": 1, "test": 2}
_PURPOSE = {"videos": 1, "det": 2, "scene": 3, "visual": 4, "teacher": 5, "mix": 6, "events": 7, "codes": 8}


@dataclass(frozen=True)
class SynthSpec:
    """What identifies a synthetic dataset; equal specs give byte-identical stores."""

    dataset: str
    videos: int
    seed: int
    feature_dim: int = 64
    signals: Signals = DEFAULT_SIGNALS
    #: sizes (sage_model.data.shapes): "default" or "paper" (VidVRD's lengths, objects, 4:1 splits)
    shape: str = "default"
    #: CLIP checkpoint whose text tower gives the class semantics and whose identity the root records
    clip_checkpoint: str | None = None
    #: videos of the test split when it differs from ``videos`` (None: the shape's rule); the
    #: training split, and so every trained model, is the same for any value
    test_videos: int | None = None

    def split_videos(self, split: str) -> int:
        """Videos generated for ``split``."""
        if split == "test" and self.test_videos is not None:
            return self.test_videos
        return video_shape(self.shape).split_videos(self.videos, split)

    def settings(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"shape": self.shape} if self.shape != "default" else {}
        if self.clip_checkpoint is not None:
            extra["clip_checkpoint"] = self.clip_checkpoint
        if self.test_videos is not None:  # absent when unset: roots made before it existed still match
            extra["test_videos"] = self.test_videos
        return {
            "generator": GENERATOR,
            "version": GENERATOR_VERSION,
            "dataset": self.dataset,
            "videos_per_split": self.videos,
            "seed": self.seed,
            "feature_dim": self.feature_dim,
            "signals": self.signals.settings(),
            **extra,
        }


def synthetic_root_name(
    dataset: str,
    videos: int,
    seed: int,
    feature_dim: int = 64,
    signals: Signals | None = None,
    test_videos: int | None = None,
) -> str:
    """A folder name that identifies a synthetic dataset, for caches holding several."""
    name = f"synthetic-{dataset}-v{videos}-s{seed}-d{feature_dim}-g{GENERATOR_VERSION}"
    if test_videos is not None:
        name += f"-t{test_videos}"
    if signals is not None and signals != DEFAULT_SIGNALS:
        digest = hashlib.sha256(json.dumps(signals.settings(), sort_keys=True).encode()).hexdigest()
        name += f"-x{digest[:8]}"
    return name


def _rng(spec: SynthSpec, split: str, purpose: str, *extra: int) -> np.random.Generator:
    return np.random.default_rng(
        [spec.seed, _DATASET_CODE[spec.dataset], _SPLIT_CODE[split], _PURPOSE[purpose], *extra]
    )


# ----------------------------------------------------------------------------------------------------
# Class semantics


@dataclass(frozen=True)
class Semantics:
    """Unit class directions in text space, their visual counterparts, codes and the visual mixing."""

    objects: np.ndarray  # (C, D) E_obj
    predicates: np.ndarray  # (P, D) E_pred (text side: teachers, probes)
    mixing: np.ndarray  # (D, D) orthogonal Q, visual = semantic @ Q
    fingerprint: str
    visual_predicates: np.ndarray  # (P, D) V_pred = E_pred at class_text 1
    codes: np.ndarray  # (5, D) unit k_role, m_spa, m_sem, w_ptr, spare
    clip: dict[str, Any] | None = None  # identity of the checkpoint behind E_obj / E_pred (None: tiny)


ROLE, SPATIAL_MARK, SEMANTIC_MARK, POINTER, _SPARE = range(5)


def class_semantics(
    vocab: Vocabulary,
    feature_dim: int,
    seed: int,
    class_text: float = 1.0,
    clip_checkpoint: str | None = None,
) -> Semantics:
    """E_obj / E_pred from the tiny CLIP's class-name embeddings, centred over the vocabulary.

    The raw tiny-CLIP embeddings of any two names have cosine 0.5-0.9; centring removes that
    common component so the directions separate the classes. ``class_text`` < 1 turns the visual
    predicate directions partly away from the text ones (``Signals.class_text``).
    """
    clip = None
    if clip_checkpoint is None:
        objects, fingerprint = _tiny_directions(vocab.objects)
        predicates, _ = _tiny_directions(vocab.predicates)
    else:  # shapes hook: the semantics of a given CLIP checkpoint
        objects, clip = checkpoint_directions(vocab.objects, clip_checkpoint)
        predicates, _ = checkpoint_directions(vocab.predicates, clip_checkpoint)
        fingerprint = clip["fingerprint"]
        if feature_dim != clip["embed_dim"]:
            raise ValueError(
                f"--feature-dim: {clip_checkpoint} embeds {clip['embed_dim']}-d, features must be as wide, got {feature_dim}"
            )
    width = objects.shape[1]
    if feature_dim < width:
        raise ValueError(f"feature_dim: must be >= {width} (the tiny CLIP width), got {feature_dim}")
    lift = np.eye(width, feature_dim)
    if feature_dim > width:  # a fixed isometric embedding into the wider space
        lift = np.linalg.qr(np.random.default_rng([seed, 7]).standard_normal((feature_dim, width)))[0].T
    rng = np.random.default_rng([seed, _DATASET_CODE[vocab.dataset], _PURPOSE["mix"]])
    mixing = np.linalg.qr(rng.standard_normal((feature_dim, feature_dim)))[0]
    text_predicates = predicates @ lift
    code_rng = np.random.default_rng([seed, _DATASET_CODE[vocab.dataset], _PURPOSE["codes"]])
    codes = _unit_rows(code_rng.standard_normal((5, feature_dim)))
    visual_predicates = text_predicates
    if class_text < 1.0:
        other = _unit_rows(code_rng.standard_normal(text_predicates.shape))
        visual_predicates = _unit_rows(class_text * text_predicates + np.sqrt(1 - class_text**2) * other)
    f32 = np.float32  # features are stored as float16: float32 arithmetic halves the memory of big runs
    return Semantics(
        (objects @ lift).astype(f32),
        text_predicates.astype(f32),
        mixing.astype(f32),
        fingerprint,
        visual_predicates.astype(f32),
        codes.astype(f32),
        clip,
    )


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@cache
def _tiny_directions(names: tuple[str, ...]) -> tuple[np.ndarray, str]:
    """(C, 64) centred unit tiny-CLIP class directions (rounded to 1e-4 so the dataset bytes do not
    depend on the BLAS thread count) and the tiny CLIP's fingerprint; cached per process."""
    from sage_model.clip import build_tiny_clip, class_embeddings, model_fingerprint

    model = build_tiny_clip()
    raw = class_embeddings(model, list(names)).numpy().astype(np.float64)  # (C, 64)
    centred = raw - raw.mean(axis=0, keepdims=True)
    centred /= np.linalg.norm(centred, axis=1, keepdims=True)
    directions = np.round(centred, 4)
    directions.flags.writeable = False
    return directions, model_fingerprint(model)


# ----------------------------------------------------------------------------------------------------
# Videos: geometry, fragments, relations


def _smooth_path(rng: np.random.Generator, frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """(n, 4) integer pixel boxes moving smoothly over ``frames`` (drift + sway + depth change)."""
    t = frames.astype(np.float64)
    t0 = t[0]
    box_w = rng.uniform(0.12, 0.35) * width
    box_h = np.clip(box_w * rng.uniform(0.6, 1.5), 0.1 * height, 0.7 * height)
    scale = np.exp(rng.normal(0.0, 0.4) * (t - t0) / 150.0)  # (n,) depth change
    velocity = rng.normal(0.0, 0.0025, size=2) * np.array([width, height])
    sway_amp = rng.uniform(0.0, 0.05, size=2) * np.array([width, height])
    sway_period = rng.uniform(60, 200, size=2)
    phase = rng.uniform(0, 2 * np.pi, size=2)
    centre0 = rng.uniform(0.2, 0.8, size=2) * np.array([width, height])
    cx = centre0[0] + velocity[0] * (t - t0) + sway_amp[0] * np.sin(2 * np.pi * t / sway_period[0] + phase[0])
    cy = centre0[1] + velocity[1] * (t - t0) + sway_amp[1] * np.sin(2 * np.pi * t / sway_period[1] + phase[1])
    half_w, half_h = box_w * scale / 2, box_h * scale / 2
    cx = np.clip(cx, half_w, width - 1 - half_w)
    cy = np.clip(cy, half_h, height - 1 - half_h)
    boxes = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1)
    boxes = np.clip(np.round(boxes), 0, [width - 1, height - 1, width - 1, height - 1])
    return boxes.astype(np.float32)


def _object_frames(
    rng: np.random.Generator, index: int, annotated_len: int, shape: VideoShape = DEFAULT_SHAPE
) -> np.ndarray:
    """Frames of one object on the 15-frame grid (>= 30 frames; sometimes split into 2 fragments).

    The first object spans the video, like the real test set where some track ends exactly at the
    annotated length; ``shape`` places the others.
    """
    units = annotated_len // 15
    start_u, len_u = shape.object_span(rng, index, units)
    frames = np.arange(start_u * 15, (start_u + len_u) * 15)
    if len_u >= 6 and rng.random() < 0.3:  # a gap of 15 or 30 frames, both fragments >= 30 frames
        gap_u = int(rng.integers(1, 3))
        gap_start = start_u + int(rng.integers(2, len_u - gap_u - 1))
        frames = frames[(frames < gap_start * 15) | (frames >= (gap_start + gap_u) * 15)]
    return frames


def _layout(sub: Track, obj: Track, frames: np.ndarray, width: int) -> dict[str, float]:
    """Relative geometry of subject vs object over ``frames`` (both present)."""
    _, sb = sub.box_lookup(frames)
    _, ob = obj.box_lookup(frames)
    sc, oc = (sb[:, :2] + sb[:, 2:]) / 2, (ob[:, :2] + ob[:, 2:]) / 2  # (n, 2)
    s_area = (sb[:, 2] - sb[:, 0] + 1) * (sb[:, 3] - sb[:, 1] + 1)
    o_area = (ob[:, 2] - ob[:, 0] + 1) * (ob[:, 3] - ob[:, 1] + 1)
    dist = np.linalg.norm(sc - oc, axis=1) / width
    speed_s = np.linalg.norm(np.diff(sc, axis=0), axis=1).mean() if len(frames) > 1 else 0.0
    speed_o = np.linalg.norm(np.diff(oc, axis=0), axis=1).mean() if len(frames) > 1 else 0.0
    inside = (sc[:, 0] > ob[:, 0]) & (sc[:, 0] < ob[:, 2]) & (sc[:, 1] > ob[:, 1]) & (sc[:, 1] < ob[:, 3])
    return {
        "dx": float((sc[:, 0] - oc[:, 0]).mean() / width),
        "dy": float((sc[:, 1] - oc[:, 1]).mean() / width),
        "log_area": float(np.log(s_area / o_area).mean()),
        "log_height": float(np.log((sb[:, 3] - sb[:, 1] + 1) / (ob[:, 3] - ob[:, 1] + 1)).mean()),
        "approach": float(dist[-1] - dist[0]),
        "distance": float(dist.mean()),
        "speed_ratio": float((speed_s + 1e-3) / (speed_o + 1e-3)),
        "inside": float(inside.mean()),
    }


SPATIAL_RULES: dict[str, Callable[[dict[str, float]], bool]] = {
    "left": lambda g: g["dx"] < -0.04,
    "right": lambda g: g["dx"] > 0.04,
    "above": lambda g: g["dy"] < -0.04,
    "beneath": lambda g: g["dy"] > 0.04,
    "front": lambda g: g["log_area"] > 0.1,
    "behind": lambda g: g["log_area"] < -0.1,
    "toward": lambda g: g["approach"] < -0.02,
    "towards": lambda g: g["approach"] < -0.02,
    "away": lambda g: g["approach"] > 0.02,
    "larger": lambda g: g["log_area"] > 0.3,
    "taller": lambda g: g["log_height"] > 0.2,
    "faster": lambda g: g["speed_ratio"] > 1.3,
    "next": lambda g: g["distance"] < 0.35,
    "inside": lambda g: g["inside"] > 0.8 and g["log_area"] < 0,
}
"""Predicate name token -> the geometry it needs (``sit_behind`` needs the subject smaller/farther)."""


def _eligible(predicates: Sequence[str], layout: dict[str, float]) -> list[int]:
    """Indices of the predicates whose spatial name tokens the layout satisfies."""
    return [
        i
        for i, rules in enumerate(_predicate_rules(tuple(predicates)))
        if all(rule(layout) for rule in rules)
    ]


@cache
def _predicate_rules(predicates: tuple[str, ...]) -> list[list[Callable[[dict[str, float]], bool]]]:
    return [[SPATIAL_RULES[tok] for tok in name.split("_") if tok in SPATIAL_RULES] for name in predicates]


def _pick_predicates(rng: np.random.Generator, vocab: Vocabulary, eligible: list[int]) -> list[str]:
    base_count = len(vocab.base_predicates)
    pools = {
        "base": [i for i in eligible if i < base_count],
        "novel": [i for i in eligible if i >= base_count],
    }
    weights = _predicate_weights(vocab.dataset, base_count, len(vocab.predicates))
    chosen: list[str] = []
    for _ in range(1 + int(rng.random() < SECOND_PREDICATE_RATE)):
        kind = "novel" if rng.random() < NOVEL_PREDICATE_RATE else "base"
        pool = [
            i for i in pools[kind] or pools["base"] or pools["novel"] if vocab.predicates[i] not in chosen
        ]
        if pool:
            w = weights[pool]
            chosen.append(vocab.predicates[int(rng.choice(pool, p=w / w.sum()))])
    return chosen


@cache
def _predicate_weights(dataset: str, base_count: int, total: int) -> np.ndarray:
    """(P,) long-tailed predicate frequencies, as in the real datasets: Zipf (``PREDICATE_ZIPF``)
    over a fixed pseudo-random rank order, within the base and within the novel predicates."""
    rng = np.random.default_rng([_DATASET_CODE[dataset], 11])
    weights = np.empty(total)
    for lo, hi in ((0, base_count), (base_count, total)):
        rank = rng.permutation(hi - lo)
        weights[lo:hi] = 1.0 / (rank + 1.0) ** PREDICATE_ZIPF
    weights.flags.writeable = False
    return weights


def _relations(
    rng: np.random.Generator, vocab: Vocabulary, tracks: dict[int, Track], width: int
) -> list[RelationInstance]:
    """Relation instances on the 15-frame grid for the ordered pairs that co-exist >= 30 frames."""
    relations = []
    for s_tid, sub in tracks.items():
        for o_tid, obj in tracks.items():
            if s_tid == o_tid:
                continue
            common = np.intersect1d(sub.frames, obj.frames, assume_unique=True)
            for lo, hi in contiguous_runs(common):
                run_u = (hi - lo) // 15
                if run_u < 2 or rng.random() >= RELATION_RATE:
                    continue
                len_u = int(rng.integers(2, run_u + 1))
                begin = int(common[lo]) + 15 * int(rng.integers(0, run_u - len_u + 1))
                frames = np.arange(begin, begin + 15 * len_u)
                layout = _layout(sub, obj, frames, width)
                for predicate in _pick_predicates(rng, vocab, _eligible(vocab.predicates, layout)):
                    relations.append(RelationInstance(s_tid, o_tid, predicate, begin, begin + 15 * len_u))
    return relations


def _video_id(dataset: str, split: str, index: int) -> tuple[str, str | None]:
    if dataset == "vidvrd":
        return f"SYNTH_vidvrd_{split}_{index:05d}", None
    return f"9{_SPLIT_CODE[split]}{index:08d}", f"{9000 + index // 50:04d}"


def generate_video(
    rng: np.random.Generator, vocab: Vocabulary, split: str, index: int, shape: VideoShape = DEFAULT_SHAPE
) -> VideoAnnotation:
    """One synthetic video annotation (official-format content); ``shape`` sizes it."""
    annotated_len = shape.annotated_length(rng)
    frame_count = annotated_len + (int(rng.integers(1, 15)) if rng.random() < 0.8 else 0)
    width, height = [(640, 360), (1280, 720), (640, 480)][int(rng.integers(0, 3))]
    n_objects = shape.object_count(rng)
    tid_values = (
        sorted(rng.choice(n_objects + 2, n_objects, replace=False).tolist())
        if rng.random() < 0.2
        else list(range(n_objects))
    )
    objects: dict[int, str] = {}
    fragments: list[Track] = []
    merged: dict[int, Track] = {}
    for index_obj, tid in enumerate(tid_values):
        novel = rng.random() < NOVEL_OBJECT_RATE
        pool = vocab.novel_objects if novel else vocab.base_objects
        category = pool[int(rng.integers(0, len(pool)))]
        frames = _object_frames(rng, index_obj, annotated_len, shape)
        full = np.arange(frames[0], frames[-1] + 1)
        boxes = _smooth_path(rng, full, width, height)[np.isin(full, frames)]
        objects[tid] = category
        merged[tid] = Track(tid, category, frames, boxes)
        fragments.extend(Track(tid, category, frames[a:b], boxes[a:b]) for a, b in contiguous_runs(frames))
    video_id, group = _video_id(vocab.dataset, split, index)
    return VideoAnnotation(
        video_id=video_id,
        frame_count=frame_count,
        fps=30.0 if vocab.dataset == "vidvrd" else 29.97,
        width=width,
        height=height,
        annotated_len=annotated_len,
        objects=objects,
        fragments=tuple(fragments),
        relations=tuple(_relations(rng, vocab, merged, width)),
        version="VERSION 1.0" if vocab.dataset == "vidor" else None,
        group=group,
        video_hash=f"{int(rng.integers(0, 2**40)):010x}" if vocab.dataset == "vidor" else None,
    )


# ----------------------------------------------------------------------------------------------------
# Detected tracklets


def detect_video(rng: np.random.Generator, video: VideoAnnotation, vocab: Vocabulary) -> list[Track]:
    """Detector-like tracklets: jittered GT fragments (some missed, some split) + false positives.

    ``meta['origin_tid']`` keeps the GT tid a tracklet was made from (-1 for a false positive) and
    ``meta['true_class']`` the class of what it really covers; the generator uses them to make the
    features, never to make labels (labels go through vIoU matching like for real detections).
    """
    out: list[Track] = []
    for frag in video.fragments:
        if rng.random() < 0.1:
            continue  # missed
        pieces = [frag]
        if len(frag) >= 60 and rng.random() < 0.15:  # identity switch: split in two
            cut = int(rng.integers(20, len(frag) - 20))
            pieces = [_slice(frag, 0, cut), _slice(frag, cut, len(frag))]
        for piece in pieces:
            out.append(_jittered(rng, piece, video, vocab))
    for _ in range(int(rng.poisson(0.7))):
        out.append(_false_positive(rng, video, vocab))
    out.sort(key=lambda t: (t.begin, t.end))
    return [Track(i, t.category, t.frames, t.boxes, t.score, t.meta) for i, t in enumerate(out)]


def _slice(track: Track, a: int, b: int) -> Track:
    return Track(track.tid, track.category, track.frames[a:b], track.boxes[a:b])


def _jittered(rng: np.random.Generator, piece: Track, video: VideoAnnotation, vocab: Vocabulary) -> Track:
    trim_a, trim_b = int(rng.integers(0, 4)), int(rng.integers(0, 4))
    frames, boxes = piece.frames[trim_a : len(piece) - trim_b], piece.boxes[trim_a : len(piece) - trim_b]
    size = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, axis=1) + 1.0  # (n, 4)
    noise = rng.normal(0.0, 0.04, size=boxes.shape)
    kernel = np.ones(5) / 5
    noise = np.stack([np.convolve(noise[:, c], kernel, mode="same") for c in range(4)], axis=1)
    bias = rng.normal(0.0, 0.03, size=4)
    jittered = boxes + size * (noise + bias)
    jittered = _valid_boxes(jittered, video.width, video.height)
    category = (
        piece.category if rng.random() < 0.85 else vocab.objects[int(rng.integers(0, len(vocab.objects)))]
    )
    meta = {"origin_tid": piece.tid, "true_class": vocab.object_index(str(piece.category))}
    return Track(-1, category, frames, jittered, float(np.round(rng.uniform(0.55, 0.98), 4)), meta)


def _false_positive(rng: np.random.Generator, video: VideoAnnotation, vocab: Vocabulary) -> Track:
    length = min(int(rng.integers(30, 76)), video.annotated_len)
    start = int(rng.integers(0, video.annotated_len - length + 1))
    frames = np.arange(start, start + length)
    boxes = _valid_boxes(_smooth_path(rng, frames, video.width, video.height), video.width, video.height)
    true_class = int(rng.integers(0, len(vocab.objects)))
    category = vocab.objects[int(rng.integers(0, len(vocab.objects)))]
    meta = {"origin_tid": -1, "true_class": true_class}
    return Track(-1, category, frames, boxes, float(np.round(rng.uniform(0.05, 0.5), 4)), meta)


def _valid_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    boxes = np.clip(boxes, 0, [width - 1, height - 1, width - 1, height - 1])
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2])
    return np.round(boxes, 2).astype(np.float32)


# ----------------------------------------------------------------------------------------------------
# Features


@dataclass(frozen=True)
class Events:
    """The relation events of one split and how each is shown (docs/data.md section 8.2).

    An event is one relation interval of one ordered GT pair with its 1-2 predicates. Per event:
    its channel, its decoys (as many as its predicates, drawn with the split's predicate
    frequencies), a uniform draw ``u`` (a teacher with accuracy ``a`` describes it right iff
    ``u < a``, so the teachers' mistakes are nested) and the predicates a teacher hallucinates
    instead of an appearance event.
    """

    index: dict[tuple[str, int, int], list[tuple[int, int, int]]]  # (video, s, o) -> [(begin, end, event)]
    predicates: np.ndarray  # (E, 2) int64 predicate indices, -1 padded
    decoys: np.ndarray  # (E, 2) int64, -1 padded
    later: np.ndarray  # (E, 2) int64 a second decoy set (a temporal event's state after its keyframe)
    hallucinated: np.ndarray  # (E, 2) int64, -1 padded
    channel: np.ndarray  # (E,) int64 index into CHANNELS
    u: np.ndarray  # (E,) float64 uniform
    sign: np.ndarray  # (E,) float32 +-1: a spatial/semantic event's mark sign (read only with sign marks)


def plan_events(
    rng: np.random.Generator, videos: dict[str, VideoAnnotation], vocab: Vocabulary, signals: Signals
) -> Events:
    """Group the split's relation instances into events and draw how each is shown."""
    grouped: dict[tuple[str, int, int, int, int], list[int]] = {}
    for vid in sorted(videos):
        for rel in videos[vid].relations:
            key = (vid, rel.subject_tid, rel.object_tid, rel.begin_fid, rel.end_fid)
            grouped.setdefault(key, []).append(vocab.predicate_index(rel.predicate))
    n = len(grouped)
    preds = np.full((n, 2), -1, np.int64)
    decoys = np.full((n, 2), -1, np.int64)
    later = np.full((n, 2), -1, np.int64)
    halluc = np.full((n, 2), -1, np.int64)
    pool = np.array([p for ps in grouped.values() for p in ps], np.int64)  # frequency-matched decoys
    channel = rng.choice(len(CHANNELS), size=n, p=signals.shares())
    u = rng.random(n)
    index: dict[tuple[str, int, int], list[tuple[int, int, int]]] = defaultdict(list)
    for e, ((vid, s_tid, o_tid, begin, end), ps) in enumerate(grouped.items()):
        ps = ps[:2]
        preds[e, : len(ps)] = ps
        candidates = pool[~np.isin(pool, ps)]
        if len(candidates) == 0:
            candidates = np.setdiff1d(np.arange(len(vocab.predicates)), ps)
        decoys[e, : len(ps)] = _distinct(rng, candidates, len(ps))
        later[e, : len(ps)] = _distinct(rng, candidates[~np.isin(candidates, decoys[e])], len(ps))
        halluc[e, : len(ps)] = rng.integers(0, len(vocab.predicates), size=len(ps))
        index[(vid, s_tid, o_tid)].append((begin, end, e))
    sign = np.where(rng.random(n) < 0.5, 1.0, -1.0).astype(np.float32)  # drawn last: see Events.sign
    return Events(dict(index), preds, decoys, later, halluc, channel, u, sign)


def _distinct(rng: np.random.Generator, candidates: np.ndarray, k: int) -> list[int]:
    """``k`` different values drawn from ``candidates`` with their multiplicity as weights."""
    chosen: list[int] = []
    while len(chosen) < k:
        left = candidates[~np.isin(candidates, chosen)]
        if len(left) == 0:
            break
        chosen.append(int(rng.choice(left)))
    return chosen


@dataclass(frozen=True)
class RowSemantics:
    """What each row's keyframes really show (used to synthesise its features)."""

    subject_class: np.ndarray  # (N,) true class index
    object_class: np.ndarray  # (N,)
    active: np.ndarray  # (N, T, P) uint8 predicates holding at each keyframe
    scene: np.ndarray  # (N, D) per-video scene direction
    event: np.ndarray  # (N, T) int64 event holding at each keyframe (index into Events), -1 none
    events: Events


def row_semantics(
    samples: PairSamples,
    videos: dict[str, VideoAnnotation],
    origins: dict[tuple[str, int], tuple[int, int]] | None,
    vocab: Vocabulary,
    scenes: dict[str, np.ndarray],
    events: Events,
) -> RowSemantics:
    """True classes, active predicates and events per row; ``origins`` maps (video, det tid) -> (GT tid, class)."""
    n, t = samples.keyframes.shape
    sub_cls, obj_cls = np.zeros(n, np.int64), np.zeros(n, np.int64)
    active = np.zeros((n, t, len(vocab.predicates)), np.uint8)
    event = np.full((n, t), NO_EVENT, np.int64)
    for row in range(n):
        vid = str(samples.video_id[row])
        (s_origin, sub_cls[row]), (o_origin, obj_cls[row]) = (
            _origin(videos[vid], vid, int(tid), origins, vocab)
            for tid in (samples.subject_tid[row], samples.object_tid[row])
        )
        keyframes = samples.keyframes[row]  # (T,)
        for begin, end, e in events.index.get((vid, s_origin, o_origin), ()):
            holds = (keyframes >= begin) & (keyframes < end)  # (T,)
            event[row, holds] = e
            for pred in events.predicates[e]:
                if pred >= 0:
                    active[row, :, pred] |= holds.astype(np.uint8)
    width = len(next(iter(scenes.values())))
    scene = np.stack([scenes[str(v)] for v in samples.video_id]) if n else np.zeros((0, width), np.float32)
    return RowSemantics(sub_cls, obj_cls, active, scene, event, events)


def _origin(
    video: VideoAnnotation,
    vid: str,
    tid: int,
    origins: dict[tuple[str, int], tuple[int, int]] | None,
    vocab: Vocabulary,
) -> tuple[int, int]:
    """(GT tid, true class) of what a track covers: itself for GT tracks, its origin for detections."""
    if origins is None:
        return tid, vocab.object_index(video.objects[tid])
    return origins[(vid, tid)]


def _noise(rng: np.random.Generator, shape: tuple[int, ...], scale: float) -> np.ndarray:
    """Gaussian noise whose vectors (last axis) have expected norm ``scale``."""
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(scale / np.sqrt(shape[-1]))


def _set_vectors(directions: np.ndarray, sets: np.ndarray) -> np.ndarray:
    """(E, D): the sum of ``directions`` over each row of ``sets`` ((E, k) indices, -1 = none)."""
    padded = np.vstack([directions, np.zeros((1, directions.shape[1]), directions.dtype)])
    return padded[np.where(sets >= 0, sets, len(directions))].sum(axis=1)


def _event_channels(rows: RowSemantics) -> np.ndarray:
    """(N, T) channel of the event at each keyframe, -1 where none holds."""
    return np.where(rows.event >= 0, rows.events.channel[np.maximum(rows.event, 0)], NO_EVENT)


def visual_features(
    rng: np.random.Generator, sem: Semantics, rows: RowSemantics, signals: Signals = DEFAULT_SIGNALS
) -> np.ndarray:
    """(N, T, 4, D) float16: subject, object, union, frame features in the mixed visual space."""
    n, t = rows.event.shape
    d = sem.mixing.shape[0]
    noise = signals.visual_noise
    subject = sem.objects[rows.subject_class][:, None].repeat(t, axis=1)  # (N, T, D)
    obj = sem.objects[rows.object_class][:, None].repeat(t, axis=1)
    union = VIS_UNION_CLASS_WEIGHT * (subject + obj)
    frame = rows.scene[:, None].repeat(t, axis=1).astype(np.float32)
    true = _set_vectors(sem.visual_predicates, rows.events.predicates)[np.maximum(rows.event, 0)]  # (N, T, D)
    decoy = _set_vectors(sem.visual_predicates, rows.events.decoys)[np.maximum(rows.event, 0)]
    channel = _event_channels(rows)  # (N, T)
    union += (channel == APPEARANCE)[..., None] * true
    on_subject = rng.random((n, t)) < 0.5  # which side shows a spatial/semantic event's evidence
    sided = ((channel == SPATIAL) | (channel == SEMANTIC))[..., None]
    subject += sided * np.where(on_subject[..., None], true, decoy)
    obj += sided * np.where(on_subject[..., None], decoy, true)
    cue_subject, cue_object, cue_frame = _decoy_cues(sem, rows, channel, on_subject, signals.sign_marks)
    subject += cue_subject
    obj += cue_object
    frame += cue_frame
    union += _temporal_evidence(sem, rows, true, channel)
    semantic = np.stack(
        [
            subject + _noise(rng, (n, t, d), VIS_OBJECT_NOISE * noise),
            obj + _noise(rng, (n, t, d), VIS_OBJECT_NOISE * noise),
            union + _noise(rng, (n, t, d), VIS_UNION_NOISE * noise),
            frame + _noise(rng, (n, t, d), VIS_FRAME_NOISE * noise),
        ],
        axis=2,
    )  # (N, T, 4, D)
    return (semantic @ sem.mixing).astype(np.float16)


def _decoy_cues(
    sem: Semantics, rows: RowSemantics, channel: np.ndarray, on_subject: np.ndarray, sign_marks: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, T, D) additions to the subject, object and frame tokens that tell a spatial/semantic
    event's evidence from its decoy (docs/data.md section 8.2).

    Default (``sign_marks`` 0): the frame token of a spatial event carries +k_role when the subject
    shows the event, -k_role when the object does (the semantic channel's cue is in the teacher).
    Sign marks: the evidence token carries +sign * m, the decoy's -sign * m, so which is which is
    readable only with the sign: from the frame token's sign * k_role (spatial) or the teacher's
    description (semantic, :func:`teacher_features`).
    """
    spatial = (channel == SPATIAL)[..., None]  # (N, T, 1)
    if sign_marks <= 0:
        role = np.where(on_subject, 1.0, -1.0).astype(np.float32)[..., None] * sem.codes[ROLE]  # (N, T, D)
        zero = np.zeros_like(role)
        return zero, zero, spatial * role
    sign = rows.events.sign[np.maximum(rows.event, 0)][..., None]  # (N, T, 1)
    codes = spatial * sem.codes[SPATIAL_MARK] + (channel == SEMANTIC)[..., None] * sem.codes[SEMANTIC_MARK]
    mark = (sign_marks * sign * codes).astype(np.float32)  # (N, T, D)
    side = on_subject[..., None]
    return (
        np.where(side, mark, -mark),
        np.where(side, -mark, mark),
        sign_marks * spatial * sign * sem.codes[ROLE],
    )


def _temporal_evidence(
    sem: Semantics, rows: RowSemantics, true: np.ndarray, channel: np.ndarray
) -> np.ndarray:
    """(N, T, D) union additions of temporal events holding at the centre keyframe: the event's
    evidence at the centre, the states before and after it (two decoy sets) at t-1 and t+1."""
    n, t = channel.shape
    out = np.zeros((n, t, sem.codes.shape[1]), np.float32)
    centre = t // 2
    on = np.flatnonzero(channel[:, centre] == TEMPORAL)
    if t < 3 or len(on) == 0:
        return out
    event = rows.event[on, centre]
    out[on, centre] = true[on, centre]
    out[on, centre - 1] = _set_vectors(sem.visual_predicates, rows.events.decoys)[event]
    out[on, centre + 1] = _set_vectors(sem.visual_predicates, rows.events.later)[event]
    return out


def teacher_features(
    rng: np.random.Generator,
    sem: Semantics,
    rows: RowSemantics,
    teacher: TeacherNoise,
    sign_marks: float = 0.0,
) -> np.ndarray:
    """(N, T, 4, D) float16 text-space descriptions of the four perspectives by a noisy teacher."""
    n, t = rows.event.shape
    d = sem.predicates.shape[1]
    c = len(sem.objects)

    def seen_class(true: np.ndarray) -> np.ndarray:
        wrong = rng.random((n, t)) >= teacher.accuracy
        return np.where(wrong, rng.integers(0, c, size=(n, t)), true[:, None])  # (N, T)

    events = rows.events
    right = events.u < teacher.accuracy  # (E,) the event is described right
    appearance = np.where(right[:, None], events.predicates, events.hallucinated)  # (E, 2)
    semantic = np.where(right[:, None], events.predicates, events.decoys)
    described = np.where((events.channel == APPEARANCE)[:, None], appearance, semantic)  # (E, 2)
    channel = _event_channels(rows)  # (N, T)
    said = (channel == APPEARANCE) | (channel == SEMANTIC)  # spatial/temporal events are not described
    union = said[..., None] * _set_vectors(sem.predicates, described)[np.maximum(rows.event, 0)]  # (N, T, D)
    if sign_marks > 0:  # which marked token does it: the event's sign when described right, else the decoy's
        pointed = np.where(right, events.sign, -events.sign)[np.maximum(rows.event, 0)]  # (N, T)
        union += sign_marks * ((channel == SEMANTIC) * pointed)[..., None] * sem.codes[POINTER]
    text = np.stack(
        [
            sem.objects[seen_class(rows.subject_class)] + _noise(rng, (n, t, d), teacher.noise),
            sem.objects[seen_class(rows.object_class)] + _noise(rng, (n, t, d), teacher.noise),
            union + _noise(rng, (n, t, d), teacher.noise),
            np.broadcast_to(rows.scene[:, None], (n, t, d)) + _noise(rng, (n, t, d), teacher.noise),
        ],
        axis=2,
    )
    return text.astype(np.float16)


# ----------------------------------------------------------------------------------------------------
# The dataset root


def ensure_synthetic(
    dataset: str,
    out_dir: Path | str,
    videos: int,
    seed: int,
    feature_dim: int = 64,
    signals: Signals | None = None,
    *,
    shape: str = "default",
    clip_checkpoint: Path | None = None,
    test_videos: int | None = None,
) -> Path:
    """The synthetic dataset root at ``out_dir``: reused when its ``dataset.json`` has the same settings,
    generated otherwise (into a temporary sibling folder, then renamed, so concurrent callers are safe).

    ``videos`` is the number of videos per split (train and test); ``test_videos`` replaces it for
    the test split (None: the same, or the shape's 4:1); ``signals`` the channel strengths (None =
    :data:`DEFAULT_SIGNALS`).
    """
    load_vocabulary(dataset)
    if videos < 2:
        raise ValueError(f"data.synthetic_videos: need at least 2 videos per split, got {videos}")
    if test_videos is not None and test_videos < 2:
        raise ValueError(f"data.synthetic_test_videos: need at least 2 test videos, got {test_videos}")
    video_shape(shape)  # validates the name
    checkpoint = None if clip_checkpoint is None else str(Path(clip_checkpoint).resolve())
    spec = SynthSpec(
        dataset, videos, seed, feature_dim, signals or DEFAULT_SIGNALS, shape, checkpoint, test_videos
    )
    out_dir = Path(out_dir)
    if _matches(out_dir, spec):
        return out_dir
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ValueError(
            f"{out_dir}: exists and is not the synthetic dataset {spec.settings()}; choose another --out "
            f"(e.g. {out_dir.parent / synthetic_root_name(dataset, videos, seed, feature_dim, signals, test_videos)}) "
            "or delete it"
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        generate_synthetic(spec, tmp)
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked above) unless another process finished first
        os.rename(tmp, out_dir)
    except OSError:
        if not _matches(out_dir, spec):
            raise
        logger.info("another process generated %s first; using it", out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _matches(root: Path, spec: SynthSpec) -> bool:
    info_path = root / "dataset.json"
    if not info_path.is_file():
        return False
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return False
    return bool(info.get("synthetic")) and info.get("generator") == spec.settings()


def generate_synthetic(spec: SynthSpec, root: Path | str) -> dict[str, Any]:
    """Write a whole synthetic dataset root (annotations, tracklets, stores, teachers, dataset.json)."""
    started = time.perf_counter()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=False)
    vocab = load_vocabulary(spec.dataset)
    sem = class_semantics(vocab, spec.feature_dim, spec.seed, spec.signals.class_text, spec.clip_checkpoint)
    info: dict[str, Any] = {
        "dataset": spec.dataset,
        "synthetic": True,
        "note": "Generated data (docs/data.md); its numbers are not comparable to the paper's.",
        "generator": spec.settings(),
        "feature_model": feature_model_record(sem.fingerprint, sem.clip, root=True),
        "tracklet_frame_offset": 0,
        "sources": list(SOURCES),
        "teachers": sorted(TEACHERS),
        "splits": {},
        "content_hashes": {},
    }
    for split in SPLITS:
        info["splits"][split] = _generate_split(spec, root, split, vocab, sem, info["content_hashes"])
    info["generation_seconds"] = round(time.perf_counter() - started, 2)
    (root / "dataset.json").write_text(json.dumps(info, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return info


def _generate_split(
    spec: SynthSpec, root: Path, split: str, vocab: Vocabulary, sem: Semantics, hashes: dict[str, str]
) -> dict[str, int]:
    rng = _rng(spec, split, "videos")
    shape = video_shape(spec.shape)
    write_annotation_folder(
        root / "annotations",
        spec.dataset,
        split,
        [generate_video(rng, vocab, split, i, shape) for i in range(spec.split_videos(split))],
    )
    videos = {v.video_id: v for v in load_annotation_folder(root / "annotations", spec.dataset, split)}
    det_rng = _rng(spec, split, "det")
    detections = {vid: detect_video(det_rng, v, vocab) for vid, v in videos.items()}
    (root / "tracklets").mkdir(exist_ok=True)
    write_ovmmp_tracks(detections, root / "tracklets" / f"{split}.json")
    loaded_det = load_ovmmp_tracks(root / "tracklets" / f"{split}.json")
    origins = {
        (vid, t.tid): (t.meta["origin_tid"], t.meta["true_class"])
        for vid, ts in detections.items()
        for t in ts
    }
    scenes = _scenes(spec, split, videos)
    events = plan_events(_rng(spec, split, "events"), videos, vocab, spec.signals)
    counts = {
        "videos": len(videos),
        "trajectories": sum(len(v.fragments) for v in videos.values()),
        "relation_instances": sum(len(v.relations) for v in videos.values()),
        "segments": sum(segment_count(0, v.frame_count) for v in videos.values()),
        "detected_tracklets": sum(len(ts) for ts in detections.values()),
        **{f"{name}_events": int((events.channel == i).sum()) for i, name in enumerate(CHANNELS)},
    }
    for source_index, source in enumerate(SOURCES):
        parts = [
            plan_pair_samples(v, vocab, None if source == "gt" else loaded_det[vid])
            for vid, v in videos.items()
        ]
        samples = PairSamples.concat(parts, len(vocab.predicates))
        rows = row_semantics(samples, videos, None if source == "gt" else origins, vocab, scenes, events)
        visual = visual_features(_rng(spec, split, "visual", source_index), sem, rows, spec.signals)
        store_dir = root / "features" / split / source
        store = write_feature_store(
            store_dir, samples, visual, dataset=spec.dataset, split=split, source=source,
            feature_model=feature_model_record(sem.fingerprint, sem.clip, root=False),
            synthetic=True, settings=spec.settings(),
        )  # fmt: skip
        hashes[f"features/{split}/{source}"] = store.content_hash
        counts[f"{source}_rows"] = len(store)
        for t_index, (name, noise) in enumerate(sorted(TEACHERS.items())):
            text = teacher_features(
                _rng(spec, split, "teacher", source_index, t_index), sem, rows, noise, spec.signals.sign_marks
            )
            teacher = write_teacher_store(
                root / "teachers" / name / split / source, text, name=name, store=store,
                teacher_model={"name": f"synthetic-{name}", "accuracy": noise.accuracy, "noise": noise.noise},
                synthetic=True, settings=spec.settings(),
            )  # fmt: skip
            hashes[f"teachers/{name}/{split}/{source}"] = teacher.content_hash
    return counts


def _scenes(spec: SynthSpec, split: str, videos: dict[str, VideoAnnotation]) -> dict[str, np.ndarray]:
    """A random unit scene vector per video (the frame token's content)."""
    rng = _rng(spec, split, "scene")
    return {vid: _unit(rng.standard_normal(spec.feature_dim)).astype(np.float32) for vid in videos}


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def explain_rows(root: Path | str, split: str) -> tuple[PairSamples, RowSemantics, Semantics]:
    """What the ground-truth rows of a generated root show (events, channels, codes), recomputed from
    its annotations and recorded settings; row-aligned with ``features/<split>/gt``.

    For tests and analyses of the signal design: the stores keep only what a real dataset has.
    """
    root = Path(root)
    settings = json.loads((root / "dataset.json").read_text(encoding="utf-8"))["generator"]
    spec = SynthSpec(
        settings["dataset"], settings["videos_per_split"], settings["seed"], settings["feature_dim"],
        Signals(**settings["signals"]),
    )  # fmt: skip
    vocab = load_vocabulary(spec.dataset)
    sem = class_semantics(vocab, spec.feature_dim, spec.seed, spec.signals.class_text)
    videos = {v.video_id: v for v in load_annotation_folder(root / "annotations", spec.dataset, split)}
    events = plan_events(_rng(spec, split, "events"), videos, vocab, spec.signals)
    samples = PairSamples.concat(
        [plan_pair_samples(v, vocab) for v in videos.values()], len(vocab.predicates)
    )
    rows = row_semantics(samples, videos, None, vocab, _scenes(spec, split, videos), events)
    return samples, rows, sem
