"""Study specs: one YAML file per paper table, parsed into a frozen :class:`StudySpec`.

A study is data, not a program: one ``base`` block of dotted overrides on
:class:`~sage_model.config.ExperimentConfig`, ordered ``variants`` (one per table row), seeds,
datasets, per-trial resources and the paper's reference numbers. No includes, no templating, no
inheritance: what you read in the file is what runs.

Every error names the file, the YAML line and the dotted path of the offending field, e.g.
``studies/t.yaml:14: variants[1].overrides: model.prompt.insert_layr: unknown field 'insert_layr'``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sage_model.config import DatasetName, EvalSplit, ExperimentConfig, Spec, Task

MetricName = Literal["map", "r50", "r100", "p1", "p5", "p10", "params_m", "fps"]

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_]*$")


class StudyModel(BaseModel):
    """Base of the study blocks: frozen, unknown keys rejected, YAML numbers accepted as names."""

    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


class Variant(StudyModel):
    """One row of the paper's table: a label and the overrides that make it."""

    name: str = Field(min_length=1, description="Row label as the paper prints it (e.g. 'w/o Spa', '6').")
    overrides: dict[str, Any] = Field(default_factory=dict, description="Dotted overrides on top of `base`.")


class Resources(StudyModel):
    """What one trial asks of the cluster. GPUs are used only where the cluster has them."""

    cpus: float = Field(1.0, gt=0, description="CPU cores per trial.")
    gpus: float = Field(
        0.0,
        ge=0,
        description="GPU share per trial (0.5 = two trials per GPU); ignored on a GPU-less cluster.",
    )


class Column(StudyModel):
    """One reported cell kind of the paper's table."""

    name: str = Field(min_length=1, description="Column id used by `headline` and the report.")
    split: EvalSplit = Field(description="Novel or All split.")
    task: Task = Field(description="SGDet, SGCls or PredCls.")
    metric: MetricName = Field(description="map, r50, r100, p1/p5/p10 (tagging) or params_m / fps.")


class TableSpec(StudyModel):
    """The paper's reference numbers for the study, with the tolerance `report --check` enforces."""

    paper: str = Field(description="Where the numbers come from, e.g. 'Table 8'.")
    columns: list[Column] = Field(min_length=1, description="Cell kinds, in the paper's order.")
    headline: list[str] = Field(default_factory=list, description="Columns that `report --check` enforces.")
    tolerance: float = Field(1.0, ge=0, description="Allowed absolute difference, percentage points.")
    min_seeds: int = Field(1, ge=1, description="Seeds a row needs before it is checked.")
    reference: dict[str, list[float | None]] = Field(
        default_factory=dict,
        description="Variant name -> paper values in column order (null = not reported).",
    )
    cited: dict[str, list[float | None]] = Field(
        default_factory=dict, description="Rows of other methods we do not run, same layout."
    )
    baseline: str | None = Field(
        None,
        description="Variant every other row is compared with (paired difference, CI, p-value); "
        "default: 'Ours', else the variant that is the default model (the paper's full model).",
    )

    @model_validator(mode="after")
    def _rows_match_columns(self) -> TableSpec:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"columns: duplicate column names in {names}")
        for head in self.headline:
            if head not in names:
                raise ValueError(f"headline: '{head}' is not a column (columns: {', '.join(names)})")
        for block in ("reference", "cited"):
            for row, values in getattr(self, block).items():
                if len(values) != len(names):
                    raise ValueError(f"{block}.{row}: {len(values)} values for {len(names)} columns")
        return self


#: Objective metrics must come from the validation split carved from the training videos.
_OBJECTIVE_RE = re.compile(r"^val/[a-z0-9_]+$")


class SearchRange(StudyModel):
    """One searched config value: a numeric range, log-uniform unless ``log: false``."""

    low: float = Field(description="Smallest value tried.")
    high: float = Field(description="Largest value tried.")
    log: bool = Field(True, description="Sample log-uniformly (loss weights span decades); needs low > 0.")

    @model_validator(mode="after")
    def _ordered(self) -> SearchRange:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError(f"log: true needs low > 0, got low={self.low:g} (or set log: false)")
        return self


