"""Paper tables: the paper's numbers beside ours, computed with polars from the results Parquet.

Pure functions only: a results DataFrame (``harness.results.read_results``) and a ``StudySpec``
go in, frozen table models come out. Nothing here renders, writes files or reads the clock, so
the Markdown/HTML renderers and the ``--check`` gate all see exactly the same numbers.

Which results count: rows of the study's current ``version`` whose variant, dataset and seed the
study still declares; when one (variant, dataset, seed) was run more than once (e.g. first on the
synthetic default, then with ``--data-root``), the trial that finished last wins and the others
are counted as superseded, never averaged in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import polars as pl

from harness.spec import StudySpec

EFFICIENCY_METRICS = frozenset({"params_m", "fps", "params_m_no_tok", "fps_teacher", "teacher_qpf"})
"""Metrics whose absolute values depend on the device or model size, compared as ratios."""

DataKind = Literal["synthetic", "real", "mixed", "none"]
_TRIAL_KEY = ["variant", "dataset", "seed"]


@dataclass(frozen=True)
class SeedStats:
    """Our value of one cell over seeds (``std`` is the sample std, None below two seeds)."""

    mean: float
    std: float | None
    n: int
    min: float
    max: float
    seeds: tuple[int, ...]


@dataclass(frozen=True)
class Cell:
    """One (variant, column) cell: the paper's value, ours, and whether they agree."""

    column: str
    paper: float | None
    ours: SeedStats | None
    headline: bool
    tolerance: float
    min_seeds: int
    absolute: bool = True
    """False for efficiency cells (params, FPS): compared as ratios, never against the tolerance."""

    @property
    def diff(self) -> float | None:
        """Ours minus the paper's, in the column's unit (percentage points for detection)."""
        if self.paper is None or self.ours is None:
            return None
        return self.ours.mean - self.paper

    @property
    def within(self) -> bool | None:
        """|diff| <= tolerance; None when there is nothing to compare."""
        diff = self.diff
        return None if diff is None or not self.absolute else abs(diff) <= self.tolerance + 1e-9

    @property
    def enough_seeds(self) -> bool:
        return self.ours is not None and self.ours.n >= self.min_seeds

    def check_failure(self) -> str | None:
        """Why ``report --check`` rejects this cell, or None (only headline cells with a paper value)."""
        if not self.headline or self.paper is None or not self.absolute:
            return None
        if self.ours is None:
            return "no result"
        if not self.enough_seeds:
            return f"{self.ours.n} seed(s) < min_seeds {self.min_seeds}"
        if not self.within:
            return f"diff {self.diff:+.2f} outside ±{self.tolerance:g}"
        return None


@dataclass(frozen=True)
class Column:
    """One reported cell kind of the table (from the study's ``table.columns``)."""

    name: str
    task: str
    split: str
    metric: str
    headline: bool

    @property
    def efficiency(self) -> bool:
        return self.metric in EFFICIENCY_METRICS


@dataclass(frozen=True)
class VariantRow:
    """One row of the table: a variant run on one dataset, one cell per column."""

    variant: str
    dataset: str
    cells: tuple[Cell, ...]


@dataclass(frozen=True)
class CitedRow:
    """A method the paper compares against that we do not run (its values, column order)."""

    method: str
    values: tuple[float | None, ...]


@dataclass(frozen=True)
class Ranking:
    """Does our order of the variants in one column agree with the paper's?"""

    column: str
    dataset: str
    variants: tuple[str, ...]
    paper_best: str | None
    ours_best: str | None
    spearman: float | None
    kendall: float | None

    @property
    def same_best(self) -> bool | None:
        if self.paper_best is None or self.ours_best is None:
            return None
        return self.paper_best == self.ours_best


@dataclass(frozen=True)
class MissingTrial:
    """An expected (variant, dataset, seed) without a result, or with cells missing."""

    variant: str
    dataset: str
    seed: int
    what: str


@dataclass(frozen=True)
class Ratio:
    """A variant's value divided by the baseline variant's, the paper's and ours (Table 10)."""

    column: str
    variant: str
    baseline: str
    paper: float | None
    ours: float | None


@dataclass(frozen=True)
class Provenance:
    """Where the numbers came from: data kind, devices, code versions, what was set aside."""

    trials_found: int
    trials_expected: int
    data: DataKind
    devices: tuple[str, ...]
    hardware: tuple[str, ...]
    git_shas: tuple[str, ...]
    dirty: bool
    stale_trials: int
    superseded_trials: int
    devices_by_variant: tuple[tuple[str, tuple[str, ...]], ...]


