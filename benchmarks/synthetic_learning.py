"""Does SAGE learn the embedded synthetic data, and does every component have an effect on it?

    python benchmarks/synthetic_learning.py [--seeds 0 1 2] [--jobs 2] [--variants full shuffled ...]
                                            [--set train.stage1_epochs=10 ...] [--json out.json]

Each variant is one ``run_experiment`` on the default synthetic VidVRD set, one process per trial
(``--jobs`` at a time, one torch thread each), with the default's budget: the synthetic learning
budget (``harness.schedules.SYNTHETIC_BUDGET``, the one place it is written) under the ``base`` of
``studies/table3_components.yaml``, as ``harness run`` layers them; ``--set`` overrides it for
every variant. It prints:

* mAP (percent) per variant, PredCls and SGDet x All and Novel: mean and seed std;
* the effect of each SAGE component = full model minus the ablation, on PredCls All and Novel,
  with a 95 % interval and a p-value from the report's paired test (``harness.report.stats``: a
  bootstrap over test videos for the video part plus the pooled between-seed variance: the same
  estimator and video resamples as ``harness report``; the seed variance is pooled over the family
  and Holm runs within each family (Table 3: the four "w/o" rows; Table 4: No MLLM -> BLIP-2 ->
  ASMv2), where the report pools and corrects over every cell of a table, so its p-values are
  stricter);
* the shuffled-label control and the full model's ratio to it;
* the learning curve of the budget: validation PredCls mAP per epoch of the full model (mean of seeds).

The numbers say whether the pipeline learns and what each component adds on this data; they are
not comparable to the paper's (docs/data.md, section 8, explains the generator and its channels).
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

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BUDGET_STUDY = REPO / "studies" / "table3_components.yaml"
VARIANTS: dict[str, dict[str, Any]] = {
    "full": {},
    "shuffled": {"train.shuffle_labels": True},
    "wo_spa": {"model.spatio_temporal.spatial": "linear"},
    "wo_tem": {"model.spatio_temporal.temporal": "linear"},
    "wo_se": {"model.semantic.fusion": "none"},
    "wo_ce": {"model.prompt.strategy": "none"},
    "image_cond": {"model.prompt.strategy": "image_cond"},
    "blip2": {"data.teacher": "blip2"},
    "no_mllm": {"data.teacher": "none", "model.semantic.fusion": "none"},
}
DEFAULT_VARIANTS = ["full", "shuffled", "wo_spa", "wo_tem", "wo_se", "wo_ce", "blip2"]
# (better, worse) pairs whose difference is one effect; a family is Holm-corrected together.
FAMILIES: dict[str, list[tuple[str, str]]] = {
    "Table 3 (component removed)": [
        ("full", "wo_spa"),
        ("full", "wo_tem"),
        ("full", "wo_se"),
        ("full", "wo_ce"),
    ],
    "Table 4 (teacher)": [("blip2", "no_mllm"), ("full", "blip2")],
    "Table 5 (prompt strategy)": [("full", "image_cond")],
}
SCORED = [("predcls", "all"), ("predcls", "novel"), ("sgdet", "all"), ("sgdet", "novel")]
EFFECT_SCORES = [("predcls", "all"), ("predcls", "novel")]


def experiment_config(overrides: dict[str, Any]) -> Any:
    """The trial's config: ``overrides`` (dotted paths) over the defaults, as the harness applies
    them (a bad path or value is named)."""
    from harness.configs import apply_overrides
    from sage_model.config import ExperimentConfig

    return apply_overrides(ExperimentConfig(), overrides)


def budget() -> dict[str, Any]:
    """The default training budget: ``SYNTHETIC_BUDGET`` beneath the component study's ``base``."""
    import yaml

    from harness.schedules import SYNTHETIC_BUDGET

    base = yaml.safe_load(BUDGET_STUDY.read_text(encoding="utf-8"))["base"] or {}
    return {**SYNTHETIC_BUDGET, **base}


