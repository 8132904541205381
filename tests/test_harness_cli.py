"""`harness validate` and the parts of `harness run` that need no Ray: skip-all, lock, exit codes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from harness.cli import app
from harness.cli.app import user_errors
from harness.expand import expand_study
from harness.locking import StudyLock
from harness.results import MetricRow, TrialRecord, write_result
from harness.spec import load_study

STUDY = """\
name: tiny
version: 1
description: "cli test"
variants:
  - {name: "2", overrides: {model.prompt.insert_layer: 2}}
  - {name: "6", overrides: {}}
seeds: [0, 1]
datasets: [vidvrd]
"""


@pytest.fixture()
def study(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(STUDY)
    return path


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def finish_all(study: Path, results_dir: Path, overrides: dict | None = None) -> list[str]:
    """Write a result file for every trial, as a finished run would."""
    trials = expand_study(load_study(study), user_overrides=overrides)
    for trial in trials:
        record = TrialRecord(
            trial.study, 1, trial.trial_id, trial.variant, trial.dataset, trial.seed, trial.config_hash,
            "{}", "sha", False, {}, "hw", "cpu", "d", "t", True, 1.0, "now", "run",
        )  # fmt: skip
        write_result(results_dir, record, [MetricRow("predcls", "all", "map", 1.0)])
    return [t.trial_id for t in trials]


def test_every_command_module_is_registered(project_root: Path) -> None:
    """A module under harness/cli/ that the package does not import would be a missing command."""
    modules = {p.stem for p in (project_root / "harness" / "cli").glob("*.py")} - {"__init__", "app"}
    names = {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}
    assert names == modules


def test_validate_prints_trial_counts(study: Path) -> None:
    code, out = invoke("validate", str(study))
    assert code == 0
    assert f"ok  {study}: 4 trials (2 variants x 1 datasets x 2 seeds)" in out


def test_validate_reports_every_bad_file_with_its_line(study: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(STUDY.replace("name: tiny", "name: bad").replace("insert_layer: 2", "insert_layr: 2"))
    code, out = invoke("validate", str(study), str(bad))
    assert code == 2
    assert "ok  " in out
    assert f"error: {bad}:5: variants[0] (2).overrides: model.prompt.insert_layr: unknown field" in out


def test_validate_names_every_problem_of_a_bad_study_typo_first(tmp_path: Path) -> None:
    """The new user's study of issue #14: a typo, no variants, no datasets, no description."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nversion: 1\nseedz: [0]\nvariants: []\n")
    code, out = invoke("validate", str(bad))
    lines = out.strip().splitlines()
    assert code == 2 and len(lines) <= 8
    assert lines[0] == f"error: {bad}:3: seedz: unknown key (did you mean 'seeds'?)"
    for problem in ("description: Field required", "seeds: Field required", "datasets: Field required"):
        assert any(line.startswith(f"error: {bad}:") and line.endswith(problem) for line in lines), problem
    assert any(f"{bad}:4: variants: List should have at least 1 item" in line for line in lines)


def test_study_errors_stop_at_eight_lines_and_count_the_rest(tmp_path: Path) -> None:
    bad = tmp_path / "many.yaml"
    typos = "".join(f"  train.epoch{i}: 1\n" for i in range(12))
    bad.write_text(STUDY.replace("name: tiny", "name: many") + "base:\n" + typos)
    code, out = invoke("validate", str(bad))
    lines = out.strip().splitlines()
    assert code == 2 and len(lines) == 8
    assert lines[-1] == "error: ... and 5 more"
    assert all("base: train.epoch" in line and "unknown field" in line for line in lines[:-1])


def test_internal_errors_exit_1_and_point_to_debug(capsys: pytest.CaptureFixture[str]) -> None:
    """A KeyError from our own code is a bug: not exit 2 and not worded as the user's mistake."""

    @user_errors
    def buggy() -> None:
        raise KeyError("trial_id")

    with pytest.raises(typer.Exit) as exit_info:
        buggy()
    assert exit_info.value.exit_code == 1
    err = capsys.readouterr().err
    assert err.startswith("internal error: KeyError: 'trial_id'") and "rerun with --debug" in err


def test_validate_repo_studies(project_root: Path) -> None:
    code, out = invoke("validate", "--studies-dir", str(project_root / "studies"))
    assert code == 0 and "table8_layers.yaml: 10 trials" in out


