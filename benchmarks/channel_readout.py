"""Which SAGE variant resolves which synthetic signal channel? (docs/data.md sections 8.2 and 9.3)

    python benchmarks/channel_readout.py --channel spatial [--sign-marks 1] [--epochs 12] [--seed 0]
        [--variant full] [--variant "w/o Spa=model.spatio_temporal.spatial=linear"] ...

Builds the synthetic VidVRD set with only ``--channel`` switched on (its ``Signals`` share 1, 64
videos per split; ``--sign-marks``: ``Signals.sign_marks``, 0 = the default generator), trains stage 1 of each variant for ``--epochs`` epochs (one torch thread, the
variants one after another) and prints, after every epoch, the pair-level read-out of the test
rows over the base predicates:

* top-1: how often the true predicate is ranked first among the base ones (rows with a base label);
* AP: the mean per-predicate average precision over the test rows.

Why stage 1 and pairs, not the official mAP: the question is whether a component picks the
channel's evidence over its decoy, which shows directly in the pair scores within minutes; the
official PredCls mAP of the mixed data is what ``synthetic_learning.py`` and ``harness run`` give.
A variant is ``NAME=key=value[,key=value...]`` (the overrides of ``ExperimentConfig``), or one of
the names in ``PRESETS``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from harness.cli.run import parse_sets
from harness.configs import apply_overrides
from sage_model.config import ExperimentConfig
from sage_model.data import DatasetRoot, PairDataset, ensure_synthetic, split_videos
from sage_model.data.synth import CHANNELS, Signals
from sage_model.experiment import ShuffledBatches, _build
from sage_model.model.predict import score_pairs
from sage_model.model.sage import SageModel
from sage_model.train.seeding import seed_everything
from sage_model.train.trainer import TrainingVocabulary, run_epoch, stage_has_work

PRESETS: dict[str, dict[str, object]] = {
    "full": {},
    "w/o Spa": {"model.spatio_temporal.spatial": "linear"},
    "w/o Tem": {"model.spatio_temporal.temporal": "linear"},
    "w/o SE": {"model.semantic.fusion": "none", "data.teacher": "none"},
    "BLIP-2": {"data.teacher": "blip2"},
    "no mixing": {
        "model.spatio_temporal.spatial": "linear",
        "model.semantic.fusion": "none",
        "data.teacher": "none",
    },
}


def parse_variant(text: str) -> tuple[str, dict[str, object]]:
    """``NAME`` (a preset) or ``NAME=key=value,key=value`` (values as ``harness run --set`` reads them)."""
    if text in PRESETS:
        return text, PRESETS[text]
    name, sep, rest = text.partition("=")
    if not sep:
        raise SystemExit(f"--variant {text!r}: not a preset ({', '.join(PRESETS)}) and no NAME=key=value")
    return name, dict(parse_sets(rest.split(",")))


def readout(
    model: SageModel,
    data: PairDataset,
    labels: np.ndarray,
    columns: np.ndarray,
    n_pred: int,
    n_obj: int,
) -> tuple[float, float]:
    """(top-1 over ``columns`` on rows with a label there, mean per-column AP)."""
    model.eval()
    scores = score_pairs(model, data, torch.arange(n_pred), torch.arange(n_obj), batch_size=256).predicate[
        :, columns
    ]
    truth = labels[:, columns]
    aps = []
    for c in np.flatnonzero(truth.sum(0) > 0):
        ranked = truth[np.argsort(-scores[:, c], kind="stable"), c]
        precision = np.cumsum(ranked) / np.arange(1, len(ranked) + 1)
        aps.append(float((precision * ranked).sum() / ranked.sum()))
    labelled = truth.sum(1) > 0
    top1 = float((truth[labelled, scores[labelled].argmax(1)] > 0).mean())
    return top1, float(np.mean(aps))


def run_variant(
    root: DatasetRoot, overrides: dict[str, object], epochs: int, seed: int
) -> list[tuple[float, float]]:
    flat = {
        "seed": seed,
        "data.synthetic_videos": 64,
        "train.stage1_epochs": epochs,
        "train.stage2_epochs": 0,
    }
    cfg = apply_overrides(ExperimentConfig(), {**flat, **overrides})
    seed_everything(cfg.seed)
    vocab = root.vocabulary
    store = root.feature_store("train", "gt")
    uses_teacher = cfg.model.semantic.fusion != "none"
    teacher = root.teacher_store(cfg.data.teacher, "train", "gt") if uses_teacher else None
    train_ids, _ = split_videos(store.rows.video_ids(), cfg.train.val_fraction, cfg.seed)
    train = PairDataset(store, teacher, store.rows.rows_of_videos(train_ids))
    test = root.feature_store("test", "gt")
    test_teacher = root.teacher_store(cfg.data.teacher, "test", "gt") if uses_teacher else None
    test_data = PairDataset(test, test_teacher, np.arange(len(test)))
    labels = np.asarray(test.labels)
    model = _build(cfg, vocab, vocab, store, teacher)[0]
    allowed = TrainingVocabulary.from_counts(
        len(vocab.base_predicates), len(vocab.base_objects), len(vocab.objects)
    )
    base = np.arange(len(vocab.base_predicates))
    if not stage_has_work(model, 1, epochs):
        raise SystemExit("stage 1 has nothing to train")
    optimiser = torch.optim.AdamW(
        model.stage_parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay
    )
    source = ShuffledBatches(train)
    curve = []
    for epoch in range(1, epochs + 1):
        order = torch.Generator().manual_seed(cfg.seed * 1000 + 100 + epoch)
        run_epoch(model, source, allowed, optimiser, cfg.train, torch.device("cpu"), order)
        curve.append(readout(model, test_data, labels, base, len(vocab.predicates), len(vocab.objects)))
        print(f"  epoch {epoch:2d}: top-1 {curve[-1][0]:.3f}  AP {curve[-1][1]:.3f}", flush=True)
    return curve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--channel", choices=CHANNELS, required=True)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--sign-marks", type=float, default=0.0, help="Signals.sign_marks (0: the default data)"
    )
    parser.add_argument("--variant", action="append", default=None, help="preset name or NAME=key=value,...")
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="where to build the data (default: a temporary folder)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    variants = [parse_variant(v) for v in (args.variant or ["full", "no mixing"])]
    shares = {name: float(name == args.channel) for name in CHANNELS}
    with tempfile.TemporaryDirectory() as tmp:
        out = (args.data_dir or Path(tmp)) / f"channel-{args.channel}"
        signals = Signals(**shares, sign_marks=args.sign_marks)
        root = DatasetRoot.open(ensure_synthetic("vidvrd", out, 64, 0, 64, signals))
        print(
            f"SYNTHETIC data, {args.channel} channel only, sign marks {args.sign_marks}, "
            f"{args.epochs} stage-1 epochs, seed {args.seed}"
        )
        summary = []
        for name, overrides in variants:
            print(f"{name}: {overrides}", flush=True)
            start = time.perf_counter()
            curve = run_variant(root, overrides, args.epochs, args.seed)
            summary.append((name, curve[-1], time.perf_counter() - start))
    print("\nvariant | top-1 | AP | seconds")
    for name, (top1, ap), seconds in summary:
        print(f"{name} | {top1:.3f} | {ap:.3f} | {seconds:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
