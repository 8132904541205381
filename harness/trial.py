"""One trial: run the experiment (worker side) and record it (driver side), for `run` and `tune`.

The two halves talk through three typed messages (:class:`EpochMessage`, :class:`ResultMessage`,
:class:`ErrorMessage`), sent as plain JSON dicts so they can cross processes or machines:

- :func:`execute_trial` runs in the trial's process. It calls the experiment function with the
  resolved config and sends an epoch message per epoch, then one result or error message. The
  result message carries the whole :class:`~sage_model.records.ExperimentResult` as plain data.
  It never touches MLflow or the results folder.
- :class:`TrialRecorder` runs in the driver, one per trial, for `harness run` and `harness tune`
  alike. It opens the trial's MLflow run (a child of the invocation's parent run, see
  :func:`open_study_run`), logs the curves, and on the final message logs the final metrics,
  provenance, dataset input and files, hands the finished trial to its :class:`TrialDriver`, and
  closes the run FINISHED, or FAILED when anything went wrong, including the driver's part.
- A :class:`TrialDriver` is what differs between the commands: `run` writes the Parquet file
  (:class:`ResultWriter`), `tune` tells Optuna (``harness.tuning``).

:func:`run_trial` joins both halves in one process (the contract's trial function; the benchmark
uses it as the no-harness baseline).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import os
import shutil
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from harness.provenance import GitState, code_version, git_state, hardware_summary, package_versions
from harness.spec import TrialSpec
from harness.tracking import RUN_ROLE_TAG, DatasetRecord, RunSource, RunStatus
from sage_model.records import EpochReport, ExperimentResult, Metric, VideoScore

if TYPE_CHECKING:
    from harness.results import TrialRecord

log = logging.getLogger(__name__)

#: ``experiment_fn(config, *, work_dir, on_epoch) -> ExperimentResult`` (see docs/CONTRACTS.md).
ExperimentFn = Callable[..., ExperimentResult]
Emit = Callable[[dict[str, Any]], None]


def default_experiment_fn() -> ExperimentFn:
    """The real trial function, imported lazily (workers import torch only when they run)."""
    from sage_model.experiment import run_experiment

    return run_experiment


def trial_work_dir(run_dir: Path, trial: TrialSpec) -> Path:
    """Scratch folder of a trial: predictions, its log, the resolved config."""
    return Path(run_dir) / "trials" / trial.study / trial.trial_id


def trial_checkpoint_dir(checkpoint_root: Path, trial: TrialSpec) -> Path:
    """Where a trial's training checkpoint lives: ``<checkpoint root>/<study>/<trial_id>``.

    The root is ``--checkpoint-dir`` (default ``<results-dir>/.checkpoints``), on storage every node
    reaches, so a retry on another node resumes from the last finished epoch. Keyed by the trial
    id (which hashes the resolved config), so a changed config never resumes a stale checkpoint;
    the root itself is in no trial id.
    """
    return Path(checkpoint_root) / trial.study / trial.trial_id


def remove_checkpoint(checkpoint_root: Path | None, trial: TrialSpec) -> None:
    """Delete a trial's checkpoint once its result is recorded (it only serves a resume). Best
    effort: a driver that cannot reach the folder leaves it, and says so in the log."""
    if checkpoint_root is None:
        return
    folder = trial_checkpoint_dir(checkpoint_root, trial)
    if not folder.exists():
        return
    try:
        shutil.rmtree(folder)
    except OSError as exc:
        log.warning("trial %s: could not remove its checkpoint %s (%s)", trial.trial_id, folder, exc)


def error_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (clipped): what the failure list shows."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    line = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return line[:500]


# --------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EpochMessage:
    """One epoch's report; ``step`` is :attr:`EpochReport.step` (-1: the experiment did not count)."""

    stage: int
    epoch: int
    step: int
    metrics: dict[str, float]
    kind: ClassVar[str] = "epoch"


@dataclass(frozen=True)
class ResultMessage:
    """A finished experiment: its result as plain data and the facts of the process that ran it."""

    result: dict[str, Any]  # result_to_data(ExperimentResult)
    wall_s: float
    hardware: str
    cuda_visible_devices: str = ""
    pid: int = 0
    node_id: str = ""  # filled in by harness.scheduling on its way home
    kind: ClassVar[str] = "result"

    def experiment_result(self) -> ExperimentResult:
        return result_from_data(self.result)


