"""Trial configs: the one path from a study's overrides to a resolved config and its identity.

Every caller that needs a trial's config goes through :func:`resolve_trial`: study loading
(validating ``base`` and each variant), expansion into trials, and the tuning base. The layers
are applied in one fixed order, lowest first:

1. :class:`~sage_model.config.ExperimentConfig` defaults, then
   :data:`~harness.schedules.SYNTHETIC_BUDGET` (the embedded data's learning budget);
2. ``base``: the study's ``base`` block;
3. ``env``: where data and weights live on this machine (``--data-root``, ``--clip-checkpoint``,
   ``--teacher``);
4. ``schedule``: a named training schedule (``--schedule``, :mod:`harness.schedules`);
5. ``user``: ``--set PATH=VALUE``;
6. the variant's overrides (a variant may still pick its own teacher, as Table 4 does);
7. ``data.dataset`` and ``seed``;
8. ``--smoke`` shrinkage (:data:`SMOKE_OVERRIDES`).

Guarantee: the same inputs give the same config and the same trial id; the id changes whenever
the resolved config changes (so resume never reuses a stale result). Each layer is validated as a
whole (cross-field rules see all of its values), and a failing layer raises
:class:`OverrideError` naming the layer and every bad path in it.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from harness.schedules import SYNTHETIC_BUDGET
from sage_model.config import DatasetName, ExperimentConfig, Spec

#: What `--smoke` does to every trial: the smallest run that still exercises every stage.
SMOKE_OVERRIDES: dict[str, Any] = {
    "train.stage1_epochs": 1,
    "train.stage2_epochs": 1,
    "data.synthetic_videos": 4,
    "data.synthetic_test_videos": None,  # the budget's larger test split would be generated for nothing
    "data.max_train_videos": 1,
    # image_cond runs the text tower per pair over every class (~10 pairs/s for the tiny CLIP on
    # one thread): one test video keeps its smoke trial near 20 s instead of 100 s
    "data.max_test_videos": 1,
}

_SLUG_RE = re.compile(r"[^a-z0-9]+")


class TrialSpec(Spec):
    """One trial: a fully resolved config and the identity derived from it."""

    study: str = Field(description="Study name.")
    study_version: int = Field(1, ge=1, description="Study version at expansion time.")
    variant: str = Field(description="Variant (table row) name.")
    dataset: DatasetName = Field(description="Training dataset (also config.data.dataset).")
    seed: int = Field(ge=0, description="Seed (also config.seed).")
    config: ExperimentConfig = Field(description="The resolved experiment config.")
    config_hash: str = Field(description="sha256 of the canonical JSON of `config`.")
    trial_id: str = Field(description="<study>-<variant slug>-<dataset>-s<seed>-<hash[:10]>; filename-safe.")
    schedule: str = Field(
        "default", description="Name of the training schedule layered in (its values are in `config`)."
    )


class OverrideError(ValueError):
    """Overrides that do not apply: every ``(path, message)`` problem, and the layer they came from."""

    def __init__(self, problems: list[tuple[str, str]], layer: str = "") -> None:
        self.problems = problems
        self.layer = layer
        text = "; ".join(f"{path}: {message}" for path, message in problems)
        super().__init__(f"{layer}: {text}" if layer else text)


@dataclass(frozen=True)
class ConfigLayers:
    """The dotted-override layers between the defaults and the variant (see the module docstring)."""

    base: Mapping[str, Any] = field(default_factory=dict)
    env: Mapping[str, Any] = field(default_factory=dict)
    schedule: Mapping[str, Any] = field(default_factory=dict)
    user: Mapping[str, Any] = field(default_factory=dict)


def resolve_trial(
    study_name: str,
    study_version: int,
    variant_name: str,
    variant_overrides: Mapping[str, Any],
    dataset: str,
    seed: int,
    layers: ConfigLayers,
    *,
    smoke: bool = False,
    schedule_name: str = "default",
    search: Mapping[str, Any] | None = None,
) -> TrialSpec:
    """The resolved config and identity of one trial; :class:`OverrideError` names the bad layer.

    Layer names in errors: ``base``, ``env``, ``schedule``, ``--set``, ``variant``, ``dataset/seed``
    and ``smoke``; ``search`` (last: what `harness tune` forces and the values it searches).
    """
    ordered: list[tuple[str, Mapping[str, Any]]] = [
        ("synthetic budget", SYNTHETIC_BUDGET),
        ("base", layers.base),
        ("env", layers.env),
        ("schedule", layers.schedule),
        ("--set", layers.user),
        ("variant", variant_overrides),
        ("dataset/seed", {"data.dataset": dataset, "seed": seed}),
        ("smoke", SMOKE_OVERRIDES if smoke else {}),
        ("search", search or {}),
    ]
    config = ExperimentConfig()
    for layer, overrides in ordered:
        if overrides:
            try:
                config = apply_overrides(config, overrides)
            except OverrideError as exc:
                raise OverrideError(exc.problems, layer) from None
    digest = config_hash(config)
    return TrialSpec(
        study=study_name,
        study_version=study_version,
        variant=variant_name,
        dataset=config.data.dataset,
        seed=config.seed,
        config=config,
        config_hash=digest,
        trial_id=f"{study_name}-{variant_slug(variant_name)}-{dataset}-s{seed}-{digest[:10]}",
        schedule=schedule_name,
    )


def variant_slug(name: str) -> str:
    """Filename-safe form of a variant label: 'w/o Spa' -> 'w_o_spa', '6' -> '6'."""
    slug = _SLUG_RE.sub("_", name.lower()).strip("_")
    return slug or "variant"


def config_hash(config: ExperimentConfig) -> str:
    """sha256 of the config's canonical JSON: the identity of what a trial computes."""
    payload = json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# Dotted overrides on ExperimentConfig
