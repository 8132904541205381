"""`harness run` as a library call: expand, skip what finished, lock, schedule, record, summarise.

:func:`run_study` is what the CLI calls and what tests call; it never prints. Progress goes to an
optional :class:`StudyEvents` sink (the CLI's live table). A failing trial is recorded with its
error and the others go on; the returned :class:`StudyOutcome` lists the failures and gives the
exit code (0 all done, 1 some failed).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from harness.expand import expand_study
from harness.locking import StudyLock
from harness.preflight import DEFAULT_MIN_FREE_MB
from harness.provenance import code_version
from harness.results import is_finished, remove_stale_temp_files
from harness.schedules import schedule_overrides
from harness.spec import StudySpec, TrialSpec, load_study
from harness.trial import (
    ExperimentFn,
    RecordingContext,
    TrialOutcome,
    TrialRecorder,
    close_study_run,
    open_study_run,
    recording_context,
    work_entry,
)


@dataclass(frozen=True)
class RunOptions:
    """Everything `harness run` takes besides the study (CLI flags, one to one)."""

    run_dir: Path = Path("runs")
    results_dir: Path = Path("results")
    max_concurrent: int | None = None
    address: str | None = None
    force: bool = False
    data_root: Path | None = None
    clip_checkpoint: Path | None = None
    teacher: str | None = None
    seeds: tuple[int, ...] | None = None
    #: ``--variant NAME`` (repeatable): run only these of each study's variants (None: all). The
    #: trials keep their ids, so a later full run skips them.
    variants: tuple[str, ...] | None = None
    smoke: bool = False
    #: size of the local Ray started when no address is given (None = all cores / detected GPUs);
    #: tests use num_gpus to declare fake GPUs.
    num_cpus: int | None = None
    num_gpus: int | None = None
    #: attempts after the first for a failing trial (exception or dead process)
    retries: int = 0
    #: tracking errors fail trials (and an unreachable store stops the study) instead of being
    #: reported at the end
    strict_tracking: bool = False
    #: free space that --results-dir and --run-dir must have before trials start
    min_free_mb: float = DEFAULT_MIN_FREE_MB
    #: ``--set PATH=VALUE``: dotted config overrides for every trial (e.g. the epochs of real data)
    overrides: tuple[tuple[str, Any], ...] = ()
    #: ``--schedule NAME``: a named training budget (:mod:`harness.schedules`) over each study's base
    schedule: str = "default"
    #: ``--checkpoint-dir``: the trials' per-epoch training checkpoints (None: ``<results_dir>/.checkpoints``).
    #: On a multi-node cluster put it on storage every node reaches, so a retried trial resumes.
    checkpoint_dir: Path | None = None

    @property
    def checkpoint_root(self) -> Path:
        """Where the trials' checkpoints go (:func:`harness.trial.trial_checkpoint_dir` below it)."""
        if self.checkpoint_dir is not None:
            return Path(self.checkpoint_dir)
        return Path(self.results_dir) / ".checkpoints"

    def env_overrides(self) -> dict[str, Any]:
        """Where data and weights live on this machine, as dotted config overrides."""
        overrides: dict[str, Any] = {}
        if self.data_root is not None:
            overrides["data.root"] = Path(self.data_root).resolve()
        if self.clip_checkpoint is not None:
            overrides["model.preset"] = "sage_vitb16"
            overrides["model.clip_checkpoint"] = Path(self.clip_checkpoint).resolve()
        if self.teacher is not None:
            overrides["data.teacher"] = self.teacher
        return overrides


class StudyEvents(Protocol):
    """What a progress view hears about (all calls come from the driver's main thread)."""

    def planned(self, trials: Sequence[TrialSpec], skipped: Sequence[TrialSpec]) -> None: ...

    def phase(self, text: str) -> None: ...

    def started(self, trial_id: str) -> None: ...

    def epoch(self, trial_id: str, stage: int, epoch: int, metrics: dict[str, float]) -> None: ...

    def ended(self, outcome: TrialOutcome) -> None: ...