@dataclass(frozen=True)
class ErrorMessage:
    """The experiment raised: one line for the failure list and the traceback for the run."""

    error: str
    traceback: str = ""
    wall_s: float = 0.0
    node_id: str = ""
    kind: ClassVar[str] = "error"


Message = EpochMessage | ResultMessage | ErrorMessage
MESSAGE_KINDS: dict[str, type[Message]] = {m.kind: m for m in (EpochMessage, ResultMessage, ErrorMessage)}


def encode(message: Message) -> dict[str, Any]:
    """Message -> JSON-able dict with its ``kind``."""
    return {"kind": message.kind, **dataclasses.asdict(message)}


def decode(data: Mapping[str, Any]) -> Message:
    """Inverse of :func:`encode`; keys a message does not know (added on the way) are dropped."""
    kind = data.get("kind")
    if kind not in MESSAGE_KINDS:
        raise ValueError(f"unknown message kind {kind!r}")
    cls = MESSAGE_KINDS[kind]
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def result_to_data(result: ExperimentResult) -> dict[str, Any]:
    """ExperimentResult -> plain data (paths absolute strings: the driver may run elsewhere)."""
    data = dataclasses.asdict(result)
    for key in ("predictions", "artifacts"):
        data[key] = {str(k): str(Path(v).resolve()) for k, v in data[key].items()}
    return data


def result_from_data(data: Mapping[str, Any]) -> ExperimentResult:
    """Inverse of :func:`result_to_data`."""
    return ExperimentResult(
        **{
            **data,
            "metrics": [Metric(**m) for m in data["metrics"]],
            "videos": [VideoScore(**v) for v in data.get("videos", [])],
            "predictions": {k: Path(v) for k, v in data["predictions"].items()},
            "artifacts": {k: Path(v) for k, v in data.get("artifacts", {}).items()},
        }
    )


# --------------------------------------------------------------------------------------------
# Worker side
# --------------------------------------------------------------------------------------------


