"""A tracking server that goes down costs MLflow runs, never results (unless tracking is strict).

A real ``mlflow server`` is stopped with SIGTERM while a study runs: the trials still write their
Parquet files and the tracking errors come back in the outcome. With the server down from the
start the study runs without MLflow; ``--strict-tracking`` refuses to start instead.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.preflight import PreflightError
from harness.results import read_results
from harness.runner import RunOptions, run_study
from harness.spec import load_study
from harness.tracking import Tracker
from tests.reliability_support import (
    MlflowServer,
    held_experiment,
    held_tune_experiment,
    mlflow_server,
    quick_experiment,
    read_marks,
    wait_for,
    write_study,
)
from tests.tune_support import write_tune_study

pytestmark = pytest.mark.slow  # real processes, Ray and MLflow servers: about a minute or more

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray(project_root: Path) -> Iterator[Any]:
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(project_root), saved) if p)
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2, log_to_driver=False)
    yield ray
    ray.shutdown()
    if saved is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = saved


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """One real server for the module; the first test stops it, the later ones need it stopped."""
    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as running:
        yield running


def _layer_2_closed(server: MlflowServer, runs: Path, experiment_id: str) -> bool:
    finished = [r for r in Tracker(server.uri, runs).trial_runs(experiment_id) if r.info.status == "FINISHED"]
    return len(read_marks(runs, "started")) == 2 and len(finished) == 1


def _stop_when_layer_2_is_done(server: MlflowServer, runs: Path, experiment_id: str) -> None:
    """Test side: once layer 2's run is closed and layer 4 runs, SIGTERM the server, release 4."""
    wait_for(
        lambda: _layer_2_closed(server, runs, experiment_id), 600, "layer 2 closed, layer 4 running", 1.0
    )
    server.stop()
    (runs / "HOLD").unlink()


