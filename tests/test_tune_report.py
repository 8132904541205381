"""The outputs of `harness tune` from a hand-made search summary: the best values file, the report
and its plots, and the cases with too few trials. Fast: no Ray, no Optuna."""

from __future__ import annotations

from pathlib import Path

import yaml

from harness.spec import Variant, apply_overrides
from harness.tuning_report import SearchSummary, TrialRow, best_values, write_outputs
from sage_model.config import ExperimentConfig


def summary(rows: list[TrialRow], *, direction: str = "maximize", importances: dict | None = None,
            synthetic: bool = True) -> SearchSummary:  # fmt: skip
    return SearchSummary(
        study="t", study_version=1, metric="val/predcls_all_map", direction=direction, target=4, trials=rows,
        importances=importances, importance_note="needs at least 3 complete trials (have 1)", synthetic=synthetic,
        storage="runs/tuning/t/optuna.db", git="abc (dirty)", made_at="2026-01-01T00:00:00+00:00",
        pruner="median", sampler_seed=0,
    )  # fmt: skip


def row(number: int, state: str, value: float | None, alpha: float) -> TrialRow:
    curve = [] if value is None else [value / 2, value]
    return TrialRow(number, state, value, {"model.loss.alpha": alpha}, curve, f"t-t{number:04d}-x")


ROWS = [
    row(0, "COMPLETE", 2.0, 0.1),
    row(1, "PRUNED", 9.0, 0.2),  # a partial value: never the best
    row(2, "COMPLETE", 3.5, 0.3),
    row(3, "FAIL", None, 0.4),
]


def test_best_is_the_best_complete_trial_in_the_study_direction() -> None:
    assert summary(ROWS).best.number == 2
    assert summary(ROWS, direction="minimize").best.number == 0
    data = best_values(summary(ROWS))
    assert data["variant"] == {"name": "tuned", "overrides": {"model.loss.alpha": 0.3}}
    assert data["objective"]["value"] == 3.5 and data["objective"]["trial"] == 2
    assert data["trials"] == {"target": 4, "complete": 2, "pruned": 1, "failed": 1}


def test_best_values_file_is_a_pasteable_variant_with_a_synthetic_header(tmp_path: Path) -> None:
    best_file, report = write_outputs(summary(ROWS, importances={"model.loss.alpha": 1.0}), tmp_path)
    assert best_file == tmp_path / "t.yaml"
    text = best_file.read_text()
    header = text.split("variant:")[0]
    assert "SYNTHETIC DATA" in header and "harness tune" in header and "runs/tuning/t/optuna.db" in header
    variant = Variant.model_validate(yaml.safe_load(text)["variant"])
    assert apply_overrides(ExperimentConfig(), variant.overrides).model.loss.alpha == 0.3
    body = report.read_text()
    assert (
        "![optimisation history](t_history.png)" in body
        and "![parameter importances](t_importance.png)" in body
    )
    assert (tmp_path / "t_history.png").stat().st_size > 0 and (tmp_path / "t_importance.png").is_file()
    assert "| 1 | pruned | 9 | 2 | 0.2 |" in body  # every trial listed, with its state


def test_real_data_header_has_no_synthetic_warning(tmp_path: Path) -> None:
    best_file, _ = write_outputs(summary(ROWS, synthetic=False), tmp_path)
    assert "SYNTHETIC" not in best_file.read_text()


def test_without_a_complete_trial_there_is_no_best_file_and_the_report_says_why(tmp_path: Path) -> None:
    (tmp_path / "t_importance.png").write_bytes(b"stale")
    best_file, report = write_outputs(
        summary([row(0, "FAIL", None, 0.1), row(1, "PRUNED", 1.0, 0.2)]), tmp_path
    )
    assert best_file is None and not (tmp_path / "t.yaml").exists()
    body = report.read_text()
    assert "Not computed: needs at least 3 complete trials" in body
    assert not (tmp_path / "t_importance.png").exists()  # a stale plot would mislead
    assert "Best trial" not in body
