"""Failing trials: an exception, a failed allocation, a process killed like the OOM killer does,
and a flaky trial, with ``--retries 1``. Each failure is recorded with its error, the others
finish, and no trial is attempted more often than allowed."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from harness.results import read_results
from harness.runner import RunOptions, run_study
from harness.tracking import Tracker
from tests.reliability_support import failing_experiment, write_study

pytestmark = pytest.mark.slow  # real processes, Ray and MLflow servers: about a minute or more

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray(project_root: Path) -> Any:
    """A 2-CPU local Ray whose workers can import the tests package."""
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(project_root), saved) if p)
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2, log_to_driver=False)
    yield ray
    ray.shutdown()
    if saved is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = saved


def test_failures_are_recorded_retried_once_and_the_rest_finish(
    tmp_path: Path, local_ray: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    study = write_study(tmp_path, "failing", [2, 3, 4, 5, 6])
    options = RunOptions(run_dir=tmp_path / "runs", results_dir=tmp_path / "results", retries=1)
    outcome = run_study(study, options, experiment_fn=failing_experiment)

    by_layer = {t.variant: t for t in outcome.trials}
    assert outcome.exit_code == 1
    assert {v: (t.status, t.attempts) for v, t in by_layer.items()} == {
        "2": ("finished", 1),
        "3": ("failed", 2),
        "4": ("failed", 2),
        "5": ("failed", 2),
        "6": ("finished", 2),
    }
    assert by_layer["3"].error == "RuntimeError: injected failure for layer 3"
    assert by_layer["4"].error.startswith("MemoryError: Unable to allocate 1.00 EiB")
    assert by_layer["5"].error.startswith(
        "the trial process died before reporting (killed by a signal, out of memory"
    )
    attempts = Counter(p.name.split("-")[1] for p in (options.run_dir / "marks" / "attempts").iterdir())
    assert attempts == Counter({"2": 1, "3": 2, "4": 2, "5": 2, "6": 2})  # never more than 1 + retries

    frame = read_results(options.results_dir, "failing")
    assert sorted(frame["variant"].to_list()) == ["2", "6"]
    tracker = Tracker(f"sqlite:///{options.run_dir}/mlflow.db", options.run_dir)
    runs = {r.data.tags["variant"]: r for r in tracker.trial_runs(tracker.ensure_experiment("failing"))}
    assert {v: r.info.status for v, r in runs.items()} == {
        "2": "FINISHED", "3": "FAILED", "4": "FAILED", "5": "FAILED", "6": "FINISHED",
    }  # fmt: skip
    assert runs["6"].data.tags["attempt_1_error"] == "ConnectionError: flaky: the data server hung up"
    assert runs["6"].data.tags["attempts"] == "2"
    assert runs["3"].data.tags["error"] == "RuntimeError: injected failure for layer 3"
    assert runs["5"].data.tags["error"].startswith("the trial process died before reporting")
    assert "attempt_1_error" in runs["5"].data.tags
