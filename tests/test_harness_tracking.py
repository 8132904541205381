"""MLflow tracking and the in-process trial (run_trial): a real sqlite store, no Ray."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from harness.expand import expand_study
from harness.results import read_results
from harness.spec import load_study
from harness.tracking import EXPERIMENT_KIND_TAG, Tracker, attach_report, default_tracking_uri, flatten
from harness.trial import close_study_run, open_study_run, recording_context, run_trial
from sage_model.config import ExperimentConfig
from sage_model.records import EpochReport, ExperimentResult, Metric

STUDY = """\
name: toy
version: 1
description: "tracking test"
variants:
  - {name: "2", overrides: {model.prompt.insert_layer: 2}}
  - {name: "bad", overrides: {model.prompt.insert_layer: 9}}
  - {name: "resumed", overrides: {model.prompt.insert_layer: 4}}
seeds: [0]
datasets: [vidvrd]
"""


def tiny_experiment(cfg: ExperimentConfig, *, work_dir: Path, on_epoch: Any = None) -> ExperimentResult:
    """Three epochs of a made-up curve; layer 9 fails, the way a real bug would. Layer 4 is a
    trial resumed from a checkpoint after 2 epochs: its reports carry their global steps."""
    layer = cfg.model.prompt.insert_layer
    if layer == 9:
        logging.getLogger("sage_model.experiment").info("about to explode")
        raise RuntimeError("layer 9 exploded\nsecond line of detail")
    for epoch in range(2 if layer == 4 else 0, 3):
        step = epoch if layer == 4 else -1
        on_epoch(EpochReport(1 + epoch // 2, epoch, {"train/loss": 1.0 / (epoch + 1)}, step))
    pred = work_dir / "predcls_all.json"
    pred.write_text("{}")
    weights = work_dir / "weights.pt"
    weights.write_bytes(b"w" * 2**19)
    metrics = [Metric("predcls", "all", "map", layer), Metric("sgdet", "novel", "r50", layer / 2)]
    return ExperimentResult(
        metrics, {"predcls_all": pred}, "dh", "th", True, 1234, "cpu", 0.01,
        artifacts={"weights": weights}, peak_rss_mb=321.0, split_sizes={"train": 10, "val": 2, "test_gt": 5},
    )  # fmt: skip


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One sqlite store for the module (creating one costs seconds of migrations)."""
    return tmp_path_factory.mktemp("mlflow-store")


@pytest.fixture()
def study_file(tmp_path: Path) -> Path:
    path = tmp_path / "toy.yaml"
    path.write_text(STUDY)
    return path


@pytest.fixture()
def trials(study_file: Path) -> list:
    return expand_study(load_study(study_file))


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


def test_a_store_seeded_from_the_schema_template_is_the_store_mlflow_builds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)  # MLflow's Default experiment keeps its artifacts under the cwd
    built, seeded = tmp_path / "built" / "mlflow.db", tmp_path / "seeded" / "mlflow.db"
    MlflowClient(f"sqlite:///{built}").search_experiments()  # MLflow's own migrations
    tracker = Tracker(f"sqlite:///{seeded}", tmp_path / "seeded")
    assert seeded.is_file(), "the new store was not seeded from the template"

    def contents(db: Path) -> dict[str, Any]:
        """Tables with their columns (name, type, not null, key), indexes and row counts. Not the
        CREATE text: MLflow's own builds order a table's CHECK clauses differently from run to run."""
        with sqlite3.connect(db) as conn:
            objects = sorted(conn.execute("SELECT type, name, tbl_name FROM sqlite_master").fetchall())
            tables = [name for kind, name, _ in objects if kind == "table"]
            return {
                "objects": objects,
                "columns": {
                    t: sorted(r[1:4] + r[5:] for r in conn.execute(f'PRAGMA table_info("{t}")'))
                    for t in tables
                },
                "rows": {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables},
                "revision": conn.execute("SELECT version_num FROM alembic_version").fetchall(),
            }

    tracker.client.search_experiments()  # MLflow opens the copy (and adds its Default experiment)
    assert contents(seeded) == contents(built)
    first = [(e.experiment_id, e.name, e.artifact_location) for e in tracker.client.search_experiments()]
    assert first == [
        (e.experiment_id, e.name, e.artifact_location)
        for e in MlflowClient(f"sqlite:///{built}").search_experiments()
    ]
    assert tracker.ensure_experiment("toy") == "1"
    Tracker(f"sqlite:///{seeded}", tmp_path / "seeded")  # an existing store is left as it is
    assert tracker.client.get_experiment_by_name("toy") is not None


