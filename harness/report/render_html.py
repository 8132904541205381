"""Self-contained HTML rendering of paper tables: one file, CSS inline, plots embedded as PNG.

Same content and wording as the Markdown (both read ``fmt``), laid out for reading in a
browser: plots first under each heading, then the at-a-glance grid, then the details. Cells
that miss the tolerance are tinted, synthetic tables carry a red banner, Table 10 names the
device. Nothing is fetched at view time (no scripts, fonts or remote images).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from html import escape

from harness.report import fmt
from harness.report.tables import Cell, PaperTable

PlotImages = Mapping[str, Sequence[tuple[str, bytes]]]
Row = list[str | tuple[str, str]]
"""One table row: escaped HTML cells, or (escaped HTML, extra CSS class)."""
"""study -> [(caption, PNG bytes)]."""

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:2rem auto;max-width:1200px;
  padding:0 1rem;color:#1d1d1f;line-height:1.45}
h1{font-size:1.6rem}h2{margin-top:2.5rem;border-bottom:2px solid #ddd;padding-bottom:.3rem}
h3{font-size:1rem;margin:1.2rem 0 .4rem}
table{border-collapse:collapse;margin:.4rem 0 1rem;font-size:.86rem}
th,td{border:1px solid #d0d0d0;padding:.25rem .55rem;text-align:right;white-space:nowrap}
th{background:#f3f3f3}td.l,th.l{text-align:left}td.c{text-align:center}
td.ok{background:#e6f4ea}td.wrap{white-space:normal;min-width:14rem}
.paper{color:#666;font-size:.75rem}td.bad{background:#fde8e8}
.scroll{overflow-x:auto}
.banner{background:#fde8e8;border-left:6px solid #b00020;color:#7a0016;padding:.6rem .9rem;
  font-weight:600;margin:.6rem 0}
.facts{color:#555;font-size:.85rem}
.caveat{background:#fff7e0;border-left:6px solid #e0a000;padding:.5rem .9rem;margin:.5rem 0}
figure{margin:.5rem 0 1rem}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.8rem;color:#666}
nav a{margin-right:.8rem}
ul.fail{color:#7a0016;font-size:.85rem}
"""


