"""image_cond's text tower on the CPU: one pass over every (pair x class) sequence vs slices.

    python benchmarks/bench_text_slices.py [--pairs 256] [--rows 0 256 1024] [--repeats 2]

ImageCondPrompt over VidVRD's 132 predicates for ``--pairs`` random pair features (tiny CLIP, one
torch thread), with ``sage_model.model.prompts.CPU_SLICE_ROWS`` set to each ``--rows`` in turn
(0 = no slicing), alternating ``--repeats`` times so that both see the same machine. Prints
pairs/s per setting and the ratio to no slicing.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

import sage_model.model.prompts as prompts
from sage_model.clip import build_tiny_clip
from sage_model.config import PromptConfig
from sage_model.data import load_vocabulary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--rows", type=int, nargs="+", default=[0, 256, 1024])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    encoder = prompts.LayerwiseTextEncoder(build_tiny_clip())
    names = list(load_vocabulary("vidvrd").predicates)
    prompt = prompts.ImageCondPrompt(PromptConfig(strategy="image_cond"), encoder, names, 256)
    classes = torch.arange(len(names))
    visual = torch.randn(args.pairs, 256, generator=torch.Generator().manual_seed(0))  # (B, V)
    seen: dict[int, list[float]] = {rows: [] for rows in args.rows}
    with torch.no_grad():
        prompt(encoder, classes, visual[:4])  # warm-up
        for _ in range(args.repeats):
            for rows in args.rows:
                prompts.CPU_SLICE_ROWS = rows or None
                start = time.perf_counter()
                prompt(encoder, classes, visual)
                seen[rows].append(args.pairs / (time.perf_counter() - start))
    base = statistics.median(seen[args.rows[0]])
    print(f"cpu ({platform.machine()}, 1 thread), {args.pairs} pairs x {len(names)} classes, median of {args.repeats}")
    for rows, values in seen.items():
        rate = statistics.median(values)
        label = "one pass" if rows == 0 else f"slices of {rows}"
        print(f"  {label:16s} {rate:7.1f} pairs/s   {rate / base:5.2f}x")


if __name__ == "__main__":
    main()