@dataclass(frozen=True)
class PaperTable:
    """Everything the renderers show for one study."""

    study: str
    version: int
    paper: str
    description: str
    datasets: tuple[str, ...]
    seeds: tuple[int, ...]
    columns: tuple[Column, ...]
    tolerance: float
    min_seeds: int
    rows: tuple[VariantRow, ...]
    cited: tuple[CitedRow, ...]
    rankings: tuple[Ranking, ...]
    missing: tuple[MissingTrial, ...]
    ratios: tuple[Ratio, ...]
    provenance: Provenance
    sweep: tuple[str, tuple[float, ...]] | None
    notes: tuple[str, ...] = ()
    """Facts found outside the results (e.g. the Fig. 4 analysis files), shown under the table."""

    @property
    def has_reference(self) -> bool:
        return any(cell.paper is not None for row in self.rows for cell in row.cells)

    @property
    def synthetic(self) -> bool:
        """True when any number in the table came from synthetic data."""
        return self.provenance.data in ("synthetic", "mixed")

    def check_failures(self) -> list[str]:
        """One line per headline cell that misses its tolerance or lacks its seeds."""
        return [
            f"{self.study}: {row.variant} / {row.dataset} / {cell.column}: {reason}"
            for row in self.rows
            for cell in row.cells
            if (reason := cell.check_failure()) is not None
        ]


def build_paper_table(results: pl.DataFrame, spec: StudySpec) -> PaperTable:
    """The paper table of one study from all results (other studies' rows are ignored).

    The study's ``table`` block may be None (then the table shows our numbers only, over the
    default four ablation columns).
    """
    columns = _columns(spec)
    kept, stale, superseded = current_trials(results, spec)
    stats = cell_stats(kept, columns)
    reference = _reference(spec, columns)
    tolerance, min_seeds = _tolerance(spec)
    rows = tuple(
        VariantRow(
            variant=variant,
            dataset=dataset,
            cells=tuple(
                Cell(
                    column=col.name,
                    paper=reference.get(variant, {}).get(col.name),
                    ours=stats.get((variant, dataset, col.name)),
                    headline=col.headline,
                    tolerance=tolerance,
                    min_seeds=min_seeds,
                    absolute=not col.efficiency,
                )
                for col in columns
            ),
        )
        for dataset in spec.datasets
        for variant in _variant_names(spec)
    )
    return PaperTable(
        study=spec.name,
        version=spec.version,
        paper=spec.table.paper if spec.table is not None else "",
        description=spec.description,
        datasets=tuple(spec.datasets),
        seeds=tuple(spec.seeds),
        columns=columns,
        tolerance=tolerance,
        min_seeds=min_seeds,
        rows=rows,
        cited=_cited(spec),
        rankings=tuple(rank_variants(rows, col.name) for col in columns if not col.efficiency),
        missing=missing_trials(kept, spec, columns),
        ratios=efficiency_ratios(rows, columns),
        provenance=_provenance(kept, spec, stale, superseded),
        sweep=sweep_axis(spec),
    )


# --- selecting the results that count ---------------------------------------------------------


def current_trials(results: pl.DataFrame, spec: StudySpec) -> tuple[pl.DataFrame, int, int]:
    """Rows of the study's current trials, plus the counts of stale and superseded trials.

    Stale: results of another study version, or of a variant/dataset/seed the study no longer
    declares. Superseded: older reruns of a (variant, dataset, seed) that ran again later.
    """
    own = results.filter(pl.col("study") == spec.name)
    declared = (
        (pl.col("study_version") == spec.version)
        & pl.col("variant").is_in(_variant_names(spec))
        & pl.col("dataset").is_in(list(spec.datasets))
        & pl.col("seed").is_in(list(spec.seeds))
    )
    current = own.filter(declared)
    stale = own.filter(~declared)["trial_id"].n_unique()
    trials = current.group_by([*_TRIAL_KEY, "trial_id"]).agg(pl.col("finished_at").max())
    latest = trials.sort(["finished_at", "trial_id"]).group_by(_TRIAL_KEY).agg(pl.col("trial_id").last())
    kept = current.filter(pl.col("trial_id").is_in(latest["trial_id"].to_list()))
    return kept, stale, trials.height - latest.height


