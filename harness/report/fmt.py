"""Number formatting and fixed wording shared by the Markdown and HTML renderers.

Both formats must say the same thing in the same words, so the sentences that carry meaning
(the synthetic warning, the Table 10 device caveat) live here once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from harness.report.stats import ALPHA, N_BOOTSTRAP, POWER, Difference
from harness.report.tables import Cell, PaperTable, Ranking, SeedStats
from harness.spec import Column

MISSING = "—"
SYNTHETIC_BANNER = (
    "SYNTHETIC DATA: these numbers come from the embedded synthetic dataset and a randomly "
    "initialised tiny CLIP. They show that the pipeline runs end to end; they are not comparable "
    "to the paper's."
)
MIXED_BANNER = (
    "MIXED DATA: some trials of this table ran on the embedded synthetic dataset and some on real "
    "data; the synthetic ones are not comparable to the paper's numbers."
)
PAPER_DEVICE = "one NVIDIA RTX 4090"
"""Where the paper measured Table 10 (its text says so)."""


@dataclass(frozen=True)
class ReportMeta:
    """How and from what a report was made (printed at the top of every output)."""

    command: str
    results_dir: str
    result_files: int
    generated_at: str
    git_sha: str
    code_version: str = ""
    """The checkout's :func:`harness.provenance.code_version` ('' = not compared)."""


def num(value: float | None, digits: int = 2) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


def signed(value: float | None, digits: int = 2) -> str:
    return MISSING if value is None else f"{value:+.{digits}f}"


def mean_std(stats: SeedStats | None) -> str:
    if stats is None:
        return MISSING
    return f"{stats.mean:.2f}" if stats.std is None else f"{stats.mean:.2f} ± {stats.std:.2f}"


def min_max(stats: SeedStats | None) -> str:
    return MISSING if stats is None else f"{stats.min:.2f}–{stats.max:.2f}"


def n_of(stats: SeedStats | None) -> str:
    return "0" if stats is None else str(stats.n)


def mark(flag: bool | None) -> str:
    return MISSING if flag is None else ("✓" if flag else "✗")


def within_mark(cell: Cell) -> str:
    """✓/✗ for the tolerance, plus a note when a headline cell lacks its seeds."""
    text = mark(cell.within)
    if cell.headline and cell.paper is not None and cell.ours is not None and not cell.enough_seeds:
        text += f" (n<{cell.min_seeds})"
    return text


def overview_cell(cell: Cell) -> str:
    """Compact ``ours ±ci (paper)`` for the at-a-glance table, * when it differs from the baseline."""
    ours = glance_value(cell)
    return ours if cell.paper is None else f"{ours} ({cell.paper:.2f})"


def glance_value(cell: Cell) -> str:
    """``38.40 ±1.30*``: our mean, the 95% half-width, and * for a significant difference."""
    if cell.ours is None:
        return MISSING
    text = f"{cell.ours.mean:.2f}"
    if cell.interval is not None:
        text += f" ±{(cell.interval.high - cell.interval.low) / 2:.2f}"
    return text + sig_mark(cell.vs_baseline)


def interval(cell: Cell) -> str:
    """``[37.10, 39.70]`` or — (no per-video results, or only for some seeds)."""
    ci = cell.interval
    return MISSING if ci is None else f"[{ci.low:.2f}, {ci.high:.2f}]"


def sig_mark(diff: Difference | None) -> str:
    return "*" if diff is not None and diff.significant else ""


def difference(diff: Difference | None) -> str:
    """``+1.90 [0.80, 3.10]``: our paired difference to the baseline and its 95% interval."""
    return MISSING if diff is None else f"{diff.value:+.2f} [{diff.low:+.2f}, {diff.high:+.2f}]"


def paired_size(diff: Difference | None) -> str:
    """``2×24``: the seeds and test videos a paired difference rests on."""
    return MISSING if diff is None else f"{diff.n_seeds}×{diff.n_videos}"


