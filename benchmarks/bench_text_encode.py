"""Class-sentence encoding: open_clip's ``encode_text`` (all 77 positions) vs ``encode_texts``
(cut after the last [EOS]), side by side in one process, one thread, a random ViT-B/16.

    python benchmarks/bench_text_encode.py [--repeats 2]
"""

from __future__ import annotations

import argparse
import time

import open_clip
import torch

from sage_model.clip import class_name_text, encode_texts, tokenizer
from sage_model.data.vocab import load_vocabulary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    vocab = load_vocabulary("vidvrd")
    texts = [class_name_text(n) for n in vocab.objects + vocab.predicates]
    model = open_clip.create_model("ViT-B-16", pretrained=None).eval()
    tokens = tokenizer()(texts)  # (N, 77)
    for _ in range(args.repeats):
        start = time.perf_counter()
        with torch.no_grad():
            full = model.encode_text(tokens, normalize=True)
        full_s = time.perf_counter() - start
        start = time.perf_counter()
        cut = encode_texts(model, texts)
        cut_s = time.perf_counter() - start
        print(
            f"{len(texts)} VidVRD class sentences, ViT-B/16 text tower, 1 thread: all 77 positions "
            f"{full_s:.2f} s, cut at the last [EOS] {cut_s:.2f} s ({full_s / cut_s:.1f}x); "
            f"max |difference| {(full - cut).abs().max():.1e}"
        )


if __name__ == "__main__":
    main()