@dataclass
class StudyOutcome:
    """The end of `harness run`: every trial's outcome, in expansion order."""

    study: str
    trials: list[TrialOutcome]
    synthetic: bool
    wall_s: float
    run_dir: Path
    results_dir: Path
    tracking_uri: str | None = None
    resources: dict[str, float] = field(default_factory=dict)
    #: tracking failures that did not stop the study (results are complete without them)
    tracking_errors: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(t.status == status for t in self.trials)

    @property
    def failures(self) -> list[TrialOutcome]:
        return [t for t in self.trials if t.status == "failed"]

    @property
    def exit_code(self) -> int:
        """0 when every trial finished (now or earlier), 1 when any failed."""
        return 1 if self.failures else 0


@dataclass(frozen=True)
class Plan:
    """The study's trials in expansion order, split into those to run and those already done."""

    trials: list[TrialSpec]
    to_run: list[TrialSpec]
    skipped: list[TrialSpec]


def plan_study(spec: StudySpec, options: RunOptions) -> Plan:
    """Expand the study and skip trials with a result of this code (unless ``force``)."""
    trials = expand_study(
        spec,
        env_overrides=options.env_overrides(),
        seeds=options.seeds,
        smoke=options.smoke,
        user_overrides=dict(options.overrides),
        schedule_name=options.schedule,
        schedule_overrides=schedule_overrides(options.schedule),
    )
    if options.variants is not None:
        wanted = set(options.variants)
        trials = [t for t in trials if t.variant in wanted]  # a study may have none of them
    if options.force:
        return Plan(trials, list(trials), [])
    code = code_version()
    done = [t for t in trials if is_finished(options.results_dir, t.study, t.trial_id, code)]
    done_ids = {t.trial_id for t in done}
    return Plan(trials, [t for t in trials if t.trial_id not in done_ids], done)


def check_variant_names(specs: Sequence[StudySpec], names: Sequence[str]) -> None:
    """``ValueError`` for a ``--variant`` that no study of the launch has, listing theirs."""
    known = {v.name: None for spec in specs for v in spec.variants}
    unknown = [n for n in names if n not in known]
    if unknown:
        studies = ", ".join(repr(spec.name) for spec in specs)
        raise ValueError(
            f"--variant: no variant {', '.join(map(repr, unknown))} in {studies}; "
            f"variants: {', '.join(map(repr, known))}"
        )


#: MLflow tag of a trial recorded from another trial of the same config (see group_by_config).
SAME_CONFIG_TAG = "same_config_as"


def group_by_config(trials: Sequence[TrialSpec]) -> tuple[list[TrialSpec], dict[str, list[TrialSpec]]]:
    """The trials to compute (the first of each config, in launch order) and, per computed trial
    id, the later trials with the same config.

    Why: the studies repeat configs (the full model is a row of nine of them; Table 3's "w/o SE"
    is Table 4's "No MLLM"). A config computes the same thing whichever study asks, so it runs once
    and every study that has it records the result as its own trial, in its own MLflow experiment
    and results folder, tagged with the trial that computed it.
    """
    computed: dict[str, TrialSpec] = {}
    same: dict[str, list[TrialSpec]] = {}
    for trial in trials:
        first = computed.setdefault(trial.config_hash, trial)
        if first is not trial:
            same.setdefault(first.trial_id, []).append(trial)
    return list(computed.values()), same


