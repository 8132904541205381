"""Study specs: one YAML file per paper table, parsed into a frozen :class:`StudySpec`.

A study is data, not a program: one ``base`` block of dotted overrides on
:class:`~sage_model.config.ExperimentConfig`, ordered ``variants`` (one per table row), seeds,
datasets, per-trial resources and the paper's reference numbers. No includes, no templating, no
inheritance: what you read in the file is what runs.

Every error names the file, the YAML line and the dotted path of the offending field, e.g.
``studies/t.yaml:14: variants[1].overrides: model.prompt.insert_layr: unknown field 'insert_layr'``.
"""

from __future__ import annotations

import re
import types
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from harness.configs import (
    ConfigLayers,
    OverrideError,
    TrialSpec,
    apply_overrides,
    config_hash,
    field_annotation,
    resolve_trial,
    suggest,
)
from sage_model.config import DatasetName, EvalSplit, ExperimentConfig, Task
from sage_model.metrics import METRIC_NAMES, MetricInfo, metric_info

__all__ = [  # the config helpers are re-exported: callers of the study API need them together
    "Column",
    "StudyError",
    "StudySpec",
    "TrialSpec",
    "Variant",
    "apply_overrides",
    "config_hash",
    "field_annotation",
    "load_study",
]

#: At most this many lines name a study's problems (the last says how many more there are).
MAX_PROBLEM_LINES = 8


def _known_metric(name: str) -> str:
    if name not in METRIC_NAMES:
        raise ValueError(f"unknown metric {name!r} ({suggest(name, list(METRIC_NAMES))})")
    return name