def takes_checkpoint_dir(fn: ExperimentFn) -> bool:
    """Whether ``fn`` accepts ``checkpoint_dir=`` (added to the experiment contract by issue #17;
    experiment functions written before it, e.g. test stand-ins, keep working without it)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable: call it as the contract says
        return False
    return any(p.name == "checkpoint_dir" or p.kind is p.VAR_KEYWORD for p in params)


def execute_trial(
    trial: TrialSpec,
    run_dir: Path,
    emit: Emit,
    experiment_fn: ExperimentFn | None = None,
    checkpoint_root: Path | None = None,
) -> None:
    """Run one trial in this process; every outcome becomes a message, nothing is raised.

    The experiment's log records go to ``<work_dir>/trial.log`` (the driver keeps it as an MLflow
    artifact, also when the trial fails). With ``checkpoint_root`` the training checkpoint goes to
    :func:`trial_checkpoint_dir` instead of the work dir.
    """
    work_dir = trial_work_dir(run_dir, trial)
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "config.json").write_text(trial.config.model_dump_json(indent=2))
    handler = logging.FileHandler(work_dir / "trial.log", mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    previous_level = root.level
    root.setLevel(min(previous_level, logging.INFO) if previous_level else logging.INFO)
    start = time.perf_counter()

    def on_epoch(report: EpochReport) -> None:
        metrics = {str(k): float(v) for k, v in report.metrics.items()}
        emit(encode(EpochMessage(int(report.stage), int(report.epoch), int(report.step), metrics)))

    message: Message
    try:
        fn = experiment_fn or default_experiment_fn()
        extra: dict[str, Any] = {}
        if checkpoint_root is not None and takes_checkpoint_dir(fn):
            extra["checkpoint_dir"] = trial_checkpoint_dir(checkpoint_root, trial)
        result = fn(trial.config, work_dir=work_dir, on_epoch=on_epoch, **extra)
        message = ResultMessage(
            result=result_to_data(result),
            wall_s=time.perf_counter() - start,
            hardware=hardware_summary(),
            cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES", ""),
            pid=os.getpid(),
        )
    except Exception as exc:  # the failure signal of run_experiment: record it, let the others go on
        log.exception("trial %s failed", trial.trial_id)
        message = ErrorMessage(error_line(exc), traceback.format_exc(), time.perf_counter() - start)
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)
        handler.close()
    emit(encode(message))


#: One trial's work: (TrialSpec or its JSON, run_dir, experiment_fn[, checkpoint root]); the
#: checkpoint root is optional (absent: the checkpoint stays in the trial's work dir).
WorkItem = (
    tuple[TrialSpec | str, str, ExperimentFn | None]
    | tuple[TrialSpec | str, str, ExperimentFn | None, str | None]
)


def work_entry(item: WorkItem, emit: Emit) -> None:
    """What a Ray worker runs for one trial, for `run` and `tune` (module level, light imports:
    workers unpickle it). The trial comes as a TrialSpec or its JSON (a search passes it inside
    the Tune config, which must stay plain data).

    The embedded synthetic dataset is generated once per run directory and shared by every trial
    and study there (unless SAGE_DATA_CACHE says otherwise)."""
    trial, run_dir, experiment_fn = item[0], item[1], item[2]
    checkpoint_root = item[3] if len(item) > 3 else None
    if isinstance(trial, str):
        trial = TrialSpec.model_validate_json(trial)
    os.environ.setdefault("SAGE_DATA_CACHE", str(Path(run_dir) / "synthetic-data"))
    execute_trial(
        trial, Path(run_dir), emit, experiment_fn, Path(checkpoint_root) if checkpoint_root else None
    )


# --------------------------------------------------------------------------------------------
# Driver side
# --------------------------------------------------------------------------------------------

TrialStatus = Literal["pending", "running", "finished", "pruned", "failed", "skipped"]


@dataclass
class TrialOutcome:
    """What happened to one trial (the runner's summary and the CLI's failure list)."""

    trial_id: str
    variant: str
    seed: int
    status: TrialStatus
    error: str | None = None
    wall_s: float = 0.0
    result_path: Path | None = None
    mlflow_run_id: str | None = None
    synthetic: bool | None = None
    #: final metrics by their flat key (``predcls_all_map``)
    metrics: dict[str, float] = field(default_factory=dict)
    #: attempts made (1 + retries used) and the Ray node of the last one (None when unknown)
    attempts: int = 1
    node_id: str | None = None


@dataclass
class RecordingContext:
    """Per-study things every recorder needs: where to log and write, and the code's identity."""

    tracker: Any  # harness.tracking.GuardedTracker (mlflow is imported only when it is used)
    experiment_id: str | None
    results_dir: Path
    git: GitState
    #: attempts after the first that a failing trial gets (``harness run --retries``)
    retries: int = 0
    #: folder holding the trials' work dirs (``trial_work_dir``): their trial.log is logged from there
    work_root: Path = Path("runs")
    #: mlflow.source.name of the runs: the command that made them
    source: str = "harness run"
    #: the invocation's parent run (:func:`open_study_run`); None: trials are top-level runs
    parent_run_id: str | None = None
    #: the study's YAML, logged with every run (None when the study came as an object)
    study_file: Path | None = None
    #: digests of the datasets already logged as inputs of the parent run
    parent_datasets: set[str] = field(default_factory=set)
    #: ``--checkpoint-dir``: the trials' training checkpoints, removed once a trial is recorded
    #: (None: they stay in the work dirs, as :func:`run_trial` keeps them)
    checkpoint_root: Path | None = None

    @property
    def run_source(self) -> RunSource:
        return RunSource(self.git.sha, self.git.dirty, self.source)


class TrialRejected(ValueError):
    """A driver refuses a finished trial (tune: the objective was never reported); the trial
    fails with this message as its error."""


class TrialDriver(Protocol):
    """What a command does with a trial besides recording it (``harness run``: write the result;
    ``harness tune``: report to Optuna). Raising in ``on_finished`` fails the trial."""

    def on_epoch(self, recorder: TrialRecorder, message: EpochMessage) -> None: ...

    def on_finished(self, recorder: TrialRecorder, result: ExperimentResult) -> None: ...

    def on_failed(self, recorder: TrialRecorder, error: str) -> None: ...


