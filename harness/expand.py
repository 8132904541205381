"""Expansion of a study into trials: deterministic order, identity from content.

Order is variant (as written) x dataset x seed. Each trial's config and id come from
:func:`harness.configs.resolve_trial` (the layering of overrides is documented there); this
module picks the seeds, refuses ``--set`` paths the study varies, and checks ids are distinct.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from harness.configs import ConfigLayers, TrialSpec, resolve_trial
from harness.spec import StudySpec


def expand_study(
    spec: StudySpec,
    *,
    env_overrides: Mapping[str, Any] | None = None,
    seeds: Sequence[int] | None = None,
    smoke: bool = False,
    user_overrides: Mapping[str, Any] | None = None,
    schedule_name: str = "default",
    schedule_overrides: Mapping[str, Any] | None = None,
) -> list[TrialSpec]:
    """Every trial of ``spec``, in a fixed order, with resolved configs and ids.

    ``seeds`` restricts the study's seeds (each must be one of them); ``smoke`` keeps the first
    seed only and applies :data:`~harness.configs.SMOKE_OVERRIDES`. ``user_overrides`` (``--set``)
    change every trial, on top of the study's ``base``; a path some variant sets is refused, since
    the variant would silently win over it. ``schedule_name``/``schedule_overrides``: ``--schedule``.
    """
    chosen = _choose_seeds(spec, seeds, smoke)
    if user_overrides:
        _check_not_varied(spec, user_overrides)
    layers = ConfigLayers(
        base=spec.base, env=env_overrides or {}, schedule=schedule_overrides or {}, user=user_overrides or {}
    )
    trials = [
        resolve_trial(
            spec.name,
            spec.version,
            variant.name,
            variant.overrides,
            dataset,
            seed,
            layers,
            smoke=smoke,
            schedule_name=schedule_name,
        )
        for variant in spec.variants
        for dataset in spec.datasets
        for seed in chosen
    ]
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


def _check_unique(trials: list[TrialSpec]) -> None:
    seen: dict[str, str] = {}
    for trial in trials:
        if trial.trial_id in seen:
            raise ValueError(
                f"variants {seen[trial.trial_id]!r} and {trial.variant!r} give the same trial id "
                f"{trial.trial_id} (their labels slug alike and their configs are identical)"
            )
        seen[trial.trial_id] = trial.variant
