"""Inference: pair scores -> segment relations -> official video-level prediction JSON.

Scores of one pair at one segment (all in [0, 1]):

* predicate ``p_r = sigmoid(cos(V_vr, F'_L_r) / tau) * sigmoid(interaction logit)`` (OV-MMP's
  product: the interaction head down-weights pairs that do not interact at all);
* subject/object: PredCls takes the ground-truth class with score 1; SGCls and SGDet take the
  arg-max of ``softmax(cos(V_obj, W_obj) / tau)`` over the evaluation's object classes, with its
  probability as the score; SGDet multiplies in the tracklet's detection score;
* triplet score = ``s_subject * p_r * s_object`` (the product of OV-MMP and UASAN; RePro uses
  the mean). The ``predicates_per_pair`` best predicates of each pair and segment are kept.

The segment relations of a video are joined into video-level relations by the evaluation
module's association (``sage_model.eval.associate_segments``), which also keeps the top-K.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from sage_model.model.sage import SageModel

Task = Literal["sgdet", "sgcls", "predcls"]
PREDICTION_VERSION = "VERSION 1.0"


class BatchReader:
    """Anything with ``get_batch(indices) -> dict`` and ``len`` (``sage_model.data.PairDataset``)."""

    def __len__(self) -> int: ...

    def get_batch(self, indices: np.ndarray) -> dict[str, Tensor]: ...


@dataclass(frozen=True)
class PairScores:
    """Scores of N pair samples over C predicate and O object classes."""

    predicate: np.ndarray  # (N, C) float32
    subject: np.ndarray  # (N, O) float32 softmax
    object: np.ndarray  # (N, O) float32


@torch.no_grad()
def score_pairs(
    model: SageModel,
    dataset: BatchReader,
    predicate_classes: Tensor,
    object_classes: Tensor,
    *,
    batch_size: int = 256,
    device: torch.device | None = None,
) -> PairScores:
    """Run the model over every sample of ``dataset`` (in its row order)."""
    model.eval()
    device = device or next(model.parameters()).device
    preds, subs, objs = [], [], []
    for start in range(0, len(dataset), batch_size):
        idx = np.arange(start, min(start + batch_size, len(dataset)))
        batch = {k: v.to(device) for k, v in dataset.get_batch(idx).items()}
        out = model(batch, predicate_classes.to(device), object_classes.to(device))
        prob = out.rel_logits.float().sigmoid() * out.int_logit.float().sigmoid().unsqueeze(-1)  # (B, C)
        preds.append(prob.cpu())
        subs.append(out.subject_logits.float().softmax(-1).cpu())
        objs.append(out.object_logits.float().softmax(-1).cpu())
    n_p, n_o = len(predicate_classes), len(object_classes)
    return PairScores(
        predicate=torch.cat(preds).numpy() if preds else np.zeros((0, n_p), np.float32),
        subject=torch.cat(subs).numpy() if subs else np.zeros((0, n_o), np.float32),
        object=torch.cat(objs).numpy() if objs else np.zeros((0, n_o), np.float32),
    )


@dataclass(frozen=True)
class PairRows:
    """What a segment relation needs of the store rows (a subset of a FeatureStore, aligned with scores)."""

    video_id: np.ndarray  # (N,) str
    segment_start: np.ndarray  # (N,) int
    segment_end: np.ndarray  # (N,) int (exclusive)
    subject_score: np.ndarray  # (N,) float
    object_score: np.ndarray  # (N,) float
    subject_class: np.ndarray  # (N,) int, index into the store's object names, -1 unknown
    object_class: np.ndarray  # (N,) int
    seg_traj: np.ndarray  # (N, 2, 30, 4) pixels
    seg_span: np.ndarray  # (N, 2) absolute [begin, end)

    @classmethod
    def from_store(cls, store: Any, rows: np.ndarray) -> PairRows:
        order = np.asarray(rows, dtype=np.int64)
        return cls(
            video_id=store.rows.video_id[order],
            segment_start=store.rows.segment_start[order].astype(np.int64),
            segment_end=store.rows.segment_end[order].astype(np.int64),
            subject_score=store.rows.subject_score[order].astype(np.float32),
            object_score=store.rows.object_score[order].astype(np.float32),
            subject_class=np.asarray(store.subject_class[order], dtype=np.int64),
            object_class=np.asarray(store.object_class[order], dtype=np.int64),
            seg_traj=np.asarray(store.seg_traj[order], dtype=np.float32),
            seg_span=np.asarray(store.seg_span[order], dtype=np.int64),
        )


@dataclass(frozen=True)
class ObjectChoice:
    """Per pair: subject/object class names and scores for one task."""

    subject: list[str]
    object: list[str]
    subject_score: np.ndarray  # (N,)
    object_score: np.ndarray  # (N,)
    valid: np.ndarray  # (N,) bool: rows that can be predicted (PredCls needs known GT classes)


def choose_objects(
    task: Task, rows: PairRows, scores: PairScores, store_objects: Sequence[str], eval_objects: Sequence[str]
) -> ObjectChoice:
    """Object classes and scores per task (see the module docstring)."""
    n = len(rows.video_id)
    if task == "predcls":
        valid = (rows.subject_class >= 0) & (rows.object_class >= 0)
        names = np.array(list(store_objects) + [""], dtype=object)
        return ObjectChoice(
            subject=names[rows.subject_class].tolist(),
            object=names[rows.object_class].tolist(),
            subject_score=np.ones(n, np.float32),
            object_score=np.ones(n, np.float32),
            valid=valid,
        )
    eval_names = np.array(list(eval_objects), dtype=object)
    sub_idx, obj_idx = scores.subject.argmax(1), scores.object.argmax(1)
    sub_score = scores.subject[np.arange(n), sub_idx]
    obj_score = scores.object[np.arange(n), obj_idx]
    if task == "sgdet":
        sub_score = sub_score * rows.subject_score
        obj_score = obj_score * rows.object_score
    return ObjectChoice(
        subject=eval_names[sub_idx].tolist(),
        object=eval_names[obj_idx].tolist(),
        subject_score=sub_score.astype(np.float32),
        object_score=obj_score.astype(np.float32),
        valid=np.ones(n, bool),
    )


def segment_relations(
    rows: PairRows,
    predicate_scores: np.ndarray,
    predicate_names: Sequence[str],
    objects: ObjectChoice,
    top_predicates: int,
) -> list[Any]:
    """``SegmentRelation`` list: the best ``top_predicates`` predicates of every valid pair."""
    from sage_model.eval import SegmentRelation

    k = min(top_predicates, predicate_scores.shape[1])
    if k == 0:
        return []
    top = np.argpartition(-predicate_scores, k - 1, axis=1)[:, :k]  # (N, k), unordered
    out = []
    for n in np.flatnonzero(objects.valid):
        begin, end = int(rows.seg_span[n, 0]), int(rows.seg_span[n, 1])
        offset = begin - int(rows.segment_start[n])
        sub_traj = rows.seg_traj[n, 0, offset : offset + end - begin]
        obj_traj = rows.seg_traj[n, 1, offset : offset + end - begin]
        pair_score = float(objects.subject_score[n]) * float(objects.object_score[n])
        for c in top[n]:
            out.append(
                SegmentRelation(
                    video_id=str(rows.video_id[n]),
                    triplet=(objects.subject[n], predicate_names[int(c)], objects.object[n]),
                    score=pair_score * float(predicate_scores[n, c]),
                    begin=begin,
                    end=end,
                    sub_traj=sub_traj,
                    obj_traj=obj_traj,
                    segment=(int(rows.segment_start[n]), int(rows.segment_end[n])),
                )
            )
    return out


def video_relations(seg_relations: list[Any], video_ids: Sequence[str], top_k: int) -> dict[str, list[dict]]:
    """Association per video; every listed video gets a (possibly empty) entry."""
    from sage_model.eval import associate_segments

    by_video: dict[str, list[Any]] = {vid: [] for vid in video_ids}
    for rel in seg_relations:
        by_video.setdefault(rel.video_id, []).append(rel)
    return {vid: (associate_segments(rels, top_k=top_k) if rels else []) for vid, rels in by_video.items()}


def write_predictions(path: Path, results: dict[str, list[dict]]) -> Path:
    """The official prediction JSON (``version``, ``results``, ``external_data``), atomically."""
    payload = {
        "version": PREDICTION_VERSION,
        "results": results,
        "external_data": {"used": False, "details": "sage-harness: features from the dataset root only"},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, default=_plain), encoding="utf-8")
    os.replace(tmp, path)
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to the prediction JSON")