#: A metric of the catalogue (:mod:`sage_model.metrics`).
MetricName = Annotated[str, AfterValidator(_known_metric)]

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
    metric: MetricName = Field(description=f"A catalogued metric: {', '.join(METRIC_NAMES)}.")

    @property
    def info(self) -> MetricInfo:
        """The catalogue entry of this column's metric."""
        return metric_info(self.metric)

    @property
    def efficiency(self) -> bool:
        """Params/FPS: depend on the device or model size, so compared as ratios, not absolutely."""
        return self.info.kind == "efficiency"


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
    """A parsed study file; :func:`harness.expand.expand_study` turns it into trials."""

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
        """The variant called ``name`` (ValueError naming the valid ones otherwise)."""
        for variant in self.variants:
            if variant.name == name:
                return variant
        raise ValueError(
            f"study {self.name} has no variant {name!r} (variants: {[v.name for v in self.variants]})"
        )


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


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a study file, at its line."""

    line: int
    where: str
    message: str
    unknown_key: bool = False

    def text(self, path: Path) -> str:
        return f"{path}:{self.line}: {self.where}: {self.message}"


class StudyError(ValueError):
    """Every problem of a study file, one ``file:line: dotted.path: message`` line each.

    Unknown keys come first (a typo usually causes the other errors), then the rest in file
    order; at most :data:`MAX_PROBLEM_LINES` lines, the last one counting what was left out.
    """

    def __init__(self, path: Path, problems: list[Problem]) -> None:
        ordered = sorted(problems, key=lambda p: (not p.unknown_key, p.line))
        lines = [p.text(path) for p in ordered]
        if len(lines) > MAX_PROBLEM_LINES:
            kept = MAX_PROBLEM_LINES - 1
            lines = [*lines[:kept], f"... and {len(lines) - kept} more"]
        self.path = path
        self.problems = ordered
        super().__init__("\n".join(lines))


def load_study(path: str | Path) -> StudySpec:
    """Parse and fully validate a study file (every variant's config is resolved once).

    Raises ``FileNotFoundError``, or :class:`StudyError` (a ``ValueError``) naming every problem
    found as ``file:line: dotted.path: message``.
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
    problems = _override_problems(data, path.stem, lines)
    spec: StudySpec | None = None
    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as exc:
        problems += [_pydantic_problem(err, lines) for err in exc.errors()]
    if spec is not None and spec.name != path.stem:
        problems.append(
            Problem(lines.get(("name",), 1), "name", f"{spec.name!r} must equal the file stem {path.stem!r}")
        )
    if spec is not None and spec.tune is not None and not problems:
        problems += _tune_problems(spec, lines)
    if problems:
        raise StudyError(path, problems)
    assert spec is not None
    return spec


def _pydantic_problem(err: Any, lines: Mapping[tuple[Any, ...], int]) -> Problem:
    """A pydantic error as a :class:`Problem`; an unknown key gets the closest valid name."""
    loc = tuple(err["loc"])
    line = _line_of(lines, loc) or 1
    if err["type"] == "extra_forbidden":
        valid = _fields_at(loc[:-1])
        return Problem(line, _fmt_loc(loc), f"unknown key ({suggest(str(loc[-1]), valid)})", unknown_key=True)
    message = str(err["msg"]).removeprefix("Value error, ")
    return Problem(line, _fmt_loc(loc), message)


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    """Field names of the study block at ``loc`` (e.g. ``("variants", 0)`` -> Variant's fields)."""
    annotation: Any = StudySpec
    for part in loc:
        model = _model_in(annotation)
        if model is not None and isinstance(part, str) and part in model.model_fields:
            annotation = model.model_fields[part].annotation
        else:  # a list index or a dict key: step into the element type
            annotation = _element_type(annotation)
    model = _model_in(annotation)
    return list(model.model_fields) if model is not None else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model class an annotation is, or is ``Optional`` of."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, types.UnionType):
        return next((m for a in get_args(annotation) if (m := _model_in(a)) is not None), None)
    return None


def _element_type(annotation: Any) -> Any:
    """``list[X]`` -> X, ``dict[K, X]`` -> X, ``Y | None`` -> the element of Y."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return next((_element_type(a) for a in get_args(annotation) if a is not type(None)), None)
    args = get_args(annotation)
    return args[-1] if origin in (list, dict, tuple) and args else None


def _first_dataset(data: Mapping[str, Any]) -> str:
    """The first valid dataset the raw study names (the config default otherwise)."""
    datasets = data.get("datasets")
    valid = get_args(DatasetName)
    named = [d for d in datasets if d in valid] if isinstance(datasets, list) else []
    return named[0] if named else ExperimentConfig().data.dataset


def _override_problems(
    data: Mapping[str, Any], study: str, lines: Mapping[tuple[Any, ...], int]
) -> list[Problem]:
    """Resolve base and each variant once, on the raw data, so every bad path or value is named
    with its line even when other parts of the study are invalid."""
    base, variants = data.get("base", {}), data.get("variants", [])
    if not isinstance(base, dict):
        return []  # pydantic names the wrong type
    dataset = _first_dataset(data)
    problems = _layer_problems(study, base, {}, dataset, ("base",), "base", lines)
    if problems:
        base = {}  # a broken base would fail every variant too: check the variants alone
    for i, variant in enumerate(variants if isinstance(variants, list) else []):
        overrides = variant.get("overrides", {}) if isinstance(variant, dict) else None
        if isinstance(overrides, dict):
            where = f"variants[{i}] ({variant.get('name')}).overrides"
            problems += _layer_problems(
                study, base, overrides, dataset, ("variants", i, "overrides"), where, lines
            )
    return problems


def _layer_problems(
    study: str,
    base: Mapping[str, Any],
    overrides: Mapping[str, Any],
    dataset: str,
    loc: tuple[Any, ...],
    where: str,
    lines: Mapping[tuple[Any, ...], int],
) -> list[Problem]:
    """The problems of one override block (base or a variant) through :func:`resolve_trial`."""
    try:
        resolve_trial(study, 1, "check", overrides, dataset, 0, ConfigLayers(base=base))
    except OverrideError as exc:
        return [
            Problem(
                lines.get((*loc, key), lines.get(loc, 1)),
                where,
                f"{key}: {message}",
                unknown_key=message.startswith("unknown field"),
            )
            for key, message in exc.problems
        ]
    return []


def _tune_problems(spec: StudySpec, lines: Mapping[tuple[Any, ...], int]) -> list[Problem]:
    """Both ends of every range must be valid config values, and trials must report validation."""
    assert spec.tune is not None
    first = spec.variants[0]
    layers = ConfigLayers(base=spec.base)
    trial = resolve_trial(spec.name, spec.version, first.name, first.overrides, spec.datasets[0], 0, layers)
    config = trial.config
    problems = []
    for key, rng in spec.tune.space.items():
        for end in ("low", "high"):
            value = getattr(rng, end)
            if field_annotation(key) is int:
                value = int(value)
            try:
                apply_overrides(config, {key: value})
            except ValueError as exc:
                line = lines.get(("tune", "space", key, end), lines.get(("tune", "space", key), 1))
                problems.append(Problem(line, f"tune.space.{key}.{end}", str(exc)))
    if config.train.val_fraction <= 0:
        problems.append(
            Problem(
                lines.get(("tune", "objective"), lines.get(("tune",), 1)),
                "tune.objective",
                "train.val_fraction is 0, so there is no validation split to measure the objective on "
                "(set train.val_fraction > 0 in base)",
            )
        )
    return problems
