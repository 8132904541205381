"""run_experiment end to end on a tiny embedded synthetic dataset (CPU, a few seconds per run)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sage_model.analysis import STABILITY_FILE, load_stability
from sage_model.config import ExperimentConfig
from sage_model.data import DatasetRoot, PairDataset, load_vocabulary
from sage_model.eval import load_predictions
from sage_model.experiment import (
    EvalVocabulary,
    LabelShuffled,
    resolve_roots,
    run_experiment,
    splits_with_ground_truth,
)
from sage_model.metrics import CATALOGUE

TINY = {
    "data": {"synthetic_videos": 4},
    "train": {"stage1_epochs": 1, "stage2_epochs": 1, "stage2_batch_size": 64, "val_fraction": 0.25},
    "eval": {"tasks": ["sgdet", "sgcls", "predcls"], "measure_speed": True, "stability_noise": [0.0, 0.5]},
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("sage_data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SAGE_DATA_CACHE", str(cache))
        yield cache


def config(**blocks) -> ExperimentConfig:
    merged = {k: dict(v) for k, v in TINY.items()}
    for key, value in blocks.items():
        merged.setdefault(key, {}).update(value)
    return ExperimentConfig.model_validate(merged)


@pytest.fixture(scope="module")
def first_run(data_cache, tmp_path_factory):
    reports = []
    work = tmp_path_factory.mktemp("trial")
    result = run_experiment(config(), work_dir=work, on_epoch=reports.append)
    return result, reports, work


def test_a_trial_reports_percent_metrics_for_every_task_and_split(first_run):
    result, reports, _ = first_run
    efficiency = {m.name for m in CATALOGUE if m.kind == "efficiency"}
    detection = {(m.task, m.split, m.name) for m in result.metrics if m.name not in efficiency}
    expected = {
        (t, s, n)
        for t in ("sgdet", "sgcls", "predcls")
        for s in ("novel", "all")
        for n in ("map", "r50", "r100", "p1", "p5", "p10")
    }
    assert detection == expected
    assert all(0.0 <= m.value <= 100.0 for m in result.metrics if m.name not in efficiency)
    speed = {(m.task, m.name): m.value for m in result.metrics if m.name in efficiency}
    assert set(speed) == {(t, n) for t in ("sgdet", "sgcls", "predcls") for n in efficiency}
    assert speed[("predcls", "params_m")] == pytest.approx(result.n_params / 1e6)
    assert all(v > 0 for v in speed.values())
    # the teacher's descriptions of the test pairs cost time: with them the model is slower
    assert all(speed[(t, "fps_teacher")] < speed[(t, "fps")] for t in ("sgdet", "predcls"))
    assert result.synthetic and result.device.startswith("cpu") and result.data_hash and result.teacher_hash
    assert [(r.stage, r.epoch) for r in reports] == [(1, 1), (2, 1)]
    assert "val/predcls_all_map" in reports[0].metrics


def test_per_video_scores_recompute_the_reported_metrics(first_run):
    result, _, _ = first_run
    values = {(m.task, m.split, m.name): m.value for m in result.metrics}
    keys = {(v.task, v.split) for v in result.videos}
    assert keys == {(t, s) for t in ("sgdet", "sgcls", "predcls") for s in ("novel", "all")}
    for task, split in keys:
        videos = [v for v in result.videos if (v.task, v.split) == (task, split)]
        assert len({v.video_id for v in videos}) == len(videos) > 0
        n_gt = sum(v.n_gt for v in videos)
        assert values[(task, split, "map")] == pytest.approx(100 * np.mean([v.ap for v in videos]), abs=1e-9)
        assert values[(task, split, "r50")] == pytest.approx(
            100 * sum(v.tp50 for v in videos) / n_gt, rel=1e-6
        )
        assert values[(task, split, "p5")] == pytest.approx(100 * np.mean([v.p5 for v in videos]), abs=1e-5)


def test_predictions_are_official_json_files_cut_to_top_k(first_run):
    result, _, work = first_run
    assert set(result.predictions) == {
        f"{t}_{s}" for t in ("sgdet", "sgcls", "predcls") for s in ("novel", "all")
    }
    vocab = load_vocabulary("vidvrd")
    for name, path in result.predictions.items():
        assert path.parent == work and path.is_file()
        raw = json.loads(path.read_text())
        assert raw["version"] == "VERSION 1.0" and raw["external_data"]["used"] is False
        assert all(len(entries) <= 200 for entries in raw["results"].values())
        load_predictions(path)  # the evaluator's own validation
        predicates = {e["triplet"][1] for entries in raw["results"].values() for e in entries}
        if name.endswith("_novel"):
            assert predicates <= set(vocab.novel_predicates)


def test_the_stability_analysis_is_written_beside_the_predictions(first_run):
    result, _, work = first_run
    assert result.artifacts["stability"] == work / STABILITY_FILE
    feats = load_stability(work / STABILITY_FILE)
    moved = feats.mean_cosine_to_clean()
    assert set(moved) == {0.0, 0.5}
    assert moved[0.5] == pytest.approx(1.0, abs=1e-5)  # class-aware: noise cannot move the classifier


@pytest.mark.slow
def test_max_test_videos_scores_only_the_first_test_videos(first_run, tmp_path):
    result, _, work = first_run
    everyone = json.loads(result.predictions["predcls_all"].read_text())["results"]
    capped_cfg = config(
        data={"max_test_videos": 1, "max_train_videos": 1},
        eval={"tasks": ["predcls"], "measure_speed": False, "stability_noise": []},
    )
    _, test_root = resolve_roots(capped_cfg, tmp_path)
    first_video = sorted(a.video_id for a in test_root.annotations("test"))[0]
    capped = run_experiment(capped_cfg, work_dir=tmp_path / "trial")
    kept = json.loads(capped.predictions["predcls_all"].read_text())["results"]
    assert len(everyone) > 1 and set(kept) == {first_video}


def test_splits_with_ground_truth_drops_novel_only_without_a_novel_relation():
    vocab = EvalVocabulary(("ride", "watch"), ("watch",), ("person", "dog"))
    rel = {"triplet": ["person", "ride", "dog"]}
    assert splits_with_ground_truth({"v1": [rel], "v2": []}, ("novel", "all"), vocab) == ("all",)
    novel = {"triplet": ["dog", "watch", "person"]}
    assert splits_with_ground_truth({"v1": [rel], "v2": [novel]}, ("novel", "all"), vocab) == ("novel", "all")


@pytest.mark.slow
def test_a_held_out_set_without_novel_relations_skips_novel_instead_of_failing(data_cache, tmp_path):
    # 6 synthetic videos, seed 0: the one held-out validation video has no novel relation
    cfg = config(
        data={"synthetic_videos": 6},
        train={"val_fraction": 0.1},
        eval={"tasks": ["predcls"], "measure_speed": False, "stability_noise": []},
    )
    reports = []
    result = run_experiment(cfg, work_dir=tmp_path, on_epoch=reports.append)
    keys = set().union(*(r.metrics for r in reports))
    assert "val/predcls_all_map" in keys and "val/predcls_novel_map" not in keys
    assert {(m.split, m.name) for m in result.metrics} >= {("novel", "map"), ("all", "map")}


@pytest.mark.slow
def test_the_same_seed_gives_the_same_metrics_and_sgcls_may_reuse_the_predcls_pass(first_run, tmp_path):
    # first_run times every task (measure_speed), so each task scores its pairs itself; without it
    # SGCls reuses the scores of PredCls's ground-truth pairs: the numbers must not move
    result, _, _ = first_run
    again = run_experiment(config(eval={"measure_speed": False}), work_dir=tmp_path)
    speed = {m.name for m in CATALOGUE if m.kind == "efficiency"}
    first = {(m.task, m.split, m.name): m.value for m in result.metrics if m.name not in speed}
    second = {(m.task, m.split, m.name): m.value for m in again.metrics}
    assert ("sgcls", "all", "map") in second and first == second


@pytest.mark.slow
def test_cross_dataset_scores_only_predicates_the_training_dataset_lacks(data_cache, tmp_path):
    cfg = config(
        data={"dataset": "vidor", "test_dataset": "vidvrd"},
        eval={"tasks": ["sgdet"], "splits": ["novel"], "measure_speed": False, "stability_noise": []},
    )
    result = run_experiment(cfg, work_dir=tmp_path)
    assert {(m.task, m.split) for m in result.metrics} == {("sgdet", "novel")}
    lacking = set(load_vocabulary("vidvrd").predicates) - set(load_vocabulary("vidor").predicates)
    raw = json.loads(result.predictions["sgdet_novel"].read_text())
    predicted = {e["triplet"][1] for entries in raw["results"].values() for e in entries}
    assert predicted and predicted <= lacking
    vocab = EvalVocabulary.build(load_vocabulary("vidor"), load_vocabulary("vidvrd"))
    assert set(vocab.novel) == lacking and "next_to" not in lacking and "walk_left" in lacking


def test_shuffled_labels_move_targets_but_not_features(data_cache, tmp_path):
    train_root, _ = resolve_roots(config(), tmp_path / "w")
    store = train_root.feature_store("train", "gt")
    dataset = PairDataset(store, None)
    shuffled = LabelShuffled(dataset, seed=0)
    idx = np.arange(16)
    plain, moved = dataset.get_batch(idx), shuffled.get_batch(idx)
    assert (plain["visual"] == moved["visual"]).all()
    donor = dataset.get_batch(shuffled.permutation[idx])
    assert (moved["labels"] == donor["labels"]).all() and (
        moved["subject_class"] == donor["subject_class"]
    ).all()
    assert not (plain["labels"] == moved["labels"]).all()


def test_fusion_without_a_teacher_is_a_config_error(data_cache, tmp_path):
    with pytest.raises(ValueError, match="data.teacher"):
        run_experiment(config(data={"teacher": "none"}), work_dir=tmp_path)


def test_the_synthetic_root_is_generated_once_and_reused(data_cache, tmp_path):
    a, _ = resolve_roots(config(), tmp_path / "x")
    b, _ = resolve_roots(config(), tmp_path / "y")
    assert a.path == b.path and a.path.parent == data_cache
    assert DatasetRoot.open(a.path).synthetic


def test_the_dry_runs_data_sizes_are_the_pairs_the_trial_trained_and_scored(data_cache, tmp_path):
    """``harness run --dry-run`` prices a trial by its pairs: counted from the root they must be the
    trial's own (training drops the pairs with a novel object; validation and test as scored), on the
    root the trial used (a test split of its own size: another folder). Here and not in a file of
    the harness because it reuses this module's data cache and trial helpers."""
    from harness.estimate import data_sizes

    cfg = config(
        data={"synthetic_videos": 12, "synthetic_test_videos": 5},
        train={"stage2_epochs": 0},
        eval={"tasks": ["sgdet", "predcls"], "measure_speed": False, "stability_noise": []},
    )
    result = run_experiment(cfg, work_dir=tmp_path / "trial")
    sizes = data_sizes(cfg, data_cache)
    assert sizes.source.startswith("counted in") and sizes.source.endswith("-t5")
    root = DatasetRoot.open(resolve_roots(cfg, tmp_path / "w")[0].path)
    in_training_videos = len(root.feature_store("train", "gt")) - result.split_sizes["val"]
    assert sizes.train == result.split_sizes["train"] < in_training_videos  # some pairs were dropped
    assert sizes.val == result.split_sizes["val"]
    assert sizes.test == {s: result.split_sizes[f"test_{s}"] for s in ("det", "gt")}
