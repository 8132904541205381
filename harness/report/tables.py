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

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import polars as pl

from harness.report import stats
from harness.report.intervals import Resolution, TableIntervals, table_intervals
from harness.report.stats import Difference, Estimate
from harness.spec import Column, StudySpec, apply_overrides

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
    interval: Estimate | None = None
    """95% interval of our value from the per-video results (None: see ``PaperTable.interval_note``)."""
    vs_baseline: Difference | None = None
    """This row minus the table's baseline row, paired over seeds and videos (None on the baseline)."""
    paper_gap: float | None = None
    """The paper's own difference between this row and the baseline row."""

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
    agree: int = 0
    """Rows whose difference to the baseline is significant and has the paper's sign."""
    disagree: int = 0
    """Rows whose difference to the baseline is significant and has the opposite sign."""
    unresolved: int = 0
    """Rows with a paper gap whose difference to the baseline is not significant."""

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
    code_versions: tuple[str, ...] = ()
    """Code versions (:func:`harness.provenance.code_version`) of the kept results; '' = unknown (v1)."""
    trials_by_sha: tuple[tuple[str, int], ...] = ()
    """(git sha, number of kept trials), most trials first."""
    schedules: tuple[str, ...] = ()
    """Training schedules (``train.schedule``, :mod:`harness.schedules`) of the kept trials."""
    off_budget: tuple[str, ...] = ()
    """How the real-data trials' training differs from the paper's budget, one line per distinct
    difference ('' entries never); empty when every real-data trial trained on the paper's."""


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
    headline: frozenset[str]
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
    baseline: str | None = None
    """The row every other row is compared with (``table.baseline`` or its default)."""
    resolution: tuple[Resolution, ...] = ()
    """Per column, the smallest difference the run resolves at its seeds x videos."""
    interval_note: str | None = None
    """Why some or all cells have no interval (e.g. results written before per-video rows)."""

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


