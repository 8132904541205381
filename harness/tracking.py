"""Experiment tracking with MLflow: the only module that imports mlflow.

Design (see docs/harness.md): only the driver talks to MLflow. Workers send their epoch reports
and final result back through Ray Tune, and the driver logs them. One writer means no sqlite lock
contention, the embedded store works on a multi-node cluster without a shared filesystem for the
database, and a worker killed by the OS still gets its run closed (FAILED) by the driver.

Store: ``MLFLOW_TRACKING_URI`` when set (a server), else an embedded sqlite database
``<run_dir>/mlflow.db`` with artifacts under ``<run_dir>/mlartifacts/<study>``. The store and the
study's experiment are created by the driver before any trial starts.
"""

from __future__ import annotations

import functools
import getpass
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Literal

# No traffic but loopback: mlflow 3.17 reads MLFLOW_DISABLE_TELEMETRY (true/1); its DO_NOT_TRACK
# check only accepts the string "true", so "1" alone would not switch telemetry off.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
# A tracking server that is down must cost seconds, not MLflow's default of 7 retries with
# exponential backoff (minutes per call). Users who want more patience set these themselves.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

# MLflow 3.17's limits (mlflow.utils.validation; tests check they still agree). Kept here so that
# importing this module does not import mlflow: that costs seconds, which `harness run` with
# nothing left to do never pays, and which the driver pays in a thread while Ray starts.
MAX_ENTITY_KEY_LENGTH = 250
MAX_PARAM_VAL_LENGTH = 6000
MAX_TAG_VAL_LENGTH = 8000


@functools.cache
def _mlflow() -> SimpleNamespace:
    """The few mlflow names the tracker uses, imported on first use."""
    from mlflow import MlflowClient
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import Dataset as DatasetEntity
    from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag, SourceType, ViewType
    from mlflow.utils import mlflow_tags

    return SimpleNamespace(
        MlflowClient=MlflowClient, Metric=Metric, Param=Param, RunTag=RunTag, ViewType=ViewType,
        DatasetEntity=DatasetEntity, DatasetInput=DatasetInput, InputTag=InputTag, SourceType=SourceType, tags=mlflow_tags,
        MetaDataset=MetaDataset, CodeDatasetSource=CodeDatasetSource, resolve_dataset_source=resolve_dataset_source,
    )  # fmt: skip


#: The experiment tag MLflow's UI reads to choose its view; ``custom_model_development`` opens on
#: the training-runs table (without it 3.17 lands on the GenAI overview). mlflow has no constant.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
#: Our tag that tells a study's parent run (one per `harness run` / `harness tune` invocation)
#: from its trials' runs.
RUN_ROLE_TAG = "harness.role"


@dataclass(frozen=True)
class RunSource:
    """Where a run comes from, for MLflow's own ``mlflow.source.*`` / ``mlflow.user`` tags."""

    git_sha: str
    git_dirty: bool
    name: str  # mlflow.source.name: the command, e.g. "harness run"

    def tags(self, parent_run_id: str | None = None) -> dict[str, str]:
        """MLflow's standard tags through its own constants (the UI's Source and User columns,
        the commit link, the nesting of child runs under ``mlflow.parentRunId``)."""
        names = _mlflow().tags
        tags = {
            names.MLFLOW_SOURCE_NAME: self.name,
            names.MLFLOW_SOURCE_TYPE: _mlflow().SourceType.to_string(_mlflow().SourceType.LOCAL),
            names.MLFLOW_USER: _user(),
        }
        if self.git_sha != "unknown":
            tags[names.MLFLOW_GIT_COMMIT] = self.git_sha
            tags[names.MLFLOW_GIT_DIRTY] = str(self.git_dirty).lower()
        if parent_run_id:
            tags[names.MLFLOW_PARENT_RUN_ID] = parent_run_id
        return tags


