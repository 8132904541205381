"""Hand-computed relation detection cases and a loop-by-loop restatement of the official semantics."""

from __future__ import annotations

import numpy as np
import pytest

from sage_model.eval import evaluate_relations, viou

BOX = [0, 0, 9, 9]  # "+1" area 100


def rel(triplet: str, begin: int, end: int, score: float | None = None, box=BOX, obj_box=None) -> dict:
    """A relation 'a-p-b' over [begin, end) with the same box on every frame."""
    entry = {
        "triplet": triplet.split("-"),
        "duration": [begin, end],
        "sub_traj": [list(box)] * (end - begin),
        "obj_traj": [list(obj_box or box)] * (end - begin),
    }
    if score is not None:
        entry["score"] = score
    return entry


def test_equal_scores_keep_input_order() -> None:
    gt = {"v": [rel("a-p-b", 0, 10)]}
    fp_first = {"v": [rel("a-r-b", 0, 10, 0.7), rel("a-p-b", 0, 10, 0.7)]}
    tp_first = {"v": [rel("a-p-b", 0, 10, 0.7), rel("a-r-b", 0, 10, 0.7)]}
    # FP then TP: precision at the hit is 1/2 -> AP 0.5; TP then FP: AP 1.
    assert evaluate_relations(gt, fp_first).mean_ap == 0.5
    assert evaluate_relations(gt, tp_first).mean_ap == 1.0


def test_duplicate_prediction_is_a_false_positive() -> None:
    gt = {"v": [rel("a-p-b", 0, 10)]}
    m = evaluate_relations(gt, {"v": [rel("a-p-b", 0, 10, 0.9), rel("a-p-b", 0, 10, 0.9)]})
    # ranks: hit (P 1, R 1), duplicate (P 1/2, R 1): AP 1, and the GT counted once for recall.
    assert (m.mean_ap, m.rec_at_50) == (1.0, 1.0)


def test_greedy_by_score_not_by_overlap() -> None:
    """A better-localised copy with a lower score cannot take the GT from an earlier, worse hit."""
    gt = {"v": [rel("a-p-b", 0, 10)]}
    shifted = rel("a-p-b", 0, 10, 0.9, box=[0, 0, 9, 11])  # area 120, overlap 100 -> vIoU 100/120
    exact = rel("a-p-b", 0, 10, 0.5)
    m = evaluate_relations(gt, {"v": [exact, shifted]})
    assert m.mean_ap == 1.0  # the shifted one (first by score) hits; the exact copy is a FP after it
    m2 = evaluate_relations({"v": [rel("a-p-b", 0, 10), rel("a-p-b", 0, 10)]}, {"v": [exact, shifted]})
    assert m2.rec_at_50 == 1.0  # with two identical GT both predictions hit


def test_empty_duration_prediction_is_a_false_positive() -> None:
    gt = {"v": [rel("a-p-b", 0, 10)]}
    empty = {"triplet": ["a", "p", "b"], "score": 0.9, "duration": [5, 5], "sub_traj": [], "obj_traj": []}
    m = evaluate_relations(gt, {"v": [empty, rel("a-p-b", 0, 10, 0.5)]})
    assert m.mean_ap == 0.5  # FP first, then the hit: precision 1/2 at recall 1
    assert m.mprec_at_1 == 1.0  # the triplet is right: a tagging hit


def test_video_without_predictions_counts_as_ap_zero() -> None:
    gt = {"v1": [rel("a-p-b", 0, 10)], "v2": [rel("a-p-b", 0, 10)], "empty": []}
    m = evaluate_relations(gt, {"v1": [rel("a-p-b", 0, 10, 0.3)], "empty": [rel("a-p-b", 0, 10, 0.3)]})
    assert m.video_ap == {"v1": 1.0, "v2": 0.0}  # a GT video with an empty list is not evaluated
    assert m.mean_ap == 0.5
    assert m.rec_at_100 == 0.5
    assert m.mprec_at_1 == 0.5


def test_empty_prediction_file_scores_zero() -> None:
    gt = {"v": [rel("a-p-b", 0, 10)]}
    m = evaluate_relations(gt, {"version": "VERSION 1.0", "results": {}})
    assert (m.mean_ap, m.rec_at_50, m.rec_at_100, m.mprec_at_1, m.mprec_at_10) == (0, 0, 0, 0, 0)
    assert m.video_ap == {"v": 0.0}


def test_temporal_partial_overlap_penalised_through_the_union() -> None:
    # overlap 5 frames x 100 px = 500; volumes 1000 + 1000 -> 500 / 1500 = 1/3
    assert viou(np.array([BOX] * 10), (0, 10), np.array([BOX] * 10), (5, 15)) == pytest.approx(
        1 / 3, abs=1e-15
    )
    assert viou(np.array([BOX] * 10), (0, 10), np.array([BOX] * 10), (10, 20)) == 0.0


