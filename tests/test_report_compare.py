"""``harness compare``: paired differences between two result sets, from the library and the CLI."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from typer.testing import CliRunner

from harness.cli import app
from harness.report.compare import CSV_COLUMNS, compare, select_commit
from harness.report.paper import load_results
from harness.results import read_results
from tests.report_data import ALL, NOVEL, load_toy_studies, write_study, write_sweep_results, write_trial

SWEEP = "toy_sweep"


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def cells(comparison, variant: str, column: str):
    study = comparison.studies[0]
    row = next(r for r in study.rows if r.variant == variant)
    return next(c for c in row.cells if c.column == column)


def test_the_same_results_twice_differ_by_exactly_zero(tmp_path: Path) -> None:
    sweep, _ = load_toy_studies(tmp_path / "studies")
    write_sweep_results(tmp_path / "a")
    write_sweep_results(tmp_path / "b")
    result = compare([sweep], load_results(tmp_path / "a"), load_results(tmp_path / "b"), "a", "b")
    diffs = [c.diff for r in result.studies[0].rows for c in r.cells if c.diff is not None]
    assert len(diffs) == 5  # every cell with a value on both sides (10 / novel has none)
    assert all((d.value, d.p_value, d.significant) == (0.0, 1.0, False) for d in diffs)
    assert result.regressions() == [] and cells(result, "2", "all_predcls").verdict == "same"


def test_a_headline_regression_fails_the_check_and_missing_trials_are_listed(tmp_path: Path) -> None:
    load_toy_studies(tmp_path / "studies")
    write_sweep_results(tmp_path / "a")
    for seed, values in ((0, {NOVEL: 19.0, ALL: 27.5}), (1, {NOVEL: 21.0, ALL: 28.5})):  # 2: all -10
        write_trial(tmp_path / "b", SWEEP, "2", seed, values, version=2)
    write_trial(tmp_path / "b", SWEEP, "6", 0, {NOVEL: 22.5, ALL: 36.0}, version=2)
    out = tmp_path / "cmp"
    args = ("compare", str(tmp_path / "a"), str(tmp_path / "b"), "--studies-dir", str(tmp_path / "studies"))
    code, text = invoke(*args, "--out", str(out), "--format", "md,html,csv", "--check")
    assert code == 1, text
    assert "check: toy_sweep: 2 / vidvrd / all_predcls: B - A = -10.00" in text
    md = (out / "compare.md").read_text()
    assert "missing in B (3): 6 · vidvrd · seed 1: no result; 10 · vidvrd · seed 0: no result;" in md
    assert "| 6 | all_predcls ★ | 36.50 ± 0.71 | 36.00 | +0.00 [+0.00, +0.00] | 1×4 | 1.000 | same |" in md
    assert (
        "| 2 | all_predcls ★ | 38.00 ± 0.71 | 28.00 ± 0.71 | -10.00 [-10.00, -10.00] | 2×4 | <0.001 | worse * |"
        in md
    )
    assert '<td class="c bad">worse *</td>' in (out / "compare.html").read_text()
    frame = pl.read_csv(out / "compare.csv", schema_overrides={"variant": pl.String})
    assert tuple(frame.columns) == CSV_COLUMNS
    worse = frame.filter(pl.col("worse"))
    assert worse.select("variant", "column").rows() == [("2", "all_predcls")]
    code, _ = invoke(*args, "--out", str(out))  # without --check a regression is reported, not fatal
    assert code == 0


def test_two_commits_within_one_results_directory(tmp_path: Path) -> None:
    sweep, _ = load_toy_studies(tmp_path / "studies")
    results = tmp_path / "results"
    old, new = "a" * 40, "b" * 40
    for seed in (0, 1):
        write_trial(results, SWEEP, "2", seed, {ALL: 38.0 + seed}, version=2, git_sha=old)
    for seed in (0, 1):  # the same trials rerun at a later commit: history keeps both
        write_trial(
            results,
            SWEEP,
            "2",
            seed,
            {ALL: 38.0 + seed},
            version=2,
            git_sha=new,
            finished_at="2026-02-01T00:00:00+00:00",
        )
    everything = read_results(results, latest=False)
    assert select_commit(everything, "aaaa")["git_sha"].unique().to_list() == [old]
    code, text = invoke(
        "compare", str(results), "--commits", "aaaa", "bbbb", "--studies-dir", str(tmp_path / "studies"),
        "--out", str(tmp_path / "cmp"), "--check",
    )  # fmt: skip
    assert code == 0, text
    assert (
        "| 2 | all_predcls ★ | 38.50 ± 0.71 | 38.50 ± 0.71 | +0.00 [+0.00, +0.00] | 2×4 | 1.000 | same |"
        in (tmp_path / "cmp" / "compare.md").read_text()
    )
    code, text = invoke(
        "compare", str(results), "--commits", "aaaa", "cccc", "--studies-dir", str(tmp_path / "studies")
    )
    assert code == 2 and "no result was computed at commit cccc" in text


def test_compare_needs_two_sides(tmp_path: Path) -> None:
    write_study(tmp_path / "studies", "name: x\n")
    code, text = invoke("compare", str(tmp_path))
    assert code == 2 and "nothing to compare" in text
