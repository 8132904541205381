"""Resumption bookkeeping without Ray: a driver killed at any point leaves Optuna and MLflow
consistent once the next driver starts. Fast: a real Optuna sqlite storage and MLflow store."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from harness.tracking import Tracker
from harness.tuning import close_stale_runs, count_finished, fail_stale_trials

pytestmark = pytest.mark.slow  # a killed search resumed against a real MLflow store: tens of seconds

SPACE = {"model.loss.alpha": FloatDistribution(0.01, 10.0, log=True)}


def killed_mid_search(tmp_path: Path) -> tuple[optuna.Study, Tracker, str, dict[str, str]]:
    """The state a SIGKILL can leave: trial 0 told COMPLETE but its run not closed yet, trial 1
    PRUNED likewise, trial 2 still running in both stores."""
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path}/optuna.db", study_name="s", direction="maximize"
    )
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", tmp_path)
    experiment = tracker.ensure_experiment("s-tuning")
    runs = {}
    for number in range(3):
        trial = study.ask(SPACE)
        trial.report(1.0 + number, 0)
        runs[str(number)] = tracker.start_run(experiment, f"s-t{number}", {}, {"optuna_trial": str(number)})
        if number == 0:
            study.tell(trial, 5.0)
        elif number == 1:
            study.tell(trial, state=TrialState.PRUNED)
    return study, tracker, experiment, runs


def test_restart_fails_running_trials_and_closes_runs_as_optuna_recorded_them(tmp_path: Path) -> None:
    study, tracker, experiment, runs = killed_mid_search(tmp_path)
    assert fail_stale_trials(study) == [2]
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL]
    assert count_finished(study) == (1, 1)  # the failed one is never counted

    close_stale_runs(tracker, experiment, study)
    closed = {r.data.tags["optuna_trial"]: r for r in tracker.runs(experiment)}
    assert {k: r.info.status for k, r in closed.items()} == {"0": "FINISHED", "1": "FINISHED", "2": "KILLED"}
    assert {k: r.data.tags["optuna_state"] for k, r in closed.items()} == {
        "0": "COMPLETE",
        "1": "PRUNED",
        "2": "FAIL",
    }
    assert closed["0"].data.metrics["objective"] == 5.0


def test_closed_runs_are_left_alone(tmp_path: Path) -> None:
    study, tracker, experiment, runs = killed_mid_search(tmp_path)
    tracker.end_run(runs["2"], "FAILED")
    fail_stale_trials(study)
    close_stale_runs(tracker, experiment, study)
    statuses = {r.data.tags["optuna_trial"]: r.info.status for r in tracker.runs(experiment)}
    assert statuses["2"] == "FAILED"