def render_html(tables: Sequence[PaperTable], meta: fmt.ReportMeta, plots: PlotImages) -> str:
    """The whole report as one HTML document."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>SAGE paper tables: ours vs the paper</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>SAGE paper tables: ours vs the paper</h1>",
        f'<p class="facts">Made by <code>{escape(meta.command)}</code> from <code>{escape(meta.results_dir)}</code> '
        f"({meta.result_files} result file(s)) at {escape(meta.generated_at)}, git {escape(meta.git_sha)}"
        + (f", code {escape(meta.code_version)}" if meta.code_version else "")
        + ".</p>",
    ]
    if any(t.synthetic for t in tables):
        parts.append(
            f'<div class="banner">{escape(fmt.SYNTHETIC_BANNER)} Every table and plot made from them says so.</div>'
        )
    parts.append(
        "<nav>" + "".join(f'<a href="#{t.study}">{escape(t.paper or t.study)}</a>' for t in tables) + "</nav>"
    )
    parts.append(_index(tables))
    for table in tables:
        parts.append(table_section(table, plots.get(table.study, ()), meta))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _index(tables: Sequence[PaperTable]) -> str:
    header = ["table", "study", "data", "trials", "ranking vs paper", "check"]
    rows: list[Row] = [
        [
            f'<a href="#{t.study}">{escape(t.paper or t.study)}</a>',
            f"<code>{escape(t.study)}</code>",
            escape(fmt.data_label(t)),
            f"{t.provenance.trials_found}/{t.provenance.trials_expected}",
            (escape(fmt.ranking_overview(t)), "wrap"),
            (escape(fmt.check_line(t)), "wrap"),
        ]
        for t in tables
    ]
    return html_table(header, rows, list("lllrll"))


def table_section(
    table: PaperTable, plots: Sequence[tuple[str, bytes]], meta: fmt.ReportMeta | None = None
) -> str:
    """The HTML of one table (heading to missing trials)."""
    parts = [
        f'<section id="{escape(table.study)}">',
        f"<h2>{escape(table.paper or table.study)} · <code>{escape(table.study)}</code></h2>",
        f"<p>{escape(table.description)}</p>",
    ]
    banner = fmt.data_banner(table)
    if banner:
        parts.append(f'<div class="banner">{escape(banner)}</div>')
    parts.append(f'<p class="facts">{_code(fmt.summary_line(table))}</p>')
    for line in fmt.commit_lines(table, meta) if meta is not None else []:
        css = "caveat" if line.startswith("WARNING") else "facts"
        parts.append(f'<p class="{css}">{escape(line)}</p>')
    if table.interval_note:
        parts.append(f'<div class="caveat">Note: {escape(table.interval_note)}.</div>')
    if table.ratios:
        parts.append(f'<div class="caveat">{escape(fmt.device_caveat(table))}</div>')
    for caption, png in plots:
        data = base64.b64encode(png).decode("ascii")
        parts.append(
            f'<figure><img alt="{escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>"
        )
    parts += [
        _overview(table),
        _cells(table),
        _differences(table),
        _steps(table),
        _cited(table),
        _ratios(table),
        _rankings(table),
        _missing(table),
    ]
    if table.notes:
        parts.append("<h3>Notes</h3><ul>" + "".join(f"<li>{escape(n)}</li>" for n in table.notes) + "</ul>")
    parts.append(_check(table))
    parts.append("</section>")
    return "\n".join(p for p in parts if p)


def _code(text: str) -> str:
    """Escape, then turn `backticks` into <code> (the summary line names the study that way)."""
    pieces = escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces))


def _overview(table: PaperTable) -> str:
    parts = [
        "<h3>At a glance <small>(ours: mean over seeds ± 95% interval; the paper's value beneath)</small></h3>",
        f'<p class="facts">{escape(fmt.interval_method())}.</p>',
    ]
    multi = len(table.datasets) > 1
    for caption, group in fmt.column_groups(table.columns):
        if caption:
            parts.append(f"<p><i>{escape(caption)}</i></p>")
        header = [
            "variant",
            *(["dataset"] if multi else []),
            *(fmt.grid_label(c, caption, c.name in table.headline) for c in group),
        ]
        rows: list[Row] = []
        for row in table.rows:
            cells = {c.column: c for c in row.cells}
            first = [escape(row.variant), *([escape(row.dataset)] if multi else [])]
            rows.append(first + [_glance(cells[c.name]) for c in group])
        parts.append(html_table(header, rows, ["l"] * (len(header) - len(group)) + ["r"] * len(group)))
    return "\n".join(parts)


def _glance(cell: Cell) -> tuple[str, str]:
    """Ours (± interval, * significant vs the baseline) on top, the paper's value small underneath,
    tinted by the tolerance."""
    ours = escape(fmt.glance_value(cell))
    paper = "" if cell.paper is None else f'<br><span class="paper">paper {cell.paper:.2f}</span>'
    return f"<b>{ours}</b>{paper}", _tinted(cell, "")[1]


def _tinted(cell: Cell, text: str) -> tuple[str, str]:
    """A cell's text with the class that tints it (within tolerance: green, outside: red)."""
    css = {True: "ok", False: "bad", None: ""}[cell.within]
    return escape(text), css


def _cells(table: PaperTable) -> str:
    header = [
        "variant",
        "column",
        "paper",
        "ours (mean ± std)",
        "95% interval",
        "n",
        "min–max",
        "diff",
        f"within ±{table.tolerance:g}",
    ]
    multi = len(table.datasets) > 1
    rows: list[Row] = [
        [
            escape(row.variant + (f" ({row.dataset})" if multi else "")),
            escape(fmt.column_label(cell.column, cell.headline)),
            fmt.num(cell.paper),
            escape(fmt.mean_std(cell.ours)),
            escape(fmt.interval(cell)),
            fmt.n_of(cell.ours),
            escape(fmt.min_max(cell.ours)),
            fmt.signed(cell.diff),
            _tinted(cell, fmt.within_mark(cell)),
        ]
        for row in table.rows
        for cell in row.cells
    ]
    return (
        "<details open><summary><b>Every cell</b></summary>"
        + html_table(header, rows, list("llrrrrrrc"))
        + "</details>"
    )


