"""Expansion of a study into trials: deterministic order, identity from content.

Order is variant (as written) x dataset x seed. A trial id is
``<study>-<variant slug>-<dataset>-s<seed>-<config hash[:10]>``: readable, filename-safe, and it
changes whenever the resolved config changes (so resume never reuses a stale result).

Layering of overrides, lowest first: ExperimentConfig defaults, the study's ``base``, the run's
environment overrides (``--data-root``, ``--clip-checkpoint``, ``--teacher``: where the data and
weights live on this machine), the variant's overrides (a variant may still pick its own teacher,
as Table 4 does), then ``data.dataset`` and ``seed``, then ``--smoke`` shrinkage.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from harness.spec import StudySpec, TrialSpec, apply_overrides, config_hash
from sage_model.config import ExperimentConfig

#: What `--smoke` does to every trial: the smallest run that still exercises every stage.
SMOKE_OVERRIDES: dict[str, Any] = {
    "train.stage1_epochs": 1,
    "train.stage2_epochs": 1,
    "data.synthetic_videos": 4,
    "data.max_train_videos": 1,
    # image_cond runs the text tower per pair over every class (~10 pairs/s for the tiny CLIP on
    # one thread): one test video keeps its smoke trial near 20 s instead of 100 s
    "data.max_test_videos": 1,
}

_SLUG_RE = re.compile(r"[^a-z0-9]+")


def variant_slug(name: str) -> str:
    """Filename-safe form of a variant label: 'w/o Spa' -> 'w_o_spa', '6' -> '6'."""
    slug = _SLUG_RE.sub("_", name.lower()).strip("_")
    return slug or "variant"


def expand_study(
    spec: StudySpec,
    *,
    env_overrides: Mapping[str, Any] | None = None,
    seeds: Sequence[int] | None = None,
    smoke: bool = False,
    user_overrides: Mapping[str, Any] | None = None,
) -> list[TrialSpec]:
    """Every trial of ``spec``, in a fixed order, with resolved configs and ids.

    ``seeds`` restricts the study's seeds (each must be one of them); ``smoke`` keeps the first
    seed only and applies :data:`SMOKE_OVERRIDES`. ``user_overrides`` (``--set``) change every
    trial, on top of the study's ``base``; a path some variant sets is refused, since the variant
    would silently win over it.
    """
    chosen = _choose_seeds(spec, seeds, smoke)
    base = apply_overrides(ExperimentConfig(), spec.base)
    if env_overrides:
        base = apply_overrides(base, env_overrides)
    if user_overrides:
        _check_not_varied(spec, user_overrides)
        try:
            base = apply_overrides(base, user_overrides)
        except ValueError as exc:
            raise ValueError(f"--set: {exc}") from None
    trials: list[TrialSpec] = []
    for variant in spec.variants:
        varied = apply_overrides(base, variant.overrides)
        for dataset in spec.datasets:
            for seed in chosen:
                final: dict[str, Any] = {"data.dataset": dataset, "seed": seed}
                if smoke:
                    final.update(SMOKE_OVERRIDES)
                config = apply_overrides(varied, final)
                trials.append(_trial(spec, variant.name, dataset, seed, config))
    _check_unique(trials)
    return trials


#: Paths a study owns through its own keys, not through overrides.
_STUDY_OWNED = {"seed": "the study's seeds (use --seeds)", "data.dataset": "the study's datasets"}


def _check_not_varied(spec: StudySpec, user_overrides: Mapping[str, Any]) -> None:
    for path in user_overrides:
        if path in _STUDY_OWNED:
            raise ValueError(f"--set {path}: set by {_STUDY_OWNED[path]}")
        varied_by = [v.name for v in spec.variants if path in v.overrides]
        if varied_by:
            raise ValueError(
                f"--set {path}: study {spec.name} varies it (variant(s) {', '.join(map(repr, varied_by))}); "
                "a --set cannot override what the study compares"
            )


def _choose_seeds(spec: StudySpec, seeds: Sequence[int] | None, smoke: bool) -> list[int]:
    if seeds is None:
        chosen = list(spec.seeds)
    else:
        unknown = [s for s in seeds if s not in spec.seeds]
        if unknown:
            raise ValueError(f"--seeds: {unknown} not in study {spec.name}'s seeds {spec.seeds}")
        chosen = [s for s in spec.seeds if s in set(seeds)]
    return chosen[:1] if smoke else chosen


def _trial(spec: StudySpec, variant: str, dataset: str, seed: int, config: ExperimentConfig) -> TrialSpec:
    digest = config_hash(config)
    trial_id = f"{spec.name}-{variant_slug(variant)}-{dataset}-s{seed}-{digest[:10]}"
    return TrialSpec(
        study=spec.name,
        study_version=spec.version,
        variant=variant,
        dataset=dataset,
        seed=seed,
        config=config,
        config_hash=digest,
        trial_id=trial_id,
    )


def _check_unique(trials: list[TrialSpec]) -> None:
    seen: dict[str, str] = {}
    for trial in trials:
        if trial.trial_id in seen:
            raise ValueError(
                f"variants {seen[trial.trial_id]!r} and {trial.variant!r} give the same trial id "
                f"{trial.trial_id} (their labels slug alike and their configs are identical)"
            )
        seen[trial.trial_id] = trial.variant