def test_server_stopped_mid_study_costs_no_result(
    tmp_path: Path, local_ray: Any, server: MlflowServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    study = write_study(tmp_path, "tracked", [2, 4])
    runs, results = tmp_path / "runs", tmp_path / "results"
    experiment_id = Tracker(server.uri, runs).ensure_experiment("tracked")
    shown = CliRunner().invoke(app, ["ui", str(study), "--run-dir", str(runs)])
    assert shown.exit_code == 0, shown.output  # a server already serves the UI: just say where
    assert (
        shown.output.strip()
        == f"tracked: {server.uri}/#/experiments/{experiment_id}/runs?workflowType=machine_learning (served by the tracking server)"
    )

    runs.mkdir()
    (runs / "HOLD").touch()
    stopper = threading.Thread(
        target=_stop_when_layer_2_is_done, args=(server, runs, experiment_id), daemon=True
    )
    stopper.start()
    outcome = run_study(study, RunOptions(run_dir=runs, results_dir=results), experiment_fn=held_experiment)
    stopper.join(timeout=60)
    assert server.process.poll() is not None, "the server was not stopped during the study"

    assert outcome.exit_code == 0 and [t.status for t in outcome.trials] == ["finished", "finished"]
    frame = read_results(results, "tracked")
    assert sorted(frame["value"].to_list()) == [20.0, 40.0]
    assert all(frame["mlflow_run_id"].to_list())  # both runs were opened while the server was up
    assert outcome.tracking_errors, "the lost tracking calls must be reported"
    assert any("Connection refused" in e or "Max retries exceeded" in e for e in outcome.tracking_errors)

    stored = Tracker(f"sqlite:///{server.db}", runs)  # what the server kept, read from its file
    kept = {r.data.tags["variant"]: r for r in stored.trial_runs(experiment_id)}
    assert kept["2"].info.status == "FINISHED" and kept["2"].data.metrics["test/predcls_all_map"] == 20.0
    assert kept["4"].info.status == "RUNNING"  # its end could not be logged: reported, not hidden


def test_tune_with_the_server_stopped_mid_search_finishes_its_trials(
    tmp_path: Path, local_ray: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`harness tune` records through the same guarded recorder as `run`: the server going down
    after the first trial costs MLflow runs, never a trial of the search."""
    from harness.tuning import TuneOptions, open_existing, tune_study, tuning_dir

    study = write_tune_study(tmp_path, "tunedown", trials=3, pruner="none")
    runs = tmp_path / "runs"
    hold = tuning_dir(runs, "tunedown") / "HOLD"
    hold.parent.mkdir(parents=True)
    hold.touch()
    with mlflow_server(tmp_path / "mlflow") as server:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)

        def stop_after_the_first_trial() -> None:
            tracker = Tracker(server.uri, runs)

            def first_closed() -> bool:
                found = tracker.client.get_experiment_by_name("tunedown-tuning")
                done = found and [
                    r for r in tracker.trial_runs(found.experiment_id) if r.info.status == "FINISHED"
                ]
                return bool(done) and len(read_marks(hold.parent, "started")) == 2

            wait_for(first_closed, 600, "the first trial closed, the second running", 1.0)
            server.stop()
            hold.unlink()

        stopper = threading.Thread(target=stop_after_the_first_trial, daemon=True)
        stopper.start()
        outcome = tune_study(
            study,
            TuneOptions(run_dir=runs, reports_dir=tmp_path / "reports"),
            experiment_fn=held_tune_experiment,
        )
        stopper.join(timeout=60)
        assert server.process.poll() is not None, "the server was not stopped during the search"

    assert outcome.exit_code == 0 and (outcome.complete, outcome.failed_now) == (3, []), outcome
    trials = open_existing(load_study(study), runs).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    assert outcome.tracking_errors, "the lost tracking calls must be reported"
    stored = Tracker(f"sqlite:///{server.db}", runs)  # what the server kept
    experiment = stored.client.get_experiment_by_name("tunedown-tuning")
    kept = {r.data.tags["optuna_trial"]: r for r in stored.trial_runs(experiment.experiment_id)}
    assert kept["0"].info.status == "FINISHED" and kept["0"].data.tags["optuna_state"] == "COMPLETE"
    assert kept["0"].data.metrics["objective"] == pytest.approx(trials[0].value)
    assert kept["1"].info.status == "RUNNING"  # its end could not be logged: reported, not hidden
    # a search records like `harness run`: a parent run, MLflow's source tags, config, study file, dataset
    first = kept["0"]
    parent = stored.client.get_run(first.data.tags["mlflow.parentRunId"])
    assert parent.info.run_name.startswith("tunedown · ") and parent.data.tags["harness.role"] == "study"
    assert first.info.run_name == "t0 · tunedown" and first.data.tags["mlflow.source.name"] == "harness tune"
    assert first.data.tags["mlflow.source.git.commit"] == parent.data.tags["mlflow.source.git.commit"]
    assert {"config.json", "tunedown.yaml", "trial.log"} <= {
        a.path for a in stored.client.list_artifacts(first.info.run_id)
    }
    assert [d.dataset.digest for d in first.inputs.dataset_inputs] == ["d"]
    assert "stage" not in first.data.metrics and [
        m.step for m in stored.metric_history(first.info.run_id, "val/predcls_all_map")
    ] == [0, 1]


def test_server_down_from_the_start_runs_untracked(
    tmp_path: Path, local_ray: Any, server: MlflowServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.stop()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    study = write_study(tmp_path, "untracked", [2, 4])
    options = RunOptions(run_dir=tmp_path / "runs", results_dir=tmp_path / "results")
    outcome = run_study(study, options, experiment_fn=quick_experiment)
    assert outcome.exit_code == 0 and [t.status for t in outcome.trials] == ["finished", "finished"]
    frame = read_results(options.results_dir, "untracked")
    assert frame.height == 2 and frame["mlflow_run_id"].to_list() == ["", ""]
    assert outcome.tracking_errors[0].startswith("create the experiment: ")


def test_strict_tracking_refuses_to_start_without_the_server(
    tmp_path: Path, server: MlflowServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.stop()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    study = write_study(tmp_path, "strict", [2])
    options = RunOptions(run_dir=tmp_path / "runs", results_dir=tmp_path / "results", strict_tracking=True)
    with pytest.raises(PreflightError, match=rf"--strict-tracking: {server.uri} is unreachable"):
        run_study(study, options, experiment_fn=quick_experiment)
    result = CliRunner().invoke(
        app,
        [
            "run",
            str(study),
            "--strict-tracking",
            "--run-dir",
            str(options.run_dir),
            "--results-dir",
            str(options.results_dir),
        ],
    )
    assert result.exit_code == 2
    assert [line for line in result.output.splitlines() if line.startswith("error:")] == [
        f"error: --strict-tracking: {server.uri} is unreachable ([Errno 111] Connection refused)"
    ]
    assert not (options.run_dir / "trials").exists() and not list(options.results_dir.rglob("*.parquet"))
