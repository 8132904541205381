"""Plots of the paper tables (matplotlib, Agg): pictures of the numbers in ``tables``, no new numbers.

- grouped bars with error bars (ours: mean ± std over seeds) and the paper's value as a black
  diamond on each bar, one panel per split (detection) or per metric (efficiency);
- sweeps (Tables 7, 8: one numeric field varies) as lines, our curve beside the paper's;
- efficiency ratios (Table 10) as paired bars, paper vs ours;
- the Fig. 4 t-SNE scatter, one panel per prompt strategy.
Every figure made from synthetic results carries a red banner and a watermark saying so.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # headless: never open a window, also inside Ray workers and CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from harness.report.tables import Cell, PaperTable, VariantRow  # noqa: E402
from harness.spec import Column  # noqa: E402
from sage_model.metrics import metric_info  # noqa: E402

SYNTHETIC_NOTE = "SYNTHETIC DATA (embedded default): not comparable to the paper"
PAPER_MARKER = {"marker": "D", "color": "black", "markersize": 5, "linestyle": "none", "zorder": 5}
_PALETTE = (  # matplotlib's tab10, spelled out so a user's rcParams cannot change the report
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip


@dataclass(frozen=True)
class StabilityPoints:
    """2-D t-SNE points of one variant's classifier features (Fig. 4)."""

    variant: str
    xy: np.ndarray  # (N, 2)
    class_index: np.ndarray  # (N,) predicate index of each point
    noise: np.ndarray  # (N,) noise level of each point
    class_names: tuple[str, ...] = ()


def png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    """The figure as PNG bytes (no software/date metadata, so reruns give the same file)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def mark_synthetic(fig: Figure) -> None:
    """Red banner on top and a faint diagonal watermark: nobody mistakes these for paper numbers."""
    fig.text(0.5, 1.0, SYNTHETIC_NOTE, ha="center", va="bottom", color="#b00020", fontsize=10, weight="bold")
    fig.text(
        0.5, 0.5, "SYNTHETIC", ha="center", va="center", rotation=25, fontsize=60,
        color="#b00020", alpha=0.08, weight="bold", zorder=0,
    )  # fmt: skip


def _panels(columns: Sequence[Column]) -> list[tuple[str, list[Column]]]:
    """Columns grouped into panels: by metric for efficiency columns (units differ), else by split."""
    groups: dict[str, list[Column]] = {}
    for col in columns:
        key = col.metric if col.efficiency else col.split
        groups.setdefault(key, []).append(col)
    return list(groups.items())


def _panel_title(key: str) -> str:
    """A split panel's title, or an efficiency metric's display name and unit from the catalogue."""
    if key in ("novel", "all"):
        return f"{key.capitalize()} split"
    info = metric_info(key)
    return f"{info.display} ({info.unit})"


def _first_dataset_rows(table: PaperTable) -> list[VariantRow]:
    return [r for r in table.rows if r.dataset == table.datasets[0]]


def grouped_bars(table: PaperTable) -> Figure:
    """Bars of our mean ± std per (column, variant), the paper's value as a diamond on each bar."""
    panels = _panels(table.columns)
    rows = _first_dataset_rows(table)
    widths = [max(2.2, 0.5 * len(cols) * max(2, len(rows))) for _, cols in panels]
    stacked = max(len(cols) for _, cols in panels) > 5  # wide panels (Tables 1, 2) go one per line
    shape = (len(panels), 1) if stacked else (1, len(panels))
    size = (max(widths) + 1.5, 3.2 * len(panels)) if stacked else (sum(widths) + 1.5, 3.8)
    fig, axes = plt.subplots(*shape, figsize=size, squeeze=False)
    bar_w = 0.8 / max(1, len(rows))
    for ax, (key, cols) in zip(axes.flat, panels, strict=True):
        x = np.arange(len(cols))
        for i, row in enumerate(rows):
            cells = {c.column: c for c in row.cells}
            pos = x - 0.4 + bar_w * (i + 0.5)
            means = [_mean(cells[c.name]) for c in cols]
            stds = [_std(cells[c.name]) for c in cols]
            ax.bar(pos, means, bar_w * 0.92, yerr=stds, capsize=3, color=_PALETTE[i % 10], label=row.variant)
            paper = [cells[c.name].paper if cells[c.name].paper is not None else np.nan for c in cols]
            ax.plot(pos, paper, **PAPER_MARKER, label="paper" if i == 0 else None)
        ax.set_xticks(x, [_short(c.name, key) + (" ★" if c.name in table.headline else "") for c in cols])
        ax.set_title(_panel_title(key), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    for ax in axes[:, 0]:
        ax.set_ylabel("value" if table.columns[0].efficiency else "mAP / recall (%)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.02),
        ncol=min(6, len(labels)),
        frameon=False,
    )
    fig.suptitle(
        f"{table.paper or table.study}: ours (bars, mean ± std over seeds) vs paper (◆)", fontsize=11
    )
    return _finish(fig, table)


def _mean(cell: Cell) -> float:
    return cell.ours.mean if cell.ours is not None else float("nan")


def _std(cell: Cell) -> float:
    return (cell.ours.std or 0.0) if cell.ours is not None else 0.0


def _short(name: str, panel: str) -> str:
    """Column label without the panel's own prefix (``novel_sgdet_map`` in the Novel panel -> ``sgdet_map``)."""
    return name.removeprefix(f"{panel}_") or name


def sweep_lines(table: PaperTable) -> Figure:
    """One panel per column: our mean ± std against the swept value, the paper's curve beside it."""
    assert table.sweep is not None, "sweep_lines needs a study whose variants sweep one numeric field"
    key, xs = table.sweep
    rows = _first_dataset_rows(table)
    cols = [c for c in table.columns if not c.efficiency]
    fig, axes = plt.subplots(1, len(cols), figsize=(3.3 * len(cols) + 0.6, 3.4), squeeze=False)
    for ax, col in zip(axes[0], cols, strict=True):
        cells = [next(c for c in row.cells if c.column == col.name) for row in rows]
        ours = np.array([_mean(c) for c in cells])
        err = np.array([_std(c) for c in cells])
        paper = np.array([c.paper if c.paper is not None else np.nan for c in cells])
        ax.errorbar(xs, ours, yerr=err, marker="o", capsize=3, color=_PALETTE[0], label="ours (mean ± std)")
        ax.plot(xs, paper, marker="D", linestyle="--", color="black", label="paper")
        if max(xs) / max(min(xs), 1e-9) >= 8:
            ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.set_title(col.name + (" ★" if col.name in table.headline else ""), fontsize=10)
        ax.set_xlabel(key.rsplit(".", 1)[-1])
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mAP (%)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=2, frameon=False)
    fig.suptitle(f"{table.paper or table.study}: sweep of {key}", fontsize=11)
    return _finish(fig, table)


