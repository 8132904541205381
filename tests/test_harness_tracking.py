"""MLflow tracking and the in-process trial (run_trial): a real sqlite store, no Ray."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.expand import expand_study
from harness.results import read_results
from harness.spec import load_study
from harness.tracking import Tracker, default_tracking_uri, flatten
from harness.trial import recording_context, run_trial
from sage_model.config import ExperimentConfig

STUDY = """\
name: toy
version: 1
description: "tracking test"
variants:
  - {name: "2", overrides: {model.prompt.insert_layer: 2}}
  - {name: "bad", overrides: {model.prompt.insert_layer: 9}}
seeds: [0]
datasets: [vidvrd]
"""


@dataclass
class Metric:
    task: str
    split: str
    name: str
    value: float


@dataclass
class EpochReport:
    stage: int
    epoch: int
    metrics: dict[str, float]


@dataclass
class Result:
    metrics: list[Metric]
    predictions: dict[str, Path]
    data_hash: str
    teacher_hash: str
    synthetic: bool
    n_params: int
    device: str
    wall_s: float


def tiny_experiment(cfg: ExperimentConfig, *, work_dir: Path, on_epoch: Any = None) -> Result:
    """Three epochs of a made-up curve; layer 9 fails, the way a real bug would."""
    if cfg.model.prompt.insert_layer == 9:
        raise RuntimeError("layer 9 exploded\nsecond line of detail")
    for epoch in range(3):
        on_epoch(EpochReport(stage=1 + epoch // 2, epoch=epoch, metrics={"train/loss": 1.0 / (epoch + 1)}))
    pred = work_dir / "predcls_all.json"
    pred.write_text("{}")
    layer = float(cfg.model.prompt.insert_layer)
    metrics = [Metric("predcls", "all", "map", layer), Metric("sgdet", "novel", "r50", layer / 2)]
    return Result(metrics, {"predcls_all": pred}, "dh", "th", True, 1234, "cpu", 0.01)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One sqlite store for the module (creating one costs seconds of migrations)."""
    return tmp_path_factory.mktemp("mlflow-store")


@pytest.fixture()
def trials(tmp_path: Path) -> list:
    path = tmp_path / "toy.yaml"
    path.write_text(STUDY)
    return expand_study(load_study(path))


def test_flatten_gives_dotted_string_params() -> None:
    flat = flatten(ExperimentConfig().model_dump(mode="json"))
    assert flat["model.prompt.insert_layer"] == "6"
    assert flat["train.milestones"] == "[15, 20, 25]"
    assert flat["data.root"] == "None"


def test_embedded_store_lives_in_the_run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert default_tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert default_tracking_uri(tmp_path) == "http://127.0.0.1:5000"


def test_finished_trial_has_curves_params_tags_artifacts_and_parquet(
    tmp_path: Path, store: Path, trials: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ctx = recording_context(store, tmp_path / "results", "toy")
    outcome = run_trial(trials[0], tmp_path / "runs", experiment_fn=tiny_experiment, ctx=ctx)
    assert outcome.status == "finished" and outcome.error is None
    run = ctx.tracker.client.get_run(outcome.mlflow_run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == trials[0].trial_id
    assert run.data.params["model.prompt.insert_layer"] == "2"
    assert run.data.tags["synthetic"] == "true" and run.data.tags["config_hash"] == trials[0].config_hash
    assert run.data.metrics["predcls_all_map"] == 2.0 and run.data.metrics["sgdet_novel_r50"] == 1.0
    curve = ctx.tracker.metric_history(outcome.mlflow_run_id, "train/loss")
    assert [(m.step, round(m.value, 3)) for m in curve] == [(0, 1.0), (1, 0.5), (2, 0.333)]
    artifacts = {a.path for a in ctx.tracker.client.list_artifacts(outcome.mlflow_run_id)}
    assert {"config.json", "predictions"} <= artifacts
    frame = read_results(tmp_path / "results", "toy")
    assert frame.height == 2 and set(frame["mlflow_run_id"]) == {outcome.mlflow_run_id}


def test_failing_trial_is_recorded_failed_with_its_error(
    tmp_path: Path, store: Path, trials: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ctx = recording_context(store, tmp_path / "results", "toy")
    outcome = run_trial(trials[1], tmp_path / "runs", experiment_fn=tiny_experiment, ctx=ctx)
    assert outcome.status == "failed"
    assert outcome.error == "RuntimeError: layer 9 exploded"
    run = ctx.tracker.client.get_run(outcome.mlflow_run_id)
    assert run.info.status == "FAILED" and run.data.tags["error"] == outcome.error
    assert "error.txt" in {a.path for a in ctx.tracker.client.list_artifacts(outcome.mlflow_run_id)}
    assert read_results(tmp_path / "results").height == 0


def test_stale_running_runs_are_marked_killed(store: Path) -> None:
    tracker = Tracker(f"sqlite:///{store}/mlflow.db", store)
    experiment = tracker.ensure_experiment("stale")
    assert tracker.ensure_experiment("stale") == experiment  # idempotent
    stale = tracker.start_run(experiment, "left-over", {}, {})
    done = tracker.start_run(experiment, "done", {}, {})
    tracker.end_run(done, "FINISHED")
    assert tracker.mark_stale_runs_killed(experiment) == [stale]
    statuses = {r.info.run_name: r.info.status for r in tracker.runs(experiment)}
    assert statuses == {"left-over": "KILLED", "done": "FINISHED"}


def test_long_params_are_clipped_not_rejected(store: Path) -> None:
    tracker = Tracker(f"sqlite:///{store}/mlflow.db", store)
    experiment = tracker.ensure_experiment("clip")
    run_id = tracker.start_run(experiment, "r", {"model.prompt.init_text": "x" * 10000}, {"note": "y" * 9000})
    run = tracker.client.get_run(run_id)
    assert len(run.data.params["model.prompt.init_text"]) == 6000
    assert run.data.params["model.prompt.init_text"].endswith("[truncated]")
    assert time.time() * 1000 >= run.info.start_time


def test_mlflow_limits_match_the_installed_mlflow() -> None:
    from mlflow.utils import validation

    from harness import tracking

    assert tracking.MAX_ENTITY_KEY_LENGTH == validation.MAX_ENTITY_KEY_LENGTH
    assert tracking.MAX_PARAM_VAL_LENGTH == validation.MAX_PARAM_VAL_LENGTH
    assert tracking.MAX_TAG_VAL_LENGTH == validation.MAX_TAG_VAL_LENGTH