@dataclass(frozen=True)
class DatasetRecord:
    """What a trial read, as an MLflow dataset input (the runs table's Dataset column).

    ``uri`` is the dataset root for real data; None for the embedded synthetic data, which is
    recorded as made by code (its generator settings in ``generator``). ``profile`` holds the
    split sizes and the teacher artifact's hash.
    """

    name: str
    digest: str
    uri: str | None
    generator: dict[str, str]
    profile: dict[str, Any]
    context: str = "training"


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "unknown"


RunStatus = Literal["FINISHED", "FAILED", "KILLED"]
_KEY_RE = re.compile(r"[^\w\-./ :]")

for _noisy in ("alembic", "mlflow.store.db.utils"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)


def default_tracking_uri(run_dir: Path) -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the embedded sqlite store under ``run_dir``."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{(Path(run_dir).resolve() / 'mlflow.db')}"


def seed_sqlite_store(db: Path) -> None:
    """Start a new sqlite store as a copy of an empty one already at MLflow's schema head.

    Why: MLflow builds a new store by running its ~60 schema migrations, each committed to disk:
    3 s of CPU and more of waiting for fsync, paid by every new run dir. A schema-only template
    (no rows but MLflow's own bookkeeping) is made once per MLflow version and schema revision in
    the temp dir; MLflow then opens the copy as an existing store and creates its Default
    experiment itself, exactly as in a store it built (``tests/test_harness_tracking.py`` compares
    the two). Anything unexpected leaves ``db`` absent: MLflow then builds it as before.
    """
    if db.exists():
        return
    try:
        import mlflow
        from mlflow.store.db.utils import _get_latest_schema_revision

        name = f"sage-harness-mlflow-{mlflow.__version__}-{_get_latest_schema_revision()}.db"
        template = Path(tempfile.gettempdir()) / name
        if not template.is_file():
            _write_schema_template(template)
        db.parent.mkdir(parents=True, exist_ok=True)
        partial = db.with_name(f".{db.name}.{os.getpid()}.tmp")
        shutil.copyfile(template, partial)
        try:
            os.link(partial, db)  # never replaces a store another process created meanwhile
        except FileExistsError:
            pass
        finally:
            partial.unlink()
    except Exception as exc:  # the template is an optimisation: MLflow's own path still works
        log.debug("no sqlite store template (%s: %s); MLflow creates %s itself", type(exc).__name__, exc, db)


