"""Number formatting and fixed wording shared by the Markdown and HTML renderers.

Both formats must say the same thing in the same words, so the sentences that carry meaning
(the synthetic warning, the Table 10 device caveat) live here once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from harness.report.tables import Cell, PaperTable, SeedStats
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
    """Compact ``ours (paper)`` for the at-a-glance table."""
    ours = MISSING if cell.ours is None else f"{cell.ours.mean:.2f}"
    return ours if cell.paper is None else f"{ours} ({cell.paper:.2f})"


def column_label(name: str, headline: bool) -> str:
    return f"{name} ★" if headline else name


def data_banner(table: PaperTable) -> str | None:
    if table.provenance.data == "synthetic":
        return SYNTHETIC_BANNER
    if table.provenance.data == "mixed":
        return MIXED_BANNER
    return None


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
    if table.headline and table.has_reference:
        parts.append(f"tolerance ±{table.tolerance:g}, min seeds {table.min_seeds}, ★ = headline (checked)")
    if prov.stale_trials:
        parts.append(f"{prov.stale_trials} stale trial(s) of other versions ignored")
    if prov.superseded_trials:
        parts.append(f"{prov.superseded_trials} superseded rerun(s) ignored")
    return " · ".join(parts)


def ranking_overview(table: PaperTable) -> str:
    """Across the table's columns: how often our best variant is the paper's, and the mean rho."""
    compared = [r for r in table.rankings if r.same_best is not None]
    if not compared:
        return "no paper order to compare"
    same = sum(1 for r in compared if r.same_best)
    rhos = [r.spearman for r in compared if r.spearman is not None]
    rho = f", mean Spearman ρ {sum(rhos) / len(rhos):+.2f}" if rhos else ""
    return f"same best variant in {same}/{len(compared)} column(s){rho}"


def check_line(table: PaperTable) -> str:
    failures = table.check_failures()
    if not table.headline or not table.has_reference:
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
