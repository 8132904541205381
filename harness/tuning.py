"""`harness tune`: an Optuna search (seeded TPE, ask/tell) whose trials run as Ray Tune trials.

Who does what (docs/tuning.md has the why):

- **Optuna** proposes and remembers. The study lives in a sqlite RDB storage,
  ``<run_dir>/tuning/<study>/optuna.db``, written by this driver only. ``ask`` happens when Ray
  has a free slot, ``tell`` when a trial ends, so TPE sees every result that finished before it
  proposes the next point.
- **Ray Tune** runs. :func:`harness.scheduling.run_search` turns each asked trial into a Tune
  trial; the trial's process runs :func:`harness.trial.execute_trial` and streams its epoch
  reports home.
- **Pruning** is Optuna's (median, or ASHA = Optuna's asynchronous successive halving), decided
  in the driver on the objective reported each epoch; Ray stops the trial right at that epoch's
  report. A pruned trial counts as finished: it was measured and it informs TPE.
- **MLflow**: one parent run per search and one child run per trial in the experiment
  ``<study>-tuning`` (config as params, epoch curves, the objective), recorded by the driver
  with the same :class:`harness.trial.TrialRecorder` as `harness run`, so an MLflow outage
  costs runs, never the search.

Resumption: the search always ends with ``trials`` finished (COMPLETE or PRUNED) trials in the
storage. A restart counts what is finished, marks trials a killed driver left RUNNING as FAIL
(their points are proposed afresh, never counted), and asks only for the difference; a
finished trial is never run again.

The objective is a ``val/...`` metric measured on the videos :func:`sage_model.data.split_videos`
holds out of the training split. Tuning trials do not evaluate on the test split at all
(:data:`TUNING_OVERRIDES`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from harness.configs import ConfigLayers, resolve_trial
from harness.locking import StudyLock
from harness.provenance import git_state
from harness.runner import RunOptions
from harness.spec import (
    StudySpec,
    TrialSpec,
    TuneSpec,
    config_hash,
    field_annotation,
    load_study,
)
from harness.trial import (
    EpochMessage,
    ExperimentFn,
    RecordingContext,
    TrialRecorder,
    TrialRejected,
    close_study_run,
    open_study_run,
    recording_context,
    work_entry,
)
from harness.tuning_report import SearchSummary, TrialRow, write_outputs
from sage_model.config import ExperimentConfig
from sage_model.records import ExperimentResult

log = logging.getLogger(__name__)

#: What every tuning trial is forced to do: report the validation metrics each epoch and never
#: touch the test split (no final test evaluation, no speed or stability analysis on it).
TUNING_OVERRIDES: dict[str, Any] = {
    "eval.tasks": [],
    "eval.every_epoch": True,
    "eval.measure_speed": False,
    "eval.stability_noise": [],
    "data.synthetic_test_videos": None,  # never scored: the budget's 200-video split would be generated for nothing
}
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)
#: fANOVA on fewer points fits noise (Optuna computes it from 2, which is meaningless).
MIN_IMPORTANCE_TRIALS = 3

optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass(frozen=True)
class TuneOptions:
    """Everything `harness tune` takes besides the study (CLI flags, one to one)."""

    run_dir: Path = Path("runs")
    reports_dir: Path = Path("reports/tuning")
    trials: int | None = None  # overrides tune.trials: finished trials the search ends with
    max_concurrent: int | None = None  # overrides tune.max_concurrent
    address: str | None = None
    data_root: Path | None = None
    clip_checkpoint: Path | None = None
    teacher: str | None = None
    num_cpus: int | None = None  # size of a private local Ray (None = all cores)
    schedule: str = "default"  # --schedule: a named training budget (harness.schedules)
    overrides: tuple[tuple[str, Any], ...] = ()  # --set PATH=VALUE for every search trial
    #: --checkpoint-dir: the trials' training checkpoints (None: ``<run_dir>/tuning/<study>/checkpoints``)
    checkpoint_dir: Path | None = None

    def checkpoint_root(self, study: str) -> Path:
        """Where the search's trials keep their checkpoints (a folder per trial below it)."""
        if self.checkpoint_dir is not None:
            return Path(self.checkpoint_dir).resolve()
        return tuning_dir(Path(self.run_dir).resolve(), study) / "checkpoints"

    def env_overrides(self) -> dict[str, Any]:
        """Where data and weights live on this machine (the same rules as `harness run`)."""
        return RunOptions(
            data_root=self.data_root, clip_checkpoint=self.clip_checkpoint, teacher=self.teacher
        ).env_overrides()

    def layers(self, spec: StudySpec) -> ConfigLayers:
        """The config layers of every search trial: base, env, schedule, --set (searched paths refused)."""
        from harness.schedules import schedule_overrides

        user = dict(self.overrides)
        searched = sorted(set(user) & (set(require_tune(spec).space) | set(TUNING_OVERRIDES)))
        if searched:
            raise ValueError(f"--set {searched[0]}: tuning searches or forces it in study {spec.name}; a --set cannot change it")
        return ConfigLayers(
            base=spec.base, env=self.env_overrides(), schedule=schedule_overrides(self.schedule), user=user
        )