def cell_stats(kept: pl.DataFrame, columns: Sequence[Column]) -> dict[tuple[str, str, str], SeedStats]:
    """(variant, dataset, column) -> our mean/std/n/min/max over seeds."""
    if not columns or kept.is_empty():
        return {}
    wanted = pl.DataFrame(
        {
            "column": [c.name for c in columns],
            "task": [c.task for c in columns],
            "split": [c.split for c in columns],
            "metric": [c.metric for c in columns],
        }
    )
    per_seed = (
        kept.join(wanted, on=["task", "split", "metric"], how="inner")
        .group_by(["variant", "dataset", "column", "seed"])
        .agg(pl.col("value").last())
        .filter(pl.col("value").is_not_null() & pl.col("value").is_not_nan())
    )
    grouped = per_seed.group_by(["variant", "dataset", "column"]).agg(
        pl.col("value").mean().alias("mean"),
        pl.col("value").std(ddof=1).alias("std"),
        pl.len().alias("n"),
        pl.col("value").min().alias("min"),
        pl.col("value").max().alias("max"),
        pl.col("seed").sort().alias("seeds"),
    )
    return {
        (r["variant"], r["dataset"], r["column"]): SeedStats(
            mean=r["mean"],
            std=r["std"] if r["n"] > 1 else None,
            n=r["n"],
            min=r["min"],
            max=r["max"],
            seeds=tuple(r["seeds"]),
        )
        for r in grouped.iter_rows(named=True)
    }


def missing_trials(
    kept: pl.DataFrame, spec: StudySpec, columns: Sequence[Column]
) -> tuple[MissingTrial, ...]:
    """Every expected (variant, dataset, seed) with no result, or with some columns missing."""
    present: dict[tuple[str, str, int], set[tuple[str, str, str]]] = {}
    for r in kept.select([*_TRIAL_KEY, "task", "split", "metric", "value"]).iter_rows(named=True):
        cells = present.setdefault((r["variant"], r["dataset"], r["seed"]), set())
        if r["value"] is not None and not math.isnan(r["value"]):
            cells.add((r["task"], r["split"], r["metric"]))
    missing: list[MissingTrial] = []
    for dataset in spec.datasets:
        for variant in _variant_names(spec):
            for seed in spec.seeds:
                found = present.get((variant, dataset, seed))
                if found is None:
                    missing.append(MissingTrial(variant, dataset, seed, "no result"))
                    continue
                absent = [c.name for c in columns if (c.task, c.split, c.metric) not in found]
                if absent:
                    missing.append(MissingTrial(variant, dataset, seed, "no value for " + ", ".join(absent)))
    return tuple(missing)


# --- comparing orders -------------------------------------------------------------------------


def rank_variants(rows: Sequence[VariantRow], column: str) -> Ranking:
    """Paper's best vs our best and rank correlations over the variants that have both values.

    With fewer than two such variants there is no paper order to compare (``paper_best`` None);
    ``ours_best`` then names our top variant among all we ran.

    With several datasets only the first one's rows are ranked (the paper's reference numbers
    belong to one dataset per table).
    """
    dataset = rows[0].dataset if rows else ""
    paired = [
        (row.variant, cell.paper, cell.ours.mean if cell.ours is not None else None)
        for row in rows
        if row.dataset == dataset
        for cell in row.cells
        if cell.column == column
    ]
    both = [(v, p, o) for v, p, o in paired if p is not None and o is not None]
    if len(both) >= 2:  # an order needs two variants known on both sides
        paper_best, ours_best = _argmax([(v, p) for v, p, _ in both]), _argmax([(v, o) for v, _, o in both])
    else:  # nothing to compare with; still say which of ours came out on top
        paper_best, ours_best = None, _argmax([(v, o) for v, _, o in paired if o is not None])
    return Ranking(
        column=column,
        dataset=dataset,
        variants=tuple(v for v, _, _ in both),
        paper_best=paper_best,
        ours_best=ours_best,
        spearman=spearman([p for _, p, _ in both], [o for _, _, o in both]),
        kendall=kendall_tau_b([p for _, p, _ in both], [o for _, _, o in both]),
    )


def _argmax(pairs: Sequence[tuple[str, float]]) -> str | None:
    """The name with the largest value; None when empty or when the top value is tied."""
    if not pairs:
        return None
    best = max(value for _, value in pairs)
    winners = [name for name, value in pairs if value == best]
    return winners[0] if len(winners) == 1 else None


