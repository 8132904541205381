"""Markdown rendering of paper tables: layout only, every number comes from ``tables``.

Per table: a synthetic banner where it applies, one line of run facts, an at-a-glance grid
(ours, paper in parentheses) in the paper's layout, every cell in full (paper, mean ± std, n,
min-max, difference, within tolerance), the cited rows we do not run, the ranking agreement,
missing trials, the ``--check`` verdict and links to the plots.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from harness.report import fmt
from harness.report.tables import PaperTable

PlotLinks = Mapping[str, Sequence[tuple[str, str]]]
"""study -> [(caption, path relative to the Markdown file)]."""


def render_markdown(tables: Sequence[PaperTable], meta: fmt.ReportMeta, plots: PlotLinks) -> str:
    """The whole report as one Markdown document."""
    lines = [
        "# SAGE paper tables: ours vs the paper",
        "",
        f"Made by `{meta.command}` from `{meta.results_dir}` ({meta.result_files} result file(s)) "
        f"at {meta.generated_at}, git {meta.git_sha}"
        + (f", code {meta.code_version}" if meta.code_version else "")
        + ".",
        "",
    ]
    if any(t.synthetic for t in tables):
        lines += [f"> **{fmt.SYNTHETIC_BANNER}** Every table and plot made from them says so.", ""]
    header = ["table", "study", "data", "trials", "ranking vs paper", "check"]
    rows = [
        [
            t.paper or t.study,
            f"`{t.study}`",
            fmt.data_label(t),
            f"{t.provenance.trials_found}/{t.provenance.trials_expected}",
            fmt.ranking_overview(t),
            fmt.check_line(t),
        ]
        for t in tables
    ]
    lines += md_table(header, rows, list("lllrll"))
    for table in tables:
        lines += table_section(table, plots.get(table.study, ()), meta)
    return "\n".join(lines).rstrip() + "\n"


def table_section(
    table: PaperTable, plots: Sequence[tuple[str, str]], meta: fmt.ReportMeta | None = None
) -> list[str]:
    """The Markdown of one table (heading to plots)."""
    lines = [f"## {table.paper or table.study} · `{table.study}`", "", table.description, ""]
    banner = fmt.data_banner(table)
    if banner:
        lines += [f"> **{banner}**", ""]
    lines += [fmt.summary_line(table), ""]
    commits = fmt.commit_lines(table, meta) if meta is not None else []
    lines += [*(f"- {line}" for line in commits), ""] if commits else []
    if table.interval_note:
        lines += [f"> Note: {table.interval_note}.", ""]
    lines += _overview(table)
    lines += _cells(table)
    lines += _differences(table)
    lines += _steps(table)
    lines += _cited(table)
    lines += _ratios(table)
    lines += _rankings(table)
    lines += _missing(table)
    if table.notes:
        lines += ["**Notes**", "", *(f"- {note}" for note in table.notes), ""]
    lines += [f"**Check:** {fmt.check_line(table)}", ""]
    lines += [f"- {failure}" for failure in table.check_failures()]
    if table.check_failures():
        lines.append("")
    for caption, path in plots:
        lines += [f"![{caption}]({path})", ""]
    return lines


def _overview(table: PaperTable) -> list[str]:
    """Variant rows x column cells, ``ours (paper)`` (Tables 1, 2: one grid per split)."""
    title = "**At a glance** (ours: mean over seeds ± 95% interval; the paper's value in parentheses)"
    lines = [title, "", fmt.interval_method() + ".", ""]
    for caption, group in fmt.column_groups(table.columns):
        if caption:
            lines += [f"*{caption}*", ""]
        header = ["variant", *(["dataset"] if len(table.datasets) > 1 else [])]
        header += [fmt.grid_label(c, caption, c.name in table.headline) for c in group]
        rows = []
        for row in table.rows:
            cells = {c.column: c for c in row.cells}
            first = [row.variant, *([row.dataset] if len(table.datasets) > 1 else [])]
            rows.append(first + [fmt.overview_cell(cells[c.name]) for c in group])
        lines += md_table(header, rows, ["l"] * (len(header) - len(group)) + ["r"] * len(group))
    return lines


def _cells(table: PaperTable) -> list[str]:
    tol = f"within ±{table.tolerance:g}"
    header = ["variant", "column", "paper", "ours (mean ± std)", "95% interval", "n", "min–max", "diff", tol]
    multi = len(table.datasets) > 1
    rows = [
        [
            row.variant + (f" ({row.dataset})" if multi else ""),
            fmt.column_label(cell.column, cell.headline),
            fmt.num(cell.paper),
            fmt.mean_std(cell.ours),
            fmt.interval(cell),
            fmt.n_of(cell.ours),
            fmt.min_max(cell.ours),
            fmt.signed(cell.diff),
            fmt.within_mark(cell),
        ]
        for row in table.rows
        for cell in row.cells
    ]
    return ["**Every cell**", "", *md_table(header, rows, list("llrrrrrrc"))]


def _differences(table: PaperTable) -> list[str]:
    """Each row minus the baseline row: the paper's gap beside ours, with interval and p-values."""
    found = fmt.difference_rows(table)
    if not found:
        return []
    rows = [text for text, _ in found]
    header = list(fmt.DIFFERENCE_HEADER)
    title = (
        f"**Differences to {table.baseline}** (row minus {table.baseline}; paired over seeds and test videos)"
    )
    lines = [title, "", *md_table(header, rows, list("llrrrrrc"))]
    resolution = fmt.resolution_line(table)
    return lines + ([resolution, ""] if resolution else [])


