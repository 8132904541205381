"""Write a CLIP ViT-B/16 with random weights as a local checkpoint, for paper-shaped rehearsals.

    python benchmarks/make_random_clip.py /tmp/random-vitb16.pt [--seed 0]

The file (float16 state dict, ~300 MB; ``.safetensors`` by suffix) loads wherever a real
checkpoint does (``--clip-checkpoint``, ``harness data synth --clip-checkpoint``); its numbers
mean nothing, its shapes, memory and speed are the paper model's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sage_model.clip import build_vitb16_random, preset_identity, save_clip_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model = build_vitb16_random(args.seed)
    path = save_clip_checkpoint(model, args.out)
    identity = preset_identity("sage_vitb16", path)
    print(f"{path}: random ViT-B/16 (seed {args.seed}), fingerprint {identity['fingerprint']}")


if __name__ == "__main__":
    main()