class TuneObjective(StudyModel):
    """What the search optimises: a per-epoch validation metric of the trainer's reports."""

    metric: str = Field("val/predcls_all_map", description="Epoch-report key; must be a `val/...` metric.")
    direction: Literal["maximize", "minimize"] = Field("maximize", description="Optuna study direction.")

    @field_validator("metric")
    @classmethod
    def _validation_only(cls, value: str) -> str:
        if not _OBJECTIVE_RE.match(value):
            raise ValueError(
                f"{value!r} is not a validation metric: the objective must be a per-epoch 'val/...' key "
                "(e.g. val/predcls_all_map) measured on videos held out from training; tuning on the "
                "test split (or on training metrics) is not allowed"
            )
        return value


class TuneSpec(StudyModel):
    """The Optuna search of `harness tune` (see docs/tuning.md).

    Trials start from ``base`` plus the first variant's overrides (first dataset, first seed); the
    searched values are dotted overrides on top. Tuning trials never evaluate on the test split.
    """

    space: dict[str, SearchRange] = Field(
        min_length=1, description="Dotted config path -> range, e.g. model.loss.alpha: {low: 0.01, high: 10}."
    )
    objective: TuneObjective = Field(default_factory=TuneObjective, description="Metric and direction.")
    trials: int = Field(20, ge=1, description="Finished (complete or pruned) trials the search ends with.")
    max_concurrent: int | None = Field(
        None, ge=1, description="Trials at once (default: as resources allow)."
    )
    sampler_seed: int = Field(0, ge=0, description="Seed of Optuna's TPE sampler.")
    startup_trials: int = Field(
        4, ge=1, description="Random trials before TPE models the history (Optuna's 10 is too many here)."
    )
    pruner: Literal["median", "asha", "none"] = Field(
        "median", description="Stop weak trials from their epoch reports: Optuna median or ASHA, or never."
    )

    @field_validator("space")
    @classmethod
    def _paths_are_numeric_fields(cls, value: dict[str, SearchRange]) -> dict[str, SearchRange]:
        for path, rng in value.items():
            annotation = field_annotation(path)
            if annotation not in (int, float):
                raise ValueError(f"{path}: only int and float fields can be searched, not {annotation}")
            if annotation is int and not (float(rng.low).is_integer() and float(rng.high).is_integer()):
                raise ValueError(
                    f"{path}: an int field needs integer low/high, got {rng.low:g}..{rng.high:g}"
                )
        return value


class StudySpec(StudyModel):
    """A parsed study file. ``trials()`` expands it into the deterministic list of trials."""

    name: str = Field(description="Study id; must equal the file stem.")
    version: int = Field(ge=1, description="Bumped when the study changes meaningfully.")
    description: str = Field(min_length=1, description="One line: what the study measures.")
    base: dict[str, Any] = Field(default_factory=dict, description="Dotted overrides applied to every trial.")
    variants: list[Variant] = Field(min_length=1, description="Ordered rows of the table.")
    seeds: list[int] = Field(min_length=1, description="Seeds run for every variant.")
    datasets: list[DatasetName] = Field(min_length=1, description="Sets data.dataset per trial.")
    resources: Resources = Field(default_factory=Resources, description="Per-trial resources.")
    table: TableSpec | None = Field(None, description="The paper's numbers (absent for figure-only studies).")
    tune: TuneSpec | None = Field(None, description="Optional Optuna search (`harness tune`, issue #7).")

    @field_validator("name")
    @classmethod
    def _name_is_an_id(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError(f"must match {_NAME_RE.pattern} (lowercase letters, digits, '_'), got {value!r}")
        return value

    @field_validator("seeds")
    @classmethod
    def _seeds_unique(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value) or any(s < 0 for s in value):
            raise ValueError(f"seeds must be distinct non-negative integers, got {value}")
        return value

    @model_validator(mode="after")
    def _names_consistent(self) -> StudySpec:
        names = [v.name for v in self.variants]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"variants: duplicate names {duplicates}")
        if self.table is not None:
            unknown = [row for row in self.table.reference if row not in names]
            if unknown:
                raise ValueError(f"table.reference: rows {unknown} are not variants (variants: {names})")
            if self.table.baseline is not None and self.table.baseline not in names:
                baseline = self.table.baseline
                raise ValueError(f"table.baseline: '{baseline}' is not a variant (variants: {names})")
        if len(set(self.datasets)) != len(self.datasets):
            raise ValueError(f"datasets: duplicates in {self.datasets}")
        return self

    def variant(self, name: str) -> Variant:
        """The variant called ``name`` (KeyError naming the valid ones otherwise)."""
        for variant in self.variants:
            if variant.name == name:
                return variant
        raise KeyError(
            f"study {self.name} has no variant {name!r} (variants: {[v.name for v in self.variants]})"
        )

    def trials(self, **kwargs: Any) -> list[TrialSpec]:
        """Expand into trials; see :func:`harness.expand.expand_study` for the options."""
        from harness.expand import expand_study  # expand imports this module

        return expand_study(self, **kwargs)


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