@dataclass
class TuneOutcome:
    """The end of `harness tune`: counts in the storage, this session's failures, the outputs."""

    study: str
    target: int
    complete: int
    pruned: int
    failed_now: list[tuple[int, str]]
    best_value: float | None
    best_params: dict[str, float]
    best_file: Path | None
    report_file: Path | None
    storage: str
    tracking_uri: str
    synthetic: bool
    wall_s: float
    ran_now: int = 0
    #: tracking failures that did not stop the search (Optuna's storage is complete without them)
    tracking_errors: list[str] = field(default_factory=list)

    @property
    def finished(self) -> int:
        return self.complete + self.pruned

    @property
    def exit_code(self) -> int:
        """0 when the storage holds the target number of finished trials, 1 otherwise."""
        return 0 if self.finished >= self.target else 1


# --------------------------------------------------------------------------------------------
# The search space, the base config, the storage
# --------------------------------------------------------------------------------------------


def tuning_dir(run_dir: Path, study: str) -> Path:
    """``<run_dir>/tuning/<study>``: the Optuna storage, trial scratch and Tune state."""
    return Path(run_dir) / "tuning" / study


def storage_url(run_dir: Path, study: str) -> str:
    return f"sqlite:///{(tuning_dir(run_dir, study).resolve() / 'optuna.db')}"


def distributions(tune: TuneSpec) -> dict[str, BaseDistribution]:
    """Optuna distributions keyed by dotted config path (ints step by 1)."""
    out: dict[str, BaseDistribution] = {}
    for path, rng in tune.space.items():
        if field_annotation(path) is int:
            out[path] = IntDistribution(int(rng.low), int(rng.high), log=rng.log)
        else:
            out[path] = FloatDistribution(rng.low, rng.high, log=rng.log)
    return out


def require_tune(spec: StudySpec) -> TuneSpec:
    if spec.tune is None:
        raise ValueError(
            f"study {spec.name}: no `tune:` block, so there is nothing to search (see docs/tuning.md)"
        )
    return spec.tune


def search_trial(spec: StudySpec, layers: ConfigLayers, number: int, params: dict[str, Any]) -> TrialSpec:
    """Search trial ``number``: the study's first variant, dataset and seed resolved through
    :func:`harness.configs.resolve_trial` with :data:`TUNING_OVERRIDES` and the searched values
    as its last layer (the one config path of `run` and `tune`)."""
    first = spec.variants[0]
    return resolve_trial(
        spec.name, spec.version, f"t{number}", first.overrides, spec.datasets[0], spec.seeds[0], layers,
        search={**TUNING_OVERRIDES, **params},
    )  # fmt: skip


def tuning_base(
    spec: StudySpec, env_overrides: dict[str, Any] | None = None, layers: ConfigLayers | None = None
) -> ExperimentConfig:
    """The config every trial starts from: :func:`search_trial` before any value is searched
    (``layers``: all of them, as :meth:`TuneOptions.layers` gives; else base and env only)."""
    layers = layers or ConfigLayers(base=spec.base, env=env_overrides or {})
    config = search_trial(spec, layers, 0, {}).config
    if config.train.val_fraction <= 0:
        raise ValueError("train.val_fraction: must be > 0 for tuning (the objective is a validation metric)")
    return config