def run_trial(args: tuple[str, int, dict[str, Any], str]) -> dict[str, Any]:
    """One trial in a fresh process (one torch thread): metrics, per-video APs, validation curve."""
    variant, seed, overrides, cache = args
    os.environ["SAGE_DATA_CACHE"] = cache
    import torch

    torch.set_num_threads(1)
    from sage_model.experiment import run_experiment

    cfg = experiment_config({**overrides, "seed": seed})
    curve: list[dict[str, float]] = []
    started, cpu = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as work:
        result = run_experiment(cfg, work_dir=Path(work), on_epoch=lambda r: curve.append(epoch_row(r)))
    videos = video_aps(result.videos)
    return {
        "variant": variant,
        "seed": seed,
        "metrics": {f"{m.task}_{m.split}_{m.name}": m.value for m in result.metrics},
        "video_ap": videos,
        "curve": curve,
        "wall_s": time.perf_counter() - started,
        "cpu_s": time.process_time() - cpu,
    }


def epoch_row(report: Any) -> dict[str, float]:
    metrics = report.metrics
    return {
        "stage": report.stage,
        "epoch": report.epoch,
        "loss": metrics.get("train/loss", float("nan")),
        "val_all": metrics.get("val/predcls_all_map", float("nan")),
        "val_novel": metrics.get("val/predcls_novel_map", float("nan")),
    }


def video_aps(scores: Any) -> dict[str, dict[str, float]]:
    """``{task_split: {video: AP (fraction)}}`` from the trial's own per-video parts
    (``ExperimentResult.videos``, what the report resamples): what each mAP is the mean of."""
    out: dict[str, dict[str, float]] = {}
    for score in scores:
        if (score.task, score.split) in SCORED:
            out.setdefault(f"{score.task}_{score.split}", {})[score.video_id] = score.ap
    return out


# ------------------------------------------------------------------------------------ statistics
def column(results: list[dict[str, Any]], variants: list[str], key: str) -> Any:
    """The per-video APs of ``key`` as the report's ``ColumnData`` (variants x seeds x videos)."""
    from harness.report.stats import ColumnData

    seeds = sorted({r["seed"] for r in results})
    videos = sorted({v for r in results for v in r["video_ap"].get(key, {})})
    shape = (len(variants), len(seeds), len(videos))
    num, present = np.zeros(shape), np.zeros(shape, dtype=bool)
    for r in results:
        k, s = variants.index(r["variant"]), seeds.index(r["seed"])
        for video, ap in r["video_ap"].get(key, {}).items():
            num[k, s, videos.index(video)] = ap  # a fraction: the metric is 100 * mean over videos
            present[k, s, videos.index(video)] = True
    return ColumnData(num, np.ones(shape), present)


def family_effects(
    results: list[dict[str, Any]], variants: list[str], key: str, pairs: list[tuple[str, str]]
) -> list[dict[str, Any]]:
    """Each (better, worse) pair's paired difference with the report's estimator, Holm over the pairs."""
    from harness.report.stats import holm, pair_differences, video_weights

    data = column(results, variants, key)
    if data.n_videos == 0:
        return []
    index = [(variants.index(a), variants.index(b)) for a, b in pairs]
    found = pair_differences(data, index, video_weights(data.n_videos))
    kept = [(pair, found[i]) for pair, i in zip(pairs, index, strict=True) if found[i] is not None]
    adjusted = holm([d.p_value for _, d in kept])
    return [
        {"better": a, "worse": b, "mean": d.value, "ci": [d.low, d.high], "se": d.se, "p": d.p_value,
         "p_holm": p_holm, "seeds": d.n_seeds, "videos": d.n_videos, "seed_part": d.seed_part}  # fmt: skip
        for ((a, b), d), p_holm in zip(kept, adjusted, strict=True)
    ]


# ---------------------------------------------------------------------------------------- output
def print_table(results: list[dict[str, Any]], variants: list[str]) -> None:
    keys = [f"{t}_{s}_map" for t, s in SCORED]
    print(f"{'variant':11s} " + " ".join(f"{k:>20s}" for k in keys) + f" {'cpu_s':>7s} {'wall_s':>7s}")
    for variant in variants:
        rows = [r for r in results if r["variant"] == variant]
        cells = []
        for key in keys:
            values = [r["metrics"][key] for r in rows if key in r["metrics"]]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):8.2f} +- {std:5.2f}  " if values else f"{'-':>20s}")
        cpu = statistics.mean(r["cpu_s"] for r in rows)
        wall = statistics.mean(r["wall_s"] for r in rows)
        print(f"{variant:11s} " + " ".join(cells) + f" {cpu:7.1f} {wall:7.1f}")