class _Listener:
    """Driver side of the scheduled trials: recorders plus the progress sink.

    ``trials`` are the scheduled (computed) trials; ``same`` maps a computed trial id to the trials
    recorded from it (:func:`group_by_config`): every message of the computed trial reaches them too.
    """

    def __init__(
        self,
        trials: Sequence[TrialSpec],
        contexts: dict[str, RecordingContext],
        events: StudyEvents | None,
        same: dict[str, list[TrialSpec]] | None = None,
    ) -> None:
        same = same or {}
        self.groups = [
            [TrialRecorder(t, contexts[t.study])]
            + [
                TrialRecorder(o, contexts[o.study], tags={SAME_CONFIG_TAG: t.trial_id}, computed_by=t)
                for o in same.get(t.trial_id, [])
            ]
            for t in trials
        ]
        self.recorders = [r for group in self.groups for r in group]
        self.events = events

    def on_start(self, index: int) -> None:
        for recorder in self.groups[index]:
            recorder.awaiting_restart = False
            if recorder.run_id is None:  # a retried attempt keeps the run its first attempt opened
                recorder.start()
            if self.events:
                self.events.started(recorder.trial.trial_id)

    def on_retry(self, index: int, error: str) -> None:
        """Tune starts a failed trial again; count the attempt unless its error message did."""
        for recorder in self.groups[index]:
            if recorder.open and not recorder.awaiting_restart:
                recorder.retry(error)
            recorder.awaiting_restart = False

    def on_message(self, index: int, message: dict[str, Any]) -> None:
        for recorder in self.groups[index]:
            recorder.handle(message)
            if not self.events:
                continue
            if message.get("kind") == "epoch":
                self.events.epoch(
                    recorder.trial.trial_id, message["stage"], message["epoch"], message["metrics"]
                )
            elif not recorder.open:
                self.events.ended(recorder.outcome)

    def on_end(self, index: int, error: str | None) -> None:
        for recorder in self.groups[index]:
            if recorder.open:
                recorder.fail(error or "the trial ended without reporting a result")
                if self.events:
                    self.events.ended(recorder.outcome)


def run_study(
    study: StudySpec | str | Path,
    options: RunOptions = RunOptions(),
    *,
    experiment_fn: ExperimentFn | None = None,
    events: StudyEvents | None = None,
) -> StudyOutcome:
    """Run every unfinished trial of a study to completion on Ray; see the module docstring.

    ``experiment_fn`` replaces :func:`sage_model.experiment.run_experiment` (tests, benchmarks);
    it must be importable by module path so Ray workers can unpickle it.
    """
    return run_studies([study], options, experiment_fn=experiment_fn, events=events)[0]


def run_studies(
    studies: Sequence[StudySpec | str | Path],
    options: RunOptions = RunOptions(),
    *,
    experiment_fn: ExperimentFn | None = None,
    events: StudyEvents | None = None,
) -> list[StudyOutcome]:
    """Several studies as one scheduling pass: one Ray, one Tune run, one outcome per study.

    Why one pass: run one after another, each study starts its own trial processes (torch and
    the model imported again) and its slowest trial leaves the other slots idle until it ends.
    Together, the next study's trials fill those slots and the processes are reused across
    studies. Each study keeps its own lock, MLflow experiment, resources and results folder;
    ``wall_s`` of every outcome is the wall time of the whole pass.
    """
    start = time.perf_counter()
    specs = [s if isinstance(s, StudySpec) else load_study(s) for s in studies]
    _check_distinct_names(specs)
    if options.variants is not None:
        check_variant_names(specs, options.variants)
    files = {
        spec.name: Path(s).resolve()
        for spec, s in zip(specs, studies, strict=True)
        if not isinstance(s, StudySpec)
    }
    options = _absolute(options)
    plans = [plan_study(spec, options) for spec in specs]
    if events:
        events.planned([t for p in plans for t in p.to_run], [t for p in plans for t in p.skipped])
    outcomes = {
        t.trial_id: TrialOutcome(t.trial_id, t.variant, t.seed, "skipped") for p in plans for t in p.skipped
    }
    results = [
        StudyOutcome(
            study=spec.name,
            trials=[],
            synthetic=any(t.config.data.root is None for t in plan.trials),
            wall_s=0.0,
            run_dir=options.run_dir,
            results_dir=options.results_dir,
        )
        for spec, plan in zip(specs, plans, strict=True)
    ]
    pending = [t for p in plans for t in p.to_run]
    if pending:
        _preflight(pending, options)
        with ExitStack() as locks:
            batch: list[tuple[StudySpec, list[TrialSpec], StudyOutcome]] = []
            for spec, plan, outcome in zip(specs, plans, results, strict=True):
                if not plan.to_run:
                    continue
                locks.enter_context(StudyLock(options.run_dir, spec.name))
                to_run = _still_to_run(spec, plan.to_run, options, outcomes)
                if to_run:
                    batch.append((spec, to_run, outcome))
            if batch:
                listener = _schedule(batch, options, experiment_fn, events, files)
                outcomes.update({r.trial.trial_id: r.outcome for r in listener.recorders})
    wall = time.perf_counter() - start
    for plan, outcome in zip(plans, results, strict=True):
        outcome.trials = [outcomes[t.trial_id] for t in plan.trials]
        outcome.wall_s = wall
    return results


