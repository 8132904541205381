"""One trial: run the experiment (worker side) and record it (driver side).

The two halves talk through small JSON messages so they can live in different processes, or
machines:

- :func:`execute_trial` runs in the trial's process. It calls the experiment function with the
  resolved config and sends ``epoch`` messages per epoch, then one ``result`` or ``error``
  message. It never touches MLflow or the results folder.
- :class:`TrialRecorder` runs in the driver. It opens the MLflow run, logs the curves, and on the
  final message logs final metrics and artifacts, writes the Parquet file and closes the run
  FINISHED, or FAILED when anything went wrong, including writing the result.

:func:`run_trial` joins both halves in one process (the contract's trial function; the benchmark
uses it as the no-harness baseline).
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import astuple, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from harness.provenance import GitState, git_state, hardware_summary, package_versions
from harness.spec import TrialSpec

if TYPE_CHECKING:
    from harness.results import TrialRecord

log = logging.getLogger(__name__)

#: ``experiment_fn(config, *, work_dir, on_epoch) -> ExperimentResult`` (see docs/CONTRACTS.md).
ExperimentFn = Callable[..., Any]
Emit = Callable[[dict[str, Any]], None]


def default_experiment_fn() -> ExperimentFn:
    """The real trial function, imported lazily (workers import torch only when they run)."""
    from sage_model.experiment import run_experiment

    return run_experiment


def trial_work_dir(run_dir: Path, trial: TrialSpec) -> Path:
    """Scratch folder of a trial: predictions, its log, the resolved config."""
    return Path(run_dir) / "trials" / trial.study / trial.trial_id


def error_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (clipped): what the failure list shows."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    line = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return line[:500]


# --------------------------------------------------------------------------------------------
# Worker side
# --------------------------------------------------------------------------------------------


def _result_message(result: Any, wall_s: float) -> dict[str, Any]:
    """ExperimentResult -> JSON message (duck-typed: the harness owns no sage_model classes)."""
    return {
        "kind": "result",
        "metrics": [[m.task, m.split, m.name, float(m.value)] for m in result.metrics],
        "videos": [list(astuple(v)) for v in getattr(result, "videos", ())],
        "predictions": {str(k): str(Path(v).resolve()) for k, v in result.predictions.items()},
        "data_hash": str(result.data_hash),
        "teacher_hash": str(result.teacher_hash),
        "synthetic": bool(result.synthetic),
        "n_params": int(result.n_params),
        "device": str(result.device),
        "experiment_wall_s": float(result.wall_s),
        "wall_s": wall_s,
        "hardware": hardware_summary(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
        "pid": os.getpid(),
    }


def execute_trial(
    trial: TrialSpec, run_dir: Path, emit: Emit, experiment_fn: ExperimentFn | None = None
) -> None:
    """Run one trial in this process; every outcome becomes a message, nothing is raised.

    The experiment's log records go to ``<work_dir>/trial.log`` (kept as an MLflow artifact).
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

    def on_epoch(report: Any) -> None:
        metrics = {str(k): float(v) for k, v in report.metrics.items()}
        emit({"kind": "epoch", "stage": int(report.stage), "epoch": int(report.epoch), "metrics": metrics})

    try:
        fn = experiment_fn or default_experiment_fn()
        result = fn(trial.config, work_dir=work_dir, on_epoch=on_epoch)
        message = _result_message(result, time.perf_counter() - start)
    except Exception as exc:  # the failure signal of run_experiment: record it, let the others go on
        log.exception("trial %s failed", trial.trial_id)
        message = {
            "kind": "error",
            "error": error_line(exc),
            "traceback": traceback.format_exc(),
            "wall_s": time.perf_counter() - start,
        }
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)
        handler.close()
    emit(message)


def work_entry(item: tuple[TrialSpec, str, ExperimentFn | None], emit: Emit) -> None:
    """What a Ray worker runs for one trial (module level, light imports: workers unpickle it).

    The embedded synthetic dataset is generated once per run directory and shared by every trial
    and study there (unless SAGE_DATA_CACHE says otherwise)."""
    trial, run_dir, experiment_fn = item
    os.environ.setdefault("SAGE_DATA_CACHE", str(Path(run_dir) / "synthetic-data"))
    execute_trial(trial, Path(run_dir), emit, experiment_fn)