def test_finished_trial_has_curves_params_tags_artifacts_and_parquet(
    tmp_path: Path, store: Path, trials: list, study_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.utils import mlflow_tags

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ctx = recording_context(store, tmp_path / "results", "toy", study_file=study_file)
    parent = open_study_run(ctx, "toy")
    outcome = run_trial(trials[0], tmp_path / "runs", experiment_fn=tiny_experiment, ctx=ctx)
    assert outcome.status == "finished" and outcome.error is None
    client = ctx.tracker.client
    run = client.get_run(outcome.mlflow_run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "2 · vidvrd · s0"
    tags = run.data.tags
    assert tags["trial_id"] == trials[0].trial_id and tags["variant"] == "2"
    assert tags[mlflow_tags.MLFLOW_PARENT_RUN_ID] == parent
    assert tags[mlflow_tags.MLFLOW_SOURCE_NAME] == "harness run" and tags[mlflow_tags.MLFLOW_USER]
    assert tags[mlflow_tags.MLFLOW_GIT_COMMIT] == tags["git_sha"] == ctx.git.sha
    assert run.data.params["model.prompt.insert_layer"] == "2"
    assert tags["synthetic"] == "true" and tags["config_hash"] == trials[0].config_hash
    assert tags["data_hash"] == "dh" and tags["stage"] == "2" and tags["epoch"] == "2"  # the last epoch's
    metrics = run.data.metrics
    assert metrics["test/predcls_all_map"] == 2.0 and metrics["test/sgdet_novel_r50"] == 1.0
    assert metrics["system/peak_rss_mb"] == 321.0 and metrics["model/weights_mb"] == 0.5
    assert "system/peak_cuda_mb" not in metrics  # no CUDA, no number
    assert not {"stage", "epoch", "predcls_all_map"} & set(metrics)  # counters are not curves
    curve = ctx.tracker.metric_history(outcome.mlflow_run_id, "train/loss")
    assert [(m.step, round(m.value, 3)) for m in curve] == [(0, 1.0), (1, 0.5), (2, 0.333)]
    artifacts = {a.path for a in client.list_artifacts(outcome.mlflow_run_id)}
    assert {"config.json", "toy.yaml", "trial.log", "weights.pt", "predictions"} <= artifacts
    (dataset,) = run.inputs.dataset_inputs
    assert dataset.dataset.name == "vidvrd (synthetic)" and dataset.dataset.digest == "dh"
    assert json.loads(dataset.dataset.profile)["split_sizes"] == {"train": 10, "val": 2, "test_gt": 5}
    assert json.loads(dataset.dataset.profile)["teacher_hash"] == "th"
    assert [(t.key, t.value) for t in dataset.tags] == [("mlflow.data.context", "training")]
    frame = read_results(tmp_path / "results", "toy")
    assert frame.height == 2 and set(frame["mlflow_run_id"]) == {outcome.mlflow_run_id}

    close_study_run(ctx, [outcome])
    parent_run = client.get_run(parent)
    assert parent_run.info.status == "FINISHED" and parent_run.info.run_name.startswith("toy · 20")
    assert parent_run.data.tags["trials_finished"] == "1"
    assert {a.path for a in client.list_artifacts(parent)} == {"toy.yaml"}
    assert [d.dataset.digest for d in parent_run.inputs.dataset_inputs] == [
        "dh"
    ]  # the runs table's first row
    experiment = client.get_experiment(ctx.experiment_id)
    assert experiment.tags[EXPERIMENT_KIND_TAG] == "custom_model_development"


def test_a_resumed_trial_continues_its_curves_at_the_reported_step(
    tmp_path: Path, store: Path, trials: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ctx = recording_context(store, tmp_path / "results", "toy")
    outcome = run_trial(trials[2], tmp_path / "runs", experiment_fn=tiny_experiment, ctx=ctx)
    assert outcome.status == "finished", outcome.error
    curve = ctx.tracker.metric_history(outcome.mlflow_run_id, "train/loss")
    assert [m.step for m in curve] == [2]  # epochs 0 and 1 ran before the checkpoint


def test_an_existing_experiment_gets_the_model_development_kind(store: Path) -> None:
    tracker = Tracker(f"sqlite:///{store}/mlflow.db", store)
    old = tracker.client.create_experiment("made_by_an_older_harness")
    assert EXPERIMENT_KIND_TAG not in tracker.client.get_experiment(old).tags
    assert tracker.ensure_experiment("made_by_an_older_harness") == old
    assert tracker.client.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == "custom_model_development"


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
    artifacts = {a.path for a in ctx.tracker.client.list_artifacts(outcome.mlflow_run_id)}
    assert {"error.txt", "trial.log", "config.json"} <= artifacts
    log_path = ctx.tracker.client.download_artifacts(outcome.mlflow_run_id, "trial.log", str(tmp_path))
    assert "about to explode" in Path(log_path).read_text()
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


def test_report_plots_are_attached_to_the_studys_newest_parent_run(
    tmp_path: Path, store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert attach_report(tmp_path, {"toy": [tmp_path / "x.png"]}) == []  # no store there: nothing to do
    ctx = recording_context(store, tmp_path / "results", "plotted")
    open_study_run(ctx, "plotted")
    time.sleep(0.01)
    newest = open_study_run(ctx, "plotted")
    plot = tmp_path / "plots" / "plotted-layers.png"
    plot.parent.mkdir()
    plot.write_bytes(b"\x89PNG fake")
    lines = attach_report(store, {"plotted": [plot], "never_run": [plot]})
    assert lines == [
        f"plotted: 1 report file(s) attached to parent run {newest}",
        "never_run: no parent run in the tracking store; report not attached",
    ]
    assert [a.path for a in ctx.tracker.client.list_artifacts(newest, "report")] == [
        "report/plotted-layers.png"
    ]
