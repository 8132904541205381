"""A paper table's confidence intervals and paired differences, from the trials' per-video rows.

The glue between the results (polars frames of :mod:`harness.results`) and the statistics
(:mod:`harness.report.stats`, numpy): for every (dataset, task, split) it lays the kept trials'
per-video parts out as (variant, seed, video) arrays, draws one set of video resamples (shared
by every variant, seed and column: the comparisons are paired), and asks ``stats`` for each
cell's interval and each variant's difference to the table's baseline row. p-values are then
Holm-corrected over every comparison of the table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from harness.report.stats import (
    ColumnData,
    Difference,
    Estimate,
    cell_estimates,
    holm,
    min_detectable,
    pair_differences,
    video_weights,
)

if TYPE_CHECKING:
    from harness.report.tables import Column

VIDEO_PARTS: dict[str, tuple[str, str | None]] = {
    "map": ("ap", None),
    "r50": ("tp50", "n_gt"),
    "r100": ("tp100", "n_gt"),
    "p1": ("p1", None),
    "p5": ("p5", None),
    "p10": ("p10", None),
}
"""metric -> (numerator, denominator or None for a plain mean over videos) among the video columns."""

CellKey = tuple[str, str, str]
"""(variant, dataset, column)."""


@dataclass(frozen=True)
class Resolution:
    """The smallest difference one column of the table can resolve (alpha .05, power .8)."""

    dataset: str
    column: str
    mde: float | None
    n_seeds: int
    n_videos: int


@dataclass(frozen=True)
class TableIntervals:
    """Everything the per-video rows add to one table."""

    cells: dict[CellKey, Estimate]
    diffs: dict[CellKey, Difference]
    resolution: tuple[Resolution, ...]
    trials_without_videos: int
    """Kept trials whose result has no per-video rows (schema version 1, or written without)."""
    steps: dict[CellKey, Difference] = field(default_factory=dict)
    """Each ``table.steps`` variant minus the one before it, keyed by the later one; Holm over the
    steps alone (a second family: they answer "is the paper's order there", not "differs from the
    baseline")."""


def table_intervals(
    kept: pl.DataFrame,
    videos: pl.DataFrame,
    *,
    variants: Sequence[str],
    datasets: Sequence[str],
    seeds: Sequence[int],
    columns: Sequence[Column],
    baseline: str | None,
    steps: Sequence[str] = (),
) -> TableIntervals:
    """Intervals and baseline differences of one table's kept trials (``kept``: metric rows), and
    the differences between consecutive ``steps`` variants.

    Both families come from the same pass and the same video resamples, so a step and a baseline
    difference over the same rows agree."""
    mine, without = _own_videos(kept, videos)
    pairs = [] if baseline is None else [(v, baseline) for v in variants if v != baseline]
    step_pairs = list(zip(steps[1:], steps[:-1], strict=True))
    return _intervals(mine, without, list(variants), datasets, seeds, columns, pairs, step_pairs)


def compare_intervals(
    kept_a: pl.DataFrame,
    videos_a: pl.DataFrame,
    kept_b: pl.DataFrame,
    videos_b: pl.DataFrame,
    *,
    variants: Sequence[str],
    datasets: Sequence[str],
    seeds: Sequence[int],
    columns: Sequence[Column],
) -> TableIntervals:
    """B minus A for every variant (``harness compare``), paired over the seeds and videos both
    have; ``cells`` holds A's and B's intervals under ``A:<variant>`` / ``B:<variant>``."""
    mine_a, without_a = _own_videos(kept_a, videos_a)
    mine_b, without_b = _own_videos(kept_b, videos_b)
    sides = [
        frame.with_columns((pl.lit(f"{side}:") + pl.col("variant")).alias("variant"))
        for side, frame in (("A", mine_a), ("B", mine_b))
        if not frame.is_empty()
    ]
    mine = pl.concat(sides, how="vertical") if sides else pl.DataFrame()
    rows = [f"{side}:{v}" for side in ("A", "B") for v in variants]
    pairs = [(f"B:{v}", f"A:{v}") for v in variants]
    found = _intervals(mine, without_a + without_b, rows, datasets, seeds, columns, pairs)
    diffs = {(variant.removeprefix("B:"), d, c): diff for (variant, d, c), diff in found.diffs.items()}
    return replace(found, diffs=diffs)


def _own_videos(kept: pl.DataFrame, videos: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """The per-video rows of exactly the kept results, and how many kept results have none."""
    ids = set(kept["result_id"].to_list()) if not kept.is_empty() else set()
    if videos.is_empty():
        return videos, len(ids)
    mine = videos.filter(pl.col("result_id").is_in(list(ids)))
    return mine, len(ids - set(mine["result_id"].to_list()))


def _intervals(
    mine: pl.DataFrame,
    without: int,
    rows: list[str],
    datasets: Sequence[str],
    seeds: Sequence[int],
    columns: Sequence[Column],
    pairs: Sequence[tuple[str, str]],
    step_pairs: Sequence[tuple[str, str]] = (),
) -> TableIntervals:
    """Cells of ``rows`` and differences ``a - b`` for ``pairs`` (and, as a second family, for
    ``step_pairs``), keyed by (row a, dataset, column)."""
    cells: dict[CellKey, Estimate] = {}
    diffs: dict[CellKey, Difference] = {}
    steps: dict[CellKey, Difference] = {}
    resolution: list[Resolution] = []
    wanted = [c for c in columns if c.metric in VIDEO_PARTS]
    index = {name: i for i, name in enumerate(rows)}
    for dataset in datasets if not mine.is_empty() else ():
        for (task, split), group in _by_task_split(wanted).items():
            sub = mine.filter(
                (pl.col("dataset") == dataset) & (pl.col("task") == task) & (pl.col("split") == split)
            )
            if sub.is_empty():
                continue
            layout = _Layout.of(sub, rows, seeds)
            weights = video_weights(layout.n_videos)
            for col in group:
                data = layout.column(sub, col.metric)
                for name, est in zip(rows, cell_estimates(data, weights), strict=True):
                    if est is not None:
                        cells[(name, dataset, col.name)] = est
                _differences_into(steps, data, step_pairs, index, weights, (dataset, col.name))
                if not pairs:
                    continue
                usable = _differences_into(diffs, data, pairs, index, weights, (dataset, col.name))
                resolution.append(
                    Resolution(
                        dataset,
                        col.name,
                        min_detectable(usable),
                        max((d.n_seeds for d in usable), default=0),
                        max((d.n_videos for d in usable), default=0),
                    )
                )
    return TableIntervals(cells, _holm_within(diffs), tuple(resolution), without, _holm_within(steps))


def _differences_into(
    out: dict[CellKey, Difference],
    data: ColumnData,
    pairs: Sequence[tuple[str, str]],
    index: dict[str, int],
    weights: np.ndarray,
    where: tuple[str, str],
) -> list[Difference]:
    """Add ``a - b`` of each pair to ``out`` under (a, dataset, column); returns the ones found."""
    if not pairs:
        return []
    found = pair_differences(data, [(index[a], index[b]) for a, b in pairs], weights)
    for (a, _), diff in zip(pairs, found.values(), strict=True):
        if diff is not None:
            out[(a, *where)] = diff
    return [d for d in found.values() if d is not None]


def _by_task_split(columns: Sequence[Column]) -> dict[tuple[str, str], list[Column]]:
    out: dict[tuple[str, str], list[Column]] = {}
    for col in columns:
        out.setdefault((col.task, col.split), []).append(col)
    return out


def _holm_within(diffs: dict[CellKey, Difference]) -> dict[CellKey, Difference]:
    """The same differences with ``p_holm`` set, adjusted over all of them (one table = one family)."""
    keys = list(diffs)
    adjusted = holm([diffs[k].p_value for k in keys])
    return {k: replace(diffs[k], p_holm=p) for k, p in zip(keys, adjusted, strict=True)}


@dataclass(frozen=True)
class _Layout:
    """Integer positions of one (dataset, task, split)'s video rows in (variant, seed, video) arrays."""

    k: np.ndarray  # (n,) variant index of each video row
    s: np.ndarray  # (n,) seed slot
    v: np.ndarray  # (n,) video index
    shape: tuple[int, int, int]

    @property
    def n_videos(self) -> int:
        return self.shape[2]

    @classmethod
    def of(cls, sub: pl.DataFrame, variants: Sequence[str], seeds: Sequence[int]) -> _Layout:
        video_ids = sorted(set(sub["video_id"].to_list()))
        index: dict[str, dict[Any, int]] = {
            "variant": {name: i for i, name in enumerate(variants)},
            "seed": {seed: i for i, seed in enumerate(seeds)},
            "video_id": {vid: i for i, vid in enumerate(video_ids)},
        }
        k, s, v = (
            np.fromiter((index[name][x] for x in sub[name].to_list()), np.int64, sub.height)
            for name in ("variant", "seed", "video_id")
        )
        return cls(k, s, v, (len(variants), len(seeds), len(video_ids)))

    def column(self, sub: pl.DataFrame, metric: str) -> ColumnData:
        """The metric's numerators, denominators and presence as (K, S, V) arrays."""
        num_name, den_name = VIDEO_PARTS[metric]
        num, den, present = np.zeros(self.shape), np.zeros(self.shape), np.zeros(self.shape, bool)
        num[self.k, self.s, self.v] = sub[num_name].to_numpy().astype(np.float64)
        den[self.k, self.s, self.v] = 1.0 if den_name is None else sub[den_name].to_numpy().astype(np.float64)
        present[self.k, self.s, self.v] = True
        return ColumnData(num, den, present)