# --------------------------------------------------------------------------------------------


def _path_problem(path: Any) -> str | None:
    """Why ``path`` does not name a config field (None when it does)."""
    if not isinstance(path, str) or not path:
        return "override keys must be dotted field paths"
    parts = path.split(".")
    block: type[BaseModel] = ExperimentConfig
    for depth, part in enumerate(parts):
        fields = block.model_fields
        if part not in fields:
            prefix = ".".join(parts[:depth]) or "<config>"
            return f"unknown field {part!r} in {prefix} ({suggest(part, list(fields))})"
        annotation = fields[part].annotation
        is_block = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        if depth < len(parts) - 1 and not is_block:
            return f"{'.'.join(parts[: depth + 1])} is a value, not a block"
        if is_block:
            block = annotation  # type: ignore[assignment]
    return None


def suggest(word: str, valid: list[str]) -> str:
    """``did you mean 'x'?`` for the closest valid name, else the list of valid names."""
    by_lower = {name.lower(): name for name in valid}
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
    return f"did you mean {by_lower[close[0]]!r}?" if close else f"valid: {', '.join(valid)}"


def field_annotation(path: str) -> Any:
    """The type annotation of the config field a dotted path names (ValueError naming the path)."""
    problem = _path_problem(path)
    if problem:
        raise OverrideError([(path, problem)])
    block: type[BaseModel] = ExperimentConfig
    parts = path.split(".")
    for part in parts[:-1]:
        block = block.model_fields[part].annotation  # type: ignore[assignment]
    return block.model_fields[parts[-1]].annotation


def apply_overrides(config: ExperimentConfig, overrides: Mapping[str, Any]) -> ExperimentConfig:
    """Return ``config`` with dotted overrides applied, validated as a whole.

    Validation runs once after all overrides, so cross-field rules (class_position <= n_ctx) see
    the final values. Raises :class:`OverrideError` listing every bad path and every invalid value
    (values are checked with the bad paths left out).
    """
    path_problems = {path: problem for path in overrides if (problem := _path_problem(path))}
    bad = [(str(path), problem) for path, problem in path_problems.items()]
    data = config.model_dump(mode="python")
    for path, value in overrides.items():
        if path in path_problems:
            continue
        parts = path.split(".")
        node = data
        for part in parts[:-1]:
            node = node[part]
        node[parts[-1]] = value
    try:
        resolved = ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        bad += _validation_problems(exc)
    if bad:
        raise OverrideError(bad)
    return resolved


def _validation_problems(exc: ValidationError) -> list[tuple[str, str]]:
    """One ``(dotted.path, message (got value))`` per pydantic error."""
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<config>"
        got = f" (got {err['input']!r})" if "input" in err and not isinstance(err["input"], dict) else ""
        problems.append((loc, f"{err['msg']}{got}"))
    return problems