# --------------------------------------------------------------------------------------------
# Overrides on ExperimentConfig
# --------------------------------------------------------------------------------------------


def config_hash(config: ExperimentConfig) -> str:
    """sha256 of the config's canonical JSON: the identity of what a trial computes."""
    payload = json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def _check_path(path: str) -> list[str]:
    """Split a dotted path and verify every segment names a field of the block it walks into."""
    parts = path.split(".")
    block: type[BaseModel] = ExperimentConfig
    for depth, part in enumerate(parts):
        fields = block.model_fields
        prefix = ".".join(parts[:depth]) or "<config>"
        if part not in fields:
            raise ValueError(f"{path}: unknown field {part!r} in {prefix} (valid: {', '.join(fields)})")
        annotation = fields[part].annotation
        is_block = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        if depth < len(parts) - 1 and not is_block:
            raise ValueError(f"{path}: {'.'.join(parts[: depth + 1])} is a value, not a block")
        if is_block:
            block = annotation  # type: ignore[assignment]
    return parts


def field_annotation(path: str) -> Any:
    """The type annotation of the config field a dotted path names (ValueError naming the path)."""
    parts = _check_path(path)
    block: type[BaseModel] = ExperimentConfig
    for part in parts[:-1]:
        block = block.model_fields[part].annotation  # type: ignore[assignment]
    return block.model_fields[parts[-1]].annotation


def apply_overrides(config: ExperimentConfig, overrides: Mapping[str, Any]) -> ExperimentConfig:
    """Return ``config`` with dotted overrides applied, validated as a whole.

    Validation runs once after all overrides, so cross-field rules (class_position <= n_ctx) see
    the final values. Errors are ``ValueError`` naming the dotted path.
    """
    data = config.model_dump(mode="python")
    for path, value in overrides.items():
        if not isinstance(path, str) or not path:
            raise ValueError(f"{path!r}: override keys must be dotted field paths")
        parts = _check_path(path)
        node = data
        for part in parts[:-1]:
            node = node[part]
        node[parts[-1]] = value
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise ValueError(_describe_validation(exc)) from None


def _describe_validation(exc: ValidationError) -> str:
    """One line per pydantic error: ``dotted.path: message (got value)``."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<config>"
        got = f" (got {err['input']!r})" if "input" in err and not isinstance(err["input"], dict) else ""
        lines.append(f"{loc}: {err['msg']}{got}")
    return "; ".join(lines)


# --------------------------------------------------------------------------------------------
# YAML loading with line numbers
# --------------------------------------------------------------------------------------------


def _construct(node: yaml.Node, loader: yaml.SafeLoader, path: tuple[Any, ...], lines: dict) -> Any:
    """Build plain Python data from a YAML node, recording the 1-based line of every path."""
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise ValueError(
                    f"line {key_node.start_mark.line + 1}: YAML merge keys ('<<') are not allowed"
                )
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool):
                raise ValueError(f"line {key_node.start_mark.line + 1}: mapping keys must be scalars")
            if key in out:
                raise ValueError(f"line {key_node.start_mark.line + 1}: duplicate key {key!r}")
            out[key] = _construct(value_node, loader, (*path, key), lines)
            lines[(*path, key)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, loader, (*path, i), lines) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def _parse_yaml(text: str) -> tuple[Any, dict[tuple[Any, ...], int]]:
    """Parse one YAML document into data plus a map from key path to line number."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        lines: dict[tuple[Any, ...], int] = {}
        data = {} if node is None else _construct(node, loader, (), lines)
    finally:
        loader.dispose()
    return data, lines


