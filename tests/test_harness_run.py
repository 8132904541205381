"""`run_study` through a real local Ray cluster and a real MLflow store.

One Ray cluster serves the module (starting Ray costs seconds on 2 cores). It declares two fake
GPUs, the way the harness proves its GPU path on a GPU-less machine; the CPU-only studies here
ask for no GPU and so never touch them.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from harness.locking import StudyLock, StudyLocked
from harness.results import read_results
from harness.runner import RunOptions, run_studies, run_study
from harness.scheduling import ClusterInfo, trial_resources
from sage_model.config import ExperimentConfig
from sage_model.records import EpochReport, ExperimentResult, Metric

ray = pytest.importorskip("ray")

# mlflow is imported only where a test reads the store back (it costs seconds to import).


def tracker_for(run_dir: Path) -> Any:
    from harness.tracking import Tracker

    return Tracker(f"sqlite:///{run_dir}/mlflow.db", run_dir)


STUDY = """\
name: {name}
version: 1
description: "runner test"
variants:
{variants}
seeds: {seeds}
datasets: [vidvrd]
resources: {{cpus: {cpus}, gpus: {gpus}}}
"""


def _run_dir(work_dir: Path) -> Path:
    return work_dir.parents[2]  # <run_dir>/trials/<study>/<trial_id>


def flaky_experiment(cfg: ExperimentConfig, *, work_dir: Path, on_epoch: Any = None) -> ExperimentResult:
    """Layer 9 fails while <run_dir>/FAIL exists; the others report two epochs and finish."""
    if cfg.model.prompt.insert_layer == 9 and (_run_dir(work_dir) / "FAIL").exists():
        raise RuntimeError("injected failure for layer 9")
    for epoch in range(2):
        on_epoch(
            EpochReport(1, epoch, {"train/loss": 1.0 / (epoch + 1), "val/predcls_all_map": 10.0 * epoch})
        )
    pred = work_dir / "predcls_all.json"
    pred.write_text("{}")
    value = float(cfg.model.prompt.insert_layer + cfg.seed)
    return ExperimentResult(
        [Metric("predcls", "all", "map", value)], {"predcls_all": pred}, "d", "t", True, 1, "cpu", 0.0
    )


def barrier_experiment(cfg: ExperimentConfig, *, work_dir: Path, on_epoch: Any = None) -> ExperimentResult:
    """Wait until every trial of the study is running at once (or fail after 90 s)."""
    barrier = _run_dir(work_dir) / "barrier"
    barrier.mkdir(exist_ok=True)
    (barrier / work_dir.name).write_text(os.environ.get("CUDA_VISIBLE_DEVICES", ""))
    deadline = time.monotonic() + 90
    while len(list(barrier.iterdir())) < 4:
        if time.monotonic() > deadline:
            raise TimeoutError("the 4 trials never ran at the same time")
        time.sleep(0.1)
    return ExperimentResult([Metric("predcls", "all", "map", 1.0)], {}, "d", "t", True, 1, "cpu", 0.0)


def where_experiment(cfg: ExperimentConfig, *, work_dir: Path, on_epoch: Any = None) -> ExperimentResult:
    """Record which (fake) GPUs the trial saw."""
    seen = _run_dir(work_dir) / "where"
    seen.mkdir(exist_ok=True)
    (seen / work_dir.name).write_text(os.environ.get("CUDA_VISIBLE_DEVICES", ""))
    return ExperimentResult([Metric("predcls", "all", "map", 1.0)], {}, "d", "t", True, 1, "cpu", 0.0)


@pytest.fixture(scope="module")
def ray_with_fake_gpus() -> Any:
    """A local Ray with 2 CPUs and 2 fake GPUs.

    This module's experiment functions travel to the workers by value, so no worker has to import
    the test module (and pytest, polars...) just to unpickle them.
    """
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(
        num_cpus=2,
        num_gpus=2,
        include_dashboard=False,
        object_store_memory=200 * 1024**2,
        log_to_driver=False,
    )
    yield ray
    ray.shutdown()
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def write_study(
    folder: Path, name: str, layers: list[int], seeds: str = "[0]", cpus: float = 1, gpus: float = 0
) -> Path:
    variants = "\n".join(
        f'  - {{name: "{n}", overrides: {{model.prompt.insert_layer: {n}}}}}' for n in layers
    )
    path = folder / f"{name}.yaml"
    path.write_text(STUDY.format(name=name, variants=variants, seeds=seeds, cpus=cpus, gpus=gpus))
    return path


def runs_by_status(run_dir: Path, study: str) -> Counter:
    tracker = tracker_for(run_dir)
    experiment = tracker.client.get_experiment_by_name(study)
    return Counter(
        (r.data.tags["variant"], r.info.status) for r in tracker.trial_runs(experiment.experiment_id)
    )


@pytest.mark.slow
def test_failing_trial_is_recorded_the_others_finish_and_resume_retries_it(
    tmp_path: Path, ray_with_fake_gpus: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    study = write_study(tmp_path, "flaky", [2, 9], seeds="[0, 1]")
    options = RunOptions(run_dir=tmp_path / "runs", results_dir=tmp_path / "results")
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "FAIL").touch()

    first = run_study(study, options, experiment_fn=flaky_experiment)
    assert first.exit_code == 1
    assert [(t.variant, t.status) for t in first.trials] == [
        ("2", "finished"),
        ("2", "finished"),
        ("9", "failed"),
        ("9", "failed"),
    ]
    assert all(t.error == "RuntimeError: injected failure for layer 9" for t in first.failures)
    assert read_results(options.results_dir, "flaky").height == 2
    assert runs_by_status(options.run_dir, "flaky") == Counter({("2", "FINISHED"): 2, ("9", "FAILED"): 2})
    tracker = tracker_for(options.run_dir)
    curve = tracker.metric_history(first.trials[0].mlflow_run_id, "val/predcls_all_map")
    assert [(m.step, m.value) for m in curve] == [(0, 0.0), (1, 10.0)]

    (tmp_path / "runs" / "FAIL").unlink()
    second = run_study(study, options, experiment_fn=flaky_experiment)
    assert second.exit_code == 0
    assert [t.status for t in second.trials] == ["skipped", "skipped", "finished", "finished"]
    frame = read_results(options.results_dir, "flaky")
    assert sorted(frame["value"].to_list()) == [2.0, 3.0, 9.0, 10.0]
    assert runs_by_status(options.run_dir, "flaky")[("9", "FINISHED")] == 2
    with StudyLock(options.run_dir, "flaky"):  # released by the run
        pass

    start = time.perf_counter()
    third = run_study(study, options, experiment_fn=flaky_experiment)
    assert [t.status for t in third.trials] == ["skipped"] * 4 and third.tracking_uri is None
    assert time.perf_counter() - start < 5  # nothing to run: no Ray, no MLflow


@pytest.mark.slow
def test_fractional_fake_gpus_pack_two_trials_per_gpu(
    tmp_path: Path, ray_with_fake_gpus: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    study = write_study(tmp_path, "gpus", [2], seeds="[0, 1, 2, 3]", cpus=0.25, gpus=0.5)
    options = RunOptions(run_dir=tmp_path / "runs", results_dir=tmp_path / "results")
    outcome = run_study(study, options, experiment_fn=barrier_experiment)
    assert outcome.exit_code == 0, [t.error for t in outcome.failures]
    assert outcome.resources == {"cpu": 0.25, "gpu": 0.5}
    seen = {p.name: p.read_text() for p in (options.run_dir / "barrier").iterdir()}
    assert Counter(seen.values()) == Counter({"0": 2, "1": 2})  # 4 concurrent trials, 2 per GPU
    tracker = tracker_for(options.run_dir)
    tags = {
        r.data.tags["trial_id"]: r.data.tags["cuda_visible_devices"]
        for r in tracker.trial_runs(tracker.ensure_experiment("gpus"))
    }
    assert tags == seen


@pytest.mark.slow
def test_several_studies_run_as_one_schedule_each_with_its_own_resources_and_records(
    tmp_path: Path, ray_with_fake_gpus: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    whole = write_study(tmp_path, "whole", [2, 4], cpus=0.5, gpus=1)
    half = write_study(tmp_path, "half", [6, 8], seeds="[0, 1]", cpus=0.5, gpus=0.5)
    options = RunOptions(run_dir=tmp_path / "runs", results_dir=tmp_path / "results")
    outcomes = run_studies([whole, half], options, experiment_fn=where_experiment)
    assert [o.study for o in outcomes] == ["whole", "half"]
    assert [o.exit_code for o in outcomes] == [0, 0], [t.error for o in outcomes for t in o.failures]
    assert [o.count("finished") for o in outcomes] == [2, 4]
    assert outcomes[0].resources == {"cpu": 0.5, "gpu": 1} and outcomes[1].resources == {
        "cpu": 0.5,
        "gpu": 0.5,
    }
    assert read_results(options.results_dir, "whole").height == 2
    assert read_results(options.results_dir, "half").height == 4
    assert runs_by_status(options.run_dir, "whole") == Counter({("2", "FINISHED"): 1, ("4", "FINISHED"): 1})
    assert runs_by_status(options.run_dir, "half") == Counter({("6", "FINISHED"): 2, ("8", "FINISHED"): 2})
    devices = {p.name: p.read_text() for p in (options.run_dir / "where").iterdir()}
    assert len(devices) == 6 and set(devices.values()) <= {"0", "1"}, devices  # a whole GPU or a share of one
    for name in ("whole", "half"):  # both locks released
        with StudyLock(options.run_dir, name):
            pass
    again = run_studies([whole, half], options, experiment_fn=where_experiment)
    assert [o.count("skipped") for o in again] == [2, 4]
    with pytest.raises(ValueError, match="study whole is given twice"):
        run_studies([whole, whole], options, experiment_fn=where_experiment)


def test_a_config_two_studies_share_is_computed_once_and_recorded_in_both(
    tmp_path: Path, ray_with_fake_gpus: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.runner import SAME_CONFIG_TAG

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first = write_study(tmp_path, "first", [2, 4])
    second = write_study(tmp_path, "second", [4, 6])  # layer 4, seed 0: the same config as first's
    options = RunOptions(run_dir=tmp_path / "runs", results_dir=tmp_path / "results")
    outcomes = run_studies([first, second], options, experiment_fn=flaky_experiment)
    assert [o.count("finished") for o in outcomes] == [2, 2], [t.error for o in outcomes for t in o.failures]
    computed = sorted(
        p.name for p in (options.run_dir / "trials").glob("*/*") if (p / "predcls_all.json").is_file()
    )
    assert len(computed) == 3, computed  # layer 4 ran once, under the first study
    rows = {s: read_results(options.results_dir, s) for s in ("first", "second")}
    assert rows["first"].height == 2 and rows["second"].height == 2
    shared = [r.filter(r["variant"] == "4") for r in rows.values()]
    assert shared[0]["value"].to_list() == shared[1]["value"].to_list() == [4.0]
    assert shared[0]["config_hash"].to_list() == shared[1]["config_hash"].to_list()
    assert shared[0]["trial_id"][0] != shared[1]["trial_id"][0]  # each study's own trial
    tracker = tracker_for(options.run_dir)
    runs = {
        name: {
            r.data.tags["variant"]: r
            for r in tracker.trial_runs(tracker.client.get_experiment_by_name(name).experiment_id)
        }
        for name in ("first", "second")
    }
    assert runs["second"]["4"].data.tags[SAME_CONFIG_TAG] == shared[0]["trial_id"][0]
    assert runs["second"]["4"].info.status == "FINISHED" and runs["second"]["4"].data.metrics
    logged = {f.path for f in tracker.client.list_artifacts(runs["second"]["4"].info.run_id)}
    assert {"trial.log", "predictions"} <= logged, logged  # the computing trial's log and files
    assert (
        SAME_CONFIG_TAG not in runs["first"]["4"].data.tags
        and SAME_CONFIG_TAG not in runs["second"]["6"].data.tags
    )
    again = run_studies([first, second], options, experiment_fn=flaky_experiment)
    assert [o.count("skipped") for o in again] == [2, 2]


def test_lock_refuses_a_second_run_of_the_same_study(tmp_path: Path) -> None:
    study = write_study(tmp_path, "locked", [2])
    options = RunOptions(run_dir=tmp_path / "runs", results_dir=tmp_path / "results")
    with StudyLock(options.run_dir, "locked"):
        with pytest.raises(StudyLocked, match=rf"locked.lock is held by PID {os.getpid()}"):
            run_study(study, options, experiment_fn=flaky_experiment)
    with StudyLock(options.run_dir, "locked") as lock:  # the refused run left the lock as it was: free
        assert lock.held


def test_gpu_is_never_requested_from_a_cluster_without_one() -> None:
    cpu_only = ClusterInfo("local", True, cpus=2, gpus=0, max_node_cpus=2, max_node_gpus=0)
    assert trial_resources(1, 0.5, cpu_only) == {"cpu": 1}
    gpu_node = ClusterInfo("local", True, cpus=16, gpus=2, max_node_cpus=16, max_node_gpus=2)
    assert trial_resources(1, 0.5, gpu_node) == {"cpu": 1, "gpu": 0.5}
    assert trial_resources(1, 0, gpu_node) == {"cpu": 1}
    with pytest.raises(ValueError, match="resources.gpus: 4 per trial exceeds the largest node"):
        trial_resources(1, 4, gpu_node)
    with pytest.raises(ValueError, match="resources.cpus: 3 per trial exceeds the largest node"):
        trial_resources(3, 0, cpu_only)