def test_plus_one_pixel_areas() -> None:
    # [0,0,1,1] has area 4; the intersection with [1,1,2,2] is the single pixel (1,1): 1 / (4 + 4 - 1)
    assert viou(np.array([[0, 0, 1, 1]]), (0, 1), np.array([[1, 1, 2, 2]]), (0, 1)) == 1 / 7


def test_viou_exactly_one_half_is_a_hit() -> None:
    gt = {"v": [rel("a-p-b", 0, 10)]}
    doubled = rel("a-p-b", 0, 20, 0.5)  # overlap V, volumes 2V + V -> V / 2V = 0.5 exactly
    assert viou(np.array([BOX] * 20), (0, 20), np.array([BOX] * 10), (0, 10)) == 0.5
    assert evaluate_relations(gt, {"v": [doubled]}).mean_ap == 1.0


def test_gt_fragments_are_separate_instances() -> None:
    gt = {"v": [rel("a-p-b", 0, 10), rel("a-p-b", 20, 30)]}
    spanning = rel("a-p-b", 0, 30, 0.9)  # vIoU with each fragment: 1000 / (3000 + 1000 - 1000) = 1/3
    assert evaluate_relations(gt, {"v": [spanning]}).mean_ap == 0.0
    both = {"v": [rel("a-p-b", 0, 10, 0.9), rel("a-p-b", 20, 30, 0.8)]}
    assert evaluate_relations(gt, both).mean_ap == 1.0


def test_object_overlap_counts_too() -> None:
    gt = {"v": [rel("a-p-b", 0, 10)]}
    wrong_object = rel("a-p-b", 0, 10, 0.9, obj_box=[50, 50, 59, 59])
    assert evaluate_relations(gt, {"v": [wrong_object]}).mean_ap == 0.0


def test_recall_counts_hits_within_each_videos_top_k() -> None:
    gt = {"v": [rel("a-p-b", 0, 10)]}
    misses = [rel("a-q-b", 0, 10, 1.0 - i / 100) for i in range(60)]
    hit = rel("a-p-b", 0, 10, 0.1)  # ranked 61st
    m = evaluate_relations(gt, {"v": [*misses, hit]})
    assert (m.rec_at_50, m.rec_at_100) == (0.0, 1.0)
    assert m.mean_ap == pytest.approx(1 / 61, abs=1e-7)  # AP uses all predictions; float32 precision


def test_tagging_precision_official_and_divided_by_k() -> None:
    gt = {"v": [rel("a-p-b", 0, 10), rel("a-q-b", 0, 10)]}
    pred = {"v": [rel("a-p-b", 0, 10, 0.9), rel("a-p-b", 5, 10, 0.8), rel("a-r-b", 0, 10, 0.7)]}
    official = evaluate_relations(gt, pred)
    # unique triplets in score order: a-p-b (hit), a-r-b (miss)
    assert official.mprec_at_1 == 1.0
    assert official.mprec_at_5 == 0.5  # hits among min(5, 2) = 2 unique, divided by 2
    assert official.mprec_at_10 == 0.5
    corrected = evaluate_relations(gt, pred, tagging_divisor="k")
    assert (corrected.mprec_at_1, corrected.mprec_at_5, corrected.mprec_at_10) == (
        1.0,
        pytest.approx(0.2),
        pytest.approx(0.1),
    )
    assert corrected.mean_ap == official.mean_ap


def test_novel_split_keeps_novel_predicates_and_drops_empty_videos() -> None:
    gt = {"v1": [rel("a-new-b", 0, 10), rel("a-old-b", 0, 10)], "v2": [rel("a-old-b", 0, 10)]}
    pred = {
        "v1": [rel("a-old-b", 0, 10, 0.9), rel("a-new-b", 0, 10, 0.5)],
        "v2": [rel("a-old-b", 0, 10, 0.9)],
    }
    m = evaluate_relations(gt, pred, novel_predicates={"new"})
    assert m.video_ap == {"v1": 1.0}  # the base-predicate prediction ranked first is dropped, not a FP
    assert m.rec_at_50 == 1.0
    everything = evaluate_relations(gt, pred)
    assert everything.video_ap == {"v1": 1.0, "v2": 1.0}


def test_unknown_video_is_ignored_or_rejected() -> None:
    gt = {"v": [rel("a-p-b", 0, 10)]}
    pred = {"v": [rel("a-p-b", 0, 10, 0.9)], "stranger": [rel("a-p-b", 0, 10, 0.9)]}
    assert evaluate_relations(gt, pred).mean_ap == 1.0
    with pytest.raises(ValueError, match="'stranger' entry 0"):
        evaluate_relations(gt, pred, unknown_videos="error")


