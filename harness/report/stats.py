"""Confidence intervals and paired tests for the report, from per-video results (pure numpy/scipy).

What the numbers are (docs/report.md states it for readers):

A cell is ``Q = mean over seeds s of f_s`` where ``f_s`` is the official metric of seed ``s``,
recomputed exactly from per-video parts: ``f_s = 100 * sum_i num[s, i] / sum_i den[s, i]``. For
mAP and tagging precision ``num`` is the video's AP / P@K and ``den`` is 1 (a mean over videos);
for Recall@K ``num`` is TP@K and ``den`` the number of GT relations (a ratio of sums). A paired
difference is the same with ``f_s = f_s(variant) - f_s(baseline)`` over the seeds and videos both
have.

Two sources of variance: the test videos (a sample of the test distribution) and training (a
seed is one draw of the training randomness). The standard error combines

* the **video part**, from a bootstrap over test videos: ``B`` resamples of the video indices,
  one resample shared by every variant, seed and column of a table (paired), every metric
  recomputed exactly on each resample; its variance of ``Q`` is ``v_vid``;
* the **seed part**: the variance between seeds that the videos do not explain. The observed
  variance of ``f_s`` over seeds estimates ``sigma_seed^2 + E`` where ``E`` is one seed's own
  video noise (the part not shared between seeds, also from the bootstrap); the excess
  ``g = var_s(f_s) - E`` is pooled over the rows of the column (one training-noise level per
  column, ``sum (S_k - 1)`` degrees of freedom) and floored at 0; its share is ``g / S``.

``SE^2 = v_vid + g / S``; the interval is ``Q +- t * SE`` and the p-value ``2 * P(T > |Q| / SE)``
with ``T`` Student's t of Welch-Satterthwaite degrees of freedom. With one seed there is no seed
part (said in the output). Why not a plain two-level bootstrap (resample seeds, then videos):
with 2-3 seeds it counts the video noise twice and the seed noise by a factor (S-1)/S, and the
simulations in tests/test_report_stats.py show it far too conservative without seed noise and
too liberal with it; this estimator keeps the false-positive rate within [0.02, 0.08] over that
grid (see docs/report.md for the measured rates).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps
from scipy.special import ndtr, ndtri, stdtr, stdtrit

ALPHA = 0.05
POWER = 0.8
N_BOOTSTRAP = 2000
SHARED_RHO = 0.5
"""Correlation of two differences' seed noise when they share the baseline row (equal variances)."""
BOOTSTRAP_SEED = 20260101
"""Fixed, so the same results always give the same report."""


@dataclass(frozen=True)
class Estimate:
    """A cell's value with its confidence interval (percent, like the metric)."""

    value: float
    low: float
    high: float
    se: float
    dof: float
    n_seeds: int
    n_videos: int
    seed_part: bool
    """False when the seed variance could not enter (one seed): the interval covers videos only."""


@dataclass(frozen=True)
class Difference:
    """A paired difference (row minus reference) with its interval and p-value."""

    value: float
    low: float
    high: float
    se: float
    dof: float
    p_value: float
    n_seeds: int
    n_videos: int
    seed_part: bool
    p_holm: float = float("nan")
    """Holm-adjusted p over every comparison of the table (set by :func:`holm`)."""

    @property
    def significant(self) -> bool:
        return bool(self.p_holm < ALPHA)


@dataclass(frozen=True)
class ColumnData:
    """Per-video parts of one column for K rows x S seed slots x V videos.

    ``num``/``den`` (K, S, V) float: the metric of row k, seed s is ``100 * sum num / sum den``
    over its videos; ``present`` (K, S, V) bool marks which (seed, video) a row has.
    """

    num: np.ndarray
    den: np.ndarray
    present: np.ndarray

    def __post_init__(self) -> None:
        assert self.num.shape == self.den.shape == self.present.shape and self.num.ndim == 3

    @property
    def n_videos(self) -> int:
        return int(self.num.shape[2])

    def seeds_of(self, k: int) -> np.ndarray:
        """(S,) bool: the seed slots row ``k`` has at all."""
        return np.asarray(self.present[k].any(axis=1))