def print_effects(results: list[dict[str, Any]], variants: list[str]) -> list[dict[str, Any]]:
    out = []
    for family, pairs in FAMILIES.items():
        present = [(a, b) for a, b in pairs if a in variants and b in variants]
        for task, split in EFFECT_SCORES:
            key = f"{task}_{split}"
            rows = family_effects(results, variants, key, present) if present else []
            if not rows:
                continue
            print(f"\n{family}, {key} mAP: effect = first minus second (percent points), the report's paired test")
            for row in rows:
                seeds = "" if row["seed_part"] else ", videos only (one seed)"
                print(
                    f"  {row['better']:>8s} - {row['worse']:<10s} {row['mean']:+6.2f}  95% CI [{row['ci'][0]:+6.2f}, "
                    f"{row['ci'][1]:+6.2f}]  SE {row['se']:.2f}  p {row['p']:.4f}  Holm p {row['p_holm']:.4f}  "
                    f"({row['seeds']} seeds x {row['videos']} videos{seeds})"
                )
                out.append({"family": family, "score": key, **row})
    return out


def print_control(results: list[dict[str, Any]]) -> None:
    for key in ("predcls_all_map", "predcls_novel_map"):
        full = [r["metrics"][key] for r in results if r["variant"] == "full" and key in r["metrics"]]
        ctrl = [r["metrics"][key] for r in results if r["variant"] == "shuffled" and key in r["metrics"]]
        if full and ctrl:
            ratio = statistics.mean(full) / max(statistics.mean(ctrl), 1e-9)
            print(f"control {key}: full {statistics.mean(full):.2f} vs shuffled labels "
                  f"{statistics.mean(ctrl):.2f} -> {ratio:.1f}x")  # fmt: skip


def print_curve(results: list[dict[str, Any]]) -> None:
    curves = [r["curve"] for r in results if r["variant"] == "full" and r["curve"]]
    if not curves:
        return
    print("\nlearning curve of the full model (validation PredCls mAP, mean of seeds)")
    print(f"{'stage':>5s} {'epoch':>5s} {'loss':>7s} {'val all':>8s} {'val novel':>9s}")
    for i in range(min(len(c) for c in curves)):
        rows = [c[i] for c in curves]
        mean = {k: float(np.nanmean([r[k] for r in rows])) for k in ("loss", "val_all", "val_novel")}
        print(
            f"{rows[0]['stage']:5d} {rows[0]['epoch']:5d} {mean['loss']:7.3f} {mean['val_all']:8.2f} {mean['val_novel']:9.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    parser.add_argument("--set", nargs="*", default=[], help="dotted=value overrides for every variant")
    parser.add_argument(
        "--cache", default=os.environ.get("SAGE_DATA_CACHE", str(Path(tempfile.gettempdir()) / "sage_data"))
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--load", type=Path, default=None, help="print the numbers of a previous --json run")
    args = parser.parse_args()
    if args.load is not None:
        saved = json.loads(args.load.read_text(encoding="utf-8"))
        base, results, variants = saved["base"], saved["results"], saved["variants"]
    else:
        from harness.cli.run import parse_sets

        base = {**budget(), **dict(parse_sets(args.set))}
        variants = args.variants
        from sage_model.experiment import ensure_default_root

        data = experiment_config(base).data  # generated once, before the workers
        ensure_default_root(data, data.dataset, Path(args.cache))
        jobs = [(v, s, {**base, **VARIANTS[v]}, args.cache) for v in variants for s in args.seeds]
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            results = list(pool.map(run_trial, jobs))
    print(f"budget: {json.dumps(base)}; mAP in percent (mean +- seed std)")
    print_table(results, variants)
    print_control(results)
    effects = print_effects(results, variants)
    print_curve(results)
    if args.json is not None:
        args.json.write_text(json.dumps({"base": base, "variants": variants, "results": results,
                                         "effects": effects}, indent=1))  # fmt: skip
    sys.stdout.flush()


if __name__ == "__main__":
    main()