def test_ground_truth_without_relations_is_an_error() -> None:
    with pytest.raises(ValueError, match="no relation with a novel predicate"):
        evaluate_relations({"v": [rel("a-p-b", 0, 10)]}, {"v": []}, novel_predicates={"q"})


# ----------------------------------------------------------------------------------------------
# A plain restatement, loop by loop, of the official semantics (docs/evaluation.md), compared with
# the vectorised evaluator on random cases full of ties, duplicates and float boxes.
# ----------------------------------------------------------------------------------------------


def _ref_viou(t1, d1, t2, d2) -> float:
    if d1[0] >= d2[1] or d1[1] <= d2[0]:
        return 0.0
    start, stop = max(d1[0], d2[0]), min(d1[1], d2[1])
    overlap = 0
    for f in range(start, stop):
        a, b = t1[f - d1[0]], t2[f - d2[0]]
        w = min(a[2], b[2]) - max(a[0], b[0]) + 1
        h = min(a[3], b[3]) - max(a[1], b[1]) + 1
        overlap += max(0, w) * max(0, h)
    v1 = sum((b[2] - b[0] + 1) * (b[3] - b[1] + 1) for b in t1)
    v2 = sum((b[2] - b[0] + 1) * (b[3] - b[1] + 1) for b in t2)
    return float(overlap) / (v1 + v2 - overlap)


def _ref_video(gts: list, preds: list) -> tuple[np.ndarray, int, list]:
    order = sorted(range(len(preds)), key=lambda i: preds[i]["score"], reverse=True)
    used = [False] * len(gts)
    tp = []
    for i in order:
        p = preds[i]
        best, best_g = -1.0, -1
        for g, gt in enumerate(gts):
            if used[g] or list(gt["triplet"]) != list(p["triplet"]):
                continue
            ov = min(
                _ref_viou(p["sub_traj"], p["duration"], gt["sub_traj"], gt["duration"]),
                _ref_viou(p["obj_traj"], p["duration"], gt["obj_traj"], gt["duration"]),
            )
            if ov >= 0.5 and ov > best:
                best, best_g = ov, g
        if best_g >= 0:
            used[best_g] = True
        tp.append(best_g >= 0)
    return np.array(tp, bool), len(gts), [tuple(preds[i]["triplet"]) for i in order]


def _ref_ap(tp: np.ndarray, n_gt: int) -> float:
    cum_tp = np.cumsum(tp).astype(np.float32)
    cum_fp = np.cumsum(~tp).astype(np.float32)
    rec = cum_tp / np.float32(n_gt)
    prec = cum_tp / np.maximum(cum_tp + cum_fp, np.finfo(np.float32).eps)
    r = np.concatenate(([0.0], rec, [1.0]))
    p = np.concatenate(([0.0], prec, [0.0]))
    for i in range(p.size - 1, 0, -1):
        p[i - 1] = max(p[i - 1], p[i])
    change = np.where(r[1:] != r[:-1])[0]
    return float(np.sum((r[change + 1] - r[change]) * p[change + 1]))


def _reference(gt: dict, pred: dict) -> dict:
    aps, hits50, hits100, total, tags = [], 0, 0, 0, {1: [], 5: [], 10: []}
    for vid, gts in gt.items():
        if not gts:
            continue
        tp, n_gt, ranked = _ref_video(gts, pred.get(vid, []))
        total += n_gt
        aps.append(_ref_ap(tp, n_gt))
        hits50 += int(tp[:50].sum())
        hits100 += int(tp[:100].sum())
        unique = list(dict.fromkeys(ranked))
        gt_triplets = {tuple(g["triplet"]) for g in gts}
        for k in tags:
            c = min(k, len(unique))
            hits = sum(t in gt_triplets for t in unique[:c])
            tags[k].append(np.float32(hits) / np.float32(c) if c else 0.0)
    return {
        "mean_ap": float(np.mean(aps)),
        "rec_at_50": float(np.float32(hits50) / np.float32(total)),
        "rec_at_100": float(np.float32(hits100) / np.float32(total)),
        "mprec_at_1": float(np.mean(tags[1])),
        "mprec_at_5": float(np.mean(tags[5])),
        "mprec_at_10": float(np.mean(tags[10])),
    }


