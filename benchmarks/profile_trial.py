"""Where one default trial's time goes: setup, stage-1 and stage-2 training, per-epoch validation,
test scoring, evaluation and writing (issue #16: what bounds the time of a study on the default).

    python benchmarks/profile_trial.py [--variant full] [--seed 0] [--set eval.tasks='["predcls"]' ...]

One ``run_experiment`` in this process on one torch thread, with the default's budget (as
``benchmarks/synthetic_learning.py`` builds it: ``SYNTHETIC_BUDGET`` under the component study's
``base``) and one of its variants (``image_cond`` profiles the image-conditioned prompt, whose
per-pair text-tower passes dominate). The phases are timed by wrapping the functions of
``sage_model.experiment`` that do them (the trial's own code is not changed), so the parts add up
to the trial's wall time less what is unaccounted (printed). Validation calls the same scoring
functions as the test pass; calls made inside ``validate`` count as validation.

Why a wrapper and not cProfile: cProfile slows the many small tensor calls of a training step
unevenly (it added ~10 % to a default trial), which distorts exactly the split we want.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic_learning import VARIANTS, budget, experiment_config  # noqa: E402

SCORING = ("score_data", "predict_task")
"""Functions that score pairs; inside ``validate`` they count as validation, else as the test pass."""
EVALUATION = ("evaluate_split", "write_predictions", "video_scores", "eval_data")
"""Loading the scored videos (validation and test), the official evaluation, prediction files."""
TRAINING = "training (stages 1 + 2, with validation)"
"""The whole of ``train_two_stage``; split into its stages by :func:`stage_split`, then dropped."""


class PhaseClock:
    """Seconds per phase, from wrapped functions and the per-epoch callback."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.validating = False
        self.epoch_marks: list[tuple[int, float, float]] = []  # (stage, time at the report, validation so far)
        self.train_started: float | None = None
        self.originals: list[tuple[Any, str, Any]] = []

    def restore(self) -> None:
        """Put the wrapped functions back (a second profile in the process would nest them)."""
        for module, name, original in reversed(self.originals):
            setattr(module, name, original)
        self.originals.clear()

    def wrap(self, module: Any, name: str, phase: Callable[[], str]) -> None:
        """Replace ``module.name`` by a timed call that adds its seconds to ``phase()`` ("" = not
        counted); the original is restored by :meth:`restore`."""
        original = getattr(module, name)
        self.originals.append((module, name, original))

        def timed(*args: Any, **kwargs: Any) -> Any:
            label = phase()
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                if label:
                    self.seconds[label] += time.perf_counter() - started

        setattr(module, name, timed)

    def wrap_validator(self, module: Any) -> None:
        """``make_validator`` returns the per-epoch ``validate``: time that, and mark what it calls."""
        original = module.make_validator
        self.originals.append((module, "make_validator", original))

        def make(*args: Any, **kwargs: Any) -> Callable[..., dict[str, float]]:
            validate = original(*args, **kwargs)

            def timed(model: Any) -> dict[str, float]:
                self.validating, started = True, time.perf_counter()
                try:
                    return validate(model)
                finally:
                    self.validating = False
                    self.seconds["per-epoch validation"] += time.perf_counter() - started

            return timed

        module.make_validator = make

    def on_epoch(self, report: Any) -> None:
        self.epoch_marks.append((report.stage, time.perf_counter(), self.seconds["per-epoch validation"]))


def profile(variant: str, seed: int, overrides: dict[str, Any]) -> tuple[dict[str, float], float, Any]:
    """(seconds per phase, wall seconds, the result) of one trial."""
    import torch

    torch.set_num_threads(1)
    import sage_model.experiment as experiment

    clock = PhaseClock()
    for name in SCORING:
        clock.wrap(experiment, name, lambda: "" if clock.validating else "test scoring (model + predictions)")
    for name in EVALUATION:
        clock.wrap(experiment, name, lambda: "" if clock.validating else "loading, evaluation and writing")
    clock.wrap_validator(experiment)
    cfg = experiment_config({**budget(), **VARIANTS[variant], **overrides, "seed": seed})

    def training() -> str:
        clock.train_started = time.perf_counter()  # stage 1 is measured from here to its last report
        return TRAINING

    clock.wrap(experiment, "train_two_stage", training)
    try:
        with tempfile.TemporaryDirectory() as work:
            started = time.perf_counter()
            result = experiment.run_experiment(cfg, work_dir=Path(work), on_epoch=clock.on_epoch)
            wall = time.perf_counter() - started
    finally:
        clock.restore()
    seconds = dict(clock.seconds)
    seconds.update(stage_split(clock, seconds.get(TRAINING, 0.0)))
    return seconds, wall, result


def stage_split(clock: PhaseClock, training: float) -> dict[str, float]:
    """Training time per stage less its validation (checkpoint writes included), from the times of
    the per-epoch reports: stage 1 ends at its last report, stage 2 with ``train_two_stage``."""
    marks = clock.epoch_marks
    if not marks or clock.train_started is None:
        return {}
    end = clock.train_started + training
    stage1 = [m for m in marks if m[0] == 1]
    if not stage1:
        return {"stage-2 training": training - marks[-1][2]}
    cut_time, cut_val = stage1[-1][1], stage1[-1][2]
    out = {"stage-1 training": (cut_time - clock.train_started) - cut_val}
    if len(stage1) < len(marks):
        out["stage-2 training"] = (end - cut_time) - (marks[-1][2] - cut_val)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="full", choices=list(VARIANTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], help="dotted=value overrides (YAML values)")
    parser.add_argument(
        "--cache", default=os.environ.get("SAGE_DATA_CACHE", str(Path(tempfile.gettempdir()) / "sage_data"))
    )
    args = parser.parse_args()
    os.environ["SAGE_DATA_CACHE"] = args.cache
    from harness.cli.run import parse_sets
    from sage_model.experiment import ensure_default_root

    overrides = dict(parse_sets(args.set))
    data = experiment_config({**budget(), **VARIANTS[args.variant], **overrides}).data
    ensure_default_root(data, data.dataset, Path(args.cache))  # generation is not the trial's cost
    seconds, wall, result = profile(args.variant, args.seed, overrides)
    seconds.pop(TRAINING, 0.0)
    rows = [
        ("stage-1 training", seconds.get("stage-1 training", 0.0)),
        ("stage-2 training", seconds.get("stage-2 training", 0.0)),
        ("per-epoch validation", seconds.get("per-epoch validation", 0.0)),
        ("test scoring (model + predictions)", seconds.get("test scoring (model + predictions)", 0.0)),
        ("loading, evaluation and writing", seconds.get("loading, evaluation and writing", 0.0)),
    ]
    # the rest is what no row holds: setup, weights, and training outside the per-epoch reports
    rows.append(("setup and the rest (data, model, weights)", wall - sum(value for _, value in rows)))
    sizes = ", ".join(f"{k} {v}" for k, v in result.split_sizes.items())
    maps = ", ".join(f"{m.task} {m.split} {m.value:.2f}" for m in result.metrics if m.name == "map")
    print(f"variant {args.variant}, seed {args.seed}, one torch thread; pairs: {sizes}")
    print(f"mAP: {maps}")
    print(f"{'phase':44s} {'seconds':>8s} {'share':>6s}")
    for name, value in rows:
        print(f"{name:44s} {value:8.1f} {100 * value / wall:5.1f}%")
    print(f"{'whole trial (wall)':44s} {wall:8.1f}")


if __name__ == "__main__":
    main()