def _write_schema_template(template: Path) -> None:
    """An empty store at MLflow's schema head, made by MLflow's own initialisation (written aside,
    then renamed into place, so concurrent first runs never see half a file)."""
    from mlflow.store.db.utils import _initialize_tables, create_sqlalchemy_engine

    partial = template.with_name(f".{template.name}.{os.getpid()}.tmp")
    engine = create_sqlalchemy_engine(f"sqlite:///{partial}")
    try:
        _initialize_tables(engine)
        engine.dispose()
        os.replace(partial, template)
    finally:
        engine.dispose()
        partial.unlink(missing_ok=True)


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config dict -> {'model.prompt.insert_layer': '6', ...} (lists as JSON)."""
    flat: dict[str, str] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{path}."))
        else:
            flat[path] = json.dumps(value) if isinstance(value, list | tuple) else str(value)
    return flat


def _key(name: str) -> str:
    return _KEY_RE.sub("_", name)[:MAX_ENTITY_KEY_LENGTH]


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 14] + "...[truncated]"


def _now_ms() -> int:
    return int(time.time() * 1000)


class Tracker:
    """The driver's handle on the tracking store for one study."""

    def __init__(self, uri: str, run_dir: Path) -> None:
        self.uri = uri
        self.run_dir = Path(run_dir)
        if uri.startswith("sqlite:///"):
            seed_sqlite_store(Path(uri.removeprefix("sqlite:///")))
        self.client = _mlflow().MlflowClient(tracking_uri=uri)

    @property
    def embedded(self) -> bool:
        """True for the sqlite store the harness manages (artifacts go under the run dir)."""
        return self.uri.startswith("sqlite:")

    def ensure_experiment(self, study: str, description: str = "") -> str:
        """Create (or find) the study's experiment; creating it here, before trials, avoids races."""
        found = self.client.get_experiment_by_name(study)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(found.experiment_id)
            if found.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:  # made by an older harness
                self.client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
            return found.experiment_id
        location = None
        if self.embedded:
            location = (self.run_dir.resolve() / "mlartifacts" / study).as_uri()
        tags = {_mlflow().tags.MLFLOW_RUN_NOTE: description, EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
        return self.client.create_experiment(study, artifact_location=location, tags=tags)

    def mark_stale_runs_killed(self, experiment_id: str) -> list[str]:
        """Runs left RUNNING by a driver that died: mark them KILLED. Call under the study lock."""
        stale = self.client.search_runs(
            [experiment_id],
            filter_string="attributes.status = 'RUNNING'",
            run_view_type=_mlflow().ViewType.ALL,
        )
        for run in stale:
            self.client.set_terminated(run.info.run_id, status="KILLED")
            log.warning("marked stale run %s (%s) KILLED", run.info.run_name, run.info.run_id)
        return [run.info.run_id for run in stale]

    def start_run(
        self, experiment_id: str, run_name: str, params: Mapping[str, str], tags: Mapping[str, str]
    ) -> str:
        """Create a RUNNING run with its params and tags; returns the run id."""
        run = self.client.create_run(
            experiment_id,
            run_name=run_name,
            tags={_key(k): _clip(str(v), MAX_TAG_VAL_LENGTH) for k, v in tags.items()},
        )
        run_id = run.info.run_id
        self.client.log_batch(
            run_id,
            params=[_mlflow().Param(_key(k), _clip(v, MAX_PARAM_VAL_LENGTH)) for k, v in params.items()],
        )
        return run_id

    def log_metrics(
        self, run_id: str, metrics: Mapping[str, float], step: int = 0, tags: Mapping[str, str] | None = None
    ) -> None:
        """Log a batch of metrics at ``step`` (per-epoch curves use the global epoch index), and
        ``tags`` in the same request (an epoch's stage and number: facts, not curves)."""
        stamp = _now_ms()
        entities = [_mlflow().Metric(_key(k), float(v), stamp, step) for k, v in metrics.items()]
        tag_entities = [
            _mlflow().RunTag(_key(k), _clip(str(v), MAX_TAG_VAL_LENGTH)) for k, v in (tags or {}).items()
        ]
        if entities or tag_entities:
            self.client.log_batch(run_id, metrics=entities, tags=tag_entities)

    def log_dataset(self, run_id: str, dataset: DatasetRecord) -> None:
        """One dataset input of the run through MLflow's dataset API (name, digest, source, profile)."""
        m = _mlflow()
        source = (
            m.resolve_dataset_source(dataset.uri) if dataset.uri else m.CodeDatasetSource(dataset.generator)
        )
        config = m.MetaDataset(source, name=dataset.name, digest=dataset.digest).to_dict()
        entity = m.DatasetEntity(  # MetaDataset takes no profile: the entity is built with one
            name=config["name"], digest=config["digest"], source_type=config["source_type"],
            source=config["source"], profile=json.dumps(dataset.profile, sort_keys=True),
        )  # fmt: skip
        context = m.InputTag(key=m.tags.MLFLOW_DATASET_CONTEXT, value=dataset.context)
        self.client.log_inputs(run_id, [m.DatasetInput(dataset=entity, tags=[context])])

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        entities = [_mlflow().RunTag(_key(k), _clip(str(v), MAX_TAG_VAL_LENGTH)) for k, v in tags.items()]
        if entities:
            self.client.log_batch(run_id, tags=entities)

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        """Copy a file (or a folder's files) into the run's artifacts."""
        if Path(path).is_dir():
            self.client.log_artifacts(run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(run_id, str(path), artifact_path)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, text, artifact_file)

    def end_run(self, run_id: str, status: RunStatus) -> None:
        self.client.set_terminated(run_id, status=status)

    def runs(self, experiment_id: str) -> list[Any]:
        """Every run of the experiment (tests and `harness ui` read them back)."""
        return self.client.search_runs(
            [experiment_id], run_view_type=_mlflow().ViewType.ALL, max_results=10000
        )

    def trial_runs(self, experiment_id: str) -> list[Any]:
        """The runs of trials (every run but the parent runs of invocations)."""
        return [r for r in self.runs(experiment_id) if r.data.tags.get(RUN_ROLE_TAG) != "study"]

    def latest_parent_run(self, experiment_name: str) -> str | None:
        """The newest parent run of a study's experiment, or None when there is none."""
        found = self.client.get_experiment_by_name(experiment_name)
        if found is None:
            return None
        runs = self.client.search_runs(
            [found.experiment_id],
            filter_string=f"tags.`{RUN_ROLE_TAG}` = 'study'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        return runs[0].info.run_id if runs else None

    def metric_history(self, run_id: str, key: str) -> list[Any]:
        return self.client.get_metric_history(run_id, key)

    def log_report(self, study: str, files: Sequence[Path], artifact_path: str = "report") -> str | None:
        """Attach a study's report files (its plots, tables) to the study's newest parent run, so
        the UI shows them beside the trials they summarise; returns that run's id (None: no run)."""
        run_id = self.latest_parent_run(study)
        if run_id is not None:
            for path in files:
                self.client.log_artifact(run_id, str(path), artifact_path)
        return run_id


def attach_report(run_dir: Path, files_by_study: Mapping[str, Sequence[Path]]) -> list[str]:
    """Attach each study's report files to its newest parent run, when there is a tracking store
    (``MLFLOW_TRACKING_URI``, or ``<run_dir>/mlflow.db``); returns one line per study, what was
    done or why not. Never raises: the report on disk is what counts."""
    if not (os.environ.get("MLFLOW_TRACKING_URI") or (Path(run_dir) / "mlflow.db").is_file()):
        return []
    try:
        tracker = Tracker(default_tracking_uri(run_dir), run_dir)
    except Exception as exc:  # a broken store must not fail the report
        return [f"tracking store {default_tracking_uri(run_dir)}: {type(exc).__name__}: {exc}"]
    lines = []
    for study, files in files_by_study.items():
        if not files:
            continue
        try:
            run_id = tracker.log_report(study, files)
        except Exception as exc:
            lines.append(f"{study}: report not attached to MLflow ({type(exc).__name__}: {exc})")
            continue
        if run_id is None:
            lines.append(f"{study}: no parent run in the tracking store; report not attached")
        else:
            lines.append(f"{study}: {len(files)} report file(s) attached to parent run {run_id}")
    return lines


class TrackingError(ValueError):
    """The tracking store failed and the user asked for strict tracking."""


class GuardedTracker:
    """A :class:`Tracker` whose failures never cost a result.

    Parquet files are the source of truth and MLflow is a view of them, so by default a failing
    tracking call (server down, network cut, database locked) is recorded in :attr:`errors` and
    the study goes on; the CLI reports the errors at the end. After ``trip_after`` consecutive
    failures the store is taken for down and calls are skipped for ``pause_s`` seconds, so a dead
    server costs seconds, not an HTTP timeout per logged epoch. Calls about a run that could not
    be created (``run_id`` None) are skipped. With ``strict`` every error is raised instead (the
    trial that logged fails; an unreachable store stops the study before it starts).
    """

    def __init__(self, tracker: Tracker, *, strict: bool = False, trip_after: int = 3, pause_s: float = 60.0):
        self.tracker = tracker
        self.uri = tracker.uri
        self.strict = strict
        self.trip_after = trip_after
        self.pause_s = pause_s
        self.errors: list[str] = []
        self.skipped = 0
        self._failures = 0
        self._down_until = 0.0

    @property
    def embedded(self) -> bool:
        return self.tracker.embedded

    @property
    def client(self) -> MlflowClient:
        return self.tracker.client

    def _call(self, what: str, method: Any, *args: Any, default: Any = None) -> Any:
        if self.strict:
            return method(*args)
        if time.monotonic() < self._down_until:
            self.skipped += 1
            return default
        try:
            result = method(*args)
        except Exception as exc:  # any failure of the view must not touch the results
            text = " ".join(str(exc).split())[:300] or type(exc).__name__
            self.errors.append(f"{what}: {type(exc).__name__}: {text}")
            log.warning("tracking %s failed (%s); the study goes on", what, text)
            self._failures += 1
            if self._failures >= self.trip_after:
                self._down_until = time.monotonic() + self.pause_s
                self._failures = 0
            return default
        self._failures = 0
        return result

    def ensure_experiment(self, study: str, description: str = "") -> str | None:
        """The study's experiment id, or None when the store is unreachable (strict: raise)."""
        try:
            return self._call("create the experiment", self.tracker.ensure_experiment, study, description)
        except Exception as exc:
            raise TrackingError(
                f"--strict-tracking: the MLflow tracking store {self.uri} failed before any trial started "
                f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]})"
            ) from None

    def mark_stale_runs_killed(self, experiment_id: str | None) -> list[str]:
        if experiment_id is None:
            return []
        return self._call("close stale runs", self.tracker.mark_stale_runs_killed, experiment_id, default=[])

    def start_run(
        self, experiment_id: str | None, run_name: str, params: Mapping[str, str], tags: Mapping[str, str]
    ) -> str | None:
        if experiment_id is None:
            return None
        return self._call(
            f"start run {run_name}", self.tracker.start_run, experiment_id, run_name, params, tags
        )

    def log_metrics(
        self,
        run_id: str | None,
        metrics: Mapping[str, float],
        step: int = 0,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        if run_id is not None:
            self._call(f"log metrics of run {run_id}", self.tracker.log_metrics, run_id, metrics, step, tags)

    def log_dataset(self, run_id: str | None, dataset: DatasetRecord) -> None:
        if run_id is not None:
            self._call(f"log the dataset input of run {run_id}", self.tracker.log_dataset, run_id, dataset)

    def call(self, what: str, method: Any, *args: Any, default: Any = None) -> Any:
        """Any other tracking step, guarded like the rest (e.g. tune's closing of stale runs)."""
        return self._call(what, method, *args, default=default)

    def set_tags(self, run_id: str | None, tags: Mapping[str, str]) -> None:
        if run_id is not None:
            self._call(f"set tags of run {run_id}", self.tracker.set_tags, run_id, tags)

    def log_artifact(self, run_id: str | None, path: Path, artifact_path: str | None = None) -> None:
        if run_id is not None:
            self._call(
                f"log artifact {Path(path).name}", self.tracker.log_artifact, run_id, path, artifact_path
            )

    def log_text(self, run_id: str | None, text: str, artifact_file: str) -> None:
        if run_id is not None:
            self._call(f"log {artifact_file}", self.tracker.log_text, run_id, text, artifact_file)

    def end_run(self, run_id: str | None, status: RunStatus) -> None:
        if run_id is not None:
            self._call(f"close run {run_id} as {status}", self.tracker.end_run, run_id, status)

    def runs(self, experiment_id: str) -> list[Any]:
        return self.tracker.runs(experiment_id)

    def trial_runs(self, experiment_id: str) -> list[Any]:
        return self.tracker.trial_runs(experiment_id)

    def metric_history(self, run_id: str, key: str) -> list[Any]:
        return self.tracker.metric_history(run_id, key)

    def summary(self) -> list[str]:
        """What went wrong, for the end of the study: distinct errors (first seen first)."""
        lines = list(dict.fromkeys(self.errors))
        if self.skipped:
            lines.append(f"{self.skipped} tracking call(s) skipped while {self.uri} was down")
        return lines