def p_value(p: float | None) -> str:
    if p is None or p != p:
        return MISSING
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def gap_line(cell: Cell) -> str:
    """``paper +2.48 | ours +1.90 [+0.80, +3.10] *``: the paper's gap beside ours."""
    paper = "paper " + signed(cell.paper_gap)
    ours = "ours " + difference(cell.vs_baseline) + (" *" if sig_mark(cell.vs_baseline) else "")
    return f"{paper} | {ours}"


def interval_method() -> str:
    """One sentence on what the intervals and marks mean (docs/report.md has the procedure)."""
    return (
        f"± and [ , ]: 95% interval from a bootstrap over the test videos ({N_BOOTSTRAP} paired resamples, "
        "every metric recomputed from per-video parts) plus the between-seed variance; "
        f"* = paired difference to the baseline significant at {ALPHA:g} after Holm's correction "
        "over the table (procedure: docs/report.md)"
    )


def resolution_line(table: PaperTable) -> str | None:
    """Per column, the smallest difference this run can resolve (None when nothing was compared)."""
    items = [r for r in table.resolution if r.mde is not None]
    if not items:
        return None
    multi = len(table.datasets) > 1
    parts = ", ".join(
        f"{r.column}{f' ({r.dataset})' if multi else ''} {r.mde:.2f} ({r.n_seeds}×{r.n_videos})"
        for r in items
    )
    return (
        f"Smallest resolvable difference to {table.baseline} (α {ALPHA:g}, power {POWER:g}, before Holm; "
        f"seeds×videos): {parts}"
    )


def commit_lines(table: PaperTable, meta: ReportMeta) -> list[str]:
    """The commit(s) the numbers come from, and a warning where they differ from each other or
    from the checkout (by code version: what computes the numbers)."""
    prov = table.provenance
    if not prov.trials_by_sha:
        return []
    shas = ", ".join(f"{sha[:12]} ({n} trial{'s' if n > 1 else ''})" for sha, n in prov.trials_by_sha)
    codes = [c for c in prov.code_versions if c]
    lines = [f"Numbers from commit {shas}" + (f", code {', '.join(codes)}" if codes else "") + "."]
    if len(prov.trials_by_sha) > 1:
        lines.append(
            f"WARNING: the trials of this table ran from {len(prov.trials_by_sha)} different commits."
        )
    if len(codes) > 1:
        lines.append(
            f"WARNING: the trials of this table were computed by {len(codes)} different code versions."
        )
    if "" in prov.code_versions:
        lines.append(
            "Some trials predate code versions (results schema 1): which code computed them is unknown."
        )
    if meta.code_version and codes and any(c != meta.code_version for c in codes):
        lines.append(
            f"WARNING: numbers computed by other code than this checkout's (code {meta.code_version}): "
            "rerun `harness run` to refresh them."
        )
    return lines


def column_label(name: str, headline: bool) -> str:
    return f"{name} ★" if headline else name


def data_banner(table: PaperTable) -> str | None:
    if table.provenance.data == "synthetic":
        return SYNTHETIC_BANNER
    budget = budget_banner(table)
    if table.provenance.data == "mixed":
        return MIXED_BANNER + (f" {budget}" if budget else "")
    return budget


def budget_banner(table: PaperTable) -> str | None:
    """The loud warning for real-data numbers trained off the paper's schedule beside the paper's."""
    off = table.provenance.off_budget
    if not off or not table.has_reference:
        return None
    return (
        "NOT THE PAPER'S TRAINING BUDGET: real-data trials here trained on schedule "
        f"{'/'.join(table.provenance.schedules)} ({'; '.join(off)}), while the paper's numbers beside them "
        "come from 30 + 30 epochs at lr 1e-3 (x0.1 at 15/20/25), batch 32. Rerun with --schedule paper "
        "before comparing."
    )