def build_paper_table(
    results: pl.DataFrame, spec: StudySpec, videos: pl.DataFrame | None = None
) -> PaperTable:
    """The paper table of one study from all results (other studies' rows are ignored).

    The study's ``table`` block may be None (then the table shows our numbers only, over the
    default four ablation columns). ``videos``: the per-video rows (``harness.results.read_videos``)
    that give every cell its interval and every row its paired difference to the baseline;
    None = no intervals.
    """
    columns = _columns(spec)
    headline = frozenset(spec.table.headline if spec.table is not None else ())
    kept, stale, superseded = current_trials(results, spec)
    seed_stats = cell_stats(kept, columns)
    reference = _reference(spec, columns)
    tolerance, min_seeds = _tolerance(spec)
    baseline = baseline_variant(spec)
    found = table_intervals(
        kept,
        videos if videos is not None else pl.DataFrame(),
        variants=_variant_names(spec),
        datasets=spec.datasets,
        seeds=spec.seeds,
        columns=columns,
        baseline=baseline,
    )
    rows = tuple(
        VariantRow(
            variant=variant,
            dataset=dataset,
            cells=tuple(
                _make_cell(
                    variant,
                    dataset,
                    col,
                    reference,
                    seed_stats,
                    found,
                    baseline,
                    tolerance,
                    min_seeds,
                    headline,
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
        headline=headline,
        tolerance=tolerance,
        min_seeds=min_seeds,
        rows=rows,
        cited=_cited(spec),
        rankings=tuple(rank_variants(rows, col.name) for col in columns if not col.efficiency),
        missing=missing_trials(kept, spec, columns),
        ratios=efficiency_ratios(rows, columns),
        provenance=_provenance(kept, spec, stale, superseded),
        sweep=sweep_axis(spec),
        baseline=baseline,
        resolution=found.resolution,
        interval_note=_interval_note(found, kept, videos is None),
    )


def _make_cell(
    variant: str,
    dataset: str,
    col: Column,
    reference: dict[str, dict[str, float | None]],
    seed_stats: dict[tuple[str, str, str], SeedStats],
    found: TableIntervals,
    baseline: str | None,
    tolerance: float,
    min_seeds: int,
    headline: frozenset[str],
) -> Cell:
    """One cell: our seeds' numbers, the paper's, and what the per-video rows add."""
    ours = seed_stats.get((variant, dataset, col.name))
    interval = found.cells.get((variant, dataset, col.name))
    if interval is not None and (ours is None or interval.n_seeds != ours.n):
        interval = None  # per-video rows for only some of the seeds: an interval would not match the mean
    paper = reference.get(variant, {}).get(col.name)
    base_paper = reference.get(baseline, {}).get(col.name) if baseline is not None else None
    return Cell(
        column=col.name,
        paper=paper,
        ours=ours,
        headline=col.name in headline,
        tolerance=tolerance,
        min_seeds=min_seeds,
        absolute=not col.efficiency,
        interval=interval,
        vs_baseline=found.diffs.get((variant, dataset, col.name)),
        paper_gap=None if paper is None or base_paper is None or variant == baseline else paper - base_paper,
    )


def _interval_note(found: TableIntervals, kept: pl.DataFrame, no_videos: bool) -> str | None:
    """Why cells lack intervals, in a sentence (None when nothing is missing)."""
    if kept.is_empty():
        return None
    if no_videos:
        return "intervals not computed (no per-video results were read)"
    if found.trials_without_videos:
        n = kept["trial_id"].n_unique()
        return (
            f"{found.trials_without_videos} of {n} trial(s) have no per-video results (written by results "
            "schema version 1, before per-video rows): their cells have no interval and no paired test; "
            "rerun them (`harness run --force`) to get both"
        )
    return None


def baseline_variant(spec: StudySpec) -> str | None:
    """The row the others are compared with: ``table.baseline``, else 'Ours', else the one variant
    whose overrides leave the study's base config unchanged (the default model, which follows the
    paper's full model), else None (no paired differences)."""
    if spec.table is not None and spec.table.baseline is not None:
        return spec.table.baseline
    names = _variant_names(spec)
    if "Ours" in names:
        return "Ours"
    from sage_model.config import ExperimentConfig

    base = apply_overrides(ExperimentConfig(), spec.base)
    default = [v.name for v in spec.variants if apply_overrides(base, v.overrides) == base]
    return default[0] if len(default) == 1 else None


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
    """Paper's best vs our best, rank correlations (scipy) over the variants that have both values,
    and how many rows' paired differences to the baseline are resolved with the paper's sign.

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
    gaps = [
        (cell.paper_gap, cell.vs_baseline)
        for row in rows
        if row.dataset == dataset
        for cell in row.cells
        if cell.column == column and cell.paper_gap is not None and cell.vs_baseline is not None
    ]
    resolved = [(gap, diff) for gap, diff in gaps if diff.significant and gap != 0]
    agree = sum(1 for gap, diff in resolved if (gap > 0) == (diff.value > 0))
    return Ranking(
        column=column,
        dataset=dataset,
        variants=tuple(v for v, _, _ in both),
        paper_best=paper_best,
        ours_best=ours_best,
        spearman=stats.spearman([p for _, p, _ in both], [o for _, _, o in both]),
        kendall=stats.kendall([p for _, p, _ in both], [o for _, _, o in both]),
        agree=agree,
        disagree=len(resolved) - agree,
        unresolved=len(gaps) - len(resolved),
    )


def _argmax(pairs: Sequence[tuple[str, float]]) -> str | None:
    """The name with the largest value; None when empty or when the top value is tied."""
    if not pairs:
        return None
    best = max(value for _, value in pairs)
    winners = [name for name, value in pairs if value == best]
    return winners[0] if len(winners) == 1 else None


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
        return tuple(Column(name=n, task=t, split=s, metric=m) for n, t, s, m in DEFAULT_COLUMNS)
    return tuple(spec.table.columns)


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
        code_versions=_distinct(trials, "code_version"),
        trials_by_sha=_counts(trials, "git_sha"),
        stale_trials=stale,
        superseded_trials=superseded,
        devices_by_variant=by_variant,
        **_budgets(trials),
    )


def _budgets(trials: pl.DataFrame) -> dict[str, tuple[str, ...]]:
    """The schedules of the trials and the real-data ones trained off the paper's budget."""
    from harness.schedules import budget_differences

    if trials.is_empty():
        return {"schedules": (), "off_budget": ()}
    schedules: set[str] = set()
    off: dict[str, int] = {}
    for row in trials.select("config_json", "synthetic").to_dicts():
        train = json.loads(row["config_json"] or "{}").get("train", {})
        schedules.add(str(train.get("schedule", "default")))
        diff = budget_differences(train) if not row["synthetic"] else {}
        if diff:
            line = ", ".join(f"{k.removeprefix('train.')} {a} (paper {b})" for k, (a, b) in diff.items())
            off[line] = off.get(line, 0) + 1
    return {
        "schedules": tuple(sorted(schedules)),
        "off_budget": tuple(f"{n} trial(s): {d}" for d, n in off.items()),
    }


def _distinct(frame: pl.DataFrame, column: str) -> tuple[str, ...]:
    return tuple(sorted({str(v) for v in frame[column].to_list() if v is not None}))


def _counts(frame: pl.DataFrame, column: str) -> tuple[tuple[str, int], ...]:
    if frame.is_empty():
        return ()
    counted = frame.group_by(column).len().sort(["len", column], descending=[True, False])
    return tuple((str(value), int(n)) for value, n in counted.iter_rows())
