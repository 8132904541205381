"""`harness tune` end to end: a real local Ray, a real Optuna sqlite storage, a real MLflow store.

- The search is killed (SIGKILL, driver and its Ray) after some trials, resumed, and ends with
  exactly N distinct finished trials and a best-values file; the real SAGE trainer on the
  synthetic default, tiny.
- Pruning: a scripted experiment whose objective is known makes the median pruner stop weak
  trials; they stop at the very epoch report that condemned them.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sage_model.records import EpochReport, ExperimentResult
from tests.tune_support import LOSS_WEIGHTS, write_tune_study

pytestmark = pytest.mark.slow

# Ray workers import this module to unpickle `scripted_experiment`: keep top-level imports light.


def write_study(
    folder: Path, name: str, space: str, trials: int, concurrent: int, startup: int, epochs: int = 1
) -> Path:
    return write_tune_study(
        folder, name, space=space, trials=trials, concurrent=concurrent, startup=startup, epochs=epochs
    )


def count_complete(db: Path) -> int:
    """COMPLETE trials in an Optuna storage another process is writing (0 before it exists)."""
    if not db.is_file():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute("SELECT count(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0])
    except sqlite3.OperationalError:  # tables not created yet
        return 0


def mlflow_runs(run_dir: Path, experiment: str, *, trials_only: bool = False) -> list[Any]:
    from harness.tracking import Tracker

    tracker = Tracker(f"sqlite:///{run_dir.resolve()}/mlflow.db", run_dir)
    found = tracker.client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment}"
    return (tracker.trial_runs if trials_only else tracker.runs)(found.experiment_id)


def test_killed_search_resumes_to_exactly_n_distinct_finished_trials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    from harness.spec import Variant, apply_overrides, load_study
    from harness.tuning import TuneOptions, open_existing, tune_study
    from sage_model.config import ExperimentConfig

    n = 4
    study_path = write_study(tmp_path, "tune_resume", LOSS_WEIGHTS, trials=n, concurrent=2, startup=n)
    run_dir, reports = tmp_path / "runs", tmp_path / "reports"
    db = run_dir / "tuning" / "tune_resume" / "optuna.db"
    monkeypatch.setenv("SAGE_DATA_CACHE", str(tmp_path / "data"))  # one synthetic root for both drivers
    env = dict(os.environ)
    cli = [sys.executable, "-c", "from harness.cli import main; main()", "tune", str(study_path),
           "--run-dir", str(run_dir), "--reports-dir", str(reports)]  # fmt: skip
    driver = subprocess.Popen(
        cli, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 600
    try:
        while count_complete(db) < 2:
            assert driver.poll() is None, (
                f"the search ended before it could be interrupted:\n{driver.stdout.read()}"
            )
            assert time.monotonic() < deadline, "no 2 complete trials within 10 minutes"
            time.sleep(0.5)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and its private Ray, mid-trial
        driver.wait()
        driver.stdout.close()

    spec = load_study(study_path)
    before = {t.number: t for t in open_existing(spec, run_dir).trials}
    finished_before = {k: t.params for k, t in before.items() if t.state.name in ("COMPLETE", "PRUNED")}
    assert 2 <= len(finished_before) < n, "the kill must land between the first finished trials and the end"

    outcome = tune_study(study_path, TuneOptions(run_dir=run_dir, reports_dir=reports, num_cpus=2))

    assert outcome.exit_code == 0, outcome.failed_now
    after = open_existing(spec, run_dir).trials
    finished = [t for t in after if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == n
    assert len({tuple(sorted(t.params.items())) for t in finished}) == n  # distinct points
    # what finished before the kill is kept as it was, and only the difference was run again
    assert {t.number: t.params for t in finished if t.number in finished_before} == finished_before
    assert outcome.ran_now == n - len(finished_before)
    # trials the kill left RUNNING were failed and their points re-proposed, never counted
    left_running = [k for k, t in before.items() if t.state.name == "RUNNING"]
    assert all(after[k].state.name == "FAIL" for k in left_running)
    assert not [t for t in after if t.state.name == "RUNNING"]

    best_file = reports / "tune_resume.yaml"
    assert outcome.best_file == best_file and best_file.is_file()
    text = best_file.read_text()
    assert "SYNTHETIC DATA" in text.split("variant:")[0]  # the header says so
    data = yaml.safe_load(text)
    variant = Variant.model_validate(data["variant"])  # ready to paste into a study
    apply_overrides(ExperimentConfig(), variant.overrides)
    complete = [t for t in finished if t.state.name == "COMPLETE"]
    best = max(complete, key=lambda t: t.value)
    assert data["objective"]["trial"] == best.number
    assert variant.overrides == pytest.approx(best.params, rel=1e-5)
    assert data["trials"]["complete"] + data["trials"]["pruned"] == n
    assert (reports / "tune_resume.md").is_file() and (reports / "tune_resume_history.png").is_file()

    runs = mlflow_runs(run_dir, "tune_resume-tuning")
    parents = {r.info.run_id: r for r in runs if r.data.tags.get("harness.role") == "study"}
    assert sorted(r.info.status for r in parents.values()) == ["FINISHED", "KILLED"]  # one per search
    finished_runs = [r for r in runs if r.info.status == "FINISHED" and r.info.run_id not in parents]
    assert len(finished_runs) == n
    for run in runs:
        if run.info.run_id not in parents:
            assert run.data.tags["mlflow.parentRunId"] in parents
            assert run.info.run_name == f"t{run.data.tags['optuna_trial']} · tune_resume"
    assert {r.data.tags["optuna_trial"] for r in finished_runs} == {str(t.number) for t in finished}
    for run in finished_runs:
        assert {"model.loss.alpha", "model.loss.beta", "model.loss.gamma", "train.val_fraction"} <= set(
            run.data.params
        )
        assert "val/predcls_all_map" in run.data.metrics
    assert all(r.info.status in ("FINISHED", "KILLED", "FAILED") for r in runs)  # nothing left RUNNING


# --- pruning with a scripted objective -------------------------------------------------------


EPOCHS = 4


def scripted_experiment(cfg: Any, *, work_dir: Path, on_epoch: Any = None) -> ExperimentResult:
    """Reports ``10 * alpha`` as the validation objective for 4 epochs; leaves a file per epoch
    it actually ran, so the test sees where a pruned trial stopped."""
    assert cfg.train.stage1_epochs + cfg.train.stage2_epochs == EPOCHS  # the driver knows the schedule
    for epoch in range(1, EPOCHS + 1):
        (Path(work_dir) / f"epoch{epoch}").write_text("")
        on_epoch(
            EpochReport(1 if epoch <= 2 else 2, epoch, {"val/predcls_all_map": 10 * cfg.model.loss.alpha})
        )
    return ExperimentResult([], {}, "d", "t", True, 1, "cpu", 0.0)


def test_weak_trials_are_pruned_at_the_epoch_that_condemned_them(
    tmp_path: Path, project_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import statistics

    from harness.spec import load_study
    from harness.tuning import TuneOptions, open_existing, tune_study, tuning_dir

    space = "  space:\n    model.loss.alpha: {low: 0.01, high: 10.0}"
    study_path = write_study(
        tmp_path, "tune_prune", space, trials=6, concurrent=1, startup=2, epochs=EPOCHS // 2
    )
    run_dir = tmp_path / "runs"
    saved = os.environ.get("PYTHONPATH")
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(p for p in (str(project_root), saved) if p)
    )  # workers import us
    outcome = tune_study(
        study_path,
        TuneOptions(run_dir=run_dir, reports_dir=tmp_path / "reports", num_cpus=2),
        experiment_fn=scripted_experiment,
    )
    assert outcome.exit_code == 0 and outcome.finished == 6  # pruned trials count as finished
    trials = open_existing(load_study(study_path), run_dir).trials
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    assert pruned, "with a known objective some trial must fall below the median"
    work = tuning_dir(run_dir, "tune_prune") / "trials" / "tune_prune"
    for trial in trials:
        ran = len(list((work / trial.user_attrs["trial_id"]).glob("epoch*")))
        if trial.state.name == "PRUNED":
            # median pruning starts at the second report (n_warmup_steps=1) and the trial stops right
            # at the report that condemned it: not one epoch later
            assert len(trial.intermediate_values) == ran == 2
            earlier = [t.value for t in trials if t.number < trial.number and t.state.name == "COMPLETE"]
            assert trial.intermediate_values[1] < statistics.median(earlier)
        else:
            assert trial.state.name == "COMPLETE" and ran == EPOCHS
    tags = {
        r.data.tags["optuna_trial"]: r.data.tags.get("optuna_state")
        for r in mlflow_runs(run_dir, "tune_prune-tuning", trials_only=True)
    }
    assert {tags[str(t.number)] for t in pruned} == {"PRUNED"}