def search_fingerprint(tune: TuneSpec, base: ExperimentConfig) -> str:
    """What a stored search must share with this one to be resumed: space, objective, base config."""
    payload = {
        "space": {k: v.model_dump() for k, v in tune.space.items()},
        "objective": tune.objective.model_dump(),
        "base": config_hash(base),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def open_search(spec: StudySpec, run_dir: Path, base: ExperimentConfig) -> optuna.Study:
    """Create or load the study's Optuna storage; refuse one made for another search.

    The TPE seed is derived from ``sampler_seed`` and the number of trials already stored: a
    resumed search must not replay the random start-up points it proposed before the stop.
    """
    tune = require_tune(spec)
    tuning_dir(run_dir, spec.name).mkdir(parents=True, exist_ok=True)
    url = storage_url(run_dir, spec.name)
    storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    study = optuna.create_study(
        storage=storage, study_name=spec.name, direction=tune.objective.direction, load_if_exists=True
    )
    fingerprint = search_fingerprint(tune, base)
    stored = study.user_attrs.get("fingerprint")
    if stored is None:
        study.set_user_attr("fingerprint", fingerprint)
        study.set_user_attr("objective", tune.objective.metric)
    elif stored != fingerprint:
        raise ValueError(
            f"{url.removeprefix('sqlite:///')}: holds a search of study {spec.name} with another search space, "
            "objective or base config; pass another --run-dir, or delete that folder to start over"
        )
    if study.direction.name.lower() != tune.objective.direction:
        raise ValueError(
            f"tune.objective.direction: the stored search {study.study_name} maximises/minimises otherwise"
        )
    seed = int(np.random.SeedSequence([tune.sampler_seed, len(study.trials)]).generate_state(1)[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.sampler = optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=tune.startup_trials, multivariate=True, constant_liar=True
        )
    study.pruner = make_pruner(tune)
    return study


def make_pruner(tune: TuneSpec) -> optuna.pruners.BasePruner:
    """median: stop a trial whose objective is worse than the median of earlier trials at the same
    epoch (after ``startup_trials`` finished); asha: Optuna's asynchronous successive halving."""
    if tune.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=tune.startup_trials, n_warmup_steps=1)
    if tune.pruner == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2)
    return optuna.pruners.NopPruner()


def fail_stale_trials(study: optuna.Study) -> list[int]:
    """Trials left RUNNING by a driver that died: FAIL (never counted, their points re-proposed)."""
    stale = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
    for number in stale:
        study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
        log.warning(
            "tuning %s: trial %d was left running by an earlier driver; marked FAIL", study.study_name, number
        )
    return stale


def count_finished(study: optuna.Study) -> tuple[int, int]:
    """(COMPLETE, PRUNED) trials in the storage."""
    trials = study.get_trials(deepcopy=False, states=FINISHED_STATES)
    complete = sum(t.state == TrialState.COMPLETE for t in trials)
    return complete, len(trials) - complete


# --------------------------------------------------------------------------------------------
# The driver side of the trials
# --------------------------------------------------------------------------------------------


@dataclass
class _Live:
    """One asked trial while the search runs: its Optuna handle and its recorder."""

    ot: optuna.trial.Trial
    recorder: TrialRecorder
    values: list[float] = field(default_factory=list)
    prune: bool = False


