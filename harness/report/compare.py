"""``harness compare``: did B change the numbers of A? Table by table, paired, with intervals.

A and B are two result sets: two results directories, or two commits within one (the history
that :mod:`harness.results` keeps). Each study's trials are matched by (variant, dataset, seed);
every cell gets B minus A, paired over the seeds and test videos both sides have, with a 95%
interval and a p-value Holm-corrected within the study (the procedure of the paper report,
docs/report.md). Trials present on one side only are listed, never fatal. ``--check`` fails on a
headline cell that B makes significantly worse (by the metric's direction in
:mod:`sage_model.metrics`).

Pure functions over polars frames plus the renderers; the CLI (``harness.cli.compare``) reads
the files and writes the outputs.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

import polars as pl

from harness.report import fmt
from harness.report.intervals import Resolution, compare_intervals
from harness.report.render_html import html_table
from harness.report.render_md import md_table
from harness.report.stats import Difference
from harness.report.tables import (
    Column,
    MissingTrial,
    SeedStats,
    _columns,
    _variant_names,
    cell_stats,
    current_trials,
    missing_trials,
)
from harness.results import latest_results
from harness.spec import StudySpec
from sage_model.metrics import METRICS


@dataclass(frozen=True)
class CompareCell:
    """One (variant, column): A's and B's numbers over seeds and B minus A, paired."""

    column: str
    headline: bool
    higher_is_better: bool
    a: SeedStats | None
    b: SeedStats | None
    diff: Difference | None

    @property
    def worse(self) -> bool:
        """B significantly worse than A (after Holm), in the metric's own direction."""
        d = self.diff
        return d is not None and d.significant and (d.value < 0) == self.higher_is_better

    @property
    def verdict(self) -> str:
        d = self.diff
        if d is None:
            return fmt.MISSING
        if not d.significant:
            return "same" if d.value == 0 else "n.s."
        return "worse *" if self.worse else "better *"


@dataclass(frozen=True)
class CompareRow:
    variant: str
    dataset: str
    cells: tuple[CompareCell, ...]


@dataclass(frozen=True)
class StudyComparison:
    """One study's cells, A vs B, and the trials either side lacks."""

    study: str
    paper: str
    columns: tuple[Column, ...]
    rows: tuple[CompareRow, ...]
    missing_a: tuple[MissingTrial, ...]
    missing_b: tuple[MissingTrial, ...]
    resolution: tuple[Resolution, ...]
    without_videos: int

    def regressions(self) -> list[str]:
        """One line per headline cell that B makes significantly worse."""
        return [
            f"{self.study}: {row.variant} / {row.dataset} / {cell.column}: "
            f"B - A = {fmt.difference(cell.diff)}, p (Holm) {fmt.p_value(cell.diff.p_holm if cell.diff else None)}"
            for row in self.rows
            for cell in row.cells
            if cell.headline and cell.worse
        ]


@dataclass(frozen=True)
class Comparison:
    label_a: str
    label_b: str
    studies: tuple[StudyComparison, ...]

    def regressions(self) -> list[str]:
        return [line for study in self.studies for line in study.regressions()]


def select_commit(frame: pl.DataFrame, sha: str) -> pl.DataFrame:
    """The newest result of each trial among those computed at commit ``sha`` (a prefix will do)."""
    prefix = sha.strip().lower()
    if not prefix:
        raise ValueError("--commits: empty commit")
    chosen = frame.filter(pl.col("git_sha").str.to_lowercase().str.starts_with(prefix))
    if chosen.is_empty():
        known = ", ".join(sorted({s[:12] for s in frame["git_sha"].to_list()})) or "none"
        raise ValueError(
            f"--commits: no result was computed at commit {sha} (commits in the results: {known})"
        )
    return latest_results(chosen)


