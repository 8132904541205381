"""`harness run` end to end, as a user types it: a fresh process, a private local Ray, the real
``sage_model.experiment.run_experiment`` on the embedded synthetic data, a real MLflow store.

A two-variant slice of the Table 8 study with ``--smoke`` keeps it to a minute or two on 2 cores;
`tests/test_studies_smoke.py` smoke-runs every study in full.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.results import read_results

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def harness_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HARNESS_DEBUG": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("RAY_ADDRESS", None)
    command = [sys.executable, "-c", "from harness.cli import main; main()", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=1100)


@pytest.fixture(scope="module")
def slice_of_table8(project_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """table8_layers with its first and last variant, first seed (same base, same table)."""
    folder = tmp_path_factory.mktemp("e2e")
    data = yaml.safe_load((project_root / "studies" / "table8_layers.yaml").read_text())
    data["name"] = "table8_slice"
    data["variants"] = [data["variants"][0], data["variants"][-1]]
    data["seeds"] = data["seeds"][:1]
    data["table"]["reference"] = {v["name"]: data["table"]["reference"][v["name"]] for v in data["variants"]}
    path = folder / "table8_slice.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_harness_run_trains_tracks_writes_and_then_skips(slice_of_table8: Path) -> None:
    from harness.tracking import Tracker

    work = slice_of_table8.parent
    args = ("run", str(slice_of_table8), "--smoke", "--results-dir", "results")
    first = harness_cli(*args, cwd=work)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "SYNTHETIC DATA" in first.stderr and "NOT comparable" in first.stderr
    assert "table8_slice: 2 finished, 0 already done (skipped), 0 failed" in first.stdout

    frame = read_results(work / "results", "table8_slice")
    assert sorted(frame["variant"].unique().to_list()) == ["10", "2"]
    assert frame["synthetic"].all() and frame["data_hash"].str.len_chars().min() > 0
    cells = set(zip(frame["task"], frame["split"], frame["metric"], strict=True))
    assert {("predcls", "all", "map"), ("predcls", "novel", "map"), ("sgdet", "all", "map")} <= cells
    assert frame["value"].is_between(0, 100).all()

    tracker = Tracker(f"sqlite:///{work / 'runs' / 'mlflow.db'}", work / "runs")
    experiment = tracker.client.get_experiment_by_name("table8_slice")
    runs = tracker.trial_runs(experiment.experiment_id)
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]
    for run in runs:
        assert run.data.tags["synthetic"] == "true"
        assert run.data.params["model.prompt.insert_layer"] in ("2", "10")
        curve = tracker.metric_history(run.info.run_id, "train/loss")
        assert len(curve) == 2 and [m.step for m in curve] == [0, 1]  # one epoch per stage (smoke)
        assert "test/predcls_all_map" in run.data.metrics and "stage" not in run.data.metrics
    assert len(list((work / "results" / "table8_slice").glob("*/*.parquet"))) == 2

    # a second study beside the finished one: one schedule, the finished one skipped
    other = work / "table8_other.yaml"
    data = yaml.safe_load(slice_of_table8.read_text())
    data["name"], data["variants"] = "table8_other", data["variants"][:1]
    data["table"]["reference"] = {data["variants"][0]["name"]: data["table"]["reference"][data["variants"][0]["name"]]}
    other.write_text(yaml.safe_dump(data, sort_keys=False))
    both = ("run", str(slice_of_table8), str(other), "--smoke", "--results-dir", "results")
    second = harness_cli(*both, cwd=work)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "table8_slice: 0 finished, 2 already done (skipped), 0 failed" in second.stdout
    assert "table8_other: 1 finished, 0 already done (skipped), 0 failed" in second.stdout
    assert len(list((work / "results" / "table8_other").glob("*/*.parquet"))) == 1
    assert tracker.client.get_experiment_by_name("table8_other") is not None

    third = harness_cli(*both, cwd=work)
    assert third.returncode == 0, third.stdout + third.stderr
    assert "table8_other: 0 finished, 1 already done (skipped), 0 failed" in third.stdout
    assert "mlflow:" not in third.stdout  # nothing ran: neither Ray nor MLflow was started