class _Search:
    """Asks Optuna for trials and tells it how they ended; the trials' MLflow records are kept
    by :class:`harness.trial.TrialRecorder`, as for `harness run`. Implements
    :class:`harness.scheduling.SearchListener` and, for its recorders, :class:`TrialDriver`."""

    def __init__(
        self,
        spec: StudySpec,
        study: optuna.Study,
        layers: ConfigLayers,
        budget: int,
        ctx: RecordingContext,
        experiment_fn: ExperimentFn | None,
        say: Callable[[str], None],
    ) -> None:
        self.spec, self.tune, self.study, self.layers = spec, require_tune(spec), study, layers
        self.budget, self.ctx, self.experiment_fn, self.say = budget, ctx, experiment_fn, say
        self.space = distributions(self.tune)
        self.live: dict[int, _Live] = {}
        self.by_trial_id: dict[str, _Live] = {}
        self.failures: list[tuple[int, str]] = []

    # --- SearchListener ---------------------------------------------------------------------
    def next_trial(self) -> tuple[int, str, Any] | None:
        if len(self.live) >= self.budget:
            return None
        ot = self.study.ask(self.space)
        spec = search_trial(self.spec, self.layers, ot.number, ot.params)
        trial_id = spec.trial_id
        ot.set_user_attr("trial_id", trial_id)
        tags = {
            "optuna_trial": str(ot.number),
            "objective": self.tune.objective.metric,
            "searched": json.dumps(ot.params, sort_keys=True),
        }
        recorder = TrialRecorder(spec, self.ctx, self, name=f"t{ot.number} · {self.spec.name}", tags=tags)
        self.live[ot.number] = self.by_trial_id[trial_id] = _Live(ot, recorder)
        checkpoints = str(self.ctx.checkpoint_root) if self.ctx.checkpoint_root else None
        item = (spec.model_dump_json(), str(self.ctx.work_root), self.experiment_fn, checkpoints)
        return ot.number, trial_id, item

    def on_start(self, index: int) -> None:
        recorder = self.live[index].recorder
        if recorder.run_id is None:
            recorder.start()

    def on_message(self, index: int, message: dict[str, Any]) -> None:
        self.live[index].recorder.handle(message)

    def should_stop(self, index: int) -> bool:
        return self.live[index].prune and self.live[index].recorder.open

    def on_end(self, index: int, error: str | None) -> None:
        live = self.live[index]
        if not live.recorder.open:
            return
        if live.prune and error is None:
            self.study.tell(live.ot, state=TrialState.PRUNED)
            live.recorder.stop({"optuna_state": "PRUNED", "epochs": str(live.recorder.step)})
            self.say(
                f"trial {live.ot.number}: pruned after {live.recorder.step} epoch(s)  {_fmt(live.ot.params)}"
            )
        else:
            live.recorder.fail(error or "the trial ended without reporting a result")

    # --- TrialDriver ------------------------------------------------------------------------
    def on_epoch(self, recorder: TrialRecorder, message: EpochMessage) -> None:
        live = self.by_trial_id[recorder.trial.trial_id]
        value = message.metrics.get(self.tune.objective.metric)
        if value is None or not math.isfinite(value):
            return
        live.ot.report(float(value), message.step)
        live.values.append(float(value))
        # at the last epoch stopping saves nothing and would turn a full measurement into a partial one
        train = recorder.trial.config.train
        last = message.step + 1 >= train.stage1_epochs + train.stage2_epochs
        live.prune = not last and live.ot.should_prune()

    def on_finished(self, recorder: TrialRecorder, result: ExperimentResult) -> None:
        live = self.by_trial_id[recorder.trial.trial_id]
        if not live.values:
            raise TrialRejected(
                f"the objective {self.tune.objective.metric} was never reported (is there a validation split?)"
            )
        value = live.values[-1]  # the model the trial ends with (train.select_on: last)
        self.study.tell(live.ot, value)
        self.ctx.tracker.log_metrics(recorder.run_id, {"objective": value}, recorder.step)
        recorder.set_tags({"optuna_state": "COMPLETE", "epochs": str(recorder.step)})
        self.say(
            f"trial {live.ot.number}: complete, {self.tune.objective.metric} = {value:.4g}  {_fmt(live.ot.params)}"
        )

    def on_failed(self, recorder: TrialRecorder, error: str) -> None:
        live = self.by_trial_id[recorder.trial.trial_id]
        self.study.tell(live.ot, state=TrialState.FAIL, skip_if_finished=True)
        self.failures.append((live.ot.number, error))
        recorder.set_tags({"optuna_state": "FAIL", "epochs": str(recorder.step)})
        self.say(f"trial {live.ot.number}: failed: {error}")

    def close_open(self, reason: str) -> None:
        """The search stopped (Ctrl-C, an error): every trial still open becomes FAIL / KILLED."""
        for live in self.live.values():
            live.recorder.kill(reason)


def _fmt(params: dict[str, Any]) -> str:
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={v:.4g}" for k, v in params.items())


# --------------------------------------------------------------------------------------------
# The command as a library call
# --------------------------------------------------------------------------------------------


