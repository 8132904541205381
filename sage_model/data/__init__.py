"""Data layer: vocabularies, official annotations, segments, tracks, feature stores, synthetic data.

The public API (``docs/CONTRACTS.md``, "Data layer API"; formats in ``docs/data.md``) is re-exported
here. ``ensure_synthetic`` is imported lazily because it builds the tiny CLIP (open_clip import).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sage_model.data.annotations import (
    SPLIT_FOLDERS,
    AnnotationError,
    RelationInstance,
    VideoAnnotation,
    annotation_files,
    annotation_to_json,
    ground_truth_relations,
    load_annotation_file,
    load_annotation_folder,
    novel_ground_truth,
    parse_annotation,
    write_annotation_folder,
)
from sage_model.data.dataset import (
    NO_TEACHER,
    SOURCES,
    SPLITS,
    DatasetRoot,
    PairDataset,
    collate_pairs,
    split_videos,
)
from sage_model.data.samples import LABEL_MIN_OVERLAP, MIN_PAIR_FRAMES, PairSamples, plan_pair_samples
from sage_model.data.segments import (
    KEYFRAME_STRIDE,
    NUM_KEYFRAMES,
    SEGMENT_LENGTH,
    SEGMENT_STRIDE,
    parse_segment_id,
    segment_count,
    segment_id,
    segment_keyframe,
    segment_windows,
)
from sage_model.data.store import (
    PERSPECTIVES,
    REGIONS,
    FeatureStore,
    RowTable,
    TeacherStore,
    write_feature_store,
    write_teacher_store,
)
from sage_model.data.tracks import (
    OVMMP_DET_FRAME_OFFSET,
    OVMMP_GT_FRAME_OFFSET,
    Track,
    load_ovmmp_tracks,
    match_tracks,
    viou,
    write_ovmmp_tracks,
)
from sage_model.data.vocab import Vocabulary, load_vocabulary

if TYPE_CHECKING:
    from sage_model.data.synth import ensure_synthetic, synthetic_root_name


def __getattr__(name: str) -> Any:
    if name in ("ensure_synthetic", "synthetic_root_name"):
        from sage_model.data import synth

        return getattr(synth, name)
    raise AttributeError(f"module 'sage_model.data' has no attribute {name!r}")


__all__ = [
    "AnnotationError",
    "DatasetRoot",
    "FeatureStore",
    "KEYFRAME_STRIDE",
    "LABEL_MIN_OVERLAP",
    "MIN_PAIR_FRAMES",
    "NO_TEACHER",
    "NUM_KEYFRAMES",
    "OVMMP_DET_FRAME_OFFSET",
    "OVMMP_GT_FRAME_OFFSET",
    "PERSPECTIVES",
    "PairDataset",
    "PairSamples",
    "REGIONS",
    "RelationInstance",
    "RowTable",
    "SEGMENT_LENGTH",
    "SEGMENT_STRIDE",
    "SOURCES",
    "SPLITS",
    "SPLIT_FOLDERS",
    "TeacherStore",
    "Track",
    "VideoAnnotation",
    "Vocabulary",
    "annotation_files",
    "annotation_to_json",
    "collate_pairs",
    "ensure_synthetic",
    "ground_truth_relations",
    "load_annotation_file",
    "load_annotation_folder",
    "load_ovmmp_tracks",
    "load_vocabulary",
    "match_tracks",
    "novel_ground_truth",
    "parse_annotation",
    "parse_segment_id",
    "plan_pair_samples",
    "segment_count",
    "segment_id",
    "segment_keyframe",
    "segment_windows",
    "split_videos",
    "synthetic_root_name",
    "viou",
    "write_annotation_folder",
    "write_feature_store",
    "write_ovmmp_tracks",
    "write_teacher_store",
]