def average_ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing the mean of the ranks they span."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for k in range(start, end + 1):
            ranks[order[k]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rho (Pearson correlation of average ranks); None below 2 points or if constant."""
    if len(x) != len(y) or len(x) < 2:
        return None
    rx, ry = average_ranks(x), average_ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    vx = sum((a - mx) ** 2 for a in rx)
    vy = sum((b - my) ** 2 for b in ry)
    return None if vx == 0 or vy == 0 else cov / math.sqrt(vx * vy)


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's tau-b (tie-corrected); None below 2 points or if either side is constant."""
    if len(x) != len(y) or len(x) < 2:
        return None
    concordant = discordant = ties_x = ties_y = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    denom = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return None if denom == 0 else (concordant - discordant) / denom


def efficiency_ratios(rows: Sequence[VariantRow], columns: Sequence[Column]) -> tuple[Ratio, ...]:
    """Each variant / the first variant for efficiency columns (params, FPS), paper and ours.

    Absolute FPS only means something on the paper's GPU; the ratio of two models measured side
    by side on one device is what can be compared.
    """
    eff = [c.name for c in columns if c.efficiency]
    if not eff or len(rows) < 2:
        return ()
    base, others = rows[0], [r for r in rows[1:] if r.dataset == rows[0].dataset]
    out: list[Ratio] = []
    for row in others:
        for name in eff:
            b, v = _cell(base, name), _cell(row, name)
            out.append(
                Ratio(
                    column=name,
                    variant=row.variant,
                    baseline=base.variant,
                    paper=_safe_ratio(v.paper, b.paper),
                    ours=_safe_ratio(v.ours.mean if v.ours else None, b.ours.mean if b.ours else None),
                )
            )
    return tuple(out)


def _cell(row: VariantRow, column: str) -> Cell:
    return next(c for c in row.cells if c.column == column)


def _safe_ratio(num: float | None, den: float | None) -> float | None:
    return None if num is None or den is None or den == 0 else num / den


# --- reading the spec -------------------------------------------------------------------------

DEFAULT_COLUMNS = (
    ("novel_sgdet", "sgdet", "novel", "map"),
    ("novel_predcls", "predcls", "novel", "map"),
    ("all_sgdet", "sgdet", "all", "map"),
    ("all_predcls", "predcls", "all", "map"),
)
"""Columns of a study without a ``table`` block: the four mAP cells of the paper's ablations."""


def _variant_names(spec: StudySpec) -> list[str]:
    return [v.name for v in spec.variants]


def _columns(spec: StudySpec) -> tuple[Column, ...]:
    if spec.table is None:
        return tuple(Column(n, t, s, m, headline=False) for n, t, s, m in DEFAULT_COLUMNS)
    headline = set(spec.table.headline)
    return tuple(Column(c.name, c.task, c.split, c.metric, c.name in headline) for c in spec.table.columns)


def _tolerance(spec: StudySpec) -> tuple[float, int]:
    if spec.table is None:
        return 0.0, 1
    return float(spec.table.tolerance), int(spec.table.min_seeds)


def _reference(spec: StudySpec, columns: Sequence[Column]) -> dict[str, dict[str, float | None]]:
    if spec.table is None:
        return {}
    return {
        variant: dict(zip((c.name for c in columns), values, strict=True))
        for variant, values in spec.table.reference.items()
    }


def _cited(spec: StudySpec) -> tuple[CitedRow, ...]:
    if spec.table is None:
        return ()
    return tuple(CitedRow(method, tuple(values)) for method, values in spec.table.cited.items())


def sweep_axis(spec: StudySpec) -> tuple[str, tuple[float, ...]] | None:
    """(override key, x values) when every variant sets one numeric field (Tables 7, 8), else None."""
    keys = {key for v in spec.variants for key in v.overrides}
    if len(keys) != 1 or any(len(v.overrides) != 1 for v in spec.variants):
        return None
    key = keys.pop()
    values = [v.overrides[key] for v in spec.variants]
    if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in values):
        return None
    return key, tuple(float(x) for x in values)


def _provenance(kept: pl.DataFrame, spec: StudySpec, stale: int, superseded: int) -> Provenance:
    trials = kept.unique(subset=["trial_id"], keep="last") if not kept.is_empty() else kept
    flags = set(trials["synthetic"].to_list()) if not trials.is_empty() else set()
    data: DataKind = (
        "none" if not flags else ("mixed" if len(flags) > 1 else ("synthetic" if True in flags else "real"))
    )
    by_variant = tuple(
        (name, tuple(sorted(set(trials.filter(pl.col("variant") == name)["device"].to_list()))))
        for name in _variant_names(spec)
    )
    return Provenance(
        trials_found=trials.height,
        trials_expected=len(spec.variants) * len(spec.datasets) * len(spec.seeds),
        data=data,
        devices=_distinct(trials, "device"),
        hardware=_distinct(trials, "hardware"),
        git_shas=_distinct(trials, "git_sha"),
        dirty=bool(trials["git_dirty"].any()) if not trials.is_empty() else False,
        stale_trials=stale,
        superseded_trials=superseded,
        devices_by_variant=by_variant,
    )


def _distinct(frame: pl.DataFrame, column: str) -> tuple[str, ...]:
    return tuple(sorted({str(v) for v in frame[column].to_list() if v is not None}))