def _differences(table: PaperTable) -> str:
    """Each row minus the baseline row: the paper's gap beside ours, significant ones tinted."""
    found = fmt.difference_rows(table)
    if not found:
        return ""
    header = list(fmt.DIFFERENCE_HEADER)
    rows: list[Row] = [
        [*(escape(t) for t in text[:-1]), (escape(text[-1]), "ok" if significant else "")]
        for text, significant in found
    ]
    resolution = fmt.resolution_line(table)
    baseline = escape(table.baseline or "")  # difference_rows is empty without a baseline
    title = f"<h3>Differences to {baseline} <small>(row minus {baseline}; paired)</small></h3>"
    return (
        title
        + html_table(header, rows, list("llrrrrrc"))
        + (f'<p class="facts">{escape(resolution)}</p>' if resolution else "")
    )


def _steps(table: PaperTable) -> str:
    """``table.steps``: each variant minus the one before it; a significant step up is tinted."""
    found = fmt.step_rows(table)
    if not found:
        return ""
    order = " &lt; ".join(
        escape(n) for n in dict.fromkeys(name for s in table.steps for name in (s.earlier, s.later))
    )
    rows: list[Row] = [
        [*(escape(t) for t in text[:-1]), (escape(text[-1]), "ok" if up else "")] for text, up in found
    ]
    title = (
        f"<h3>Steps in the paper's order <small>({order}; each row minus the one before, paired)</small></h3>"
    )
    return title + html_table(list(fmt.STEP_HEADER), rows, list("llrrrrrc"))


def _cited(table: PaperTable) -> str:
    if not table.cited:
        return ""
    header = ["method", *(c.name for c in table.columns)]
    rows: list[Row] = [[escape(r.method), *(fmt.num(v) for v in r.values)] for r in table.cited]
    title = "<h3>Cited rows <small>(the paper's numbers for methods we do not run)</small></h3>"
    return title + html_table(header, rows, ["l"] + ["r"] * len(table.columns))


def _ratios(table: PaperTable) -> str:
    if not table.ratios:
        return ""
    header = ["column", "ratio", "paper", "ours"]
    rows: list[Row] = [
        [escape(r.column), escape(f"{r.variant} / {r.baseline}"), _times(r.paper), _times(r.ours)]
        for r in table.ratios
    ]
    return "<h3>Ratios</h3>" + html_table(header, rows, list("llrr"))


def _times(value: float | None) -> str:
    return fmt.MISSING if value is None else f"{value:.2f}x"


def _rankings(table: PaperTable) -> str:
    if not table.rankings:
        return ""
    header = list(fmt.RANKING_HEADER)
    tint = {True: "ok", False: "bad", None: ""}
    rows: list[Row] = [
        [*(escape(t) for t in text[:4]), (escape(text[4]), tint[same]), *text[5:]]
        for text, same in fmt.ranking_rows(table)
    ]
    title = f"<h3>Ranking of the variants <small>({escape(fmt.ranking_overview(table))})</small></h3>"
    return title + html_table(header, rows, list("lrllcrrr"))


def _missing(table: PaperTable) -> str:
    if not table.missing:
        return "<p><b>Missing trials:</b> none</p>"
    items = "".join(
        f"<li>{escape(f'{m.variant} · {m.dataset} · seed {m.seed}: {m.what}')}</li>" for m in table.missing
    )
    return f"<h3>Missing trials ({len(table.missing)})</h3><ul>{items}</ul>"


def _check(table: PaperTable) -> str:
    failures = table.check_failures()
    items = "".join(f"<li>{escape(f)}</li>" for f in failures)
    return f"<p><b>Check:</b> {escape(fmt.check_line(table))}</p>" + (
        f'<ul class="fail">{items}</ul>' if items else ""
    )


def html_table(
    header: Sequence[str], rows: Sequence[Sequence[str | tuple[str, str]]], align: Sequence[str]
) -> str:
    """An HTML table; each cell is escaped HTML or (escaped HTML, extra CSS class)."""
    head = "".join(f'<th class="{a}">{escape(h)}</th>' for h, a in zip(header, align, strict=True))
    body = []
    for row in rows:
        tds = []
        for cell, a in zip(row, align, strict=True):
            text, extra = cell if isinstance(cell, tuple) else (cell, "")
            tds.append(f'<td class="{(a + " " + extra).strip()}">{text}</td>')
        body.append("<tr>" + "".join(tds) + "</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'
