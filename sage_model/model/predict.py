"""Inference: pair scores -> segment relations -> official video-level prediction JSON.

Scores of one pair at one segment (all in [0, 1]):

* predicate ``p_r = sigmoid(cos(V_vr, F'_L_r) / tau) * sigmoid(interaction logit)`` (OV-MMP's
  product: the interaction head down-weights pairs that do not interact at all);
* subject/object: PredCls takes the ground-truth class with score 1; SGCls and SGDet take the
  arg-max of ``softmax(cos(V_obj, W_obj) / tau)`` over the evaluation's object classes, with its
  probability as the score; SGDet multiplies in the tracklet's detection score;
* triplet score = ``s_subject * p_r * s_object`` (the product of OV-MMP and UASAN; RePro uses
  the mean). The ``predicates_per_pair`` best predicates of each pair and segment are kept.

Which stored segments are predicted (``eval.segmentation``): every 30/15 window (``vidvrd2``) or,
per track pair, the windows that make non-overlapping clips (``ovmmp``,
:func:`sage_model.data.segments.non_overlapping_rows`). The segment relations of a video are
joined into video-level relations by the evaluation module's association
(``sage_model.eval.associate``: greedy or by track pair, ``eval.association``), which also keeps
the top-K.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import Tensor

from sage_model.data.segments import non_overlapping_rows
from sage_model.model.sage import SageModel

Task = Literal["sgdet", "sgcls", "predcls"]
Segmentation = Literal["vidvrd2", "ovmmp"]
PREDICTION_VERSION = "VERSION 1.0"
PER_SEGMENT_TOP_K = 200  # the association's own per-window cut (sage_model.eval.associate_segments)


class BatchReader(Protocol):
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
    predicates_on, objects_on = predicate_classes.to(device), object_classes.to(device)
    for start in range(0, len(dataset), batch_size):
        idx = np.arange(start, min(start + batch_size, len(dataset)))
        batch = {k: v.to(device) for k, v in dataset.get_batch(idx).items()}
        out = model(batch, predicates_on, objects_on)
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
    subject_tid: np.ndarray | None = None  # (N,) int track ids: the pair's identity within its video
    object_tid: np.ndarray | None = None  # (N,) int

    @classmethod
    def from_store(cls, store: Any, rows: np.ndarray) -> PairRows:
        order = np.asarray(rows, dtype=np.int64)
        return cls(
            subject_tid=store.rows.subject_tid[order].astype(np.int64),
            object_tid=store.rows.object_tid[order].astype(np.int64),
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


def clip_starts(rows: PairRows, segmentation: Segmentation) -> np.ndarray:
    """(N,) first frame each row predicts from; -1 = the row is not predicted.

    ``vidvrd2``: every row from its window start. ``ovmmp``: per (video, subject, object) track
    pair, the rows of :func:`~sage_model.data.segments.non_overlapping_rows` (non-overlapping
    clips; a last shorter clip starts where the previous one ended).
    """
    if segmentation == "vidvrd2":
        return rows.segment_start.astype(np.int64)
    if segmentation != "ovmmp":
        raise ValueError(f"eval.segmentation: must be 'vidvrd2' or 'ovmmp', got {segmentation!r}")
    if rows.subject_tid is None or rows.object_tid is None:
        raise ValueError("eval.segmentation: ovmmp needs the rows' track ids (PairRows.from_store)")
    starts = np.full(len(rows.segment_start), -1, dtype=np.int64)
    video = np.unique(rows.video_id.astype(str), return_inverse=True)[1].reshape(-1)
    order = np.lexsort((rows.segment_start, rows.object_tid, rows.subject_tid, video))
    keys = np.stack([video, rows.subject_tid, rows.object_tid], axis=1)[order]  # (N, 3) sorted
    cuts = np.r_[0, np.flatnonzero((keys[1:] != keys[:-1]).any(axis=1)) + 1, len(order)]
    for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
        pair = order[lo:hi]
        kept, begin = non_overlapping_rows(
            rows.segment_start[pair], rows.segment_end[pair], rows.seg_span[pair]
        )
        starts[pair[kept]] = begin
    return starts


def segment_relations(
    rows: PairRows,
    predicate_scores: np.ndarray,
    predicate_names: Sequence[str],
    objects: ObjectChoice,
    top_predicates: int,
    per_segment_top_k: int = PER_SEGMENT_TOP_K,
    segmentation: Segmentation = "vidvrd2",
) -> list[Any]:
    """``SegmentRelation`` list: the best ``top_predicates`` predicates of every valid pair.

    Only the ``per_segment_top_k`` best relations of each segment window are built: the
    association reads no more than that many per window (its own cut, same stable order), so
    the result is unchanged and the construction cost bounded. ``segmentation`` says which rows
    are predicted, and from which frame (:func:`clip_starts`).
    """
    from sage_model.eval import SegmentRelation

    k = min(top_predicates, predicate_scores.shape[1])
    clip = clip_starts(rows, segmentation)  # (N,)
    valid = np.flatnonzero(objects.valid & (clip >= 0))
    if k == 0 or len(valid) == 0:
        return []
    top = np.argsort(-predicate_scores[valid], axis=1, kind="stable")[:, :k]  # (V, k) best first
    pair = objects.subject_score[valid] * objects.object_score[valid]  # (V,)
    score = pair[:, None] * np.take_along_axis(predicate_scores[valid], top, axis=1)  # (V, k)
    row = np.repeat(valid, k)  # flat candidates in output order: pair by pair, best first
    flat_score, flat_class = score.reshape(-1), top.reshape(-1)
    window = np.unique(
        np.stack([rows.segment_start[row], rows.segment_end[row]], axis=1), axis=0, return_inverse=True
    )[1].reshape(-1)
    video = np.unique(rows.video_id[row].astype(str), return_inverse=True)[1].reshape(-1)
    keep = _top_per_group(video * (int(window.max()) + 1) + window, flat_score, per_segment_top_k)
    out = []
    has_pair = rows.subject_tid is not None and rows.object_tid is not None
    for i in keep:
        n, c = int(row[i]), int(flat_class[i])
        begin, end = max(int(rows.seg_span[n, 0]), int(clip[n])), int(rows.seg_span[n, 1])
        offset = begin - int(rows.segment_start[n])
        out.append(
            SegmentRelation(
                video_id=str(rows.video_id[n]),
                triplet=(objects.subject[n], predicate_names[c], objects.object[n]),
                score=float(flat_score[i]),
                begin=begin,
                end=end,
                sub_traj=rows.seg_traj[n, 0, offset : offset + end - begin],
                obj_traj=rows.seg_traj[n, 1, offset : offset + end - begin],
                segment=(int(clip[n]), int(rows.segment_end[n])),
                pair=(int(rows.subject_tid[n]), int(rows.object_tid[n])) if has_pair else None,  # type: ignore[index]
            )
        )
    return out


def _top_per_group(group: np.ndarray, score: np.ndarray, k: int) -> np.ndarray:
    """Indices (ascending) of the ``k`` best scores of each group; ties keep the earlier index."""
    order = np.lexsort((np.arange(len(score)), -score, group))  # by group, score desc, index
    sorted_group = group[order]
    first = np.r_[0, np.flatnonzero(sorted_group[1:] != sorted_group[:-1]) + 1]
    rank = np.arange(len(order)) - np.repeat(first, np.diff(np.r_[first, len(order)]))
    return np.sort(order[rank < k])


def video_relations(
    seg_relations: list[Any], video_ids: Sequence[str], top_k: int, **association: Any
) -> dict[str, list[dict]]:
    """Association per video (``association``: keywords of ``sage_model.eval.associate``, default
    greedy with sum); every listed video gets a (possibly empty) entry."""
    from sage_model.eval import associate

    by_video: dict[str, list[Any]] = {vid: [] for vid in video_ids}
    for rel in seg_relations:
        by_video.setdefault(rel.video_id, []).append(rel)
    return {vid: (associate(rels, top_k, **association) if rels else []) for vid, rels in by_video.items()}


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
    tmp.write_bytes(_dumps(payload))
    os.replace(tmp, path)
    return path


def _dumps(payload: dict[str, Any]) -> bytes:
    """JSON bytes; trajectories may be numpy arrays. orjson writes arrays natively (~10x faster than
    the stdlib's per-box Python floats); the stdlib path stays for an environment without it."""
    try:
        import orjson
    except ImportError:  # pragma: no cover - orjson is a declared dependency
        return json.dumps(payload, default=_plain).encode("utf-8")
    return orjson.dumps(payload, default=_plain, option=orjson.OPT_SERIALIZE_NUMPY)


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to the prediction JSON")