def _line_of(lines: Mapping[tuple[Any, ...], int], loc: tuple[Any, ...]) -> int | None:
    """Line of the longest prefix of ``loc`` that the YAML file contains."""
    for end in range(len(loc), -1, -1):
        # pydantic stringifies dict keys in locs; YAML may have ints (e.g. reference rows `2:`)
        for key in (tuple(loc[:end]), tuple(_maybe_int(p) for p in loc[:end])):
            if key in lines:
                return lines[key]
    return None


def _maybe_int(part: Any) -> Any:
    return int(part) if isinstance(part, str) and part.isdigit() else part


def _fmt_loc(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<study>"


def load_study(path: str | Path) -> StudySpec:
    """Parse and fully validate a study file (every variant's overrides are applied once).

    Raises ``FileNotFoundError`` or ``ValueError`` with ``file:line: dotted.path: message``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: study file not found")
    try:
        data, lines = _parse_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: invalid YAML: {' '.join(str(exc).split())}") from None
    except ValueError as exc:
        raise ValueError(f"{path}:{str(exc).removeprefix('line ')}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}:1: a study must be a YAML mapping, got {type(data).__name__}")
    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        line = _line_of(lines, loc)
        more = f" (+{len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise ValueError(f"{path}:{line or 1}: {_fmt_loc(loc)}: {err['msg']}{more}") from None
    if spec.name != path.stem:
        raise ValueError(
            f"{path}:{lines.get(('name',), 1)}: name: {spec.name!r} must equal the file stem {path.stem!r}"
        )
    _check_all_overrides(spec, path, lines)
    if spec.tune is not None:
        _check_tune(spec, path, lines)
    return spec


def _check_all_overrides(spec: StudySpec, path: Path, lines: Mapping[tuple[Any, ...], int]) -> None:
    """Apply base and each variant once so a bad path or value fails at load with its line."""
    try:
        base = apply_overrides(ExperimentConfig(), spec.base)
    except ValueError as exc:
        key = str(exc).split(":", 1)[0]
        line = lines.get(("base", key), lines.get(("base",), 1))
        raise ValueError(f"{path}:{line}: base: {exc}") from None
    for i, variant in enumerate(spec.variants):
        try:
            apply_overrides(base, variant.overrides)
        except ValueError as exc:
            key = str(exc).split(":", 1)[0]
            line = lines.get(("variants", i, "overrides", key), lines.get(("variants", i), 1))
            raise ValueError(f"{path}:{line}: variants[{i}] ({variant.name}).overrides: {exc}") from None


def _check_tune(spec: StudySpec, path: Path, lines: Mapping[tuple[Any, ...], int]) -> None:
    """Both ends of every range must be valid config values, and trials must report validation."""
    assert spec.tune is not None
    config = apply_overrides(apply_overrides(ExperimentConfig(), spec.base), spec.variants[0].overrides)
    for key, rng in spec.tune.space.items():
        for end in ("low", "high"):
            value = getattr(rng, end)
            if field_annotation(key) is int:
                value = int(value)
            try:
                apply_overrides(config, {key: value})
            except ValueError as exc:
                line = lines.get(("tune", "space", key, end), lines.get(("tune", "space", key), 1))
                raise ValueError(f"{path}:{line}: tune.space.{key}.{end}: {exc}") from None
    if config.train.val_fraction <= 0:
        line = lines.get(("tune", "objective"), lines.get(("tune",), 1))
        raise ValueError(
            f"{path}:{line}: tune.objective: train.val_fraction is 0, so there is no validation split to "
            "measure the objective on (set train.val_fraction > 0 in base)"
        )
