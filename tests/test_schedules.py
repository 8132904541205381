"""Named training schedules (``--schedule``) and the cost before launch (``harness run --dry-run``)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.expand import expand_study
from harness.schedules import (
    PAPER_TRAIN,
    SYNTHETIC_BUDGET,
    budget_differences,
    get_schedule,
    schedule_overrides,
)
from harness.spec import load_study
from harness.tuning import TuneOptions, tuning_base

STUDIES = Path(__file__).resolve().parents[1] / "studies"
TABLE1 = STUDIES / "table1_vidvrd_main.yaml"


def invoke(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def test_the_paper_schedule_replaces_the_study_budget_and_names_itself() -> None:
    spec = load_study(TABLE1)
    short = expand_study(spec)
    paper = expand_study(spec, schedule_name="paper", schedule_overrides=schedule_overrides("paper"))
    assert {t.config.train.stage1_epochs for t in short} == {SYNTHETIC_BUDGET["train.stage1_epochs"]}
    for trial in paper:
        train = trial.config.train
        assert (train.stage1_epochs, train.stage2_epochs, train.batch_size) == (30, 30, 32)
        assert (train.lr, train.milestones, train.lr_decay, train.schedule) == (
            1e-3,
            (15, 20, 25),
            0.1,
            "paper",
        )
        assert trial.schedule == "paper" and budget_differences(train) == {}
    assert {t.trial_id for t in short}.isdisjoint(t.trial_id for t in paper)


def test_set_and_variants_still_win_over_the_schedule() -> None:
    spec = load_study(TABLE1)
    trials = expand_study(
        spec, schedule_name="paper", schedule_overrides=schedule_overrides("paper"),
        user_overrides={"train.stage1_epochs": 5},
    )  # fmt: skip
    assert {t.config.train.stage1_epochs for t in trials} == {5}
    assert budget_differences(trials[0].config.train) == {"train.stage1_epochs": (5, 30)}


def test_default_schedule_is_the_study_budget_and_off_the_papers() -> None:
    assert schedule_overrides("default") == {}
    trial = expand_study(load_study(TABLE1))[0]
    assert trial.config.train.schedule == "default"
    assert set(budget_differences(trial.config.train)) == {
        "train.stage1_epochs",
        "train.stage2_epochs",
        "train.milestones",
    }
    assert trial.config.data.synthetic_videos == SYNTHETIC_BUDGET["data.synthetic_videos"]
    assert trial.config.data.synthetic_test_videos == SYNTHETIC_BUDGET["data.synthetic_test_videos"] == 200
    smoke = expand_study(load_study(TABLE1), smoke=True)[0]  # a smoke run generates no 200-video test split
    assert smoke.config.data.synthetic_test_videos is None and smoke.config.data.synthetic_videos == 4


def test_the_synthetic_budget_lies_beneath_the_study_base() -> None:
    table10 = expand_study(load_study(STUDIES / "table10_efficiency.yaml"))[0]  # states its own budget
    assert (table10.config.train.stage1_epochs, table10.config.train.stage2_epochs) == (1, 1)
    assert table10.config.data.synthetic_videos == SYNTHETIC_BUDGET["data.synthetic_videos"]
    assert table10.config.data.synthetic_test_videos is None  # its base: speed needs no larger test split
    assert set(PAPER_TRAIN) >= set(
        budget_differences({"stage1_epochs": 2, "batch_size": 8, "milestones": [3]})
    )


def test_an_unknown_schedule_names_the_flag_and_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"--schedule: unknown schedule 'fast'; valid: default, paper"):
        get_schedule("fast")
    code, output = invoke("run", TABLE1, "--schedule", "fast", "--run-dir", tmp_path / "runs")
    assert code == 2 and "--schedule: unknown schedule 'fast'" in output


def test_tune_takes_a_schedule_and_refuses_a_set_of_a_searched_path() -> None:
    spec = load_study(STUDIES / "tune_loss_weights.yaml")
    base = tuning_base(
        spec, layers=TuneOptions(schedule="paper", overrides=(("train.lr", 5e-4),)).layers(spec)
    )
    assert (base.train.stage1_epochs, base.train.schedule, base.train.lr) == (30, "paper", 5e-4)
    searched = next(iter(spec.tune.space))  # type: ignore[union-attr]
    with pytest.raises(ValueError, match=rf"--set {searched}: tuning searches or forces it"):
        TuneOptions(overrides=((searched, 0.5),)).layers(spec)


def listing(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*")}


@pytest.mark.usefixtures("one_torch_thread")
def test_dry_run_prints_the_cost_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SAGE_DATA_CACHE", raising=False)
    before = listing(tmp_path)
    code, output = invoke(
        "run",
        "--dry-run",
        "--schedule",
        "paper",
        "--gpu-mem-gb",
        "0.5",
        TABLE1,
        STUDIES / "table8_layers.yaml",
    )
    assert code == 0, output
    assert listing(tmp_path) == before  # no runs/, results/, lock, MLflow store or synthetic data
    assert "table1_vidvrd_main (schedule paper: 30 + 30 epochs, batch 32)" in output
    assert "trials: 6 to run, 0 already done" in output
    assert "GPU-hours" in output and "measured per step on cpu" in output
    assert "WARNING: Image-Cond: peak" in output  # 0.5 x 0.5 GiB cannot hold a trial and the CUDA context
    assert "table8_layers (schedule paper" in output
    launch = re.search(r"all 2 studies: 16 trials to run, (\d+) distinct configs", output)
    assert launch and int(launch.group(1)) <= 16, output  # a config both studies have is computed once


def _wall(output: str, variant: str) -> str:
    line = next(line for line in output.splitlines() if line.strip().startswith(variant))
    return line.split()[2]


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_a_short_run_records_its_schedule_and_the_next_dry_run_counts_it_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parquet (config_json) and MLflow (tag and param) name the schedule of a real smoke run."""
    from harness.results import read_results
    from harness.tracking import Tracker

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    study = tmp_path / "sched.yaml"
    study.write_text(
        "name: sched\nversion: 1\ndescription: one trial\nbase: {eval.tasks: [predcls]}\n"
        'variants:\n  - {name: "Ours", overrides: {}}\nseeds: [0]\ndatasets: [vidvrd]\n'
    )
    runs, results = tmp_path / "runs", tmp_path / "results"
    flags: list[Any] = ["--smoke", "--schedule", "paper", "--run-dir", runs, "--results-dir", results]
    code, output = invoke("run", study, *flags)
    assert code == 0, output
    rows = read_results(results, "sched")
    assert all('"schedule":"paper"' in c.replace(" ", "") for c in rows["config_json"])
    tracker = Tracker(os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{runs}/mlflow.db", runs)
    run = next(r for r in tracker.trial_runs(tracker.ensure_experiment("sched")))
    assert run.data.tags["schedule"] == "paper" and run.data.params["train.schedule"] == "paper"
    code, output = invoke("run", "--dry-run", study, *flags)
    assert code == 0 and "trials: 0 to run, 1 already done" in output


def test_the_report_warns_loudly_over_real_numbers_off_the_papers_budget(tmp_path: Path) -> None:
    from harness.report import fmt
    from harness.report.tables import build_paper_table
    from harness.results import read_results
    from tests.report_data import ALL, load_toy_studies, write_trial

    sweep, _ = load_toy_studies(tmp_path / "studies")
    short = '{"train": {"schedule": "default", "stage1_epochs": 2, "stage2_epochs": 2}}'
    paper = '{"train": {"schedule": "paper"}}'  # the config defaults are the paper's budget
    for name, config_json, synthetic in (
        ("short", short, False),
        ("paper", paper, False),
        ("synth", short, True),
    ):
        results = tmp_path / name
        write_trial(
            results, "toy_sweep", "2", 0, {ALL: 38.0}, version=2, synthetic=synthetic, config_json=config_json
        )
        table = build_paper_table(read_results(results), sweep)
        banner = fmt.data_banner(table) or ""
        if name == "short":
            assert (
                banner.startswith("NOT THE PAPER'S TRAINING BUDGET")
                and "stage1_epochs 2 (paper 30)" in banner
            )
            assert "schedule: default" in fmt.summary_line(table)
        elif name == "paper":
            assert banner == "" and "schedule: paper" in fmt.summary_line(table)
        else:
            assert banner == fmt.SYNTHETIC_BANNER  # synthetic numbers are never beside the paper's anyway