def test_run_with_everything_finished_skips_and_says_synthetic(study: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    ids = finish_all(study, results)
    code, out = invoke("run", str(study), "--run-dir", str(tmp_path / "runs"), "--results-dir", str(results))
    assert code == 0, out
    assert "SYNTHETIC DATA" in out and "NOT comparable" in out
    assert "tiny: 0 finished, 4 already done (skipped), 0 failed" in out
    assert sorted(p.parent.name for p in (results / "tiny").glob("*/*.parquet")) == sorted(ids)


def test_run_variant_selects_trials_and_names_unknown_ones(study: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    ids = finish_all(study, results)
    base = ("run", str(study), "--run-dir", str(tmp_path / "runs"), "--results-dir", str(results))
    code, out = invoke(*base, "--variant", "6")
    assert code == 0, out
    assert "tiny: 0 finished, 2 already done (skipped), 0 failed" in out  # the ids of the full run
    assert len(ids) == 4
    code, out = invoke(*base, "--variant", "6", "--variant", "8")
    assert code == 2
    assert "--variant: no variant '8' in 'tiny'; variants: '2', '6'" in out


def test_run_refuses_while_the_study_is_locked(study: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    with StudyLock(runs, "tiny"):
        code, out = invoke("run", str(study), "--run-dir", str(runs), "--results-dir", str(tmp_path / "r"))
    assert code == 2
    assert f"lock {runs.resolve()}/tiny.lock is held by PID {os.getpid()}" in out


def test_run_user_errors_exit_2(study: Path, tmp_path: Path) -> None:
    code, out = invoke("run", str(tmp_path / "missing.yaml"))
    assert code == 2 and "study file not found" in out
    code, out = invoke("run", str(study), "--seeds", "0,x")
    assert code == 2 and "--seeds" in out
    code, out = invoke("run", str(study), "--seeds", "5", "--results-dir", str(tmp_path / "r"))
    assert code == 2 and "not in study tiny's seeds" in out
    code, out = invoke("run", str(study), "--data-root", str(tmp_path / "nope"))
    assert code == 2 and "--data-root" in out


def test_real_data_flags_change_trial_identity(study: Path, tmp_path: Path) -> None:
    # Results of the synthetic run must never be mistaken for the real run's: the ids differ.
    results = tmp_path / "results"
    finish_all(study, results)
    (tmp_path / "data").mkdir()
    runs = tmp_path / "runs"
    with StudyLock(runs, "tiny"):  # stop before Ray: the plan alone shows nothing is skipped
        code, out = invoke(
            "run",
            str(study),
            "--run-dir",
            str(runs),
            "--results-dir",
            str(results),
            "--data-root",
            str(tmp_path / "data"),
        )
    assert code == 2 and "SYNTHETIC" not in out


def test_set_overrides_every_trial_and_refuses_what_the_study_varies(study: Path, tmp_path: Path) -> None:
    spec = load_study(study)
    plain = expand_study(spec)
    longer = expand_study(spec, user_overrides={"train.stage1_epochs": 30, "model.loss.gamma": 0.5})
    assert all(t.config.train.stage1_epochs == 30 and t.config.model.loss.gamma == 0.5 for t in longer)
    assert [t.config.model.prompt.insert_layer for t in longer] == [2, 2, 6, 6]  # variants still apply
    assert not {t.trial_id for t in plain} & {t.trial_id for t in longer}  # new ids: no stale reuse
    with pytest.raises(ValueError, match=r"--set model.prompt.insert_layer: study tiny varies it \(variant\(s\) '2'\)"):
        expand_study(spec, user_overrides={"model.prompt.insert_layer": 4})
    with pytest.raises(ValueError, match="--set seed: set by the study's seeds"):
        expand_study(spec, user_overrides={"seed": 3})
    with pytest.raises(ValueError, match="--set: train.stage1_epochs: Input should be greater than or equal to 0"):
        expand_study(spec, user_overrides={"train.stage1_epochs": -1})
    # through the CLI (values are YAML): the --set run's finished trials are found and skipped;
    # the lock is held so that a wrong plan stops (exit 2) instead of training
    results, runs = tmp_path / "results", tmp_path / "runs"
    finish_all(study, results, {"train.stage1_epochs": 30, "model.loss.gamma": 0.5})
    run = ("run", str(study), "--run-dir", str(runs), "--results-dir", str(results))
    with StudyLock(runs, "tiny"):
        code, out = invoke(*run, "--set", "train.stage1_epochs=30", "--set", "model.loss.gamma=0.5")
        assert code == 0 and "tiny: 0 finished, 4 already done (skipped), 0 failed" in out, out
        code, out = invoke(*run, "--set", "train.stage1_epochs=31", "--set", "model.loss.gamma=0.5")
        assert code == 2 and "tiny.lock is held" in out  # other epochs: other trials, nothing skipped
    code, out = invoke(*run, "--set", "train.stage1_epochs")
    assert code == 2 and "--set 'train.stage1_epochs': expected PATH=VALUE" in out
    code, out = invoke(*run, "--set", "train.stage1_epoch=3")
    assert code == 2 and "train.stage1_epoch" in out and "unknown field" in out


def test_progress_view_counts_states_and_estimates_eta(study: Path) -> None:
    import io

    from rich.console import Console

    from harness.progress import StudyProgress, fmt_duration
    from harness.trial import TrialOutcome

    trials = expand_study(load_study(study))
    console = Console(file=io.StringIO(), width=160, force_terminal=False)
    view = StudyProgress("tiny", console)
    view.planned(trials[1:], trials[:1])
    assert view.eta() is None  # nothing has finished yet: no estimate
    view.started(trials[1].trial_id)
    view.started(trials[2].trial_id)
    view.epoch(trials[1].trial_id, 1, 0, {"train/loss": 1.0})
    view.rows[trials[1].trial_id].started -= 30  # it ran for 30 s
    view.ended(TrialOutcome(trials[1].trial_id, "2", 1, "finished"))
    view.ended(TrialOutcome(trials[2].trial_id, "6", 0, "failed", error="RuntimeError: boom"))
    view.started(trials[3].trial_id)
    assert view.counts() == {"pending": 0, "running": 1, "finished": 1, "failed": 1, "skipped": 1}
    eta = view.eta()
    assert eta is not None and 0 < eta <= 30
    console.print(view)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "0 pending / 1 running / 2 done / 1 failed" in text
    assert "RuntimeError: boom" in text and "done (kept)" in text
    assert [fmt_duration(s) for s in (None, 42, 187, 3720)] == ["—", "42s", "3m07s", "1h02m"]