# --------------------------------------------------------------------------------------------
# Driver side
# --------------------------------------------------------------------------------------------

TrialStatus = Literal["pending", "running", "finished", "failed", "skipped"]


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
    metrics: dict[str, float] = field(default_factory=dict)
    #: attempts made (1 + retries used) and the Ray node of the last one (None when unknown)
    attempts: int = 1
    node_id: str | None = None


@dataclass
class RecordingContext:
    """Per-study things every recorder needs: where to log and write, and the code's identity."""

    tracker: Any  # harness.tracking.Tracker (imported lazily: mlflow is slow to import)
    experiment_id: str
    results_dir: Path
    git: GitState
    #: attempts after the first that a failing trial gets (``harness run --retries``)
    retries: int = 0


def final_metric_key(task: str, split: str, name: str) -> str:
    """MLflow name of a final metric: ``{task}_{split}_{metric}``, e.g. ``predcls_all_map``."""
    return f"{task}_{split}_{name}"


class TrialRecorder:
    """Driver-side record of one trial: the MLflow run and, at the end, the Parquet file."""

    def __init__(self, trial: TrialSpec, ctx: RecordingContext) -> None:
        self.trial = trial
        self.ctx = ctx
        self.run_id: str | None = None
        self.step = 0
        self.outcome = TrialOutcome(trial.trial_id, trial.variant, trial.seed, "pending")
        #: True between an attempt's error message and Tune restarting that attempt
        self.awaiting_restart = False

    @property
    def open(self) -> bool:
        return self.outcome.status in ("pending", "running")

    def start(self) -> None:
        """Open the MLflow run (RUNNING) with the flattened config as params."""
        from harness.tracking import flatten

        trial = self.trial
        tags = {
            "study": trial.study,
            "study_version": str(trial.study_version),
            "variant": trial.variant,
            "dataset": trial.dataset,
            "seed": str(trial.seed),
            "trial_id": trial.trial_id,
            "config_hash": trial.config_hash,
            "git_sha": self.ctx.git.sha,
            "git_dirty": str(self.ctx.git.dirty).lower(),
            "packages": json.dumps(package_versions(), sort_keys=True),
        }
        params = flatten(trial.config.model_dump(mode="json"))
        self.run_id = self.ctx.tracker.start_run(self.ctx.experiment_id, trial.trial_id, params, tags)
        self.outcome.status = "running"
        self.outcome.mlflow_run_id = self.run_id

    def handle(self, message: Mapping[str, Any]) -> None:
        """Dispatch one worker message; errors while recording fail the trial, not the study."""
        if not self.open:
            return
        if self.run_id is None:
            self.start()
        kind = message.get("kind")
        try:
            if kind == "epoch":
                self._epoch(message)
            elif kind == "result":
                self._finish(message)
            elif kind == "error":
                self.outcome.node_id = message.get("node_id", self.outcome.node_id)
                if self.outcome.attempts <= self.ctx.retries:
                    self.retry(str(message["error"]), str(message.get("traceback", "")))
                    self.awaiting_restart = True
                    return
                self.fail(
                    str(message["error"]), str(message.get("traceback", "")), float(message.get("wall_s", 0))
                )
            else:
                log.warning("trial %s: ignoring message of kind %r", self.trial.trial_id, kind)
        except Exception as exc:
            log.exception("trial %s: recording failed", self.trial.trial_id)
            self.fail(f"recording failed: {error_line(exc)}", traceback.format_exc())

    def _epoch(self, message: Mapping[str, Any]) -> None:
        metrics = dict(message["metrics"])
        metrics.update(stage=message["stage"], epoch=message["epoch"])
        self.ctx.tracker.log_metrics(self.run_id, metrics, step=self.step)
        self.step += 1

    def _finish(self, message: Mapping[str, Any]) -> None:
        from harness.results import ResultRows, write_result
        from sage_model.records import Metric, VideoScore

        tracker, run_id = self.ctx.tracker, self.run_id
        rows = [Metric(task, split, name, value) for task, split, name, value in message["metrics"]]
        videos = [VideoScore(*v) for v in message.get("videos", ())]
        final = {final_metric_key(r.task, r.split, r.name): r.value for r in rows}
        final.update(wall_s=message["wall_s"], n_params=message["n_params"])
        tracker.log_metrics(run_id, final, step=self.step)
        tracker.set_tags(run_id, self._result_tags(message))
        self._log_artifacts(message)
        record = self._record(message)
        path = write_result(self.ctx.results_dir, record, ResultRows(rows, videos))
        tracker.end_run(run_id, "FINISHED")
        self.outcome.status = "finished"
        self.outcome.result_path = path
        self.outcome.wall_s = float(message["wall_s"])
        self.outcome.synthetic = bool(message["synthetic"])
        self.outcome.metrics = final
        self.outcome.node_id = message.get("node_id")

    def _result_tags(self, message: Mapping[str, Any]) -> dict[str, str]:
        return {
            "hardware": message["hardware"],
            "device": message["device"],
            "data_hash": message["data_hash"],
            "teacher_hash": message["teacher_hash"],
            "synthetic": str(message["synthetic"]).lower(),
            "cuda_visible_devices": message.get("cuda_visible_devices", ""),
            "ray_node_id": message.get("node_id", ""),
            "attempts": str(self.outcome.attempts),
        }

    def _log_artifacts(self, message: Mapping[str, Any]) -> None:
        """Resolved config and predictions. On a multi-node cluster without a shared run dir the
        prediction files stay on the worker; the run then says so in a tag instead of failing."""
        tracker, run_id = self.ctx.tracker, self.run_id
        tracker.log_text(run_id, self.trial.config.model_dump_json(indent=2), "config.json")
        missing = []
        for name, raw in message["predictions"].items():
            path = Path(raw)
            if path.exists():
                tracker.log_artifact(run_id, path, f"predictions/{name}")
            else:
                missing.append(name)
        if missing:
            tracker.set_tags(run_id, {"predictions_missing": ",".join(missing)})

    def _record(self, message: Mapping[str, Any]) -> TrialRecord:
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
            hardware=message["hardware"],
            device=message["device"],
            data_hash=message["data_hash"],
            teacher_hash=message["teacher_hash"],
            synthetic=bool(message["synthetic"]),
            wall_s=float(message["wall_s"]),
            finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
            mlflow_run_id=self.run_id or "",
        )

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
        """Close the trial as failed: error tag, traceback artifact, run FAILED (best effort)."""
        if not self.open:
            return
        self.outcome.status = "failed"
        self.outcome.error = error
        self.outcome.wall_s = wall_s
        if self.run_id is None:
            return
        try:
            self.ctx.tracker.set_tags(self.run_id, {"error": error})
            if details:
                self.ctx.tracker.log_text(self.run_id, details, "error.txt")
        finally:
            self.ctx.tracker.end_run(self.run_id, "FAILED")

    def kill(self, reason: str) -> None:
        """The study stopped before this trial ended (Ctrl-C): close its run KILLED."""
        if not self.open:
            return
        self.outcome.status = "failed"
        self.outcome.error = reason
        if self.run_id is not None:
            self.ctx.tracker.set_tags(self.run_id, {"error": reason})
            self.ctx.tracker.end_run(self.run_id, "KILLED")


def recording_context(
    run_dir: Path,
    results_dir: Path,
    study: str,
    description: str = "",
    *,
    strict_tracking: bool = False,
    retries: int = 0,
) -> RecordingContext:
    """Create the tracking store and the study's experiment (driver, before any trial starts).

    Tracking failures are collected, not raised (see :class:`harness.tracking.GuardedTracker`),
    unless ``strict_tracking``; an unreachable store then leaves ``experiment_id`` None and the
    trials run and write their results without MLflow runs.
    """
    from harness.tracking import GuardedTracker, Tracker, default_tracking_uri

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tracker = GuardedTracker(Tracker(default_tracking_uri(run_dir), run_dir), strict=strict_tracking)
    experiment_id = tracker.ensure_experiment(study, description)
    return RecordingContext(tracker, experiment_id, Path(results_dir), git_state(), retries)  # type: ignore[arg-type]


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
    recorder = TrialRecorder(trial, ctx)
    recorder.start()
    try:
        execute_trial(trial, Path(run_dir).resolve(), recorder.handle, experiment_fn)
    finally:
        recorder.kill("the trial did not report a result")  # no-op when it finished or failed
    return recorder.outcome
