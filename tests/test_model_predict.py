"""From pair scores to segment relations: object choice per task, triplet scores, the per-window cut."""

from __future__ import annotations

import numpy as np
import pytest

from sage_model.eval import associate_segments
from sage_model.model.predict import PairRows, PairScores, choose_objects, segment_relations

OBJECTS = ("person", "dog", "car")
PREDICATES = ("ride", "chase", "watch", "next_to")


def rows(n: int = 12, seed: int = 0) -> PairRows:
    """n pairs in two 30-frame windows of one video, boxes that move a little."""
    rng = np.random.default_rng(seed)
    start = np.where(np.arange(n) < n // 2, 0, 15)
    base = rng.uniform(0, 200, size=(n, 2, 1, 2))
    boxes = np.concatenate([base, base + 50], axis=-1) + np.arange(30)[None, None, :, None]
    return PairRows(
        video_id=np.array(["v"] * n, dtype=object),
        segment_start=start,
        segment_end=start + 30,
        subject_score=rng.uniform(0.5, 1, n).astype(np.float32),
        object_score=rng.uniform(0.5, 1, n).astype(np.float32),
        subject_class=rng.integers(0, 3, n),
        object_class=rng.integers(-1, 3, n),
        seg_traj=boxes.astype(np.float32),
        seg_span=np.stack([start + 5, start + 30], axis=1),
    )


def scores(n: int = 12, seed: int = 1) -> PairScores:
    rng = np.random.default_rng(seed)
    obj = rng.dirichlet(np.ones(3), size=n).astype(np.float32)
    return PairScores(rng.uniform(0, 1, (n, 4)).astype(np.float32), obj, obj[::-1].copy())


def test_predcls_uses_ground_truth_classes_with_score_one_and_skips_unknown():
    r, s = rows(), scores()
    choice = choose_objects("predcls", r, s, OBJECTS, OBJECTS)
    assert choice.subject == [OBJECTS[c] if c >= 0 else "" for c in r.subject_class]
    assert (choice.subject_score == 1).all() and (choice.valid == (r.object_class >= 0)).all()


def test_sgdet_multiplies_the_class_probability_by_the_track_score():
    r, s = rows(), scores()
    sgcls = choose_objects("sgcls", r, s, OBJECTS, OBJECTS)
    sgdet = choose_objects("sgdet", r, s, OBJECTS, OBJECTS)
    assert sgcls.subject == [OBJECTS[i] for i in s.subject.argmax(1)]
    np.testing.assert_allclose(sgcls.subject_score, s.subject.max(1))
    np.testing.assert_allclose(sgdet.subject_score, s.subject.max(1) * r.subject_score, rtol=1e-6)


def test_triplet_score_is_subject_times_predicate_times_object():
    r, s = rows(), scores()
    choice = choose_objects("sgcls", r, s, OBJECTS, OBJECTS)
    rels = segment_relations(r, s.predicate, PREDICATES, choice, top_predicates=2)
    assert len(rels) == 2 * len(r.video_id)
    first = rels[0]
    best = int(np.argmax(s.predicate[0]))
    assert first.triplet == (choice.subject[0], PREDICATES[best], choice.object[0])
    assert first.score == pytest.approx(
        choice.subject_score[0] * s.predicate[0, best] * choice.object_score[0]
    )
    assert (first.begin, first.end, first.window) == (5, 30, (0, 30))
    assert first.sub_traj.shape == (25, 4)


@pytest.mark.parametrize("cut", [1, 3, 7])
def test_the_per_window_cut_changes_nothing_the_association_keeps(cut):
    r, s = rows(40, seed=3), scores(40, seed=4)
    choice = choose_objects("sgcls", r, s, OBJECTS, OBJECTS)
    everything = segment_relations(r, s.predicate, PREDICATES, choice, 4, per_segment_top_k=10**6)
    trimmed = segment_relations(r, s.predicate, PREDICATES, choice, 4, per_segment_top_k=cut)
    assert len(trimmed) == 2 * cut < len(everything)
    assert plain(associate_segments(trimmed, per_segment_top_k=cut)) == plain(
        associate_segments(everything, per_segment_top_k=cut)
    )


def plain(entries: list[dict]) -> list[dict]:
    """Entries with their (L, 4) trajectory arrays as lists, comparable with ``==``."""
    return [{**e, "sub_traj": e["sub_traj"].tolist(), "obj_traj": e["obj_traj"].tolist()} for e in entries]
