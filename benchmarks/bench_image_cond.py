"""Image-Cond's text passes: the shared prefix computed once per pair vs every class prompt whole.

    python benchmarks/bench_image_cond.py [--pairs 32] [--repeats 3] [--threads 1]

Builds the default model (tiny CLIP, VidVRD vocabulary) with ``model.prompt.strategy:
image_cond`` and times, side by side in one process, the classifier of ``--pairs`` pairs

* at inference over every predicate (132), as the test evaluation does;
* in training over the base predicates (71), forward + backward, as stage 2 does;

once through :class:`sage_model.model.prompts.ImageCondPrompt` (the prefix of [SOS] and the
context before the class name computed once per pair) and once with every class prompt run whole
(the CoCoOp way, the code before the change). Best of ``--repeats``; prints pairs per second and
the ratio, and the largest difference between the two classifiers.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from sage_model.clip import build_tiny_clip
from sage_model.config import ModelConfig, PromptConfig
from sage_model.data import load_vocabulary
from sage_model.model.prompts import CPU_SLICE_ROWS, ImageCondPrompt
from sage_model.model.sage import build_model


def whole_prompts(prompt: ImageCondPrompt, enc, classes: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """Every class prompt of every pair through the whole text tower: (B, C, E)."""
    bias = prompt.meta_net(torch.nn.functional.normalize(visual, dim=-1))
    x = prompt.context.assemble(classes, prompt.context.vectors.unsqueeze(0) + bias.unsqueeze(1))
    batch, n_cls, length, width = x.shape
    x = enc.add_positions(x.reshape(batch * n_cls, length, width))
    x = enc.run_blocks_in_slices(x, 0, enc.n_layers, CPU_SLICE_ROWS)
    return enc.finish(x, prompt.context.eos_index[classes].repeat(batch)).reshape(batch, n_cls, -1)


def best_of(fn: Callable[[], None], repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    vocab = load_vocabulary("vidvrd")
    cfg = ModelConfig(prompt=PromptConfig(strategy="image_cond"))
    model = build_model(cfg, vocab, 64, teacher_dim=64, frames=3, clip=build_tiny_clip())
    model.set_stage(2)
    prompt, enc = model.prompt, model.text_encoder
    assert isinstance(prompt, ImageCondPrompt)
    visual = torch.randn(args.pairs, prompt.meta_net[0].in_features)
    every = torch.arange(len(vocab.predicates))
    base = torch.arange(len(vocab.base_predicates))
    with torch.no_grad():
        diff = (prompt(enc, every, visual) - whole_prompts(prompt, enc, every, visual)).abs().max().item()

    def infer(shared: bool) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                prompt(enc, every, visual) if shared else whole_prompts(prompt, enc, every, visual)

        return run

    def train(shared: bool) -> Callable[[], None]:
        def run() -> None:
            out = prompt(enc, base, visual) if shared else whole_prompts(prompt, enc, base, visual)
            out.square().sum().backward()

        return run

    print(
        f"SYNTHETIC default shapes (tiny CLIP), {args.pairs} pairs, {args.threads} thread(s); "
        f"largest |difference| of the classifiers {diff:.2e}"
    )
    for name, make, n_cls in (("inference", infer, len(every)), ("training", train, len(base))):
        old = best_of(make(False), args.repeats)
        new = best_of(make(True), args.repeats)
        print(
            f"{name} ({n_cls} classes): whole prompts {args.pairs / old:.1f} pairs/s, "
            f"shared prefix {args.pairs / new:.1f} pairs/s: {old / new:.2f}x"
        )


if __name__ == "__main__":
    main()