def _random_case(rng: np.random.Generator) -> tuple[dict, dict]:
    triplets = [["a", "p", "b"], ["a", "q", "b"], ["c", "p", "a"]]
    gt: dict = {}
    pred: dict = {}
    for v in range(int(rng.integers(1, 5))):
        objects = [rng.integers(0, 40, size=(30, 2)).cumsum(0) % 60 for _ in range(3)]

        def traj(o: int, s: int, e: int, jitter: float, objects: list = objects) -> list:
            xy = objects[o][s:e].astype(float) + rng.normal(0, jitter, size=(e - s, 2)) * (jitter > 0)
            boxes = np.concatenate([xy, xy + 15], axis=1)
            return np.round(boxes, 1).tolist() if jitter else boxes.astype(int).tolist()

        gts = []
        for _ in range(int(rng.integers(0, 6))):
            s = int(rng.integers(0, 20))
            e = int(rng.integers(s + 1, 30))
            gts.append(
                {
                    "triplet": triplets[rng.integers(3)],
                    "duration": [s, e],
                    "sub_traj": traj(0, s, e, 0),
                    "obj_traj": traj(1, s, e, 0),
                }
            )
        preds = []
        for _ in range(int(rng.integers(0, 25))):
            if gts and rng.random() < 0.6:
                g = gts[rng.integers(len(gts))]
                s = max(0, g["duration"][0] + int(rng.integers(-2, 3)))
                e = min(30, max(s + 1, g["duration"][1] + int(rng.integers(-2, 3))))
                trip = g["triplet"] if rng.random() < 0.8 else triplets[rng.integers(3)]
            else:
                s = int(rng.integers(0, 20))
                e = int(rng.integers(s + 1, 30))
                trip = triplets[rng.integers(3)]
            jitter = float(rng.choice([0.0, 0.5, 3.0]))
            score = float(rng.choice([0.5, 0.25, round(float(rng.random()), 2)]))
            preds.append(
                {
                    "triplet": trip,
                    "score": score,
                    "duration": [s, e],
                    "sub_traj": traj(0, s, e, jitter),
                    "obj_traj": traj(1, s, e, jitter),
                }
            )
        gt[f"v{v}"] = gts
        pred[f"v{v}"] = preds
    if not any(gt.values()):
        gt["v0"] = [
            {
                "triplet": ["a", "p", "b"],
                "duration": [0, 1],
                "sub_traj": [[0, 0, 5, 5]],
                "obj_traj": [[0, 0, 5, 5]],
            }
        ]
    return gt, pred


@pytest.mark.parametrize("seed", range(40))
def test_vectorised_evaluator_equals_the_loop_restatement(seed: int) -> None:
    gt, pred = _random_case(np.random.default_rng(seed))
    got = evaluate_relations(gt, pred).to_dict()
    want = _reference(gt, pred)
    for name, value in want.items():
        assert got[name] == pytest.approx(value, abs=1e-12), name


def test_per_video_parts_on_a_hand_computed_case() -> None:
    gt = {"v1": [rel("a-p-b", 0, 10), rel("a-q-b", 0, 10)], "v2": [rel("a-p-b", 0, 10)]}
    misses = [rel("a-r-b", 0, 10, 1.0 - i / 100) for i in range(60)]
    pred = {
        "v1": [rel("a-p-b", 0, 10, 0.9), rel("a-r-b", 0, 10, 0.8)],
        "v2": [*misses, rel("a-p-b", 0, 10, 0.1)],
    }
    m = evaluate_relations(gt, pred)
    v1, v2 = m.videos
    assert (v1.video_id, v1.tp50, v1.tp100, v1.n_gt, v1.ap) == ("v1", 1, 1, 2, 0.5)
    assert (v2.video_id, v2.tp50, v2.tp100, v2.n_gt) == ("v2", 0, 1, 1)  # its hit is ranked 61st
    # unique triplets v1: a-p-b (hit), a-r-b (miss); v2: a-r-b (miss), a-p-b (hit)
    assert (v1.p1, v1.p5, v1.p10) == (1.0, 0.5, 0.5)
    assert (v2.p1, v2.p5, v2.p10) == (0.0, 0.5, 0.5)


@pytest.mark.parametrize("seed", range(12))
def test_per_video_parts_recompute_every_metric(seed: int) -> None:
    gt, pred = _random_case(np.random.default_rng(seed))
    m = evaluate_relations(gt, pred)
    parts = m.videos
    assert [p.video_id for p in parts] == list(m.video_ap)
    assert [p.ap for p in parts] == list(m.video_ap.values())
    n_gt = sum(p.n_gt for p in parts)
    assert m.mean_ap == pytest.approx(np.mean([p.ap for p in parts]), abs=1e-12)
    assert m.rec_at_50 == pytest.approx(sum(p.tp50 for p in parts) / n_gt, rel=1e-6)  # float32 officially
    assert m.rec_at_100 == pytest.approx(sum(p.tp100 for p in parts) / n_gt, rel=1e-6)
    for k in (1, 5, 10):
        assert getattr(m, f"mprec_at_{k}") == pytest.approx(
            np.mean([getattr(p, f"p{k}") for p in parts]), abs=1e-7
        )