def tune_study(
    study: StudySpec | str | Path,
    options: TuneOptions = TuneOptions(),
    *,
    experiment_fn: ExperimentFn | None = None,
    say: Callable[[str], None] = lambda text: None,
) -> TuneOutcome:
    """Run (or resume) the study's search until it holds ``trials`` finished trials, then write
    the best values and the report. Never prints; ``say`` hears one line per event."""
    start = time.perf_counter()
    spec = study if isinstance(study, StudySpec) else load_study(study)
    tune = require_tune(spec)
    target = options.trials or tune.trials
    if target < 1:
        raise ValueError(f"--trials: must be >= 1, got {target}")
    run_dir = Path(options.run_dir).resolve()
    base = tuning_base(spec, layers=options.layers(spec))
    with StudyLock(run_dir / "tuning", spec.name):
        optuna_study = open_search(spec, run_dir, base)
        stale = fail_stale_trials(optuna_study)
        if stale:
            say(f"marked {len(stale)} trial(s) left running by an interrupted search as FAIL: {stale}")
        complete, pruned = count_finished(optuna_study)
        budget = max(0, target - complete - pruned)
        say(f"{spec.name}: {complete + pruned} of {target} trials finished; running {budget} more")
        ctx = _tracking(run_dir, spec, optuna_study, study if isinstance(study, str | Path) else None)
        ctx.checkpoint_root = options.checkpoint_root(spec.name)
        layers = options.layers(spec)
        search = _Search(spec, optuna_study, layers, budget, ctx, experiment_fn, say)
        interrupted = True
        try:
            if budget:  # the search's parent run: one per invocation that runs trials
                open_study_run(ctx, spec.name)
                _run(spec, search, options, run_dir, budget, say)
            interrupted = False
        finally:
            close_study_run(ctx, [live.recorder.outcome for live in search.live.values()], interrupted)
        tracking_errors = ctx.tracker.summary()
        for line in tracking_errors:
            say(f"tracking: {line}")
        complete, pruned = count_finished(optuna_study)
        summary = summarize(spec, optuna_study, target, synthetic=base.data.root is None, run_dir=run_dir)
    best_file, report_file = write_outputs(summary, Path(options.reports_dir))
    best = summary.best
    return TuneOutcome(
        study=spec.name, target=target, complete=complete, pruned=pruned, failed_now=search.failures,
        best_value=best.value if best else None, best_params=dict(best.params) if best else {},
        best_file=best_file, report_file=report_file, storage=storage_url(run_dir, spec.name),
        tracking_uri=ctx.tracker.uri, synthetic=base.data.root is None, wall_s=time.perf_counter() - start,
        ran_now=len(search.live), tracking_errors=tracking_errors,
    )  # fmt: skip


def _tracking(
    run_dir: Path, spec: StudySpec, study: optuna.Study, study_file: str | Path | None
) -> RecordingContext:
    """The MLflow store and the ``<study>-tuning`` experiment, made before any trial starts;
    runs a dead driver left RUNNING are closed as Optuna recorded their trials. Tracking
    failures are collected, as for `harness run`."""
    ctx = recording_context(
        run_dir, tuning_dir(run_dir, spec.name), f"{spec.name}-tuning",
        f"Optuna search of {spec.name}: {spec.description}", source="harness tune",
        work_root=tuning_dir(run_dir, spec.name), study_file=Path(study_file) if study_file else None,
    )  # fmt: skip
    if ctx.experiment_id is not None:
        ctx.tracker.call("close stale runs", close_stale_runs, ctx.tracker.tracker, ctx.experiment_id, study)
    return ctx


def close_stale_runs(tracker: Any, experiment_id: str, study: optuna.Study) -> None:
    """MLflow runs left RUNNING by a driver that died. Optuna is the record of the search: a
    driver killed between ``tell`` and closing the run leaves a finished trial with a RUNNING run,
    which is closed FINISHED with its state; every other stale run is KILLED."""
    states = {t.number: t for t in study.get_trials(deepcopy=False)}
    for run in tracker.runs(experiment_id):
        if run.info.status != "RUNNING":
            continue
        trial = states.get(int(run.data.tags.get("optuna_trial", -1)))
        if trial is not None and trial.state in FINISHED_STATES:
            if trial.state == TrialState.COMPLETE and trial.value is not None:
                tracker.log_metrics(
                    run.info.run_id, {"objective": trial.value}, len(trial.intermediate_values)
                )
            tracker.set_tags(run.info.run_id, {"optuna_state": trial.state.name})
            tracker.end_run(run.info.run_id, "FINISHED")
        else:
            tracker.set_tags(run.info.run_id, {"optuna_state": "FAIL", "error": "the search driver died"})
            tracker.end_run(run.info.run_id, "KILLED")
            log.warning("marked stale run %s KILLED", run.info.run_name)