def _check_distinct_names(specs: Sequence[StudySpec]) -> None:
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise ValueError(f"study {spec.name} is given twice")
        seen.add(spec.name)


def _still_to_run(
    spec: StudySpec, to_run: list[TrialSpec], options: RunOptions, outcomes: dict[str, TrialOutcome]
) -> list[TrialSpec]:
    """Under the study's lock: clear a killed writer's temp files, and skip trials that a run
    holding the lock before us finished meanwhile (recorded as skipped in ``outcomes``)."""
    remove_stale_temp_files(options.results_dir, spec.name)
    if options.force:
        return to_run
    for t in to_run:
        if is_finished(options.results_dir, t.study, t.trial_id, code_version()):
            outcomes[t.trial_id] = TrialOutcome(t.trial_id, t.variant, t.seed, "skipped")
    return [t for t in to_run if t.trial_id not in outcomes]


def _preflight(trials: list[TrialSpec], options: RunOptions) -> None:
    """Everything that can be known wrong before a trial starts (see :mod:`harness.preflight`)."""
    from harness import preflight
    from harness.tracking import default_tracking_uri

    preflight.check_writable_dir(options.results_dir, flag="--results-dir", min_free_mb=options.min_free_mb)
    preflight.check_writable_dir(options.run_dir, flag="--run-dir", min_free_mb=options.min_free_mb)
    preflight.check_writable_dir(
        options.checkpoint_root, flag="--checkpoint-dir", min_free_mb=options.min_free_mb
    )
    preflight.check_trial_inputs(trials)
    uri = default_tracking_uri(options.run_dir)
    preflight.require_tracking_server(uri, options.address or os.environ.get("RAY_ADDRESS"))
    if options.strict_tracking and preflight.is_server_uri(uri):
        problem = preflight.ping_tracking_server(uri)
        if problem:
            raise preflight.PreflightError(f"--strict-tracking: {problem}")


def _check_tracking_from_nodes(scheduling: Any, uri: str, options: RunOptions) -> str | None:
    """On a joined cluster, every node should reach the tracking server (issue #10).

    Returns the problem (reported at the end) or None; raises with ``--strict-tracking``. All
    studies of a run share one tracking URI, so this is asked once per run.
    """
    from harness import preflight

    if not (options.address or os.environ.get("RAY_ADDRESS")) or not preflight.is_server_uri(uri):
        return None
    failures = scheduling.unreachable_from_nodes(uri.rstrip("/") + "/health")
    if not failures:
        return None
    text = "; ".join(f"node {node[:12]}: {reason}" for node, reason in failures.items())
    message = f"MLflow server {uri} is unreachable from {len(failures)} node(s): {text}"
    if options.strict_tracking:
        raise preflight.PreflightError(f"--strict-tracking: {message}")
    return message


def _absolute(options: RunOptions) -> RunOptions:
    """Workers may run elsewhere (another cwd, another node): every path they see is absolute."""
    values = dict(options.__dict__)
    values["run_dir"] = Path(options.run_dir).resolve()
    values["results_dir"] = Path(options.results_dir).resolve()
    if options.checkpoint_dir is not None:
        values["checkpoint_dir"] = Path(options.checkpoint_dir).resolve()
    return RunOptions(**values)


def _prepare_tracking(spec: StudySpec, options: RunOptions, study_file: Path | None) -> RecordingContext:
    """The MLflow store and the study's experiment; stale RUNNING runs of the study closed."""
    ctx = recording_context(
        options.run_dir,
        options.results_dir,
        spec.name,
        spec.description,
        strict_tracking=options.strict_tracking,
        retries=options.retries,
        study_file=study_file,
        checkpoint_root=options.checkpoint_root,
    )
    ctx.tracker.mark_stale_runs_killed(ctx.experiment_id)
    return ctx