def _steps(table: PaperTable) -> list[str]:
    """``table.steps``: each variant minus the one before it, the paper's step beside ours."""
    found = fmt.step_rows(table)
    if not found:
        return []
    order = " < ".join(dict.fromkeys(name for s in table.steps for name in (s.earlier, s.later)))
    title = f"**Steps in the paper's order** ({order}; each row minus the one before, paired)"
    rows = [text for text, _ in found]
    return [title, "", *md_table(list(fmt.STEP_HEADER), rows, list("llrrrrrc"))]


def _cited(table: PaperTable) -> list[str]:
    if not table.cited:
        return []
    header = ["method", *(c.name for c in table.columns)]
    rows = [[r.method, *(fmt.num(v) for v in r.values)] for r in table.cited]
    title = "**Cited rows** (the paper's numbers for methods we do not run)"
    return [title, "", *md_table(header, rows, ["l"] + ["r"] * len(table.columns))]


def _ratios(table: PaperTable) -> list[str]:
    if not table.ratios:
        return []
    header = ["column", "ratio", "paper", "ours"]
    rows = [[r.column, f"{r.variant} / {r.baseline}", _times(r.paper), _times(r.ours)] for r in table.ratios]
    return ["**Ratios**", "", fmt.device_caveat(table), "", *md_table(header, rows, list("llrr"))]


def _times(value: float | None) -> str:
    return fmt.MISSING if value is None else f"{value:.2f}x"


def _rankings(table: PaperTable) -> list[str]:
    if not table.rankings:
        return []
    header = list(fmt.RANKING_HEADER)
    rows = [text for text, _ in fmt.ranking_rows(table)]
    title = (
        "**Ranking of the variants** (paper vs ours: differences to the baseline resolved with the paper's "
        "sign; best variant and rank correlations over variants with both values, whether resolved or not)"
    )
    return [title, "", fmt.ranking_overview(table), "", *md_table(header, rows, list("lrllcrrr"))]


def _missing(table: PaperTable) -> list[str]:
    if not table.missing:
        return ["**Missing trials:** none", ""]
    lines = [f"**Missing trials** ({len(table.missing)})", ""]
    lines += [f"- {m.variant} · {m.dataset} · seed {m.seed}: {m.what}" for m in table.missing]
    return [*lines, ""]


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: Sequence[str]) -> list[str]:
    """A GitHub Markdown table (align: l, r or c per column), followed by a blank line."""
    rule = {"l": "---", "r": "---:", "c": ":---:"}
    out = ["| " + " | ".join(_cell_text(h) for h in header) + " |"]
    out.append("|" + "|".join(rule[a] for a in align) + "|")
    out += ["| " + " | ".join(_cell_text(c) for c in row) + " |" for row in rows]
    return [*out, ""]


def _cell_text(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