def _run(
    spec: StudySpec,
    search: _Search,
    options: TuneOptions,
    run_dir: Path,
    budget: int,
    say: Callable[[str], None],
) -> None:
    """Ray, then the search; whatever stops it, no trial is left RUNNING in Optuna or MLflow.

    Concurrency: --max-concurrent, else tune.max_concurrent, else as many trials as the
    cluster's CPUs hold; never more than the trials still to run.
    """
    from harness import scheduling

    try:
        with scheduling.ray_cluster(options.address, num_cpus=options.num_cpus) as cluster:
            resources = scheduling.trial_resources(spec.resources.cpus, spec.resources.gpus, cluster)
            requested = options.max_concurrent or require_tune(spec).max_concurrent
            concurrent = max(1, min(budget, requested or int(cluster.cpus // resources["cpu"])))
            say(f"running on {cluster.cpus:g} CPUs, {concurrent} trial(s) at once")
            scheduling.run_search(
                search,
                work_entry,
                resources=resources,
                storage_dir=tuning_dir(run_dir, spec.name) / "tune",
                experiment=f"{spec.name}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}",
                max_concurrent=concurrent,
            )
    finally:
        search.close_open("the search stopped before this trial finished")


# --------------------------------------------------------------------------------------------
# Reading the storage back
# --------------------------------------------------------------------------------------------


def summarize(
    spec: StudySpec, study: optuna.Study, target: int, *, synthetic: bool, run_dir: Path
) -> SearchSummary:
    """Everything the outputs show, read from the Optuna storage."""
    tune = require_tune(spec)
    rows = []
    for t in study.get_trials(deepcopy=False):
        curve = [t.intermediate_values[k] for k in sorted(t.intermediate_values)]
        value = (
            t.value
            if t.state == TrialState.COMPLETE
            else (curve[-1] if curve and t.state == TrialState.PRUNED else None)
        )
        rows.append(
            TrialRow(
                t.number, t.state.name, value, dict(t.params), curve, str(t.user_attrs.get("trial_id", ""))
            )
        )
    importances, note = param_importances(study)
    git = git_state()
    return SearchSummary(
        study=spec.name, study_version=spec.version, metric=tune.objective.metric, direction=tune.objective.direction,
        target=target, trials=rows, importances=importances, importance_note=note, synthetic=synthetic,
        storage=str(tuning_dir(run_dir, spec.name) / "optuna.db"), git=f"{git.sha[:12]}{' (dirty)' if git.dirty else ''}",
        made_at=datetime.now(UTC).isoformat(timespec="seconds"), pruner=tune.pruner, sampler_seed=tune.sampler_seed,
    )  # fmt: skip


def param_importances(study: optuna.Study) -> tuple[dict[str, float] | None, str]:
    """fANOVA importances (seeded), or None with the reason when they cannot be computed."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < MIN_IMPORTANCE_TRIALS:
        return None, f"needs at least {MIN_IMPORTANCE_TRIALS} complete trials (have {len(complete)})"
    if len({t.value for t in complete}) < 2:
        return None, "every complete trial has the same objective value"
    if len(study.best_trial.params) < 2:
        return {k: 1.0 for k in study.best_trial.params}, "a single searched value carries all the importance"
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (RuntimeError, ValueError) as exc:
        return None, f"could not be computed: {exc}"
    return {k: float(v) for k, v in found.items()}, "fANOVA over the complete trials (Optuna, seed 0)"


def open_existing(spec: StudySpec, run_dir: Path) -> optuna.Study:
    """The stored search, read-only use (tests, reports); FileNotFoundError when there is none."""
    path = tuning_dir(run_dir, spec.name) / "optuna.db"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no tuning storage for study {spec.name}")
    return optuna.load_study(study_name=spec.name, storage=storage_url(run_dir, spec.name))


__all__ = [
    "TUNING_OVERRIDES",
    "TuneOptions",
    "TuneOutcome",
    "count_finished",
    "distributions",
    "fail_stale_trials",
    "open_existing",
    "open_search",
    "storage_url",
    "summarize",
    "tune_study",
    "tuning_base",
    "tuning_dir",
]
