"""Training samples/s and inference pairs/s of SAGE, for ``sage_tiny`` and ``sage_vitb16``.

    python benchmarks/bench_model.py [--presets sage_tiny sage_vitb16] [--device cpu cuda] [--threads 1]
                                     [--steps 10] [--json PATH]

Random weights (the ViT-B/16 architecture built by open_clip without a checkpoint) and random
inputs of the feature store's shapes (T = 3 keyframes, D = the CLIP embed dim, VidVRD's 132
predicates / 71 base, 35 objects); timing does not need trained weights. Measured per preset and
device:

* ``train_stage1`` / ``train_stage2``: samples/s of full optimiser steps (forward, backward, AdamW)
  at ``--batch`` pairs. A stage-2 step costs one text-encoder pass over the 71 base predicates
  whatever the batch size.
* ``infer_class_aware``: pairs/s of the full model at inference, all 132 predicates, with the
  classifier cached (computed once per vocabulary; its one-off cost is printed as ``classifier_s``).
* ``infer_image_cond``: pairs/s when every pair needs its own text pass (Table 10's baseline).

CUDA runs use bf16 autocast as training does. Every number is printed with its device.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from sage_model.clip import build_tiny_clip, build_vitb16_random
from sage_model.config import ModelConfig, PromptConfig
from sage_model.data import load_vocabulary
from sage_model.model.sage import SageModel, build_model
from sage_model.train.trainer import TrainingVocabulary, autocast, batch_loss

T = 3


def random_batch(
    n: int, dim: int, n_predicates: int, device: torch.device, seed: int = 0
) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    corners = torch.rand(n, T, 2, 2, 2, generator=g).sort(dim=2).values
    batch = {
        "visual": torch.randn(n, T, 4, dim, generator=g),
        "boxes": corners.permute(0, 1, 2, 4, 3).reshape(n, T, 2, 4)[..., [0, 2, 1, 3]],
        "teacher": torch.randn(n, T, 4, dim, generator=g),
        "labels": (torch.rand(n, n_predicates, generator=g) < 0.01).float(),
        "subject_class": torch.randint(0, 35, (n,), generator=g),
        "object_class": torch.randint(0, 35, (n,), generator=g),
    }
    return {k: v.to(device) for k, v in batch.items()}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_training(model: SageModel, stage: int, batch: dict, steps: int, device: torch.device) -> float:
    vocab = TrainingVocabulary.from_counts(71, 25, 35)
    vocab = TrainingVocabulary(
        *(t.to(device) for t in (vocab.base_predicates, vocab.base_objects, vocab.object_target))
    )
    model.set_stage(stage)
    model.train()
    optimizer = torch.optim.AdamW(model.stage_parameters(), lr=1e-3)

    def step() -> None:
        with autocast(device, True):
            terms = batch_loss(model, batch, vocab)
        optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        optimizer.step()

    step()  # warm-up
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps * batch["labels"].shape[0] / (time.perf_counter() - start)


@torch.no_grad()
def time_inference(model: SageModel, batch: dict, repeats: int, device: torch.device) -> tuple[float, float]:
    """(pairs/s with the classifier in place, seconds of the first pass's classifier)."""
    model.set_stage(2)
    model.eval()
    preds, objs = torch.arange(132, device=device), torch.arange(35, device=device)
    sync(device)
    start = time.perf_counter()
    with autocast(device, True):
        model.classifier(preds, model.encode_pairs(batch)[0])
    sync(device)
    classifier_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(repeats):
        with autocast(device, True):
            model(batch, preds, objs)
    sync(device)
    return repeats * batch["labels"].shape[0] / (time.perf_counter() - start), classifier_s


def bench(preset: str, device: torch.device, steps: int, batch_size: int) -> list[dict[str, Any]]:
    clip = build_tiny_clip() if preset == "sage_tiny" else build_vitb16_random()
    dim = int(clip.text_projection.shape[-1])
    vocab = load_vocabulary("vidvrd")
    rows = []
    for strategy in ("class_aware", "image_cond"):
        torch.manual_seed(0)
        cfg = ModelConfig(preset=preset, prompt=PromptConfig(strategy=strategy))  # type: ignore[arg-type]
        model = build_model(cfg, vocab, dim, teacher_dim=dim, frames=T, clip=clip).to(device)
        params_m = model.parameter_count() / 1e6
        batch = random_batch(batch_size, dim, 132, device)
        if strategy == "class_aware":
            for stage in (1, 2):
                sps = time_training(model, stage, batch, steps, device)
                rows.append(
                    row(preset, device, f"train_stage{stage}", "samples/s", sps, batch_size, params_m)
                )
            pps, clf_s = time_inference(model, random_batch(256, dim, 132, device, 1), max(steps, 3), device)
            rows.append(
                row(preset, device, "infer_class_aware", "pairs/s", pps, 256, params_m, classifier_s=clf_s)
            )
        else:
            small = 4 if device.type == "cpu" else 64
            pps, _ = time_inference(model, random_batch(small, dim, 132, device, 2), 2, device)
            rows.append(row(preset, device, "infer_image_cond", "pairs/s", pps, small, params_m))
    return rows


def row(
    preset: str,
    device: torch.device,
    what: str,
    unit: str,
    value: float,
    batch: int,
    params_m: float,
    **extra: float,
) -> dict[str, Any]:
    out = {"preset": preset, "device": device_name(device), "what": what, "unit": unit, "value": value,
           "batch": batch, "params_m": params_m, **extra}  # fmt: skip
    once = f"  classifier once: {extra['classifier_s']:.3f}s" if "classifier_s" in extra else ""
    print(f"{preset:12s} {what:18s} {value:10.1f} {unit:9s} batch {batch:4d}  params {params_m:6.1f}M  "
          f"{out['device']}{once}", flush=True)  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", nargs="+", default=["sage_tiny", "sage_vitb16"])
    parser.add_argument("--device", nargs="+", default=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.device:
        if name == "cuda" and not torch.cuda.is_available():
            print("cuda: not available on this machine, skipped")
            continue
        for preset in args.presets:
            steps = args.steps if not (preset == "sage_vitb16" and name == "cpu") else max(2, args.steps // 5)
            rows += bench(preset, torch.device(name), steps, args.batch)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
