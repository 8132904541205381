"""Throughput and peak memory of every model variant of the studies at the paper's shapes.

    python benchmarks/bench_gpu.py --clip-checkpoint CKPT [--studies studies/*.yaml] [--json OUT]

sage_vitb16 with the given (random) ViT-B/16 weights, VidVRD's vocabulary, 512-d features, the
paper schedule's batch 32, bf16 autocast on CUDA. For each distinct model of the studies'
variants (``sage_model.cost.measure``): stage-1 and stage-2 training samples/s, inference pairs/s
(class-aware: classifier cached; Image-Cond: a text pass per pair), and the peak GPU memory of a
training step of each stage (``torch.cuda.max_memory_allocated``; on a CPU the fake-tensor
count). Then Table 10's FPS ratio Ours / Image-Cond from the inference rates. Every line names
the device. Meant for ``benchmarks/gpu_check.sh``; runs on a CPU too (slowly) to check itself.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from harness.estimate import CostTable, DataSizes
from harness.expand import expand_study
from harness.schedules import schedule_overrides
from harness.spec import load_study

ROOT = Path(__file__).resolve().parents[1]
PAPER_DATA = DataSizes(train=0, val=0, test={}, feature_dim=512, teacher_dim=512, source="paper shapes")


def variant_models(studies: list[Path], checkpoint: Path) -> dict[str, tuple[str, object]]:
    """First trial of every distinct model: ``{label: (shape key, config)}`` in study order."""
    env = {"model.preset": "sage_vitb16", "model.clip_checkpoint": checkpoint.resolve()}
    seen: dict[str, tuple[str, object]] = {}
    keys: set[str] = set()
    for path in studies:
        spec = load_study(path)
        trials = expand_study(
            spec, env_overrides=env, schedule_name="paper", schedule_overrides=schedule_overrides("paper")
        )
        for trial in trials:
            cfg = trial.config
            key = json.dumps([cfg.model.model_dump(mode="json"), cfg.data.dataset], sort_keys=True)
            if key not in keys:
                keys.add(key)
                seen[f"{spec.name} · {trial.variant} · {trial.dataset}"] = (key, cfg)
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clip-checkpoint", type=Path, required=True)
    parser.add_argument("--studies", type=Path, nargs="+", default=sorted((ROOT / "studies").glob("*.yaml")))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    table = CostTable(args.threads)
    rows = []
    print(f"{'model':58s} {'stage1/s':>9} {'stage2/s':>9} {'pairs/s':>9} {'peak GiB':>9}  device")
    for label, (_, cfg) in variant_models(args.studies, args.clip_checkpoint).items():
        costs = table.costs(cfg, PAPER_DATA)  # type: ignore[arg-type]
        row = {
            "model": label,
            "strategy": cfg.model.prompt.strategy,  # type: ignore[attr-defined]
            "stage1_samples_per_s": costs.batch / costs.stage1_s if costs.stage1_s else None,
            "stage2_samples_per_s": costs.stage2_batch / costs.stage2_s if costs.stage2_s else None,
            "infer_pairs_per_s": 1.0 / costs.infer_pair_s,
            "peak_gib": costs.peak_mb / 1024,
            "peak_source": costs.peak_source,
            "batch": costs.batch,
            "device": costs.device,
        }
        rows.append(row)
        s2 = f"{row['stage2_samples_per_s']:9.1f}" if row["stage2_samples_per_s"] else f"{'-':>9}"
        print(f"{label[:58]:58s} {row['stage1_samples_per_s']:9.1f} {s2} {row['infer_pairs_per_s']:9.1f} "
              f"{row['peak_gib']:9.2f}  {costs.device} ({costs.peak_source})", flush=True)  # fmt: skip
    table10 = {
        r["strategy"]: r["infer_pairs_per_s"] for r in rows if r["model"].startswith("table10_efficiency")
    }
    if {"class_aware", "image_cond"} <= set(table10):
        ratio = table10["class_aware"] / table10["image_cond"]
        print(
            f"Table 10 FPS ratio Ours / Image-Cond (inference pairs/s): {ratio:.1f} (paper: 139.24 / 5.79 = 24.0)"
        )
        rows.append({"model": "table10_fps_ratio", "value": ratio})
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))
    if torch.cuda.is_available():
        print(f"max memory allocated in this process: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
