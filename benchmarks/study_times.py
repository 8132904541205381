"""Wall time per study from the Parquet results of a `harness run` (issue #16's time table).

Usage:
    python benchmarks/study_times.py [--results-dir results] [--since ISO-TIME]

Why from the results and not from a stopwatch: several studies run as one schedule, so the
command's wall time is the whole paper's; each study's share is read from its trials' own
records (``wall_s`` and ``finished_at`` of every newest result). Per study it prints the trial
count, the sum of trial wall times (what the study costs in trial-seconds, the number that adds
up across studies), the mean and the slowest trial, and the span from its first trial's start
to its last trial's end inside the shared schedule.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

import polars as pl

from harness.results import read_results


def trial_times(results_dir: Path, since: str | None) -> pl.DataFrame:
    """One row per trial (newest result): study, variant, seed, wall_s, start and end times."""
    frame = read_results(results_dir)
    trials = frame.select("study", "trial_id", "variant", "seed", "wall_s", "finished_at").unique(
        subset=["study", "trial_id"]
    )
    trials = trials.with_columns(
        pl.col("finished_at").str.to_datetime(time_zone="UTC").alias("end"),
    ).with_columns((pl.col("end") - pl.duration(seconds=pl.col("wall_s"))).alias("start"))
    if since:
        trials = trials.filter(pl.col("end") >= datetime.fromisoformat(since))
    return trials


def study_summary(trials: pl.DataFrame) -> pl.DataFrame:
    """Per study: trials, sum/mean/max of trial wall time, span of the study inside the run."""
    return (
        trials.group_by("study")
        .agg(
            pl.len().alias("trials"),
            pl.col("wall_s").sum().round(0).alias("trial_s_sum"),
            pl.col("wall_s").mean().round(1).alias("trial_s_mean"),
            pl.col("wall_s").max().round(1).alias("trial_s_max"),
            ((pl.col("end").max() - pl.col("start").min()).dt.total_seconds()).alias("span_s"),
        )
        .sort("trial_s_sum", descending=True)
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
    parser.add_argument("--since", default=None, help="only results finished at or after this ISO time (UTC)")
    args = parser.parse_args()
    trials = trial_times(args.results_dir, args.since)
    if trials.is_empty():
        raise SystemExit(f"no results under {args.results_dir}")
    summary = study_summary(trials)
    with pl.Config(tbl_rows=50, tbl_width_chars=160):
        print(summary)
    span = (trials["end"].max() - trials["start"].min()).total_seconds()  # type: ignore[operator]
    print(
        f"all studies: {trials.height} trials, {trials['wall_s'].sum():.0f} trial-seconds, "
        f"span {span:.0f} s (first trial start to last trial end)"
    )


if __name__ == "__main__":
    main()