def compare_study(
    spec: StudySpec,
    a: tuple[pl.DataFrame, pl.DataFrame],
    b: tuple[pl.DataFrame, pl.DataFrame],
) -> StudyComparison:
    """A vs B for one study; ``a`` and ``b`` are (metric rows, per-video rows)."""
    columns = _columns(spec)
    headline = frozenset(spec.table.headline if spec.table is not None else ())
    kept_a, _, _ = current_trials(a[0], spec)
    kept_b, _, _ = current_trials(b[0], spec)
    stats_a, stats_b = cell_stats(kept_a, columns), cell_stats(kept_b, columns)
    found = compare_intervals(
        kept_a,
        a[1],
        kept_b,
        b[1],
        variants=_variant_names(spec),
        datasets=spec.datasets,
        seeds=spec.seeds,
        columns=columns,
    )
    rows = tuple(
        CompareRow(
            variant,
            dataset,
            tuple(
                CompareCell(
                    column=col.name,
                    headline=col.name in headline,
                    higher_is_better=METRICS[col.metric].higher_is_better if col.metric in METRICS else True,
                    a=stats_a.get((variant, dataset, col.name)),
                    b=stats_b.get((variant, dataset, col.name)),
                    diff=found.diffs.get((variant, dataset, col.name)),
                )
                for col in columns
            ),
        )
        for dataset in spec.datasets
        for variant in _variant_names(spec)
    )
    return StudyComparison(
        study=spec.name,
        paper=spec.table.paper if spec.table is not None else "",
        columns=columns,
        rows=rows,
        missing_a=missing_trials(kept_a, spec, columns),
        missing_b=missing_trials(kept_b, spec, columns),
        resolution=found.resolution,
        without_videos=found.trials_without_videos,
    )


def compare(
    specs: Sequence[StudySpec],
    a: tuple[pl.DataFrame, pl.DataFrame],
    b: tuple[pl.DataFrame, pl.DataFrame],
    label_a: str,
    label_b: str,
) -> Comparison:
    """A vs B for every study in ``specs`` (in that order)."""
    return Comparison(label_a, label_b, tuple(compare_study(spec, a, b) for spec in specs))


# --- rendering ----------------------------------------------------------------------------------

_HEADER = [
    "variant",
    "column",
    "A (mean ± std)",
    "B (mean ± std)",
    "B − A [95% interval]",
    "paired seeds×videos",
    "p (Holm)",
    "verdict",
]


def _cells(study: StudyComparison) -> list[tuple[CompareRow, CompareCell]]:
    return [
        (row, cell) for row in study.rows for cell in row.cells if cell.a is not None or cell.b is not None
    ]


def _row_text(study: StudyComparison, row: CompareRow, cell: CompareCell) -> list[str]:
    multi = len({r.dataset for r in study.rows}) > 1
    return [
        row.variant + (f" ({row.dataset})" if multi else ""),
        fmt.column_label(cell.column, cell.headline),
        fmt.mean_std(cell.a),
        fmt.mean_std(cell.b),
        fmt.difference(cell.diff),
        fmt.paired_size(cell.diff),
        fmt.p_value(cell.diff.p_holm if cell.diff else None),
        cell.verdict,
    ]


def _facts(study: StudyComparison) -> list[str]:
    lines = []
    if study.without_videos:
        lines.append(
            f"{study.without_videos} trial(s) have no per-video results (results schema version 1): "
            "their cells have no paired test"
        )
    for side, missing in (("A", study.missing_a), ("B", study.missing_b)):
        if missing:
            items = "; ".join(f"{m.variant} · {m.dataset} · seed {m.seed}: {m.what}" for m in missing)
            lines.append(f"missing in {side} ({len(missing)}): {items}")
    mde = [r for r in study.resolution if r.mde is not None]
    if mde:
        lines.append(
            "smallest resolvable change (α 0.05, power 0.8, before Holm): "
            + ", ".join(f"{r.column} {r.mde:.2f}" for r in mde)
        )
    return lines