def ratio_bars(table: PaperTable) -> Figure:
    """Table 10: each variant / the baseline, paper vs ours, per efficiency column."""
    ratios = table.ratios
    fig, ax = plt.subplots(figsize=(1.6 * max(1, len(ratios)) + 2, 3.4))
    x = np.arange(len(ratios))
    paper = [r.paper if r.paper is not None else np.nan for r in ratios]
    ours = [r.ours if r.ours is not None else np.nan for r in ratios]
    ax.bar(x - 0.2, paper, 0.38, color="#777777", label="paper")
    ax.bar(x + 0.2, ours, 0.38, color=_PALETTE[0], label="ours")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")  # ratios span 1x (parameters) to ~20x (FPS)
    for xi, value in [*zip(x - 0.2, paper, strict=True), *zip(x + 0.2, ours, strict=True)]:
        if not np.isnan(value):
            ax.text(xi, value, f"{value:.2f}x", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, [f"{r.column}\n{r.variant} / {r.baseline}" for r in ratios], fontsize=8)
    ax.set_ylabel("ratio")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    fig.suptitle(f"{table.paper or table.study}: ratios measured side by side", fontsize=11)
    return _finish(fig, table)


def stability_scatter(points: Sequence[StabilityPoints], title: str, synthetic: bool) -> Figure:
    """Fig. 4: t-SNE of classifier features, colour = predicate, marker size = noise level."""
    fig, axes = plt.subplots(1, len(points), figsize=(4.2 * len(points), 4.0), squeeze=False)
    for ax, pts in zip(axes[0], points, strict=True):
        levels = np.unique(pts.noise)
        sizes = 12 + 40 * (pts.noise - levels.min()) / max(float(np.ptp(levels)), 1e-9)
        colors = [_PALETTE[int(c) % 10] for c in pts.class_index]
        ax.scatter(pts.xy[:, 0], pts.xy[:, 1], s=sizes, c=colors, alpha=0.7, linewidths=0)
        ax.set_title(pts.variant, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    names = points[0].class_names if points else ()
    if names:  # every panel uses the same predicates in the same order
        handles = [
            plt.Line2D([], [], marker="o", linestyle="none", color=_PALETTE[i % 10], label=n)
            for i, n in enumerate(names)
        ]
        fig.legend(
            handles=handles,
            loc="upper center",
            bbox_to_anchor=(0.5, 0.0),
            ncol=min(5, len(names)),
            frameon=False,
        )
    fig.suptitle(
        f"{title}: classifier features under visual noise (t-SNE; colour = predicate, size = noise)",
        fontsize=10,
    )
    if synthetic:
        mark_synthetic(fig)
    fig.tight_layout()
    return fig


def _finish(fig: Figure, table: PaperTable) -> Figure:
    fig.tight_layout()
    if table.synthetic:
        mark_synthetic(fig)
    return fig


def table_figures(table: PaperTable) -> list[tuple[str, Figure]]:
    """The figures of one table, each with a short slug: sweep lines or grouped bars, plus ratios."""
    figures: list[tuple[str, Figure]] = []
    if table.sweep is not None:
        figures.append(("sweep", sweep_lines(table)))
    else:
        figures.append(("bars", grouped_bars(table)))
    if table.ratios:
        figures.append(("ratios", ratio_bars(table)))
    return figures