def _schedule(
    batch: list[tuple[StudySpec, list[TrialSpec], StudyOutcome]],
    options: RunOptions,
    experiment_fn: ExperimentFn | None,
    events: StudyEvents | None,
    files: dict[str, Path],
) -> _Listener:
    """Tracking store and Ray first (both ready before any trial); every run is closed at the end.

    The store is prepared in a thread while Ray starts: importing mlflow and migrating a new sqlite
    database take seconds, so does starting Ray, and neither needs the other (on 2 cores this
    saves about a third of the start-up). Trials are scheduled only once both are done.
    """
    from harness import scheduling  # ray is imported only when there is something to run

    specs = [spec for spec, _, _ in batch]
    trials, same = group_by_config([t for _, study_trials, _ in batch for t in study_trials])
    joining = bool(options.address or os.environ.get("RAY_ADDRESS"))
    if events:
        events.phase(f"preparing the MLflow store, {'joining' if joining else 'starting'} Ray")
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlflow-store") as pool:
        pending = pool.submit(
            lambda: {spec.name: _prepare_tracking(spec, options, files.get(spec.name)) for spec in specs}
        )
        with scheduling.ray_cluster(
            options.address, num_cpus=options.num_cpus, num_gpus=options.num_gpus
        ) as cluster:
            contexts = pending.result()
            for name, ctx in contexts.items():  # opened once Ray is up: a failed start leaves none open
                open_study_run(ctx, name)
            listener = _Listener(trials, contexts, events, same)
            interrupted = True
            try:
                per_study = {
                    spec.name: scheduling.trial_resources(spec.resources.cpus, spec.resources.gpus, cluster)
                    for spec in specs
                }
                uri = contexts[specs[0].name].tracker.uri
                unreachable = _check_tracking_from_nodes(scheduling, uri, options)
                for spec, _, outcome in batch:
                    outcome.tracking_uri = contexts[spec.name].tracker.uri
                    outcome.resources = per_study[spec.name]
                    if unreachable:
                        outcome.tracking_errors.append(unreachable)
                if events:
                    events.phase(f"running on {_describe(cluster, list(per_study.values()))}")
                    if same:
                        repeats = sum(len(v) for v in same.values())
                        events.phase(
                            f"{repeats} trial(s) repeat the config of another: {len(trials)} computed, "
                            f"each recorded for every study that has it (MLflow tag {SAME_CONFIG_TAG})"
                        )
                stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
                label = specs[0].name if len(specs) == 1 else f"{len(specs)}-studies"
                scheduling.run_trials(
                    [(t, str(options.run_dir), experiment_fn, str(options.checkpoint_root)) for t in trials],
                    [t.trial_id for t in trials],
                    work_entry,
                    listener,
                    resources=[per_study[t.study] for t in trials],
                    storage_dir=options.run_dir / "tune",
                    experiment=f"{label}-{stamp}",
                    max_concurrent=options.max_concurrent,
                    max_failures=options.retries,
                )
                interrupted = False
            finally:
                for recorder in listener.recorders:
                    if recorder.open:
                        recorder.kill("the study stopped before this trial finished")
                        if events:
                            events.ended(recorder.outcome)
                for spec, _, outcome in batch:
                    ctx = contexts[spec.name]
                    mine = [r.outcome for r in listener.recorders if r.trial.study == spec.name]
                    close_study_run(ctx, mine, interrupted)
                    outcome.tracking_errors.extend(ctx.tracker.summary())
    return listener


def _describe(cluster: Any, requests: list[dict[str, float]]) -> str:
    where = "local Ray" if cluster.started_here else f"Ray at {cluster.address}"
    gpus = f", {cluster.gpus:g} GPUs" if cluster.gpus else ""
    distinct = []
    for request in requests:
        text = ", ".join(f"{v:g} {k.upper()}" for k, v in request.items())
        if text not in distinct:
            distinct.append(text)
    return f"{where} ({cluster.cpus:g} CPUs{gpus}); {' or '.join(distinct)} per trial"
