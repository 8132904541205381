"""Official-exact VidVRD relation detection evaluation and segment-to-video relation association.

``evaluate_relations`` reproduces the ImageNet-VidVRD helper's ``evaluate()`` bit for bit (see
docs/evaluation.md); ``load_ground_truth``/``load_predictions`` read the official files fast and
validate them; ``associate`` builds video-level relations from segment predictions (greedy VidVRD-II linking
or OV-MMP's track-pair linking).
"""

from sage_model.eval.association import (
    SegmentRelation,
    associate,
    associate_pairs,
    associate_segments,
    associate_videos,
)
from sage_model.eval.detection import DetectionMetrics, VideoParts, as_relation_set, evaluate_relations
from sage_model.eval.io import (
    ground_truth_from_annotations,
    load_ground_truth,
    load_predictions,
    read_name_list,
)
from sage_model.eval.relations import RelationFormatError, RelationSet
from sage_model.eval.viou import trajectory_volume, viou

__all__ = [
    "DetectionMetrics",
    "VideoParts",
    "RelationFormatError",
    "RelationSet",
    "SegmentRelation",
    "as_relation_set",
    "associate",
    "associate_pairs",
    "associate_segments",
    "associate_videos",
    "evaluate_relations",
    "ground_truth_from_annotations",
    "load_ground_truth",
    "load_predictions",
    "read_name_list",
    "trajectory_volume",
    "viou",
]
