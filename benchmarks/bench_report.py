"""How long `harness report` takes for every committed study's results, at real test-set sizes.

Writes synthetic results through the real ``harness.results.write_result`` (schema 2, per-video
rows) for every trial of every study in ``studies/`` (each variant x dataset x seed, every task
and split a column asks for) with the real test-set sizes (ImageNet-VidVRD 200 test videos,
VidOR 835 validation videos), then times ``harness report --paper-tables`` over all of them, in
one process, the way the CLI runs it. The numbers are noise around a per-variant level; only the
time means anything.

    python benchmarks/bench_report.py [--results DIR] [--formats md,html,csv,tex] [--keep]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from harness.provenance import code_version
from harness.report.paper import load_results, report_meta, resolve_studies, write_paper_tables
from harness.results import ResultRows, TrialRecord, write_result
from harness.spec import StudySpec, load_study
from sage_model.records import Metric, VideoScore

TEST_VIDEOS = {"vidvrd": 200, "vidor": 835}
STUDIES = Path(__file__).resolve().parents[1] / "studies"


def synthesize(results: Path, specs: list[StudySpec]) -> int:
    """Write one result per trial of every study; returns the number of files."""
    rng = np.random.default_rng(0)
    files = 0
    code = code_version()
    for spec in specs:
        cells = {(c.task, c.split) for c in spec.table.columns} if spec.table else {("predcls", "all")}
        for dataset in spec.datasets:
            n = TEST_VIDEOS.get(dataset, 200)
            for k, variant in enumerate(spec.variants):
                for seed in spec.seeds:
                    metrics, videos = _trial(rng, cells, n, level=0.2 + 0.01 * k)
                    record = _record(spec, variant.name, dataset, seed, code)
                    write_result(results, record, ResultRows(metrics, videos))
                    files += 1
    return files


def _trial(
    rng: np.random.Generator, cells: set[tuple[str, str]], n: int, level: float
) -> tuple[list[Metric], list[VideoScore]]:
    metrics: list[Metric] = []
    videos: list[VideoScore] = []
    for task, split in sorted(cells):
        ap = np.clip(rng.beta(2, 5, n) + level - 0.28 + rng.normal(0, 0.1, n), 0, 1)
        n_gt = rng.integers(1, 12, n)
        tp50 = rng.binomial(n_gt, np.clip(ap + 0.1, 0, 1))
        tp100 = np.minimum(n_gt, tp50 + rng.integers(0, 2, n))
        prec = [np.clip(ap + rng.normal(0, 0.1, n), 0, 1) for _ in range(3)]
        videos += [
            VideoScore(task, split, f"v{i:04d}", float(ap[i]), int(tp50[i]), int(tp100[i]), int(n_gt[i]),
                       float(prec[0][i]), float(prec[1][i]), float(prec[2][i]))
            for i in range(n)
        ]  # fmt: skip
        values = {
            "map": ap.mean(),
            "r50": tp50.sum() / n_gt.sum(),
            "r100": tp100.sum() / n_gt.sum(),
            "p1": prec[0].mean(),
            "p5": prec[1].mean(),
            "p10": prec[2].mean(),
        }
        metrics += [Metric(task, split, name, 100 * float(v)) for name, v in values.items()]
        metrics += [Metric(task, "all", "params_m", 55.6), Metric(task, "all", "fps", 100.0)]
    return metrics, videos


def _record(spec: StudySpec, variant: str, dataset: str, seed: int, code: str) -> TrialRecord:
    trial_id = f"{spec.name}-{variant}-{dataset}-s{seed}".replace("/", "_").replace(" ", "_")
    return TrialRecord(
        study=spec.name, study_version=spec.version, trial_id=trial_id, variant=variant, dataset=dataset,
        seed=seed, config_hash="0" * 64, config_json="{}", git_sha="b" * 40, git_dirty=False, packages={},
        hardware="bench", device="cpu", data_hash="d", teacher_hash="t", synthetic=True, wall_s=1.0,
        finished_at="2026-01-01T00:00:00+00:00", mlflow_run_id="", code_version=code,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--results", type=Path, default=None, help="Write results here (default: a temp dir)."
    )
    parser.add_argument("--formats", default="md,html,csv,tex")
    parser.add_argument("--keep", action="store_true", help="Keep the results and reports.")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_report-"))
    results = args.results or work / "results"
    specs = [load_study(p) for p in resolve_studies(None, STUDIES)]
    tic = time.perf_counter()
    files = synthesize(results, specs)
    print(f"wrote {files} result files in {time.perf_counter() - tic:.1f} s under {results}")
    tic, cpu = time.perf_counter(), time.process_time()
    frame, videos = load_results(results, [s.name for s in specs])
    read_s = time.perf_counter() - tic
    meta = report_meta("bench_report", results, "b" * 12, code_version=code_version())
    formats = tuple(args.formats.split(","))
    outcome = write_paper_tables(specs, frame, work / "reports", formats=formats, meta=meta, videos=videos)
    wall, cpu = time.perf_counter() - tic, time.process_time() - cpu
    print(
        f"report of {len(outcome.tables)} studies ({frame.height} metric rows, {videos.height} video rows): "
        f"{wall:.1f} s wall ({read_s:.1f} s reading), {cpu:.1f} s CPU; {len(outcome.files)} files"
    )
    if args.keep:
        print(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
