"""Scheduling with Ray Tune: the only module that imports ray.

The harness treats Ray as a pool of slots. Each trial becomes one Tune trial wrapped in
``tune.with_resources``; a worker function runs in the trial's process and sends JSON messages
back with ``tune.report``; a Tune callback in the driver hands them to a :class:`TrialListener`.
Nothing here knows about MLflow, Parquet or SAGE.

Cluster rules:
- no address (and no ``RAY_ADDRESS``): start a private local Ray bound to 127.0.0.1, no
  dashboard, usage stats off, a small object store; shut it down afterwards.
- ``--address`` / ``RAY_ADDRESS``: join that cluster, disconnect afterwards.
- Ray already initialised in this process (tests, notebooks): use it, leave it running.
- Never ask for a resource the cluster lacks: Tune would wait forever without an error. GPUs are
  requested only when the cluster has them; a request larger than the largest node fails early.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

# Set before ray is imported: these are read at import / init time.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no result.json/csv/tensorboard
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: Tune prints nothing
os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")  # the harness records each error itself

import ray  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.execution.placement_groups import PlacementGroupFactory, resource_dict_to_pg_factory  # noqa: E402
from ray.tune.result import RESULT_DUPLICATE  # noqa: E402
from ray.tune.schedulers import FIFOScheduler, TrialScheduler  # noqa: E402
from ray.tune.search import Searcher  # noqa: E402

log = logging.getLogger(__name__)

_PAYLOAD = "harness_message"
#: Environment every trial process gets: its cwd stays put, telemetry stays off.
WORKER_ENV = {
    "RAY_CHDIR_TO_TRIAL_DIR": "0",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}

for _noisy in ("ray.tune", "ray.train", "ray.air"):
    logging.getLogger(_noisy).setLevel(logging.ERROR)


@dataclass(frozen=True)
class ClusterInfo:
    """What the harness may schedule on."""

    address: str
    started_here: bool
    cpus: float
    gpus: float
    max_node_cpus: float
    max_node_gpus: float


def _cluster_info(started_here: bool) -> ClusterInfo:
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    node_cpus = [n["Resources"].get("CPU", 0.0) for n in nodes] or [0.0]
    node_gpus = [n["Resources"].get("GPU", 0.0) for n in nodes] or [0.0]
    total = ray.cluster_resources()
    return ClusterInfo(
        address=ray.get_runtime_context().gcs_address,
        started_here=started_here,
        cpus=total.get("CPU", 0.0),
        gpus=total.get("GPU", 0.0),
        max_node_cpus=max(node_cpus),
        max_node_gpus=max(node_gpus),
    )


@contextmanager
def ray_cluster(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    object_store_mb: int = 200,
) -> Iterator[ClusterInfo]:
    """Connect to (or start) Ray for the duration of the block.

    ``num_gpus`` exists so tests can declare fake GPUs on a GPU-less machine; by default Ray
    detects the GPUs it has.
    """
    if ray.is_initialized():
        yield _cluster_info(started_here=False)
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(
            address=address,
            runtime_env={"env_vars": WORKER_ENV},
            logging_level=logging.ERROR,
            log_to_driver=False,
        )
    else:
        os.environ.update({k: v for k, v in WORKER_ENV.items() if k not in os.environ})
        ray.init(
            num_cpus=num_cpus or os.cpu_count() or 1,
            num_gpus=num_gpus,
            include_dashboard=False,
            object_store_memory=object_store_mb * 1024**2,
            logging_level=logging.ERROR,
            log_to_driver=False,
            configure_logging=True,
        )
    try:
        yield _cluster_info(started_here=not address)
    finally:
        ray.shutdown()


def trial_resources(cpus: float, gpus: float, cluster: ClusterInfo) -> dict[str, float]:
    """The Tune resource request for one trial on ``cluster``.

    GPUs are dropped on a GPU-less cluster (the study's ``gpus`` is a wish, not a requirement);
    a request no single node can satisfy is a user error, not an endless wait.
    """
    if cpus > cluster.max_node_cpus:
        raise ValueError(
            f"resources.cpus: {cpus} per trial exceeds the largest node ({cluster.max_node_cpus:g} CPUs)"
        )
    request = {"cpu": cpus}
    if gpus > 0 and cluster.max_node_gpus > 0:
        if gpus > cluster.max_node_gpus:
            raise ValueError(
                f"resources.gpus: {gpus} per trial exceeds the largest node ({cluster.max_node_gpus:g} GPUs)"
            )
        request["gpu"] = gpus
    return request


class TrialListener(Protocol):
    """Driver-side events of the trials run by :func:`run_trials`, by index into the work list."""

    def on_start(self, index: int) -> None: ...

    def on_message(self, index: int, message: dict[str, Any]) -> None: ...

    def on_end(self, index: int, error: str | None) -> None: ...


@runtime_checkable
class RetryListener(TrialListener, Protocol):
    """A listener that hears about retries (``run_trials(max_failures > 0)``)."""

    def on_retry(self, index: int, error: str) -> None:
        """An attempt died without reporting (process killed, node lost); Tune starts another."""
        ...


class TrialFailed(RuntimeError):
    """Raised in a trial's process after it reported an ``error`` message, so Tune retries it."""


#: Runs in the trial's process: ``worker_fn(item, emit)``; ``emit`` sends a JSON-able dict home.
WorkerFn = Callable[[Any, Callable[[dict[str, Any]], None]], None]


def _trainable(
    config: dict[str, Any], items: Sequence[Any], worker_fn: WorkerFn, raise_on_error: bool = False
) -> None:
    """The Tune function trainable: run one work item, forwarding its messages as reports.

    Final messages (``result``/``error``) carry the Ray node id, so the driver knows where each
    trial ran. With ``raise_on_error`` a trial whose last message is an error raises afterwards:
    Tune then counts a failure and, within ``max_failures``, starts the trial again.
    """
    node_id = ray.get_runtime_context().get_node_id()
    last: dict[str, Any] = {}

    def emit(message: dict[str, Any]) -> None:
        if message.get("kind") in ("result", "error"):
            message = {**message, "node_id": node_id}
        last.update(message)
        tune.report({_PAYLOAD: json.dumps(message)})

    worker_fn(items[config["index"]], emit)
    if raise_on_error and last.get("kind") == "error":
        raise TrialFailed(str(last.get("error", "the trial failed")))


#: Ray's words for a trial process that died (SIGKILL, the kernel's OOM killer, Ray's memory
#: monitor, a lost node); the text Tune keeps is the error's string, not its type.
_DEATH_MARKERS = ("ActorDiedError", "RayActorError", "WorkerCrashedError", "died unexpectedly",
                  "unexpectedly exits", "OutOfMemoryError", "NodeDiedError")  # fmt: skip
DIED = "the trial process died before reporting (killed by a signal, out of memory, or its node was lost)"


def _error_text(error: BaseException | str | None) -> str:
    """One line for a failed Tune trial; a dead process says so instead of Ray's last line.

    At a retry Tune has not stored the error text yet (None): the trial then reported no error
    itself, so its process died or Ray failed to run it.
    """
    if error is None:
        return DIED
    text = str(error).strip()
    if isinstance(error, ray.exceptions.RayActorError | ray.exceptions.WorkerCrashedError) or any(
        marker in text for marker in _DEATH_MARKERS
    ):
        return DIED
    lines = text.splitlines()
    return lines[-1] if lines else type(error).__name__


class _Bridge(tune.Callback):
    """Translates Tune callbacks into :class:`TrialListener` calls, shielding Tune from errors."""

    def __init__(self, listener: TrialListener, *, deliver_results: bool = True) -> None:
        self.listener = listener
        #: False when a scheduler delivers the messages itself (run_search: it must decide first)
        self.deliver_results = deliver_results

    def _call(self, what: str, method: Callable[..., None], *args: Any) -> None:
        try:
            method(*args)
        except Exception:  # a listener bug must not abort every other trial
            log.exception("trial listener failed in %s", what)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._call("start", self.listener.on_start, trial.config["index"])

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if self.deliver_results and _PAYLOAD in result:
            message = json.loads(result[_PAYLOAD])
            self._call("message", self.listener.on_message, trial.config["index"], message)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._call("end", self.listener.on_end, trial.config["index"], None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._call("error", self.listener.on_end, trial.config["index"], _error_text(trial.get_error()))

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if isinstance(self.listener, RetryListener):
            self._call("retry", self.listener.on_retry, trial.config["index"], _error_text(trial.get_error()))

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles its run config, callbacks included, into the experiment folder (for a
        restore the harness never does). The listener is driver-only state (MLflow clients, the
        CLI's console with its locks) and cannot be pickled, so it stays out."""
        return {**self.__dict__, "listener": None}


class _PerTrialResources:
    """Tune asks each trial's resources with its config; ours are indexed by ``config["index"]``.
    Tune reuses a trial process only for a trial asking the same resources."""

    def __init__(self, requests: Sequence[dict[str, float]]) -> None:
        self.factories = [resource_dict_to_pg_factory(dict(r)) for r in requests]

    def __call__(self, config: dict[str, Any]) -> PlacementGroupFactory:
        return self.factories[config["index"]]


def run_trials(
    items: Sequence[Any],
    names: Sequence[str],
    worker_fn: WorkerFn,
    listener: TrialListener,
    *,
    resources: dict[str, float] | Sequence[dict[str, float]],
    storage_dir: Path,
    experiment: str,
    max_concurrent: int | None = None,
    max_failures: int = 0,
) -> float:
    """Run every item through ``worker_fn`` as Tune trials; returns the wall time of the fit.

    Must be called inside :func:`ray_cluster`. One trial failing does not stop the others; a
    failed trial (error message or dead process) is started again up to ``max_failures`` times.
    ``names`` become the trial folder names under ``storage_dir/experiment``. ``resources`` is
    one request for every trial or one per item (several studies in one run).
    """
    if not items:
        return 0.0
    if max_concurrent is not None and max_concurrent < 1:
        raise ValueError(f"--max-concurrent: must be >= 1, got {max_concurrent}")
    if not isinstance(resources, dict) and len(resources) != len(items):
        raise ValueError(f"{len(resources)} resource requests for {len(items)} trials")
    trainable = tune.with_resources(
        tune.with_parameters(
            _trainable, items=list(items), worker_fn=worker_fn, raise_on_error=max_failures > 0
        ),
        resources if isinstance(resources, dict) else _PerTrialResources(resources),
    )
    tuner = tune.Tuner(
        trainable,
        param_space={"index": tune.grid_search(list(range(len(items))))},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=max_concurrent,
            reuse_actors=True,  # one process per slot: torch & co. are imported once, not per trial
            trial_name_creator=lambda t: names[t.config["index"]],
            trial_dirname_creator=lambda t: names[t.config["index"]],
        ),
        run_config=tune.RunConfig(
            name=experiment,
            storage_path=str(Path(storage_dir).resolve()),
            verbose=0,
            callbacks=[_Bridge(listener)],
            failure_config=tune.FailureConfig(max_failures=max_failures, fail_fast=False),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    )
    start = time.perf_counter()
    tuner.fit()
    return time.perf_counter() - start


def _probe_url(url: str, timeout_s: float) -> str | None:
    """Runs on one node: None when ``url`` answers, else why not."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return None if response.status == 200 else f"HTTP {response.status}"
    except Exception as exc:  # any failure is the answer
        return f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"


def unreachable_from_nodes(url: str, timeout_s: float = 5.0) -> dict[str, str]:
    """``{node id: reason}`` for every alive node of the cluster that cannot GET ``url``.

    Must be called inside :func:`ray_cluster`. One zero-CPU task is pinned to each node, so a
    firewall or DNS problem on any node shows up before the study starts.
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0, max_retries=0)(_probe_url)
    pending = {
        node["NodeID"]: probe.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        ).remote(url, timeout_s)
        for node in ray.nodes()
        if node.get("Alive")
    }
    failures: dict[str, str] = {}
    for node_id, ref in pending.items():
        try:
            reason = ray.get(ref, timeout=timeout_s + 60)
        except Exception as exc:  # the probe itself could not run there
            reason = f"probe failed: {type(exc).__name__}"
        if reason is not None:
            failures[node_id] = reason
    return failures


# --- Trials made on the fly by a search (harness tune, issue #7) ------------------------------


class SearchListener(TrialListener, Protocol):
    """A :class:`TrialListener` that also makes the trials and may stop them (a search driver).

    ``index`` is whatever :meth:`next_trial` returned for the trial; every call comes from the
    driver's Tune loop, one at a time.
    """

    def next_trial(self) -> tuple[int, str, Any] | None:
        """``(index, folder name, work item)`` of the next trial, or None when no more are needed."""
        ...

    def should_stop(self, index: int) -> bool:
        """Asked right after each message of a running trial: stop it now (pruned)?"""
        ...


class _AskSearcher(Searcher):
    """Tune asks for a trial whenever a slot frees up; the listener makes it (e.g. Optuna ``ask``)."""

    def __init__(self, listener: SearchListener) -> None:
        super().__init__()
        self.listener = listener

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles its config for a Tune-level restore, which a search never uses (its state
        lives in the listener's own storage); the driver-side listener stays out of the pickle."""
        return {k: v for k, v in self.__dict__.items() if k != "listener"}

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:  # type: ignore[override]  # Searcher.FINISHED is a str
        made = self.listener.next_trial()
        if made is None:
            return Searcher.FINISHED
        index, name, item = made
        return {"index": index, "name": name, "item": item}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Outcomes reach the listener through the bridge and the scheduler, not here."""


class _MessageScheduler(FIFOScheduler):
    """Hands each message to the listener *before* Tune lets the trial go on, then stops the trial
    if the listener says so. A callback would hear the message only after Tune's decision, so a
    pruned trial would run one more epoch. The trial's process is paused in ``tune.report`` until
    this returns; on STOP its training thread ends there (Tune raises SystemExit in it)."""

    def __init__(self, listener: SearchListener) -> None:
        super().__init__()
        self.listener = listener

    __getstate__ = _AskSearcher.__getstate__

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if RESULT_DUPLICATE in result or _PAYLOAD not in result:
            return TrialScheduler.CONTINUE
        index = trial.config["index"]
        try:
            self.listener.on_message(index, json.loads(result[_PAYLOAD]))
            stop = self.listener.should_stop(index)
        except Exception:  # a listener bug must not abort every other trial
            log.exception("search listener failed on a message of trial %s", index)
            stop = False
        return TrialScheduler.STOP if stop else TrialScheduler.CONTINUE


def _item_trainable(config: dict[str, Any], worker_fn: WorkerFn) -> None:
    """The Tune function trainable of a search: the work item travels in the trial's config."""

    def emit(message: dict[str, Any]) -> None:
        tune.report({_PAYLOAD: json.dumps(message)})

    worker_fn(config["item"], emit)


def run_search(
    listener: SearchListener,
    worker_fn: WorkerFn,
    *,
    resources: dict[str, float],
    storage_dir: Path,
    experiment: str,
    max_concurrent: int,
) -> float:
    """Run trials made one at a time by ``listener.next_trial`` until it returns None; returns the
    wall time of the fit.

    Must be called inside :func:`ray_cluster`. At most ``max_concurrent`` trials exist at once, and
    a new one is made only when a slot frees, so a sequential search (Optuna's TPE) sees every
    result that finished before it proposes the next point. Trials do not retry; a trial the
    listener asks to stop ends like a finished one (``on_end(index, None)``).
    """
    if max_concurrent < 1:
        raise ValueError(f"--max-concurrent: must be >= 1, got {max_concurrent}")
    trainable = tune.with_resources(tune.with_parameters(_item_trainable, worker_fn=worker_fn), resources)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=_AskSearcher(listener),
            scheduler=_MessageScheduler(listener),
            num_samples=-1,  # until the searcher says FINISHED
            max_concurrent_trials=max_concurrent,
            reuse_actors=True,
            trial_name_creator=lambda t: t.config["name"],
            trial_dirname_creator=lambda t: t.config["name"],
        ),
        run_config=tune.RunConfig(
            name=experiment,
            storage_path=str(Path(storage_dir).resolve()),
            verbose=0,
            callbacks=[_Bridge(listener, deliver_results=False)],
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    )
    start = time.perf_counter()
    tuner.fit()
    return time.perf_counter() - start


# --- Ray Data: per-video batch work (harness extract / harness teacher, issue #8) -------------


class _VideoActor:
    """A Ray Data actor: builds the (model-holding) worker once, then maps job JSON strings."""

    def __init__(self, worker_cls: type, settings_json: str) -> None:
        self.worker = worker_cls(settings_json)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        return {"summary": [json.dumps(self.worker(str(job))) for job in batch["job"]]}


def video_actor_plan(
    cluster: ClusterInfo, jobs: int, *, gpus_per_actor: float, cpus_per_actor: float, actors: int | None
) -> tuple[int, float]:
    """(actor count, GPUs per actor): GPU actors only where the cluster has GPUs, never more actors
    than jobs, and by default as many as the cluster's GPUs (or CPUs) allow."""
    if cpus_per_actor > cluster.max_node_cpus:
        raise ValueError(
            f"--cpus-per-actor: {cpus_per_actor} exceeds the largest node ({cluster.max_node_cpus:g} CPUs)"
        )
    gpus = gpus_per_actor if cluster.gpus > 0 else 0.0
    if gpus > cluster.max_node_gpus:
        raise ValueError(
            f"--gpus-per-actor: {gpus} exceeds the largest node ({cluster.max_node_gpus:g} GPUs)"
        )
    if actors is None:
        actors = int(cluster.gpus // gpus) if gpus > 0 else int(cluster.cpus // cpus_per_actor)
    return max(1, min(actors, jobs)), gpus


def map_videos(
    worker_cls: type,
    settings_json: str,
    jobs: Sequence[str],
    *,
    gpus_per_actor: float = 1.0,
    cpus_per_actor: float = 1.0,
    actors: int | None = None,
    batch_size: int = 1,
) -> Iterator[dict[str, Any]]:
    """Run ``worker_cls(settings_json)(job)`` for every job on a pool of Ray Data actors.

    Must be called inside :func:`ray_cluster`. Each actor builds one worker (one model); jobs are
    handed out ``batch_size`` at a time; summaries are yielded as they finish (any order), so the
    caller can show progress. GPUs are requested only where the cluster has them.
    """
    if not jobs:
        return
    import ray.data

    count, gpus = video_actor_plan(
        _cluster_info(started_here=False), len(jobs), gpus_per_actor=gpus_per_actor,
        cpus_per_actor=cpus_per_actor, actors=actors,
    )  # fmt: skip
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    items = ray.data.from_items([{"job": job} for job in jobs], override_num_blocks=len(jobs))
    summaries = items.map_batches(
        _VideoActor,
        fn_constructor_args=(worker_cls, settings_json),
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=count),
        num_cpus=cpus_per_actor,
        num_gpus=gpus,
    )
    for row in summaries.iter_rows():
        yield json.loads(row["summary"])
