"""Harness overhead: the same trials through `run_study` (Ray Tune + MLflow + Parquet) versus the
trial function called directly, one after another, in one process.

Like for like: both sides run the trials one at a time (``max_concurrent=1``) with the same number
of threads (each harness trial gets ``--cpus`` CPUs, the direct process sets torch to as many
threads). The harness side includes everything a user waits for: Ray start-up, the MLflow store,
Tune, per-epoch logging, artifacts, Parquet. The ratio is harness wall time / direct wall time;
the target is <= 1.10 for 60-second trials.

Trial functions:
- ``real`` (default): ``sage_model.experiment.run_experiment`` on the study's first variants;
  size the trials with ``--set train.stage1_epochs=N`` (one 60 s trial is the target).
- ``busy``: a CPU-bound loop of ``--seconds`` per trial reporting one epoch per second: no
  model at all, so what remains is the harness's own cost.

Run:  python benchmarks/bench_harness_overhead.py --trials 3 --set train.stage1_epochs=6
      python benchmarks/bench_harness_overhead.py --fn busy --seconds 60 --trials 3
Writes benchmarks/out/harness_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from sage_model.records import EpochReport, ExperimentResult, Metric

ROOT = Path(__file__).resolve().parents[1]


def busy_experiment(cfg: Any, *, work_dir: Path, on_epoch: Any = None) -> ExperimentResult:
    """Spin the CPU for BENCH_SECONDS, one epoch report per second (pickled by value into workers)."""
    seconds = float(os.environ.get("BENCH_SECONDS", "60"))
    start = time.perf_counter()
    epoch, x = 0, 0.0
    while time.perf_counter() - start < seconds:
        deadline = min(start + epoch + 1, start + seconds)
        while time.perf_counter() < deadline:
            x = (x * 1.0000001 + 1.0) % 1e6
        if on_epoch is not None:
            on_epoch(EpochReport(1, epoch, {"train/loss": 1.0 / (epoch + 1)}))
        epoch += 1
    return ExperimentResult([Metric("predcls", "all", "map", x % 100)], {}, "busy", "", True, 0, "cpu", seconds)


def make_study(source: Path, folder: Path, trials: int, cpus: int, overrides: dict[str, Any]) -> Path:
    """A copy of the study with ``trials`` variants x 1 seed, CPU-only, extra base overrides."""
    data = yaml.safe_load(source.read_text())
    variants = data["variants"]
    picked = [variants[i % len(variants)] for i in range(trials)]
    for i, variant in enumerate(picked):
        variant = dict(variant)
        variant["name"] = f"{variant['name']}#{i}" if i >= len(variants) else variant["name"]
        picked[i] = variant
    data.update(
        name="bench_overhead",
        base={**(data.get("base") or {}), **overrides},
        variants=picked,
        seeds=[data["seeds"][0]],
        datasets=[data["datasets"][0]],
        resources={"cpus": cpus, "gpus": 0},
        table=None,
        tune=None,
    )
    path = folder / "bench_overhead.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run_direct(study: Path, experiment: Any, work: Path, cpus: int) -> tuple[float, list[float]]:
    """The trial function called in this process, one trial after another (no Ray, no MLflow)."""
    import torch

    from harness.expand import expand_study
    from harness.spec import load_study

    torch.set_num_threads(cpus)
    trials = expand_study(load_study(study))
    start = time.perf_counter()
    each = []
    for trial in trials:
        tic = time.perf_counter()
        experiment(trial.config, work_dir=work / trial.trial_id, on_epoch=lambda report: None)
        each.append(time.perf_counter() - tic)
    return time.perf_counter() - start, each


def run_harness(study: Path, experiment: Any, work: Path) -> tuple[float, list[float]]:
    """`harness run` as a library call, one trial at a time, fresh run and results folders."""
    from harness.runner import RunOptions, run_study

    options = RunOptions(run_dir=work / "runs", results_dir=work / "results", max_concurrent=1)
    start = time.perf_counter()
    outcome = run_study(study, options, experiment_fn=experiment)
    wall = time.perf_counter() - start
    if outcome.failures:
        raise SystemExit(f"harness trials failed: {[(t.trial_id, t.error) for t in outcome.failures]}")
    return wall, [t.wall_s for t in outcome.trials]


def parse_set(items: list[str]) -> dict[str, Any]:
    overrides = {}
    for item in items:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    return overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", type=Path, default=ROOT / "studies" / "table8_layers.yaml")
    parser.add_argument("--fn", choices=("real", "busy"), default="real")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=60.0, help="busy: seconds per trial")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="threads / CPUs per trial")
    parser.add_argument(
        "--set", action="append", default=[], help="extra base override, e.g. train.stage1_epochs=6"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "harness_overhead.json")
    args = parser.parse_args()

    os.environ["BENCH_SECONDS"] = str(args.seconds)
    work = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    os.environ.setdefault("SAGE_DATA_CACHE", str(work / "synthetic-data"))  # one dataset for both sides
    try:
        study = make_study(args.study, work, args.trials, args.cpus, parse_set(args.set))
        if args.fn == "real":
            from sage_model.experiment import run_experiment as experiment
        else:
            experiment = busy_experiment
        if args.fn == "real":  # build the synthetic dataset before timing either side
            from harness.expand import expand_study
            from harness.spec import load_study

            first = expand_study(load_study(study))[0]
            warm = first.config.model_copy(update={"train": first.config.train.model_copy(
                update={"stage1_epochs": 0, "stage2_epochs": 0})})  # fmt: skip
            experiment(warm, work_dir=work / "warmup")
        direct, direct_each = run_direct(study, experiment, work / "direct", args.cpus)
        harness, harness_each = run_harness(study, experiment, work / "harness")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {
        "fn": args.fn,
        "trials": args.trials,
        "cpus_per_trial": args.cpus,
        "overrides": parse_set(args.set),
        "direct_wall_s": round(direct, 2),
        "harness_wall_s": round(harness, 2),
        "ratio": round(harness / direct, 3),
        "mean_trial_s_direct": round(sum(direct_each) / len(direct_each), 2),
        "mean_trial_s_harness": round(sum(harness_each) / len(harness_each), 2),
        "overhead_s": round(harness - direct, 2),
        "overhead_per_trial_s": round((harness - direct) / args.trials, 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    for key, value in report.items():
        print(f"{key:>22}: {value}")


if __name__ == "__main__":
    main()
