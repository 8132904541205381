"""The `tune:` block of a study: parsing, the rules that keep tuning off the test split, the CLI's
user errors. Fast: no Ray, no training."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.spec import load_study

STUDY = """\
name: {name}
version: 1
description: "tune spec test"
base:
  train.val_fraction: {val_fraction}
variants:
  - name: full
    overrides: {{}}
seeds: [0]
datasets: [vidvrd]
{tune}"""

TUNE = """\
tune:
  space:
    model.loss.alpha: {{low: {low}, high: 10.0{log}}}
    model.loss.beta: {{low: 0.01, high: 10.0}}
  objective: {{metric: {metric}, direction: maximize}}
  trials: 4
"""


def write(folder: Path, name: str = "t", *, metric: str = "val/predcls_all_map", low: float = 0.01,
          log: str = "", val_fraction: float = 0.25, tune: str | None = None) -> Path:  # fmt: skip
    block = TUNE.format(low=low, log=log, metric=metric) if tune is None else tune
    path = folder / f"{name}.yaml"
    path.write_text(STUDY.format(name=name, val_fraction=val_fraction, tune=block))
    return path


def line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def test_tune_block_parses_with_log_uniform_defaults(tmp_path: Path) -> None:
    spec = load_study(write(tmp_path))
    assert spec.tune is not None
    assert set(spec.tune.space) == {"model.loss.alpha", "model.loss.beta"}
    assert all(rng.log for rng in spec.tune.space.values())
    assert spec.tune.objective.metric == "val/predcls_all_map"
    assert (spec.tune.trials, spec.tune.pruner) == (4, "median")


@pytest.mark.parametrize("metric", ["test/predcls_all_map", "predcls_all_map", "train/loss"])
def test_objective_off_the_validation_split_is_rejected_with_its_dotted_path(
    tmp_path: Path, metric: str
) -> None:
    path = write(tmp_path, metric=metric)
    with pytest.raises(ValueError) as err:
        load_study(path)
    message = str(err.value)
    assert f"{path}:{line_of(path, 'objective:')}: tune.objective.metric:" in message
    assert "test split" in message and metric in message


def test_unknown_search_path_names_the_field(tmp_path: Path) -> None:
    block = TUNE.format(low=0.01, log="", metric="val/predcls_all_map").replace(
        "model.loss.beta", "model.loss.bta"
    )
    with pytest.raises(
        ValueError, match=r"tune\.space: .*model\.loss\.bta: unknown field 'bta' in model\.loss"
    ):
        load_study(write(tmp_path, tune=block))


def test_log_range_needs_a_positive_low(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"tune\.space\.model\.loss\.alpha: .*log: true needs low > 0"):
        load_study(write(tmp_path, low=0.0))


def test_range_end_outside_the_config_field_names_that_end(tmp_path: Path) -> None:
    # alpha must be > 0 in LossConfig: a linear range from 0 is valid for Optuna but not for the model
    path = write(tmp_path, low=0.0, log=", log: false")
    with pytest.raises(ValueError) as err:
        load_study(path)
    message = str(err.value)
    assert (
        f":{line_of(path, 'model.loss.alpha')}: tune.space.model.loss.alpha.low: model.loss.alpha" in message
    )


def test_non_numeric_field_cannot_be_searched(tmp_path: Path) -> None:
    block = TUNE.format(low=0.01, log="", metric="val/predcls_all_map").replace(
        "model.loss.beta", "model.prompt.init_text"
    )
    with pytest.raises(ValueError, match="only int and float fields can be searched"):
        load_study(write(tmp_path, tune=block))


def test_no_validation_split_means_no_objective(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"tune\.objective: train\.val_fraction is 0"):
        load_study(write(tmp_path, val_fraction=0.0))


def test_shipped_study_searches_the_three_loss_weights_on_validation(project_root: Path) -> None:
    from harness.tuning import distributions, tuning_base

    spec = load_study(project_root / "studies" / "tune_loss_weights.yaml")
    assert spec.tune is not None
    assert set(spec.tune.space) == {"model.loss.alpha", "model.loss.beta", "model.loss.gamma"}
    assert all(d.log for d in distributions(spec.tune).values())
    assert spec.tune.objective.metric.startswith("val/")
    base = tuning_base(spec)
    assert base.data.root is None  # the synthetic default
    assert base.eval.tasks == () and base.eval.stability_noise == ()  # tuning never scores the test split
    assert base.eval.every_epoch and base.train.val_fraction > 0


def test_stored_search_of_another_space_is_refused(tmp_path: Path) -> None:
    from harness.tuning import open_search, tuning_base

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = load_study(write(tmp_path / "a"))
    other = load_study(write(tmp_path / "b", low=0.001))  # the same study name, another range
    runs = tmp_path / "runs"
    open_search(first, runs, tuning_base(first))
    with pytest.raises(ValueError, match="another search space"):
        open_search(other, runs, tuning_base(other))
    assert open_search(first, runs, tuning_base(first)).study_name == "t"  # the same search resumes


def test_cli_reports_user_errors_with_exit_code_2(tmp_path: Path) -> None:
    runner = CliRunner()
    bad = write(tmp_path, metric="test/predcls_all_map")
    result = runner.invoke(app, ["tune", str(bad), "--run-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert "tune.objective.metric" in result.output
    plain = tmp_path / "plain"
    plain.mkdir()
    no_tune = write(plain, tune="")
    result = runner.invoke(app, ["tune", str(no_tune), "--run-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert "no `tune:` block" in result.output
