"""Video visual relation detection metrics, numerically identical to the official VidVRD-helper.

Restated semantics (``evaluation/visual_relation_detection.py`` of xdshang/VidVRD-helper @ 1b4de17;
docs/evaluation.md has the long form):

* Per video with at least one ground-truth (GT) relation: predictions sorted by score, descending,
  stable (ties keep input order). In that order each prediction takes, among the still unmatched GT
  with exactly its triplet, the one of largest ``min(vIoU subject, vIoU object)`` if that is
  ``>= 0.5`` (first GT in list order on exact ties); it is then a hit, otherwise a false positive.
* Precision/recall are float32 cumulative sums (eps = float32 machine epsilon); AP is VOC all-point
  AP over ALL predictions of the video; mean AP averages the videos with GT (no prediction: AP 0).
* Recall@K: hits among each video's first K predictions, summed, over all GT relations (float32).
* Tagging precision@K: unique predicted triplets in score order (first occurrence kept), hits are
  triplets of the video's GT; precision at rank min(K, #unique) (official divisor) or hits/K
  (``tagging_divisor="k"``, the VidVRD-II fix); 0 for a video without predictions; mean over videos.

Everything is vectorised over all videos at once; the only Python loop runs over the
(prediction, GT) pairs that reach the threshold, for the greedy assignment.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Literal

import numpy as np

from sage_model.eval.relations import RelationSet, build_relation_set
from sage_model.eval.viou import paired_overlaps, ragged_arange

log = logging.getLogger(__name__)

TaggingDivisor = Literal["official", "k"]
UnknownVideos = Literal["ignore", "error"]

DETECTION_NRETURNS = (50, 100)
TAGGING_NRETURNS = (1, 5, 10)
_EPS32 = np.finfo(np.float32).eps
_BOUND_MARGIN = 1e-9  # pruning skips a pair only when its vIoU upper bound is below threshold - margin


@dataclass(frozen=True)
class VideoParts:
    """One evaluated video's share of the metrics, as fractions and counts.

    mean AP and tagging precision@K are plain means of ``ap`` / ``p{K}`` over videos; Recall@K
    is the ratio ``sum(tp{K}) / sum(n_gt)``, never a mean of per-video recalls.
    """

    video_id: str
    ap: float
    tp50: int
    tp100: int
    n_gt: int
    p1: float
    p5: float
    p10: float


@dataclass(frozen=True)
class DetectionMetrics:
    """Official relation detection/tagging metrics, as fractions (papers report x100)."""

    mean_ap: float
    rec_at_50: float
    rec_at_100: float
    mprec_at_1: float
    mprec_at_5: float
    mprec_at_10: float
    video_ap: dict[str, float]
    """AP of every evaluated video (videos with at least one GT relation), in GT order."""
    videos: tuple[VideoParts, ...] = ()
    """What every metric above decomposes into, per evaluated video (GT order): resampling these
    recomputes each metric exactly (the report's confidence intervals rest on it)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with the keys of the ``harness evaluate --json`` output."""
        return {
            "mean_ap": self.mean_ap,
            "rec_at_50": self.rec_at_50,
            "rec_at_100": self.rec_at_100,
            "mprec_at_1": self.mprec_at_1,
            "mprec_at_5": self.mprec_at_5,
            "mprec_at_10": self.mprec_at_10,
            "video_ap": dict(self.video_ap),
        }


def as_relation_set(
    data: RelationSet | Mapping[str, Any], kind: Literal["ground truth", "predictions"]
) -> RelationSet:
    """A RelationSet from one (returned as is) or from official-format dicts.

    Predictions may be given as the whole prediction file object (``{"version", "results"}``) or as
    its ``results`` mapping, like the official ``evaluate(groundtruth, prediction["results"])``.
    """
    if isinstance(data, RelationSet):
        if data.kind != kind:
            raise ValueError(f"expected {kind}, got a RelationSet of {data.kind} ({data.source})")
        return data
    if kind == "predictions" and isinstance(data, Mapping) and isinstance(data.get("results"), Mapping):
        if "version" in data:
            data = data["results"]
    return build_relation_set(data, kind, f"<{kind}>")  # type: ignore[arg-type]  # narrowed above


def evaluate_relations(
    gt: RelationSet | Mapping[str, Any],
    pred: RelationSet | Mapping[str, Any],
    *,
    novel_predicates: Iterable[str] | None = None,
    tagging_divisor: TaggingDivisor = "official",
    viou_threshold: float = 0.5,
    unknown_videos: UnknownVideos = "ignore",
) -> DetectionMetrics:
    """Official relation detection metrics of ``pred`` against ``gt``.

    ``novel_predicates`` given = the Novel split: GT relations and predictions whose predicate is not
    novel are dropped (objects of any category), then videos left without GT are not evaluated.
    ``unknown_videos``: predictions for a video id that the GT does not have are ignored, as the
    official code does ("ignore", logged), or rejected ("error").
    """
    if tagging_divisor not in ("official", "k"):
        raise ValueError(f"tagging_divisor: must be 'official' or 'k', got {tagging_divisor!r}")
    if not 0.0 < viou_threshold <= 1.0:
        raise ValueError(f"viou_threshold: must be in (0, 1], got {viou_threshold}")
    if unknown_videos not in ("ignore", "error"):
        raise ValueError(f"unknown_videos: must be 'ignore' or 'error', got {unknown_videos!r}")
    gt_set = as_relation_set(gt, "ground truth")
    pred_set = as_relation_set(pred, "predictions")
    novel = None if novel_predicates is None else frozenset(novel_predicates)
    _check_unknown_videos(gt_set, pred_set, unknown_videos)
    problem = _Problem.build(gt_set, pred_set, novel)
    hits = problem.match(viou_threshold)
    return problem.metrics(hits, tagging_divisor)


def _check_unknown_videos(gt: RelationSet, pred: RelationSet, policy: UnknownVideos) -> None:
    known = gt.video_index
    unknown = [vid for vid in pred.videos if vid not in known]
    if not unknown:
        return
    if policy == "error":
        vid = unknown[0]
        raise ValueError(
            f"{pred.source}: video {vid!r} entry 0: video is not in the ground truth ({gt.source})"
            + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
        )
    log.warning(
        "ignoring predictions for %d video(s) without ground truth, e.g. %s", len(unknown), unknown[0]
    )


def _predicate_mask(vocab: tuple[tuple[str, str, str], ...], novel: frozenset[str]) -> np.ndarray:
    """(T,) bool: the triplet's predicate is novel."""
    return np.fromiter(map(novel.__contains__, map(itemgetter(1), vocab)), bool, len(vocab))


@dataclass
class _Problem:
    """Predictions of the evaluated videos, sorted, and the candidate (prediction, GT) pairs."""

    gt: RelationSet
    pred: RelationSet
    videos: tuple[str, ...]  # (E,) evaluated video ids, GT order
    n_gt: np.ndarray  # (E,) GT relations per evaluated video
    gt_rows: np.ndarray  # (M,) kept GT rows, GT order
    gt_keys_sorted: np.ndarray  # (M,) sorted (video, GT triplet) keys of the kept GT
    gt_order: np.ndarray  # (M,) stable argsort of the keys (indexes gt_rows)
    rows: np.ndarray  # (n,) prediction rows in evaluation order (video, then score desc, stable)
    video: np.ndarray  # (n,) evaluated video index of each sorted prediction
    rank: np.ndarray  # (n,) 0-based position within its video
    gt_triplet: np.ndarray  # (n,) GT-vocabulary triplet id of each sorted prediction (-1: none)
    n_triplets: int  # size of the GT vocabulary (key stride)

    @classmethod
    def build(cls, gt: RelationSet, pred: RelationSet, novel: frozenset[str] | None) -> _Problem:
        gt_video = gt.video_of_rows()
        keep_gt = np.ones(len(gt), bool) if novel is None else _predicate_mask(gt.vocab, novel)[gt.triplet]
        gt_rows = np.flatnonzero(keep_gt)
        per_video = np.bincount(gt_video[gt_rows], minlength=len(gt.videos))
        evaluated = np.flatnonzero(per_video > 0)
        if evaluated.size == 0:
            split = "" if novel is None else " with a novel predicate"
            raise ValueError(f"{gt.source}: the ground truth has no relation{split}; nothing to evaluate")
        ev_of = np.full(len(gt.videos), -1, np.int64)
        ev_of[evaluated] = np.arange(evaluated.size)
        n_trip = len(gt.vocab)
        gt_keys = ev_of[gt_video[gt_rows]] * n_trip + gt.triplet[gt_rows]
        gt_order = np.argsort(gt_keys, kind="stable")

        ev_by_id = {gt.videos[v]: int(ev_of[v]) for v in evaluated.tolist()}
        pred_ev = np.fromiter((ev_by_id.get(vid, -1) for vid in pred.videos), np.int64, len(pred.videos))
        rows = pred.score_order()  # grouped by prediction video, score descending, stable
        row_ev = np.repeat(pred_ev, np.diff(pred.bounds))[rows]
        keep = row_ev >= 0
        if novel is not None:
            keep &= _predicate_mask(pred.vocab, novel)[pred.triplet[rows]]
        rows, row_ev = rows[keep], row_ev[keep]
        regroup = np.argsort(row_ev, kind="stable")  # evaluated-video order, score order kept inside
        rows, video = rows[regroup], row_ev[regroup]
        first = np.searchsorted(video, np.arange(evaluated.size))
        p2g = pred.vocab_ids_in(gt.vocab)
        return cls(
            gt=gt,
            pred=pred,
            videos=tuple(gt.videos[v] for v in evaluated.tolist()),
            n_gt=per_video[evaluated],
            gt_rows=gt_rows,
            gt_keys_sorted=gt_keys[gt_order],
            gt_order=gt_order,
            rows=rows,
            video=video,
            rank=np.arange(rows.size) - first[video],
            gt_triplet=p2g[pred.triplet[rows]] if rows.size else np.zeros(0, np.int64),
            n_triplets=n_trip,
        )

    # ------------------------------------------------------------------------------------------
    # matching
    # ------------------------------------------------------------------------------------------

    def candidate_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(sorted prediction index, GT row) of every pair with the same video and triplet."""
        has = np.flatnonzero(self.gt_triplet >= 0)
        keys = self.video[has] * self.n_triplets + self.gt_triplet[has]
        lo = np.searchsorted(self.gt_keys_sorted, keys, side="left")
        hi = np.searchsorted(self.gt_keys_sorted, keys, side="right")
        count = hi - lo
        p = np.repeat(has, count)
        g = self.gt_rows[self.gt_order[ragged_arange(lo, count)]]
        return p, g

    def match(self, threshold: float) -> np.ndarray:
        """(n,) bool hit flag of every sorted prediction (greedy, official order)."""
        p, g = self.candidate_pairs()
        prow = self.rows[p]
        pred, gt = self.pred, self.gt
        start = np.maximum(pred.begin[prow], gt.begin[g])
        length = np.minimum(pred.end[prow], gt.end[g]) - start
        keep = np.flatnonzero(length > 0)  # disjoint durations have vIoU 0 < threshold
        p, g, prow, start, length = p[keep], g[keep], prow[keep], start[keep], length[keep]
        alive = np.ones(p.shape[0], bool)
        ov = np.zeros(p.shape[0])
        for role in (0, 1):  # subject first; object boxes are read only for pairs still above threshold
            idx = np.flatnonzero(alive)
            pred.bank.ensure(2 * prow[idx] + role)
            gt.bank.ensure(2 * g[idx] + role)
            side = _PairSide(self, prow[idx], g[idx], start[idx], role)
            reach = np.flatnonzero(side.may_reach(length[idx], threshold))
            value = np.full(idx.size, -1.0)
            value[reach] = side.viou(reach, length[idx], threshold)
            ov[idx] = value if role == 0 else np.minimum(ov[idx], value)
            alive[idx] = value >= threshold
        valid = np.flatnonzero(alive)
        return self._greedy(p[valid], g[valid], ov[valid])

    def _greedy(self, p: np.ndarray, g: np.ndarray, ov: np.ndarray) -> np.ndarray:
        """Each prediction in order takes its best unmatched GT (largest vIoU, earliest GT on ties)."""
        hit = np.zeros(self.rows.shape[0], bool)
        order = np.lexsort((g, -ov, p))
        matched: set[int] = set()
        done = -1
        for pi, gi in zip(p[order].tolist(), g[order].tolist(), strict=True):
            if pi == done or gi in matched:
                continue
            matched.add(gi)
            hit[pi] = True
            done = pi
        return hit

    # ------------------------------------------------------------------------------------------
    # metrics
    # ------------------------------------------------------------------------------------------

    def metrics(self, hit: np.ndarray, tagging_divisor: TaggingDivisor) -> DetectionMetrics:
        aps = self.average_precisions(hit)
        recalls = [self.recall_at(hit, k) for k in DETECTION_NRETURNS]
        per_video_prec: list[list[float]] = []
        precs = self.tagging_precisions(TAGGING_NRETURNS, tagging_divisor, per_video_prec)
        tps = [self.hits_at(hit, k) for k in DETECTION_NRETURNS]
        parts = tuple(
            VideoParts(vid, float(ap), int(t50), int(t100), int(n), float(q1), float(q5), float(q10))
            for vid, ap, t50, t100, n, q1, q5, q10 in zip(
                self.videos, aps, *tps, self.n_gt.tolist(), *per_video_prec, strict=True
            )
        )
        return DetectionMetrics(
            mean_ap=float(np.mean(aps)),
            rec_at_50=recalls[0],
            rec_at_100=recalls[1],
            mprec_at_1=precs[0],
            mprec_at_5=precs[1],
            mprec_at_10=precs[2],
            video_ap={vid: float(ap) for vid, ap in zip(self.videos, aps, strict=True)},
            videos=parts,
        )

    def average_precisions(self, hit: np.ndarray) -> np.ndarray:
        """(E,) VOC all-point AP per evaluated video, bit-identical to the official ``voc_ap``.

        The official code sums the terms ``(r[i+1] - r[i]) * envelope[i+1]`` of the recall change points
        with ``np.sum``; the same terms (one per hit, plus a zero term when recall ends below 1) are
        built here for all videos at once and summed per video with ``np.sum`` in the same order.
        """
        n_videos = len(self.videos)
        video = self.video
        cum = np.cumsum(hit)
        counts = np.bincount(video, minlength=n_videos)
        first = np.cumsum(counts) - counts
        base = np.concatenate([[0], cum])[first]
        cum_tp = (cum - base[video]).astype(np.float32)  # (n,) per-video cumulative hits
        cum_fp = (self.rank + 1 - (cum - base[video])).astype(np.float32)
        rec = cum_tp / self.n_gt.astype(np.float32)[video]
        prec = cum_tp / np.maximum(cum_tp + cum_fp, _EPS32)
        envelope = _segment_suffix_max(prec, video, n_videos).astype(np.float64)
        rec64 = rec.astype(np.float64)
        prev = np.concatenate([[0.0], rec64[:-1]])
        prev[first[counts > 0]] = 0.0
        hits = np.flatnonzero(hit)
        terms = (rec64[hits] - prev[hits]) * envelope[hits]
        last_rec = np.zeros(n_videos)
        nonempty = counts > 0
        last_rec[nonempty] = rec64[first[nonempty] + counts[nonempty] - 1]
        zero_videos = np.flatnonzero(last_rec != 1.0)
        term_video = np.concatenate([video[hits], zero_videos])
        term_pos = np.concatenate([hits, np.full(zero_videos.size, video.size)])
        order = np.lexsort((term_pos, term_video))
        values = np.concatenate([terms, np.zeros(zero_videos.size)])[order]
        ends = np.cumsum(np.bincount(term_video, minlength=n_videos))
        starts = ends - np.bincount(term_video, minlength=n_videos)
        return np.array([np.sum(values[s:e]) for s, e in zip(starts.tolist(), ends.tolist(), strict=True)])

    def recall_at(self, hit: np.ndarray, k: int) -> float:
        """Hits within each video's top-k over all GT relations, in float32 as the official code."""
        hits = int(np.count_nonzero(hit & (self.rank < k)))
        return float(np.float32(hits) / np.maximum(np.float32(self.n_gt.sum()), _EPS32))

    def hits_at(self, hit: np.ndarray, k: int) -> list[int]:
        """(E,) hits within each video's top-k predictions (the numerators of Recall@k)."""
        counts = np.bincount(self.video[hit & (self.rank < k)], minlength=len(self.videos))
        return counts.tolist()

    def tagging_precisions(
        self, ks: Iterable[int], divisor: TaggingDivisor, per_video: list[list[float]] | None = None
    ) -> list[float]:
        """Mean tagging precision@k for each k (official: at rank min(k, #unique); "k": divided by k).

        ``per_video``, when given, receives for each k the (E,) per-video precisions averaged.
        """
        n_videos = len(self.videos)
        ptrip = self.pred.triplet[self.rows]
        keys = self.video * max(len(self.pred.vocab), 1) + ptrip
        upos = np.sort(first_occurrences(keys))  # (U,) unique (video, triplet) in score order, by video
        uvideo = self.video[upos]
        n_unique = np.bincount(uvideo, minlength=n_videos)
        ufirst = np.cumsum(n_unique) - n_unique
        urank = np.arange(upos.size) - ufirst[uvideo]
        gkey = uvideo * self.n_triplets + self.gt_triplet[upos]
        at = np.searchsorted(self.gt_keys_sorted, gkey)
        at = np.minimum(at, max(self.gt_keys_sorted.size - 1, 0))
        uhit = (self.gt_triplet[upos] >= 0) & (self.gt_keys_sorted[at] == gkey)
        out = []
        for k in ks:
            hits = np.bincount(uvideo[uhit & (urank < k)], minlength=n_videos).astype(np.float32)
            denom = np.minimum(n_unique, k) if divisor == "official" else np.full(n_videos, k)
            prec = hits / np.maximum(denom.astype(np.float32), _EPS32)
            # The official list holds float32 values, or the Python float 0.0 for a video without
            # predictions (which makes numpy average in float64): reproduce both.
            values = [x if n else 0.0 for x, n in zip(prec, n_unique.tolist(), strict=True)]
            out.append(float(np.mean(values)))
            if per_video is not None:
                per_video.append([float(x) for x in values])
        return out


class _PairSide:
    """One role (subject or object) of the candidate pairs: where their common frames lie in each bank."""

    def __init__(
        self, problem: _Problem, prow: np.ndarray, grow: np.ndarray, start: np.ndarray, role: int
    ) -> None:
        self.role = role
        self.pbank, self.gbank = problem.pred.bank, problem.gt.bank
        pt, gtt = 2 * prow + role, 2 * grow + role
        self.p_first = self.pbank.first[pt] + (
            start - problem.pred.begin[prow]
        )  # (P,) bank row of frame `start`
        self.g_first = self.gbank.first[gtt] + (start - problem.gt.begin[grow])
        self.vol_p, self.vol_g = self.pbank.volume[pt], self.gbank.volume[gtt]

    def may_reach(self, length: np.ndarray, threshold: float) -> np.ndarray:
        """(P,) False where a cheap upper bound proves vIoU < threshold.

        The overlap of a frame is at most the clipped area of either box, so the overlap is at most
        the smaller of the two trajectories' clipped volumes on the common frames (kept as exact
        integer running sums of rounded-up areas); vIoU = o / (v1 + v2 - o) grows with o.
        """
        if not (self.pbank.bounds_valid and self.gbank.bounds_valid):
            return np.ones(length.shape[0], bool)
        pc, gc = self.pbank.area_cum, self.gbank.area_cum
        cap = np.minimum(
            pc[self.p_first + length] - pc[self.p_first], gc[self.g_first + length] - gc[self.g_first]
        )
        cap = cap.astype(np.float64)
        denom = self.vol_p + self.vol_g - cap
        with np.errstate(divide="ignore", invalid="ignore"):
            return ~((denom > 0) & (cap / denom < threshold - _BOUND_MARGIN))

    def viou(self, idx: np.ndarray, length: np.ndarray, threshold: float) -> np.ndarray:
        """(len(idx),) exact official vIoU of pairs ``idx`` (prediction trajectory first, as officially)."""
        overlap = paired_overlaps(
            self.pbank.cols, self.p_first[idx], self.gbank.cols, self.g_first[idx], length[idx]
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            value = overlap / (self.vol_p[idx] + self.vol_g[idx] - overlap)
        return np.nan_to_num(value, nan=-1.0, posinf=-1.0, neginf=-1.0)


def first_occurrences(keys: np.ndarray) -> np.ndarray:
    """Index of the first occurrence of every distinct key (in key order). np.unique would do, but it
    imports numpy.ma on first use, which costs more than the whole evaluation of a small case."""
    if keys.size == 0:
        return np.zeros(0, np.int64)
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    return order[np.concatenate([[True], ordered[1:] != ordered[:-1]])]


def _segment_suffix_max(values: np.ndarray, segment: np.ndarray, n_segments: int) -> np.ndarray:
    """(n,) float32 max of ``values[i:]`` within i's segment; ``values`` float32 >= 0, segments sorted.

    Non-negative float32 values order like their bit patterns, so one int64 key
    ``(reversed segment) << 32 | bits`` lets a single running maximum restart at every segment.
    """
    if values.size == 0:
        return values
    bits = values.view(np.int32).astype(np.int64)
    key = ((n_segments - segment).astype(np.int64) << 32) | bits
    running = np.maximum.accumulate(key[::-1])[::-1]
    return (running & 0xFFFFFFFF).astype(np.int32).view(np.float32)
