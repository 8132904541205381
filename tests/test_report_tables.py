"""Paper tables from results: statistics, tolerance, missing trials, rankings, ratios, check."""

from __future__ import annotations

import math

import pytest

from harness.report.paper import load_results
from harness.report.stats import holm
from harness.report.tables import PaperTable, baseline_variant, build_paper_table
from harness.results import read_results
from harness.spec import load_study
from tests.report_data import (
    ALL,
    SWEEP_YAML,
    TOY_CODE_VERSION,
    load_toy_studies,
    write_efficiency_results,
    write_study,
    write_sweep_results,
    write_trial,
)


@pytest.fixture()
def sweep_table(tmp_path) -> PaperTable:
    sweep, _ = load_toy_studies(tmp_path / "studies")
    write_sweep_results(tmp_path / "results")
    return build_paper_table(read_results(tmp_path / "results"), sweep)


def cell(table: PaperTable, variant: str, column: str):
    row = next(r for r in table.rows if r.variant == variant)
    return next(c for c in row.cells if c.column == column)


def test_cell_statistics_over_seeds_are_mean_sample_std_min_max(sweep_table):
    c = cell(sweep_table, "2", "novel_predcls")
    assert c.ours.mean == pytest.approx(20.0)
    assert c.ours.std == pytest.approx(math.sqrt(2.0))  # values 19, 21: sample std
    assert (c.ours.n, c.ours.min, c.ours.max, c.ours.seeds) == (2, 19.0, 21.0, (0, 1))
    assert c.diff == pytest.approx(0.0)
    assert c.within is True


def test_a_rerun_supersedes_the_older_trial_instead_of_being_averaged(sweep_table):
    c = cell(sweep_table, "6", "all_predcls")
    assert (c.ours.mean, c.ours.min, c.ours.max, c.ours.n) == (36.5, 36.0, 37.0, 2)
    assert sweep_table.provenance.superseded_trials == 1


def test_results_of_another_study_version_are_ignored_and_counted(sweep_table):
    assert cell(sweep_table, "2", "all_predcls").ours.max == 38.5  # the stale 99.0 is not in
    assert sweep_table.provenance.stale_trials == 1


def test_diff_and_tolerance_mark_a_miss(sweep_table):
    c = cell(sweep_table, "6", "all_predcls")
    assert c.diff == pytest.approx(-2.5)
    assert c.within is False


def test_a_single_seed_has_no_std(sweep_table):
    c = cell(sweep_table, "10", "all_predcls")
    assert (c.ours.n, c.ours.std) == (1, None)


def test_missing_trials_and_missing_cells_are_listed(sweep_table):
    missing = {(m.variant, m.seed): m.what for m in sweep_table.missing}
    assert missing == {("10", 0): "no value for novel_predcls", ("10", 1): "no result"}
    assert cell(sweep_table, "10", "novel_predcls").ours is None
    assert sweep_table.provenance.trials_found == 5
    assert sweep_table.provenance.trials_expected == 6


def test_check_fails_headline_cells_outside_tolerance_or_short_of_seeds(sweep_table):
    assert sweep_table.check_failures() == [
        "toy_sweep: 6 / vidvrd / all_predcls: diff -2.50 outside ±1",
        "toy_sweep: 10 / vidvrd / all_predcls: 1 seed(s) < min_seeds 2",
    ]


def test_ranking_compares_best_variant_and_rank_correlations(sweep_table):
    ranking = {r.column: r for r in sweep_table.rankings}
    # all_predcls: paper 38.0 / 39.0 / 38.5, ours 38.0 / 36.5 / 38.4
    full = ranking["all_predcls"]
    assert (full.paper_best, full.ours_best, full.same_best) == ("6", "10", False)
    assert full.spearman == pytest.approx(-0.5)
    assert full.kendall == pytest.approx(-1 / 3)
    # novel_predcls: only '2' and '6' have ours; both sides put '6' first
    novel = ranking["novel_predcls"]
    assert novel.variants == ("2", "6")
    assert (novel.paper_best, novel.ours_best, novel.same_best) == ("6", "6", True)
    assert novel.spearman == pytest.approx(1.0)


def test_cited_rows_and_sweep_axis_come_from_the_study(sweep_table):
    assert [(r.method, r.values) for r in sweep_table.cited] == [("OV-MMP", (19.0, 37.0))]
    assert sweep_table.sweep == ("model.prompt.insert_layer", (2.0, 6.0, 10.0))


def test_synthetic_flag_follows_the_results(tmp_path):
    sweep, _ = load_toy_studies(tmp_path / "studies")
    write_sweep_results(tmp_path / "real", synthetic=False)
    assert build_paper_table(read_results(tmp_path / "real"), sweep).provenance.data == "real"
    assert build_paper_table(read_results(tmp_path / "nothing"), sweep).provenance.data == "none"


