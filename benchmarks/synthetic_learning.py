"""Does SAGE learn on the embedded synthetic data? Full model vs a shuffled-label control vs Table 3.

    python benchmarks/synthetic_learning.py [--seeds 0 1] [--jobs 2] [--set train.stage1_epochs=8 ...]
                                            [--variants full shuffled wo_spa wo_tem wo_se wo_ce]

Each variant is one ``run_experiment`` on the default synthetic VidVRD set (24 videos per split),
one process per trial (``--jobs`` at a time, one torch thread each). ``--set`` overrides apply to
every variant (dotted paths, JSON values). Prints mAP (percent) for PredCls/SGDet x All/Novel,
mean over seeds, and each trial's CPU seconds; ``--json PATH`` also writes every number.

The synthetic numbers say whether the pipeline learns and how the switches move it on this data;
they are not comparable to the paper's (docs/data.md explains the generator).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

VARIANTS: dict[str, dict[str, Any]] = {
    "full": {},
    "shuffled": {"train.shuffle_labels": True},
    "wo_spa": {"model.spatio_temporal.spatial": "linear"},
    "wo_tem": {"model.spatio_temporal.temporal": "linear"},
    "wo_se": {"model.semantic.fusion": "none"},
    "wo_ce": {"model.prompt.strategy": "none"},
}
# What the studies' `base` should set for the embedded synthetic default (see docs/model.md).
SYNTHETIC_BASE: dict[str, Any] = {
    "train.stage1_epochs": 8,
    "train.stage2_epochs": 2,
    "train.stage2_batch_size": 128,
}


def nested(overrides: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def run_trial(args: tuple[str, int, dict[str, Any], str]) -> dict[str, Any]:
    """One trial in a fresh process (one torch thread)."""
    variant, seed, overrides, cache = args
    os.environ["SAGE_DATA_CACHE"] = cache
    import torch

    torch.set_num_threads(1)
    from sage_model.config import ExperimentConfig
    from sage_model.experiment import run_experiment

    cfg = ExperimentConfig.model_validate(nested({**overrides, "seed": seed}))
    started, cpu = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as work:
        result = run_experiment(cfg, work_dir=Path(work))
    metrics = {f"{m.task}_{m.split}_{m.name}": m.value for m in result.metrics}
    return {
        "variant": variant,
        "seed": seed,
        "metrics": metrics,
        "wall_s": time.perf_counter() - started,
        "cpu_s": time.process_time() - cpu,
    }


def parse_set(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, _, raw = item.partition("=")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--set", nargs="*", default=[], help="dotted=value overrides for every variant")
    parser.add_argument(
        "--cache", default=os.environ.get("SAGE_DATA_CACHE", str(Path(tempfile.gettempdir()) / "sage_data"))
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    base = {**SYNTHETIC_BASE, **parse_set(args.set)}
    # Generate the dataset once before the workers start.
    from sage_model.config import DataConfig
    from sage_model.data import ensure_synthetic, synthetic_root_name

    data = DataConfig()
    ensure_synthetic(data.dataset, Path(args.cache) / synthetic_root_name(data.dataset, data.synthetic_videos,
                     data.synthetic_seed), data.synthetic_videos, data.synthetic_seed)  # fmt: skip
    jobs = [(v, s, {**base, **VARIANTS[v]}, args.cache) for v in args.variants for s in args.seeds]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(run_trial, jobs))
    columns = ["predcls_all_map", "predcls_novel_map", "sgdet_all_map", "sgdet_novel_map"]
    print(f"base: {json.dumps(base)}; seeds {args.seeds}; mAP in percent, mean over seeds")
    print(f"{'variant':10s} " + " ".join(f"{c:>18s}" for c in columns) + f" {'cpu_s':>7s} {'wall_s':>7s}")
    for variant in args.variants:
        rows = [r for r in results if r["variant"] == variant]
        cells = [statistics.mean(r["metrics"][c] for r in rows) for c in columns]
        cpu = statistics.mean(r["cpu_s"] for r in rows)
        wall = statistics.mean(r["wall_s"] for r in rows)
        print(f"{variant:10s} " + " ".join(f"{v:18.2f}" for v in cells) + f" {cpu:7.1f} {wall:7.1f}")
    if args.json is not None:
        args.json.write_text(json.dumps({"base": base, "results": results}, indent=1))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
