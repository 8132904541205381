"""Does the report call a real, large difference significant? Ours vs shuffled training labels.

Runs (or reuses) a two-variant study on the embedded default: SAGE as configured, and the same
model trained with ``train.shuffle_labels: true`` (targets permuted across training pairs: the
model can learn nothing about relations). Then builds the paper table and prints each column's
paired difference Shuffled - Ours with its 95% interval and Holm p-value. Exit 1 unless every
mAP/recall column is significantly worse for the shuffled model (the issue #15 acceptance check).

Too slow for the test suite (6 real trials; ~1-2 CPU minutes each on the default, much longer on
a loaded machine), hence a benchmark:

    python benchmarks/significance_check.py [--work DIR] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

STUDY = """\
name: sigcheck
version: 1
description: "Ours vs the same model trained on shuffled labels (significance check)"
base:
  train.stage1_epochs: 2
  train.stage2_epochs: 2
variants:
  - name: "Shuffled"
    overrides: {{train.shuffle_labels: true}}
  - name: "Ours"
    overrides: {{}}
seeds: {seeds}
datasets: [vidvrd]
table:
  paper: "significance check"
  columns:
    - {{name: novel_sgdet, split: novel, task: sgdet, metric: map}}
    - {{name: novel_predcls, split: novel, task: predcls, metric: map}}
    - {{name: all_sgdet, split: all, task: sgdet, metric: map}}
    - {{name: all_predcls, split: all, task: predcls, metric: map}}
    - {{name: all_predcls_r50, split: all, task: predcls, metric: r50}}
  headline: [all_predcls]
  tolerance: 1.0
  min_seeds: 2
"""


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path("runs/significance_check"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    from harness.report.paper import load_results
    from harness.report.tables import build_paper_table
    from harness.runner import RunOptions, run_study
    from harness.spec import load_study

    args.work.mkdir(parents=True, exist_ok=True)
    study = args.work / "sigcheck.yaml"
    study.write_text(STUDY.format(seeds=list(args.seeds)))
    results = args.work / "results"
    tic = time.perf_counter()
    outcome = run_study(study, RunOptions(run_dir=args.work / "runs", results_dir=results))
    print(f"run: {len(outcome.trials)} trial(s), exit {outcome.exit_code}, {time.perf_counter() - tic:.0f} s")
    frame, videos = load_results(results, ["sigcheck"])
    table = build_paper_table(frame, load_study(study), videos)
    ok = True
    for row in table.rows:
        for cell in row.cells:
            d = cell.vs_baseline
            if row.variant == table.baseline or d is None:
                continue
            ours = next(
                c
                for r in table.rows
                if r.variant == table.baseline
                for c in r.cells
                if c.column == cell.column
            )
            print(
                f"{cell.column:18s} Ours {ours.ours.mean if ours.ours else float('nan'):6.2f}  "
                f"Shuffled {cell.ours.mean if cell.ours else float('nan'):6.2f}  "
                f"diff {d.value:+6.2f} [{d.low:+.2f}, {d.high:+.2f}]  {d.n_seeds}x{d.n_videos}  "
                f"p {d.p_value:.2g}  Holm {d.p_holm:.2g}  {'significant' if d.significant else 'NOT significant'}"
            )
            ok &= d.significant and d.value < 0
    print("PASS: every column significantly worse with shuffled labels" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