def video_weights(n_videos: int, n_boot: int = N_BOOTSTRAP, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """(B, V) float32 bootstrap counts: how often each video is drawn in each resample (rows sum
    to V). The same for the same arguments (cached, read-only): every table of a report with the
    same number of videos resamples alike, and the report is reproducible."""
    return _video_weights(n_videos, n_boot, seed)


@functools.lru_cache(maxsize=16)
def _video_weights(n_videos: int, n_boot: int, seed: int) -> np.ndarray:
    draws = np.random.default_rng(seed).integers(0, n_videos, size=(n_boot, n_videos))  # (B, V) video drawn
    flat = (draws + n_videos * np.arange(n_boot)[:, None]).ravel()  # one bincount for all resamples
    counts = np.bincount(flat, minlength=n_boot * n_videos).reshape(n_boot, n_videos).astype(np.float32)
    counts.flags.writeable = False
    return counts


# --- the two variance parts --------------------------------------------------------------------


@dataclass(frozen=True)
class _Parts:
    """One quantity's per-seed observed values and bootstrap replicates, before pooling."""

    observed: np.ndarray  # (S,) f_s on all its videos
    replicates: np.ndarray  # (B, S) f_s on each resample
    n_videos: int

    @property
    def value(self) -> float:
        return float(self.observed.mean())

    @property
    def n_seeds(self) -> int:
        return int(self.observed.size)

    def video_variance(self) -> float:
        """Variance of the seed mean under video resampling (v_vid)."""
        return float(self.replicates.mean(axis=1).var(ddof=1))

    def seed_excess(self) -> float:
        """var_s(f_s) - E: between-seed variance not explained by each seed's own video noise."""
        s = self.n_seeds
        if s < 2:
            return float("nan")
        own = (self.replicates.var(axis=0, ddof=1).mean() - self.video_variance()) * s / (s - 1)
        return float(self.observed.var(ddof=1) - max(own, 0.0))


def _metric(weights: np.ndarray, num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """100 * (weights @ num) / (weights @ den), per seed: (..., V) x (S, V) -> (..., S) float64.

    In the weights' precision: float32 for the resamples (half the time of float64, and 7 digits
    are plenty for a variance), float64 for the observed value. ``einsum``, not ``@``: for these
    skinny products (S is 1-3) OpenBLAS's threads cost 3-7x more CPU, worse on a busy machine.
    """
    num, den = num.astype(weights.dtype), den.astype(weights.dtype)
    top = np.einsum("...v,sv->...s", weights, num).astype(np.float64)
    bottom = np.einsum("...v,sv->...s", weights, den).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 100.0 * top / bottom


@dataclass(frozen=True)
class _Row:
    """One row's seeds and videos and its per-seed values, observed and resampled."""

    seeds: np.ndarray  # (S,) bool seed slots used
    videos: np.ndarray  # (V,) bool videos used (every used seed has them)
    parts: _Parts


def _row(
    data: ColumnData, k: int, weights: np.ndarray, seeds: np.ndarray, others: int | None = None
) -> _Row | None:
    """Row ``k`` (minus row ``others`` when given) on ``seeds`` and the videos all of them have."""
    rows = [k] if others is None else [k, others]
    videos = (
        np.logical_and.reduce([data.present[r][seeds] for r in rows]).all(axis=0) if seeds.any() else seeds
    )
    if not seeds.any() or not videos.any():
        return None
    ones = np.ones(data.n_videos)

    def values(w: np.ndarray) -> np.ndarray:
        out = _metric(w, data.num[k][seeds] * videos, data.den[k][seeds] * videos)
        if others is not None:
            out = out - _metric(w, data.num[others][seeds] * videos, data.den[others][seeds] * videos)
        return out

    replicates = values(weights)
    replicates = replicates[np.isfinite(replicates).all(axis=1)]  # a resample that drew none of its videos
    return _Row(seeds, videos, _Parts(values(ones), replicates, int(videos.sum())))


def _cell_rows(data: ColumnData, weights: np.ndarray) -> list[_Row | None]:
    return [_row(data, k, weights, data.seeds_of(k)) for k in range(data.num.shape[0])]


def _difference_parts(
    rows: Sequence[_Row | None], data: ColumnData, k: int, base: int, weights: np.ndarray
) -> _Parts | None:
    """Row k minus the baseline on the seeds and videos both have (reusing the rows' replicates
    when those are the same seeds and videos, the usual case)."""
    mine, theirs = rows[k], rows[base]
    if mine is None or theirs is None:
        return None
    same = np.array_equal(mine.seeds, theirs.seeds) and np.array_equal(mine.videos, theirs.videos)
    if same and mine.parts.replicates.shape == theirs.parts.replicates.shape:
        a, b = mine.parts, theirs.parts
        return _Parts(a.observed - b.observed, a.replicates - b.replicates, a.n_videos)
    row = _row(data, k, weights, mine.seeds & theirs.seeds, others=base)
    return None if row is None else row.parts


# --- combining them ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SeedPool:
    """The column's pooled between-seed excess variance ``g`` and its degrees of freedom."""

    excess: float
    dof: float

    @classmethod
    def of(cls, parts: Sequence[_Parts], shared: bool = False) -> SeedPool:
        """Pool ``parts``' seed excesses; ``shared``: they are differences to one common row.

        Differences that share the baseline row share its seed noise, so their excesses are
        correlated (rho = 1/2 between two of them when the rows' training noise is alike) and
        pooling k of them is worth fewer degrees of freedom: ``dof / (1 + (k - 1) rho^2)``.
        """
        usable = [p for p in parts if p.n_seeds >= 2]
        dof = sum(p.n_seeds - 1 for p in usable)
        if not dof:
            return cls(float("nan"), 0)
        pooled = sum((p.n_seeds - 1) * p.seed_excess() for p in usable) / dof
        effective = dof / (1 + (len(usable) - 1) * SHARED_RHO**2) if shared else float(dof)
        return cls(max(pooled, 0.0), effective)


def _se_dof(part: _Parts, pool: SeedPool) -> tuple[float, float, bool]:
    """(standard error, Satterthwaite degrees of freedom, whether the seed part is in)."""
    v_vid = part.video_variance()
    dof_vid = max(part.n_videos - 1, 1)
    if pool.dof == 0:
        return float(np.sqrt(v_vid)), float(dof_vid), False
    v_seed = pool.excess / part.n_seeds
    total = v_vid + v_seed
    if total <= 0:
        return 0.0, float("inf"), True
    denom = v_vid**2 / dof_vid + v_seed**2 / pool.dof
    return float(np.sqrt(total)), float(total**2 / denom) if denom > 0 else float("inf"), True


def _t_quantile(dof: float, q: float) -> float:
    """Student's t quantile (the normal's for infinite dof); scipy.special, ~100x faster than
    ``scipy.stats.t.ppf`` for scalars, which matters in the calibration simulations."""
    return float(ndtri(q) if not np.isfinite(dof) else stdtrit(dof, q))


def _t_two_sided(dof: float, t: float) -> float:
    """P(|T| >= |t|) for Student's t with ``dof`` degrees of freedom."""
    tail = ndtr(-abs(t)) if not np.isfinite(dof) else stdtr(dof, -abs(t))
    return float(2 * tail)


def cell_estimates(data: ColumnData, weights: np.ndarray) -> list[Estimate | None]:
    """Every row's value with a 95% interval (None where the row has no per-video parts), clipped
    to [0, 100]: the seed part is pooled over the column's rows, so a row that is constant over
    seeds (a model stuck at 0) still gets the column's training noise, which must not take it
    below 0."""
    rows = _cell_rows(data, weights)
    pool = SeedPool.of([r.parts for r in rows if r is not None])
    out: list[Estimate | None] = []
    for row in rows:
        if row is None:
            out.append(None)
            continue
        part = row.parts
        se, dof, seed_in = _se_dof(part, pool)
        half = _t_quantile(dof, 1 - ALPHA / 2) * se
        out.append(
            Estimate(
                part.value,
                max(part.value - half, 0.0),  # every decomposable metric is a percentage
                min(part.value + half, 100.0),
                se,
                dof,
                part.n_seeds,
                part.n_videos,
                seed_in,
            )
        )
    return out


def paired_differences(data: ColumnData, baseline: int, weights: np.ndarray) -> list[Difference | None]:
    """Every row minus row ``baseline`` (None for the baseline itself and rows without parts)."""
    rows = range(data.num.shape[0])
    found = pair_differences(data, [(k, baseline) for k in rows if k != baseline], weights)
    return [None if k == baseline else found[(k, baseline)] for k in rows]


def pair_differences(
    data: ColumnData, pairs: Sequence[tuple[int, int]], weights: np.ndarray
) -> dict[tuple[int, int], Difference | None]:
    """Row a minus row b for each (a, b) in ``pairs``, paired over the seeds and videos both have.

    The seed part is the between-seed variance of the differences themselves, pooled over the
    pairs: it holds whatever training noise the two rows do not share (all of it for independent
    runs, none for a deterministic rerun of the same seed in ``harness compare``).
    """
    rows = _cell_rows(data, weights)
    parts = {pair: _difference_parts(rows, data, pair[0], pair[1], weights) for pair in pairs}
    bases = [b for _, b in pairs]
    pool = SeedPool.of([p for p in parts.values() if p is not None], shared=len(set(bases)) < len(bases))
    out: dict[tuple[int, int], Difference | None] = {}
    for pair, part in parts.items():
        if part is None:
            out[pair] = None
            continue
        se, dof, seed_in = _se_dof(part, pool)
        out[pair] = _difference(part, se, dof, seed_in)
    return out


def _difference(part: _Parts, se: float, dof: float, seed_in: bool) -> Difference:
    value = part.value
    if se == 0:  # identical per-video numbers (a deterministic rerun), or a constant shift
        p = 1.0 if value == 0 else 0.0
        return Difference(value, value, value, 0.0, dof, p, part.n_seeds, part.n_videos, seed_in)
    half = _t_quantile(dof, 1 - ALPHA / 2) * se
    p = _t_two_sided(dof, value / se)
    return Difference(value, value - half, value + half, se, dof, p, part.n_seeds, part.n_videos, seed_in)


def min_detectable(
    differences: Sequence[Difference | None], alpha: float = ALPHA, power: float = POWER
) -> float | None:
    """The smallest true difference these comparisons detect with ``power`` at ``alpha`` (two-sided,
    before the Holm correction): ``(t_{1-alpha/2} + t_{power}) * SE``, SE the root mean square of
    the comparisons' standard errors, t at their harmonic-mean degrees of freedom (the fewest
    dominate). Approximate: the standard errors are themselves estimates; the simulation in
    tests/test_report_stats.py checks the power at this difference (docs/report.md)."""
    usable = [d for d in differences if d is not None and d.se > 0]
    if not usable:
        return None
    se = float(np.sqrt(np.mean([d.se**2 for d in usable])))
    dof = float(len(usable) / sum(1 / d.dof for d in usable))
    return (_t_quantile(dof, 1 - alpha / 2) + _t_quantile(dof, power)) * se


# --- multiplicity and rank agreement -----------------------------------------------------------


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order (NaN stays NaN, not counted).

    Step-down: the i-th smallest of m p-values is multiplied by (m - i + 1), then made monotone.
    (scipy.stats.false_discovery_control is Benjamini-Hochberg, a different guarantee.)
    """
    p = np.asarray(p_values, dtype=np.float64)
    finite = np.flatnonzero(~np.isnan(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    m = order.size
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out = np.full(p.shape, np.nan)
    out[order] = adjusted
    return out.tolist()


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rho (scipy); None below 3 points or when a side is constant."""
    if len(x) != len(y) or len(x) < 2 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    return float(sps.spearmanr(x, y).statistic)


def kendall(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's tau-b (scipy, tie-corrected); None below 2 points or when a side is constant."""
    if len(x) != len(y) or len(x) < 2 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    return float(sps.kendalltau(x, y).statistic)