def test_efficiency_columns_compare_ratios_not_absolute_values(tmp_path):
    _, efficiency = load_toy_studies(tmp_path / "studies")
    write_efficiency_results(tmp_path / "results")
    table = build_paper_table(read_results(tmp_path / "results"), efficiency)
    ratios = {r.column: r for r in table.ratios}
    assert ratios["params_m"].ours == pytest.approx(1.2)
    assert ratios["params_m"].paper == pytest.approx(55.64 / 47.03)
    assert ratios["fps_predcls"].ours == pytest.approx(4.0)
    assert (ratios["fps_predcls"].variant, ratios["fps_predcls"].baseline) == ("Ours", "Image-Cond")
    assert cell(table, "Ours", "fps_predcls").within is None  # absolute FPS is never "within"
    assert table.rankings == ()
    assert table.check_failures() == []


def test_no_results_means_every_trial_missing_and_headlines_fail(tmp_path):
    sweep, _ = load_toy_studies(tmp_path / "studies")
    table = build_paper_table(read_results(tmp_path / "empty"), sweep)
    assert len(table.missing) == 6
    assert all(m.what == "no result" for m in table.missing)
    assert len(table.check_failures()) == 3  # the headline column, one per variant


def toy_with_videos(tmp_path):
    sweep, _ = load_toy_studies(tmp_path / "studies")
    write_sweep_results(tmp_path / "results")
    frame, videos = load_results(tmp_path / "results")
    return build_paper_table(frame, sweep, videos)


def test_cells_get_intervals_around_their_mean_from_the_per_video_rows(tmp_path):
    table = toy_with_videos(tmp_path)
    c = cell(table, "6", "all_predcls")
    assert c.interval is not None and c.interval.value == pytest.approx(c.ours.mean)
    assert c.interval.low < c.ours.mean < c.interval.high
    assert (c.interval.n_seeds, c.interval.n_videos) == (2, 4)
    assert cell(table, "10", "novel_predcls").interval is None  # no value at all
    assert table.interval_note is None


def test_rows_are_compared_with_the_default_model_and_paired_over_seeds(tmp_path):
    table = toy_with_videos(tmp_path)
    assert table.baseline == "6"  # insert_layer 6 is the config default: the paper's full model
    c = cell(table, "2", "all_predcls")
    assert c.paper_gap == pytest.approx(38.0 - 39.0)
    assert c.vs_baseline.value == pytest.approx(38.0 - 36.5)  # both seeds of both rows
    assert c.vs_baseline.low < c.vs_baseline.value < c.vs_baseline.high
    assert cell(table, "6", "all_predcls").vs_baseline is None
    ten = cell(table, "10", "all_predcls").vs_baseline
    assert ten.n_seeds == 1 and ten.value == pytest.approx(38.4 - 36.0)  # seed 0 only: 10 lacks seed 1
    diffs = [c.vs_baseline for row in table.rows for c in row.cells if c.vs_baseline is not None]
    assert [d.p_holm for d in diffs] == pytest.approx(holm([d.p_value for d in diffs]))


def test_table_baseline_overrides_the_default(tmp_path):
    text = SWEEP_YAML.replace("  tolerance: 1.0\n", '  tolerance: 1.0\n  baseline: "2"\n')
    spec = load_study(write_study(tmp_path / "other", text))
    assert baseline_variant(spec) == "2"
    write_sweep_results(tmp_path / "results")
    frame, videos = load_results(tmp_path / "results")
    table = build_paper_table(frame, spec, videos)
    assert cell(table, "6", "all_predcls").vs_baseline.value == pytest.approx(36.5 - 38.0)


def test_trials_without_per_video_rows_have_no_interval_and_the_table_says_why(tmp_path):
    sweep, _ = load_toy_studies(tmp_path / "studies")
    for seed, value in ((0, 37.0), (1, 39.0)):
        write_trial(tmp_path / "results", "toy_sweep", "2", seed, {ALL: value}, version=2, videos=seed == 0)
    frame, videos = load_results(tmp_path / "results")
    table = build_paper_table(frame, sweep, videos)
    c = cell(table, "2", "all_predcls")
    assert c.ours.n == 2 and c.interval is None  # per-video rows for one of its two seeds only
    assert table.interval_note.startswith("1 of 2 trial(s) have no per-video results")


def test_provenance_counts_trials_per_commit_and_code_version(tmp_path):
    table = toy_with_videos(tmp_path)
    assert table.provenance.trials_by_sha == (("f" * 40, 5),)
    assert table.provenance.code_versions == (TOY_CODE_VERSION,)