def render_markdown(comparison: Comparison, command: str) -> str:
    """The comparison as one Markdown document."""
    regressions = comparison.regressions()
    lines = [
        "# Comparison: B vs A",
        "",
        f"Made by `{command}`. A = {comparison.label_a}; B = {comparison.label_b}.",
        "",
        "Paired over the seeds and test videos both sides have; B − A with a 95% interval; "
        "* = significant at 0.05 after Holm's correction within the study (docs/report.md). "
        "★ = headline cell (checked by `--check`).",
        "",
        f"**Check:** {'✗ ' + str(len(regressions)) + ' headline cell(s) significantly worse in B' if regressions else '✓ no headline cell significantly worse in B'}",
        "",
        *(f"- {line}" for line in regressions),
    ]
    for study in comparison.studies:
        lines += ["", f"## {study.paper or study.study} · `{study.study}`", ""]
        lines += [f"- {line}" for line in _facts(study)]
        lines += [""] if _facts(study) else []
        rows = [_row_text(study, row, cell) for row, cell in _cells(study)]
        lines += md_table(_HEADER, rows, list("llrrrrrc")) if rows else ["no results on either side", ""]
    return "\n".join(lines).rstrip() + "\n"


def render_html(comparison: Comparison, command: str) -> str:
    """The comparison as one self-contained HTML document (worse cells tinted red)."""
    regressions = comparison.regressions()
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>Comparison: B vs A</title>',
        "<style>body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1200px;padding:0 1rem}"
        "table{border-collapse:collapse;font-size:.86rem}th,td{border:1px solid #d0d0d0;padding:.25rem .55rem;"
        "text-align:right}td.l,th.l{text-align:left}td.c{text-align:center}td.bad{background:#fde8e8}"
        "td.ok{background:#e6f4ea}.facts{color:#555;font-size:.85rem}</style></head><body>",
        "<h1>Comparison: B vs A</h1>",
        f'<p class="facts">Made by <code>{escape(command)}</code>. A = {escape(comparison.label_a)}; '
        f"B = {escape(comparison.label_b)}.</p>",
        f"<p><b>Check:</b> {len(regressions)} headline cell(s) significantly worse in B</p>",
    ]
    if regressions:
        parts.append("<ul>" + "".join(f"<li>{escape(r)}</li>" for r in regressions) + "</ul>")
    for study in comparison.studies:
        parts.append(f"<h2>{escape(study.paper or study.study)} · <code>{escape(study.study)}</code></h2>")
        parts += [f'<p class="facts">{escape(line)}</p>' for line in _facts(study)]
        rows: list[list[str | tuple[str, str]]] = []
        for row, cell in _cells(study):
            text = [escape(t) for t in _row_text(study, row, cell)]
            css = "bad" if cell.worse else ("ok" if cell.diff is not None and cell.diff.significant else "")
            rows.append([*text[:-1], (text[-1], css)])
        parts.append(
            html_table(_HEADER, rows, list("llrrrrrc")) if rows else "<p>no results on either side</p>"
        )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


CSV_COLUMNS = (
    "study",
    "variant",
    "dataset",
    "column",
    "headline",
    "a_mean",
    "a_n_seeds",
    "b_mean",
    "b_n_seeds",
    "diff",
    "diff_ci_low",
    "diff_ci_high",
    "p_value",
    "p_holm",
    "significant",
    "worse",
)


def render_csv(comparison: Comparison) -> str:
    """One row per (study, variant, dataset, column), B minus A."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for study in comparison.studies:
        for row, cell in _cells(study):
            d = cell.diff
            writer.writerow(
                [
                    study.study,
                    row.variant,
                    row.dataset,
                    cell.column,
                    cell.headline,
                    _num(cell.a.mean if cell.a else None),
                    cell.a.n if cell.a else 0,
                    _num(cell.b.mean if cell.b else None),
                    cell.b.n if cell.b else 0,
                    *(_num(x) for x in ((d.value, d.low, d.high, d.p_value, d.p_holm) if d else (None,) * 5)),
                    "" if d is None else d.significant,
                    cell.worse,
                ]
            )
    return out.getvalue()


def _num(value: float | None) -> str:
    return "" if value is None else repr(float(value))
