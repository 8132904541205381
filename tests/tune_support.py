"""A tiny `tune:` study for the search tests (light: Ray workers import the modules that use it)."""

from __future__ import annotations

from pathlib import Path

TUNE_STUDY = """\
name: {name}
version: 1
description: "tuning test"
base:
  train.stage1_epochs: {epochs}
  train.stage2_epochs: {epochs}
  train.val_fraction: 0.25
  data.synthetic_videos: 4
variants:
  - name: full
    overrides: {{}}
seeds: [0]
datasets: [vidvrd]
resources: {{cpus: 1, gpus: 0}}
tune:
{space}
  objective: {{metric: val/predcls_all_map, direction: maximize}}
  trials: {trials}
  max_concurrent: {concurrent}
  sampler_seed: 0
  startup_trials: {startup}
  pruner: {pruner}
"""

ALPHA = """\
  space:
    model.loss.alpha: {low: 0.01, high: 10.0}"""

LOSS_WEIGHTS = """\
  space:
    model.loss.alpha: {low: 0.01, high: 10.0}
    model.loss.beta: {low: 0.01, high: 10.0}
    model.loss.gamma: {low: 0.01, high: 10.0}"""


def write_tune_study(
    folder: Path,
    name: str,
    *,
    trials: int,
    space: str = ALPHA,
    concurrent: int = 1,
    startup: int | None = None,
    epochs: int = 1,
    pruner: str = "median",
) -> Path:
    """``<folder>/<name>.yaml``; ``startup`` defaults to ``trials`` (TPE samples at random throughout)."""
    path = Path(folder) / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = TUNE_STUDY.format(
        name=name, space=space, trials=trials, concurrent=concurrent, startup=startup or trials,
        epochs=epochs, pruner=pruner,
    )  # fmt: skip
    path.write_text(text)
    return path
