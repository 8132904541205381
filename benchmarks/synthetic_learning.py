"""Does SAGE learn the embedded synthetic data, and does every component have an effect on it?

    python benchmarks/synthetic_learning.py [--seeds 0 1 2] [--jobs 2] [--variants full shuffled ...]
                                            [--set train.stage1_epochs=20 ...] [--json out.json]

Each variant is one ``run_experiment`` on the default synthetic VidVRD set, one process per trial
(``--jobs`` at a time, one torch thread each), with the default's budget: the synthetic learning
budget (``harness.schedules.SYNTHETIC_BUDGET``, the one place it is written) under the ``base`` of
``studies/table3_components.yaml``, as ``harness run`` layers them; ``--set`` overrides it for
every variant. It prints:

* mAP (percent) per variant, PredCls and SGDet x All and Novel: mean and seed std;
* the effect of each SAGE component = full model minus the ablation, on PredCls All and Novel,
  with a 95 % interval and a p-value from a paired bootstrap over test videos x seeds (both
  resampled), Holm-corrected within each family (Table 3: the four "w/o" rows; Table 4: No MLLM ->
  BLIP-2 -> ASMv2);
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
BOOTSTRAP = 10_000


def nested(overrides: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


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
    from sage_model.config import ExperimentConfig
    from sage_model.experiment import run_experiment

    cfg = ExperimentConfig.model_validate(nested({**overrides, "seed": seed}))
    curve: list[dict[str, float]] = []
    started, cpu = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as work:
        result = run_experiment(cfg, work_dir=Path(work), on_epoch=lambda r: curve.append(epoch_row(r)))
        videos = {
            f"{t}_{s}": video_aps(cfg, work, t, s) for t, s in SCORED if f"{t}_{s}" in result.predictions
        }
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


def video_aps(cfg: Any, work: str, task: str, split: str) -> dict[str, float]:
    """Per-video AP (fraction) of one prediction file: what mAP is the mean of."""
    from sage_model.data import DatasetRoot, ground_truth_relations
    from sage_model.data.vocab import load_vocabulary
    from sage_model.eval import evaluate_relations
    from sage_model.experiment import ensure_default_root, synthetic_cache

    data = cfg.data
    root = DatasetRoot.open(ensure_default_root(data, data.dataset, synthetic_cache(Path(work))))
    gt = ground_truth_relations(root.annotations("test"))
    preds = json.loads((Path(work) / f"predictions_{task}_{split}.json").read_text(encoding="utf-8"))
    novel = set(load_vocabulary(data.dataset).novel_predicates) if split == "novel" else None
    return dict(evaluate_relations(gt, preds, novel_predicates=novel).video_ap)


# ------------------------------------------------------------------------------------ statistics
def paired_units(results: list[dict[str, Any]], a: str, b: str, key: str) -> np.ndarray:
    """(S, V) differences a - b of per-video AP (percent), seeds x videos both were scored on."""
    by = {(r["variant"], r["seed"]): r["video_ap"].get(key, {}) for r in results}
    seeds = sorted({s for v, s in by if v == a} & {s for v, s in by if v == b})
    videos = sorted(set.intersection(*[set(by[(v, s)]) for v in (a, b) for s in seeds])) if seeds else []
    return np.array([[100 * (by[(a, s)][vid] - by[(b, s)][vid]) for vid in videos] for s in seeds])


def paired_bootstrap(
    diff: np.ndarray, rng: np.random.Generator, n: int = BOOTSTRAP
) -> tuple[float, float, float, float]:
    """(mean, CI low, CI high, two-sided p) of the mean difference, resampling seeds and videos.

    Seeds and videos are drawn with replacement independently (a two-way bootstrap: both are
    samples, of training runs and of test videos). p = twice the smaller tail of the bootstrap
    distribution beyond 0, at least 1/n.
    """
    s, v = diff.shape
    rows = rng.integers(0, s, size=(n, s))
    cols = rng.integers(0, v, size=(n, v))
    means = np.array([diff[np.ix_(r, c)].mean() for r, c in zip(rows, cols, strict=True)])
    low, high = np.percentile(means, [2.5, 97.5])
    p = 2 * min((means <= 0).mean(), (means >= 0).mean())
    return float(diff.mean()), float(low), float(high), float(min(1.0, max(p, 1.0 / n)))


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given)."""
    order = np.argsort(pvalues)
    adjusted = np.empty(len(pvalues))
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted.tolist()


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
    rng = np.random.default_rng(0)
    out = []
    for family, pairs in FAMILIES.items():
        for task, split in EFFECT_SCORES:
            key = f"{task}_{split}"
            rows = []
            for a, b in pairs:
                if a in variants and b in variants:
                    diff = paired_units(results, a, b, key)
                    if diff.size:
                        rows.append((a, b, diff.shape, *paired_bootstrap(diff, rng)))
            if not rows:
                continue
            print(f"\n{family}, {key} mAP: effect = first minus second (percent points), paired bootstrap")
            for (a, b, shape, mean, low, high, p), p_holm in zip(
                rows, holm([r[-1] for r in rows]), strict=True
            ):
                print(
                    f"  {a:>8s} - {b:<10s} {mean:+6.2f}  95% CI [{low:+6.2f}, {high:+6.2f}]  "
                    f"p {p:.4f}  Holm p {p_holm:.4f}  ({shape[0]} seeds x {shape[1]} videos)"
                )
                out.append({"family": family, "score": key, "better": a, "worse": b, "mean": mean,
                            "ci": [low, high], "p": p, "p_holm": p_holm, "seeds": shape[0], "videos": shape[1]})  # fmt: skip
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
        base = {**budget(), **parse_set(args.set)}
        variants = args.variants
        from sage_model.config import ExperimentConfig
        from sage_model.experiment import ensure_default_root

        data = ExperimentConfig.model_validate(nested(base)).data  # generated once, before the workers
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