def data_label(table: PaperTable) -> str:
    return {"synthetic": "synthetic", "real": "real", "mixed": "mixed", "none": "no results"}[
        table.provenance.data
    ]


def summary_line(table: PaperTable) -> str:
    """One line of facts about the table's runs."""
    prov = table.provenance
    parts = [
        f"study `{table.study}` v{table.version}",
        "datasets: " + ", ".join(table.datasets),
        "seeds: " + ", ".join(str(s) for s in table.seeds),
        f"trials: {prov.trials_found} of {prov.trials_expected}",
        "data: " + data_label(table),
        "device: " + (", ".join(prov.devices) or MISSING),
    ]
    if prov.schedules and (prov.schedules != ("default",) or prov.data in ("real", "mixed")):
        parts.append("schedule: " + ", ".join(prov.schedules))
    if table.headline and table.has_reference:
        parts.append(f"tolerance ±{table.tolerance:g}, min seeds {table.min_seeds}, ★ = headline (checked)")
    if prov.stale_trials:
        parts.append(f"{prov.stale_trials} stale trial(s) of other versions ignored")
    if prov.superseded_trials:
        parts.append(f"{prov.superseded_trials} superseded rerun(s) ignored")
    return " · ".join(parts)


def ranking_summary(ranking: Ranking) -> str:
    """A sentence: does our best variant match the paper's?"""
    if ranking.paper_best is None:
        return f"{ranking.column}: no paper order to compare; our best is {ranking.ours_best or MISSING}"
    verdict = "same best variant" if ranking.same_best else "different best variant"
    return (
        f"{ranking.column}: paper best {ranking.paper_best}, ours {ranking.ours_best or MISSING} ({verdict})"
    )


def ranking_overview(table: PaperTable) -> str:
    """Across the table's columns: the paper's differences to the baseline that we resolve with the
    same sign, then how often our best variant is the paper's (an order, resolved or not)."""
    compared = [r for r in table.rankings if r.same_best is not None]
    agree = sum(r.agree for r in table.rankings)
    resolved = agree + sum(r.disagree for r in table.rankings)
    unresolved = sum(r.unresolved for r in table.rankings)
    parts = []
    if resolved or unresolved:
        parts.append(
            f"paper's sign in {agree}/{resolved} resolved difference(s) to {table.baseline}, {unresolved} unresolved"
        )
    if compared:
        same = sum(1 for r in compared if r.same_best)
        parts.append(f"same best variant in {same}/{len(compared)} column(s) (unresolved order)")
    return "; ".join(parts) if parts else "no paper order to compare"


def resolved_agreement(ranking: Ranking) -> str:
    """``2/3 (1 unresolved)``: resolved differences to the baseline with the paper's sign."""
    resolved = ranking.agree + ranking.disagree
    if not resolved and not ranking.unresolved:
        return MISSING
    return f"{ranking.agree}/{resolved} ({ranking.unresolved} unresolved)"


def check_line(table: PaperTable) -> str:
    failures = table.check_failures()
    headline = [c for c in table.columns if c.name in table.headline]
    if not headline or not table.has_reference:
        return "nothing checked (no headline cells with paper values)"
    if not failures:
        return f"✓ every headline cell within ±{table.tolerance:g} with at least {table.min_seeds} seed(s)"
    return f"✗ {len(failures)} headline cell(s) fail"


def device_caveat(table: PaperTable) -> str:
    """Table 10: absolute speed is a property of the device; say which devices are compared."""
    prov = table.provenance
    ours = ", ".join(prov.devices) or MISSING
    text = (
        f"Absolute FPS only means something on the paper's GPU ({PAPER_DEVICE}); ours ran on: {ours}. "
        f"Compare the ratios, measured side by side on one device."
    )
    per_variant = {devices for _, devices in prov.devices_by_variant if devices}
    if len(per_variant) > 1:
        text += " WARNING: the variants ran on different devices, so the ratios are not side by side."
    return text