class ResultWriter:
    """`harness run`'s driver: a finished trial becomes its Parquet file (the source of truth)."""

    def on_epoch(self, recorder: TrialRecorder, message: EpochMessage) -> None:
        pass

    def on_finished(self, recorder: TrialRecorder, result: ExperimentResult) -> None:
        from harness.results import write_result

        assert recorder.record is not None
        recorder.outcome.result_path = write_result(recorder.ctx.results_dir, recorder.record, result)

    def on_failed(self, recorder: TrialRecorder, error: str) -> None:
        pass


def run_name(trial: TrialSpec) -> str:
    """What the runs table shows: variant, dataset and seed first (``6 · vidvrd · s0``); the
    trial id stays a tag, and the key the harness uses."""
    return f"{trial.variant} · {trial.dataset} · s{trial.seed}"


def identity_tags(trial: TrialSpec) -> dict[str, str]:
    """A trial's identity (every TrialSpec field but the config, which goes in as params)."""
    return {k: str(v) for k, v in trial.model_dump(mode="json", exclude={"config"}).items()}


def record_tags(record: TrialRecord) -> dict[str, str]:
    """The provenance record as MLflow tags, one per field (the config is in the params and the
    config.json artifact; the run id is the run's own)."""
    tags = {}
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        if f.name in ("config_json", "mlflow_run_id"):
            continue
        if isinstance(value, dict):
            tags[f.name] = json.dumps(value, sort_keys=True)
        else:
            tags[f.name] = str(value).lower() if isinstance(value, bool) else str(value)
    return tags


def final_metrics(result: ExperimentResult, wall_s: float) -> dict[str, float]:
    """The end-of-trial numbers by MLflow section: ``test/{task}_{split}_{metric}``, then the
    cost of the trial (``system/``) and the model's size (``model/``)."""
    metrics = {f"test/{m.key}": float(m.value) for m in result.metrics}
    metrics["system/wall_s"] = wall_s
    if result.peak_rss_mb > 0:
        metrics["system/peak_rss_mb"] = result.peak_rss_mb
    if result.peak_cuda_mb > 0:
        metrics["system/peak_cuda_mb"] = result.peak_cuda_mb
    metrics["model/n_params"] = float(result.n_params)
    weights = result.artifacts.get("weights")
    if weights is not None and Path(weights).is_file():
        metrics["model/weights_mb"] = Path(weights).stat().st_size / 2**20
    return metrics


def dataset_record(trial: TrialSpec, result: ExperimentResult) -> DatasetRecord:
    """The data a trial read, for MLflow's dataset input: name, the data hash as digest, where it
    lives (or how it was generated) and a profile with split sizes and the teacher's hash."""
    data = trial.config.data
    name = (
        data.dataset if data.test_dataset in (None, data.dataset) else f"{data.dataset}->{data.test_dataset}"
    )
    generator = {}
    if data.root is None:
        name += " (synthetic)"
        generator = {
            "generator": "sage_model.data.synth",
            "videos": str(data.synthetic_videos),
            **({"test_videos": str(data.synthetic_test_videos)} if data.synthetic_test_videos else {}),
            "seed": str(data.synthetic_seed),
        }
    profile = {
        "split_sizes": dict(result.split_sizes),
        "data_hash": result.data_hash,
        "teacher": data.teacher,
        "teacher_hash": result.teacher_hash,
        "synthetic": result.synthetic,
    }
    uri = None if data.root is None else str(Path(data.root).resolve())
    return DatasetRecord(name, result.data_hash, uri, generator, profile)


