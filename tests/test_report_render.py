"""Rendering: Markdown against golden files, HTML self-contained with plots, the CLI and --check.

Regenerate the golden files after a deliberate layout change with
``UPDATE_GOLDEN=1 python -m pytest -q tests/test_report_render.py`` and review the diff.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import re
from html import escape
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.report.fmt import SYNTHETIC_BANNER
from harness.report.paper import load_results, parse_formats, write_paper_tables
from harness.report.render_html import render_html
from harness.report.render_md import render_markdown
from harness.report.tables import build_paper_table
from harness.results import read_results
from tests.report_data import (
    ALL,
    EFFICIENCY_YAML,
    META,
    SWEEP_YAML,
    TOY_CODE_VERSION,
    load_toy_studies,
    write_efficiency_results,
    write_study,
    write_sweep_results,
    write_trial,
)

GOLDEN = Path(__file__).parent / "golden"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture()
def toy(tmp_path):
    sweep, efficiency = load_toy_studies(tmp_path / "studies")
    write_sweep_results(tmp_path / "results")
    write_efficiency_results(tmp_path / "results", devices=("cpu", "cuda:0"))
    frame, videos = load_results(tmp_path / "results")
    tables = [build_paper_table(frame, sweep, videos), build_paper_table(frame, efficiency, videos)]
    return tables, [sweep, efficiency], frame


def assert_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"{path} is missing: run with UPDATE_GOLDEN=1 once and review it"
    assert text == path.read_text(encoding="utf-8"), (
        f"{name} differs from the golden file (UPDATE_GOLDEN=1 to accept)"
    )


def test_markdown_matches_golden_file(toy):
    tables, _, _ = toy
    links = {"toy_sweep": [("sweep", "plots/toy_sweep-sweep.png")]}
    assert_golden("report_toy.md", render_markdown(tables, META, links))


def test_markdown_of_a_table_without_results_matches_golden_file(tmp_path):
    sweep, _ = load_toy_studies(tmp_path / "studies")
    table = build_paper_table(read_results(tmp_path / "empty"), sweep)
    assert_golden("report_empty.md", render_markdown([table], META, {}))


def test_every_synthetic_table_carries_the_banner_in_both_formats(toy):
    tables, _, _ = toy
    md = render_markdown(tables, META, {})
    html = render_html(tables, META, {})
    # once at the top, once per table
    assert md.count(SYNTHETIC_BANNER) == 1 + len(tables)
    assert html.count(escape(SYNTHETIC_BANNER)) == 1 + len(tables)


def test_real_data_tables_carry_no_synthetic_banner(tmp_path):
    sweep, _ = load_toy_studies(tmp_path / "studies")
    write_sweep_results(tmp_path / "results", synthetic=False)
    table = build_paper_table(read_results(tmp_path / "results"), sweep)
    assert "SYNTHETIC" not in render_markdown([table], META, {})
    assert "SYNTHETIC" not in render_html([table], META, {})


def test_efficiency_table_names_the_devices_and_warns_when_they_differ(toy):
    tables, _, _ = toy
    md = render_markdown(tables, META, {})
    assert "ours ran on: cpu, cuda:0" in md
    assert "the variants ran on different devices" in md
    assert "one NVIDIA RTX 4090" in md


def test_written_report_has_markdown_html_and_plots(toy, tmp_path):
    _, specs, frame = toy
    out = tmp_path / "reports"
    outcome = write_paper_tables(specs, frame, out, meta=META, runs_dir=tmp_path / "runs")
    names = sorted(p.relative_to(out).as_posix() for p in outcome.files)
    assert names == [
        "paper_tables.html",
        "paper_tables.md",
        "plots/toy_efficiency-bars.png",
        "plots/toy_efficiency-ratios.png",
        "plots/toy_sweep-sweep.png",
        "toy_efficiency.html",
        "toy_efficiency.md",
        "toy_sweep.html",
        "toy_sweep.md",
    ]
    md = (out / "paper_tables.md").read_text()
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (out / link).read_bytes().startswith(PNG_MAGIC), link
    assert outcome.failures == tuple(f for t in outcome.tables for f in t.check_failures())


def test_html_is_self_contained_with_embedded_png_plots(toy, tmp_path):
    _, specs, frame = toy
    out = tmp_path / "reports"
    write_paper_tables(specs, frame, out, formats=("html",), meta=META, runs_dir=tmp_path / "runs")
    html = (out / "paper_tables.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == 3
    assert all(base64.b64decode(data).startswith(PNG_MAGIC) for data in images)
    assert not re.search(r'(src|href)="(https?:)?//', html), "the report must not fetch anything"
    assert not (out / "paper_tables.md").exists()


def test_unknown_format_is_rejected_with_the_valid_ones():
    assert parse_formats("html, md,html") == ("html", "md")
    with pytest.raises(ValueError, match="pdf not in md, html, csv, tex"):
        parse_formats("md,pdf")


def test_csv_has_one_row_per_cell_with_intervals_and_differences(toy, tmp_path):
    tables, specs, frame = toy
    out = tmp_path / "reports"
    videos = load_results(tmp_path / "results")[1]
    write_paper_tables(
        specs, frame, out, formats=("csv",), meta=META, runs_dir=tmp_path / "runs", videos=videos
    )
    cells = pl.read_csv(out / "paper_tables.csv", schema_overrides={"variant": pl.String})
    required = "study variant column mean ci_low ci_high n_seeds n_videos paper diff_vs_baseline"
    assert set(f"{required} diff_ci_low diff_ci_high p_value significant".split()) <= set(cells.columns)
    assert cells.height == sum(len(row.cells) for t in tables for row in t.rows)  # 6 + 4
    two = cells.filter((pl.col("variant") == "2") & (pl.col("column") == "all_predcls")).row(0, named=True)
    table = tables[0]
    cell = next(c for r in table.rows if r.variant == "2" for c in r.cells if c.column == "all_predcls")
    assert (two["mean"], two["paper"], two["n_seeds"], two["n_videos"]) == (38.0, 38.0, 2, 4)
    assert two["ci_low"] == pytest.approx(cell.interval.low) and two["ci_high"] == pytest.approx(
        cell.interval.high
    )
    assert two["diff_vs_baseline"] == pytest.approx(1.5) and two["baseline"] == "6"
    assert two["p_value"] == pytest.approx(cell.vs_baseline.p_value) and two["significant"] is False
    assert not any(written.suffix == ".md" for written in out.iterdir())


def test_tex_is_a_booktabs_table_per_study_with_marks(toy, tmp_path):
    _, specs, frame = toy
    out = tmp_path / "reports"
    videos = load_results(tmp_path / "results")[1]
    write_paper_tables(
        specs, frame, out, formats=("tex",), meta=META, runs_dir=tmp_path / "runs", videos=videos
    )
    tex = (out / "paper_tables.tex").read_text()
    assert tex.count(r"\toprule") == 2 and tex.count(r"\bottomrule") == 2
    assert r"\label{tab:toy\_sweep}" in tex
    # mean, half the 95% interval, the paper's value beneath
    assert r"\shortstack[r]{38.00$\pm$7.16\\ \scriptsize(38.00)}" in tex
    assert "Synthetic data: not comparable to the paper." in tex


def _cli(tmp_path: Path, *args: str):
    return CliRunner().invoke(
        app,
        [
            "report",
            "--paper-tables",
            "--results-dir",
            str(tmp_path / "results"),
            "--run-dir",
            str(tmp_path / "runs"),
            "--studies-dir",
            str(tmp_path / "studies"),
            "--out",
            str(tmp_path / "reports"),
            *args,
        ],
    )


def test_cli_check_exits_nonzero_on_headline_misses_and_lists_them(tmp_path):
    write_study(tmp_path / "studies", SWEEP_YAML)
    write_sweep_results(tmp_path / "results")
    result = _cli(tmp_path, "toy_sweep", "--check")
    assert result.exit_code == 1, result.output
    assert "check: toy_sweep: 6 / vidvrd / all_predcls: diff -2.50 outside ±1" in result.output
    assert (tmp_path / "reports" / "toy_sweep.html").is_file()


def test_cli_check_passes_when_every_headline_cell_is_within_tolerance(tmp_path):
    write_study(tmp_path / "studies", EFFICIENCY_YAML)  # no headline cells: nothing to fail
    write_study(tmp_path / "studies", SWEEP_YAML)
    cell = ("predcls", "all", "map")
    for variant, value in [("2", 38.2), ("6", 39.5), ("10", 38.0)]:
        for seed in (0, 1):
            write_trial(tmp_path / "results", "toy_sweep", variant, seed, {cell: value}, version=2)
    result = _cli(tmp_path, "--check")
    assert result.exit_code == 0, result.output
    assert "toy_sweep: 6/6 trials [SYNTHETIC], 0 headline failure(s)" in result.output
    assert "toy_efficiency: 0/2 trials, 0 headline failure(s)" in result.output


def test_cli_without_paper_tables_or_with_an_unknown_study_is_a_user_error(tmp_path):
    write_study(tmp_path / "studies", SWEEP_YAML)
    result = CliRunner().invoke(app, ["report", "--studies-dir", str(tmp_path / "studies")])
    assert result.exit_code == 2 and "pass --paper-tables" in result.output
    result = _cli(tmp_path, "table99_nothing")
    assert result.exit_code == 2 and "table99_nothing: no such study" in result.output


def test_the_report_names_its_commits_and_warns_when_they_differ(tmp_path):
    sweep, _ = load_toy_studies(tmp_path / "studies")
    write_trial(tmp_path / "results", "toy_sweep", "2", 0, {ALL: 37.5}, version=2, git_sha="a" * 40)
    write_trial(tmp_path / "results", "toy_sweep", "6", 0, {ALL: 36.0}, version=2, git_sha="b" * 40)
    frame, videos = load_results(tmp_path / "results")
    table = build_paper_table(frame, sweep, videos)
    same = dataclasses.replace(META, code_version=TOY_CODE_VERSION)
    md = render_markdown([table], same, {})
    assert (
        f"Numbers from commit aaaaaaaaaaaa (1 trial), bbbbbbbbbbbb (1 trial), code {TOY_CODE_VERSION}." in md
    )
    assert "WARNING: the trials of this table ran from 2 different commits." in md
    assert "other code than this checkout's" not in md
    other = dataclasses.replace(META, code_version="fedcba9876543210")
    warning = "WARNING: numbers computed by other code than this checkout's (code fedcba9876543210)"
    assert escape(warning) in render_html([table], other, {})