def column_groups(columns: Sequence[Column]) -> list[tuple[str, list[Column]]]:
    """(caption, columns) of the at-a-glance grids: one grid, or one per split when wider than 6.

    In a per-split grid the split prefix of each column name is dropped (the caption says it).
    """
    if len(columns) <= 6:
        return [("", list(columns))]
    groups: dict[str, list[Column]] = {}
    for col in columns:
        groups.setdefault(col.split, []).append(col)
    return [(f"{split.capitalize()} split", cols) for split, cols in groups.items()]


def grid_label(col: Column, caption: str, headline: bool) -> str:
    """Column header inside an at-a-glance grid (``novel_sgdet_map`` -> ``sgdet_map`` under 'Novel split')."""
    name = col.name.removeprefix(f"{col.split}_") if caption else col.name
    return column_label(name or col.name, headline)


RANKING_HEADER = (
    "column",
    "paper's sign, resolved",
    "paper best",
    "our best",
    "same best",
    "Spearman ρ",
    "Kendall τ",
    "variants compared",
)
"""Columns of the ranking table (Markdown and HTML show the same cells)."""


def ranking_rows(table: PaperTable) -> list[tuple[list[str], bool | None]]:
    """One row of text cells per ranking, with whether the best variant is the same (for tinting)."""
    return [
        (
            [
                r.column,
                resolved_agreement(r),
                r.paper_best or MISSING,
                r.ours_best or MISSING,
                mark(r.same_best),
                signed(r.spearman),
                signed(r.kendall),
                str(len(r.variants)),
            ],
            r.same_best,
        )
        for r in table.rankings
    ]


DIFFERENCE_HEADER = (
    "variant",
    "column",
    "paper",
    "ours [95% interval]",
    "paired seeds×videos",
    "p",
    "p (Holm)",
    "sig.",
)
"""Columns of the differences-to-baseline table (Markdown and HTML show the same cells)."""


STEP_HEADER = ("step", *DIFFERENCE_HEADER[1:])
"""Columns of the steps table (``table.steps``: each variant minus the one before it)."""


def difference_cells(label: str, column: str, paper_gap: float | None, diff: Difference | None) -> list[str]:
    """One row of a differences table (to the baseline, or a step): the paper's gap, ours with its
    interval, the pairs it rests on, p, Holm p and the mark."""
    return [
        label,
        column,
        signed(paper_gap),
        difference(diff),
        paired_size(diff),
        p_value(diff.p_value if diff else None),
        p_value(diff.p_holm if diff else None),
        sig_mark(diff) or ("no" if diff else MISSING),
    ]


def step_rows(table: PaperTable) -> list[tuple[list[str], bool]]:
    """Each step of ``table.steps`` as text cells, with whether ours is significant and positive
    (the paper's order holds there)."""
    multi = len(table.datasets) > 1
    out = []
    for step in table.steps:
        label = f"{step.later} − {step.earlier}" + (f" ({step.dataset})" if multi else "")
        up = bool(step.diff and step.diff.significant and step.diff.value > 0)
        out.append((difference_cells(label, step.column, step.paper_gap, step.diff), up))
    return out


def difference_rows(table: PaperTable) -> list[tuple[list[str], bool]]:
    """Each (row, column) minus the baseline row as text cells, with whether it is significant.

    Empty when the table has no baseline or nothing to compare (no interval, no paper gap)."""
    if table.baseline is None:
        return []
    multi = len(table.datasets) > 1
    out = []
    for row in table.rows:
        if row.variant == table.baseline:
            continue
        for cell in row.cells:
            diff = cell.vs_baseline
            if diff is None and cell.paper_gap is None:
                continue
            label = row.variant + (f" ({row.dataset})" if multi else "")
            text = difference_cells(label, cell.column, cell.paper_gap, diff)
            out.append((text, bool(diff and diff.significant)))
    return out
