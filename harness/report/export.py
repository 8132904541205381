"""Paper tables as data and as LaTeX: ``harness report --format csv,tex``.

CSV: one row per cell (study, variant, dataset, column), our mean with its 95% interval, the
paper's value, and the paired difference to the table's baseline with its interval, p-values
and significance, for analysis in polars/pandas. TeX: one booktabs table per study (``\\toprule``),
each cell ``mean ± half-width of the 95% interval`` with ``*`` where the row differs
significantly from the baseline; the paper's value beneath in small type. Same numbers as the
Markdown and HTML (everything comes from :mod:`harness.report.tables`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from harness.report.fmt import ReportMeta
from harness.report.tables import Cell, PaperTable

CSV_COLUMNS = (
    "study",
    "variant",
    "dataset",
    "column",
    "headline",
    "mean",
    "std",
    "ci_low",
    "ci_high",
    "n_seeds",
    "n_videos",
    "paper",
    "baseline",
    "paper_gap",
    "diff_vs_baseline",
    "diff_ci_low",
    "diff_ci_high",
    "p_value",
    "p_holm",
    "significant",
)
"""``diff_vs_baseline`` is this row minus the baseline row (paired); ``significant`` uses ``p_holm``."""


def render_csv(tables: Sequence[PaperTable]) -> str:
    """Every cell of every table, one row each (empty field = no value)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for table in tables:
        for row in table.rows:
            for cell in row.cells:
                writer.writerow(
                    [table.study, row.variant, row.dataset, cell.column, *_csv_values(table, cell)]
                )
    return out.getvalue()


def _csv_values(table: PaperTable, cell: Cell) -> list[object]:
    ours, ci, diff = cell.ours, cell.interval, cell.vs_baseline
    return [
        cell.headline,
        _num(ours.mean if ours else None),
        _num(ours.std if ours else None),
        _num(ci.low if ci else None),
        _num(ci.high if ci else None),
        ours.n if ours else 0,
        ci.n_videos if ci else "",
        _num(cell.paper),
        table.baseline or "",
        _num(cell.paper_gap),
        _num(diff.value if diff else None),
        _num(diff.low if diff else None),
        _num(diff.high if diff else None),
        _num(diff.p_value if diff else None),
        _num(diff.p_holm if diff else None),
        "" if diff is None else diff.significant,
    ]


def _num(value: float | None) -> str:
    return "" if value is None else repr(float(value))


# --- LaTeX ---------------------------------------------------------------------------------------

_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_"}
_TEX_SPECIAL |= {"{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(text: str) -> str:
    return "".join(_TEX_SPECIAL.get(ch, ch) for ch in text)


def render_tex(tables: Sequence[PaperTable], meta: ReportMeta) -> str:
    """A LaTeX fragment (needs ``\\usepackage{booktabs}``): one table environment per study."""
    lines = [
        f"% Made by {meta.command} from {meta.results_dir} at {meta.generated_at}, git {meta.git_sha}.",
        "% Needs \\usepackage{booktabs}. Cells: mean over seeds $\\pm$ half-width of the 95% interval",
        "% (bootstrap over test videos + seed variance, docs/report.md); * = significantly different from",
        "% the baseline row (paired, Holm-corrected, alpha 0.05); the paper's value beneath.",
        "",
    ]
    for table in tables:
        lines += _tex_table(table)
    return "\n".join(lines)


def _tex_table(table: PaperTable) -> list[str]:
    multi = len(table.datasets) > 1
    head = ["Variant", *(["Dataset"] if multi else []), *(tex_escape(c.name) for c in table.columns)]
    align = "l" * (2 if multi else 1) + "r" * len(table.columns)
    body = []
    for row in table.rows:
        first = [tex_escape(row.variant), *([tex_escape(row.dataset)] if multi else [])]
        body.append(" & ".join(first + [_tex_cell(c) for c in row.cells]) + r" \\")
    synthetic = " Synthetic data: not comparable to the paper." if table.synthetic else ""
    baseline = f" * = differs from {tex_escape(table.baseline)} (paired, Holm)." if table.baseline else ""
    caption = f"{tex_escape(table.paper or table.study)}: ours vs the paper.{baseline}{synthetic}"
    return [
        r"\begin{table}[t]",
        r"\centering\small",
        rf"\begin{{tabular}}{{{align}}}",
        r"\toprule",
        " & ".join(head) + r" \\",
        r"\midrule",
        *body,
        r"\bottomrule",
        r"\end{tabular}",
        rf"\caption{{{caption}}}",
        rf"\label{{tab:{tex_escape(table.study)}}}",
        r"\end{table}",
        "",
    ]


def _tex_cell(cell: Cell) -> str:
    """``38.40$\\pm$1.30$^{*}$`` over ``\\scriptsize(38.50)``; ± the std where there is no interval."""
    if cell.ours is None:
        ours = "--"
    elif cell.interval is not None:
        ours = f"{cell.ours.mean:.2f}$\\pm${(cell.interval.high - cell.interval.low) / 2:.2f}"
    elif cell.ours.std is not None:
        ours = f"{cell.ours.mean:.2f}$\\pm${cell.ours.std:.2f}$^{{\\dagger}}$"
    else:
        ours = f"{cell.ours.mean:.2f}"
    if cell.vs_baseline is not None and cell.vs_baseline.significant:
        ours += "$^{*}$"
    if cell.paper is None:
        return ours
    return rf"\shortstack[r]{{{ours}\\ \scriptsize({cell.paper:.2f})}}"