class TrialRecorder:
    """Driver-side record of one trial: its MLflow run, then whatever its driver does with it."""

    def __init__(
        self,
        trial: TrialSpec,
        ctx: RecordingContext,
        driver: TrialDriver | None = None,
        *,
        name: str | None = None,
        tags: Mapping[str, str] | None = None,
        computed_by: TrialSpec | None = None,
    ) -> None:
        self.trial = trial
        #: the trial whose process computes this one (itself, unless it shares another's config)
        self.computed_by = computed_by or trial
        self.ctx = ctx
        self.driver: TrialDriver = driver or ResultWriter()
        self.name = name or run_name(trial)
        self.tags = dict(tags or {})
        self.run_id: str | None = None
        #: the next epoch's step when the experiment does not count them itself
        self.step = 0
        #: the provenance of the finished trial, built once (Parquet columns and MLflow tags)
        self.record: TrialRecord | None = None
        self.outcome = TrialOutcome(trial.trial_id, trial.variant, trial.seed, "pending")
        #: True between an attempt's error message and Tune restarting that attempt
        self.awaiting_restart = False

    @property
    def open(self) -> bool:
        return self.outcome.status in ("pending", "running")

    @property
    def work_dir(self) -> Path:
        return trial_work_dir(self.ctx.work_root, self.computed_by)

    def start(self) -> None:
        """Open the MLflow run (RUNNING): config as params, identity and source tags, the resolved
        config and the study file as artifacts (there from the start, whatever happens later)."""
        from harness.tracking import flatten

        tracker, trial = self.ctx.tracker, self.trial
        tags = {
            **identity_tags(trial),
            RUN_ROLE_TAG: "trial",
            **self.ctx.run_source.tags(self.ctx.parent_run_id),
            **self.tags,
        }
        params = flatten(trial.config.model_dump(mode="json"))
        self.run_id = tracker.start_run(self.ctx.experiment_id, self.name, params, tags)
        self.outcome.status = "running"
        self.outcome.mlflow_run_id = self.run_id
        tracker.log_text(self.run_id, trial.config.model_dump_json(indent=2), "config.json")
        if self.ctx.study_file is not None:
            tracker.log_artifact(self.run_id, self.ctx.study_file)

    def handle(self, data: Mapping[str, Any]) -> None:
        """Dispatch one worker message; errors while recording fail the trial, not the study."""
        if not self.open:
            return
        if self.run_id is None:
            self.start()
        if data.get("kind") not in MESSAGE_KINDS:
            log.warning("trial %s: ignoring message of kind %r", self.trial.trial_id, data.get("kind"))
            return
        try:
            message = decode(data)
            if isinstance(message, EpochMessage):
                self._epoch(message)
            elif isinstance(message, ResultMessage):
                self._finish(message)
            else:
                self._error(message)
        except TrialRejected as exc:
            self.fail(str(exc))
        except Exception as exc:
            log.exception("trial %s: recording failed", self.trial.trial_id)
            self.fail(f"recording failed: {error_line(exc)}", traceback.format_exc())

    def _epoch(self, message: EpochMessage) -> None:
        """Curves at the global epoch step (continuing over a resume); stage and epoch as tags."""
        step = message.step if message.step >= 0 else self.step
        where = {"stage": str(message.stage), "epoch": str(message.epoch)}
        self.ctx.tracker.log_metrics(self.run_id, message.metrics, step=step, tags=where)
        self.step = step + 1
        self.driver.on_epoch(self, dataclasses.replace(message, step=step))

    def _error(self, message: ErrorMessage) -> None:
        self.outcome.node_id = message.node_id or self.outcome.node_id
        if self.outcome.attempts <= self.ctx.retries:
            self.retry(message.error, message.traceback)
            self.awaiting_restart = True
            return
        self.fail(message.error, message.traceback, message.wall_s)

    def _finish(self, message: ResultMessage) -> None:
        tracker, run_id = self.ctx.tracker, self.run_id
        result = message.experiment_result()
        self.record = self._record(message, result)
        tracker.log_metrics(run_id, final_metrics(result, message.wall_s), step=self.step)
        tracker.set_tags(run_id, {**record_tags(self.record), **self._run_facts(message)})
        self._log_dataset(dataset_record(self.trial, result))
        self._log_files(result)
        self.driver.on_finished(self, result)
        self._log_trial_log()
        tracker.end_run(run_id, "FINISHED")
        remove_checkpoint(self.ctx.checkpoint_root, self.trial)  # recorded: no resume will need it
        self.outcome.status = "finished"
        self.outcome.wall_s = message.wall_s
        self.outcome.synthetic = result.synthetic
        self.outcome.metrics = {m.key: float(m.value) for m in result.metrics}
        self.outcome.node_id = message.node_id or None

    def _run_facts(self, message: ResultMessage) -> dict[str, str]:
        """Where and how this run happened (not results provenance: not in the Parquet file)."""
        return {
            "cuda_visible_devices": message.cuda_visible_devices,
            "ray_node_id": message.node_id,
            "attempts": str(self.outcome.attempts),
        }

    def _log_files(self, result: ExperimentResult) -> None:
        """Predictions and the experiment's artifacts (weights, Fig. 4 stability file). On a
        multi-node cluster without a shared run dir the files stay on the worker; the run then
        says so in a tag instead of failing."""
        tracker, run_id = self.ctx.tracker, self.run_id
        missing = []
        for folder, files in (("predictions", result.predictions), ("", result.artifacts)):
            for name, path in files.items():
                if Path(path).is_file():
                    tracker.log_artifact(run_id, Path(path), f"{folder}/{name}" if folder else None)
                else:
                    missing.append(name)
        if missing:
            tracker.set_tags(run_id, {"files_missing": ",".join(missing)})

    def _log_dataset(self, dataset: DatasetRecord) -> None:
        """The trial's dataset input, and the parent's: the runs table shows it on the row a user
        sees first (the children are folded under their parent)."""
        self.ctx.tracker.log_dataset(self.run_id, dataset)
        parent = self.ctx.parent_run_id
        if parent is not None and dataset.digest not in self.ctx.parent_datasets:
            self.ctx.parent_datasets.add(dataset.digest)
            self.ctx.tracker.log_dataset(parent, dataset)

    def _log_trial_log(self) -> None:
        path = self.work_dir / "trial.log"
        if self.run_id is not None and path.is_file():
            self.ctx.tracker.log_artifact(self.run_id, path)

    def _record(self, message: ResultMessage, result: ExperimentResult) -> TrialRecord:
        """The one place a trial's provenance is assembled."""
        from harness.results import TrialRecord

        trial = self.trial
        return TrialRecord(
            study=trial.study,
            study_version=trial.study_version,
            trial_id=trial.trial_id,
            variant=trial.variant,
            dataset=trial.dataset,
            seed=trial.seed,
            config_hash=trial.config_hash,
            config_json=trial.config.model_dump_json(),
            git_sha=self.ctx.git.sha,
            git_dirty=self.ctx.git.dirty,
            packages=package_versions(),
            hardware=message.hardware,
            device=result.device,
            data_hash=result.data_hash,
            teacher_hash=result.teacher_hash,
            synthetic=result.synthetic,
            wall_s=message.wall_s,
            finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
            mlflow_run_id=self.run_id or "",
            code_version=code_version(),
        )

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Tags a driver adds to the run (tune: the Optuna state)."""
        self.ctx.tracker.set_tags(self.run_id, tags)

    def retry(self, error: str, details: str = "") -> None:
        """An attempt failed and another is allowed: keep the run open, note why, count it."""
        attempt = self.outcome.attempts
        log.warning("trial %s: attempt %d failed (%s); retrying", self.trial.trial_id, attempt, error)
        self.outcome.attempts = attempt + 1
        if self.run_id is None:
            return
        self.ctx.tracker.set_tags(self.run_id, {f"attempt_{attempt}_error": error})
        if details:
            self.ctx.tracker.log_text(self.run_id, details, f"error_attempt{attempt}.txt")

    def fail(self, error: str, details: str = "", wall_s: float = 0.0) -> None:
        """Close the trial as failed: error tag, traceback and trial log, run FAILED (best effort)."""
        self._close("failed", "FAILED", error, details, wall_s)

    def kill(self, reason: str) -> None:
        """The command stopped before this trial ended (Ctrl-C, an error): close its run KILLED."""
        self._close("failed", "KILLED", reason)

    def stop(self, tags: Mapping[str, str]) -> None:
        """The driver stopped a healthy trial early (tune's pruning): the run ends FINISHED."""
        if not self.open:
            return
        self.outcome.status = "pruned"
        self.set_tags(tags)
        self._log_trial_log()
        self.ctx.tracker.end_run(self.run_id, "FINISHED")
        remove_checkpoint(self.ctx.checkpoint_root, self.trial)  # a pruned trial never resumes

    def _close(
        self, status: TrialStatus, run_status: RunStatus, error: str, details: str = "", wall_s: float = 0.0
    ) -> None:
        if not self.open:
            return
        self.outcome.status = status
        self.outcome.error = error
        self.outcome.wall_s = wall_s
        try:
            self.driver.on_failed(self, error)
        except Exception:  # the driver's own store failing must not leave the run open
            log.exception("trial %s: the driver failed to record the failure", self.trial.trial_id)
        if self.run_id is None:
            return
        try:
            self.ctx.tracker.set_tags(self.run_id, {"error": error})
            if details:
                self.ctx.tracker.log_text(self.run_id, details, "error.txt")
            self._log_trial_log()
        finally:
            self.ctx.tracker.end_run(self.run_id, run_status)


def recording_context(
    run_dir: Path,
    results_dir: Path,
    study: str,
    description: str = "",
    *,
    strict_tracking: bool = False,
    retries: int = 0,
    source: str = "harness run",
    work_root: Path | None = None,
    study_file: Path | None = None,
    checkpoint_root: Path | None = None,
) -> RecordingContext:
    """Create the tracking store and the experiment ``study`` (driver, before any trial starts).

    Tracking failures are collected, not raised (see :class:`harness.tracking.GuardedTracker`),
    unless ``strict_tracking``; an unreachable store then leaves ``experiment_id`` None and the
    trials run and write their results without MLflow runs. ``work_root`` (default ``run_dir``)
    holds the trials' work dirs; ``checkpoint_root`` their checkpoints (:func:`trial_checkpoint_dir`).
    """
    from harness.tracking import GuardedTracker, Tracker, default_tracking_uri

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tracker = GuardedTracker(Tracker(default_tracking_uri(run_dir), run_dir), strict=strict_tracking)
    experiment_id = tracker.ensure_experiment(study, description)
    return RecordingContext(
        tracker, experiment_id, Path(results_dir), git_state(), retries, Path(work_root or run_dir),
        source, None, Path(study_file).resolve() if study_file else None,
        checkpoint_root=Path(checkpoint_root).resolve() if checkpoint_root else None,
    )  # fmt: skip


def open_study_run(ctx: RecordingContext, study: str) -> str | None:
    """The invocation's parent run, ``<study> · <YYYY-mm-dd HH:MM>`` (local time); every trial
    recorded with ``ctx`` afterwards becomes its child. One per study per `harness run`, one per
    `harness tune` search."""
    name = f"{study} · {datetime.now().strftime('%Y-%m-%d %H:%M')}"
    tags = {RUN_ROLE_TAG: "study", "study": study, **ctx.run_source.tags()}
    ctx.parent_run_id = ctx.tracker.start_run(ctx.experiment_id, name, {}, tags)
    if ctx.study_file is not None:
        ctx.tracker.log_artifact(ctx.parent_run_id, ctx.study_file)
    return ctx.parent_run_id


def close_study_run(ctx: RecordingContext, outcomes: list[TrialOutcome], interrupted: bool = False) -> None:
    """Close the parent run with the invocation's counts; KILLED when the command was stopped."""
    if ctx.parent_run_id is None:
        return
    counts = {
        f"trials_{s}": str(sum(o.status == s for o in outcomes)) for s in ("finished", "pruned", "failed")
    }
    ctx.tracker.set_tags(ctx.parent_run_id, counts)
    ctx.tracker.end_run(ctx.parent_run_id, "KILLED" if interrupted else "FINISHED")


def run_trial(
    trial: TrialSpec,
    run_dir: Path,
    *,
    results_dir: Path = Path("results"),
    experiment_fn: ExperimentFn | None = None,
    ctx: RecordingContext | None = None,
) -> TrialOutcome:
    """Run one trial in this process: experiment, MLflow run, Parquet file. Never raises for a
    failing experiment; the outcome says ``failed`` with the error."""
    ctx = ctx or recording_context(run_dir, results_dir, trial.study)
    ctx = dataclasses.replace(ctx, work_root=Path(run_dir).resolve())
    recorder = TrialRecorder(trial, ctx)
    recorder.start()
    try:
        execute_trial(trial, ctx.work_root, recorder.handle, experiment_fn)
    finally:
        recorder.kill("the trial did not report a result")  # no-op when it finished or failed
    return recorder.outcome
