"""A driver killed with SIGKILL mid-study, and a second `harness run` while the first holds the lock.

Real processes throughout: the driver is a separate Python process running ``run_study`` on its
own local Ray; the second run is the real ``harness`` entry point; the kill is SIGKILL (no
handler runs, nothing is flushed). The rerun must finish the study with every trial exactly
once, leave no temp or duplicate Parquet file, and close the killed trials' MLflow runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from harness.locking import StudyLock
from harness.results import read_results
from harness.tracking import Tracker
from tests.reliability_support import (
    PROJECT_ROOT,
    QUIET_ENV,
    child_pids_alive,
    read_marks,
    wait_for,
    write_study,
)

pytestmark = pytest.mark.slow  # real processes, Ray and MLflow servers: about a minute or more

DRIVER = """\
import sys
from pathlib import Path
from harness.runner import RunOptions, run_study
from tests.reliability_support import held_experiment

study, runs, results = sys.argv[1:4]
options = RunOptions(run_dir=Path(runs), results_dir=Path(results), num_cpus=2)
outcome = run_study(study, options, experiment_fn=held_experiment)
print("STATUSES", ",".join(t.status for t in outcome.trials), flush=True)
sys.exit(outcome.exit_code)
"""


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, **QUIET_ENV, "PYTHONPATH": path}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("RAY_ADDRESS", None)
    return env


def _driver(study: Path, runs: Path, results: Path, log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-c", DRIVER, str(study), str(runs), str(results)],
            cwd=PROJECT_ROOT, env=_env(), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def _runs(runs: Path, study: str) -> Counter:
    tracker = Tracker(f"sqlite:///{runs}/mlflow.db", runs)
    experiment = tracker.client.get_experiment_by_name(study)
    return Counter(
        (r.data.tags["variant"], r.info.status) for r in tracker.trial_runs(experiment.experiment_id)
    )


def test_second_run_is_refused_and_a_sigkilled_study_completes_exactly_once(tmp_path: Path) -> None:
    study = write_study(tmp_path, "killed", [2, 4, 6])
    runs, results = tmp_path / "runs", tmp_path / "results"
    runs.mkdir()
    (runs / "HOLD").touch()  # layers 4 and 6 run until this goes away
    first = _driver(study, runs, results, tmp_path / "first.log")
    try:
        wait_for(
            lambda: (
                len(read_marks(runs, "started")) == 3
                and len(list((results / "killed").glob("*/*.parquet"))) == 1
                or first.poll() is not None
            ),
            600,
            "layer 2 finished and layers 4, 6 running",
        )
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]

        second = subprocess.run(
            [sys.executable, "-c", "from harness.cli import main; main()", "run", str(study),
             "--run-dir", str(runs), "--results-dir", str(results)],
            cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert second.returncode == 2, second.stderr[-3000:]
        errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
        assert errors == [
            f"error: study killed is already running: lock {runs}/killed.lock is held by PID {first.pid} on "
            f"{os.uname().nodename} since " + errors[0].split(" since ")[-1]
        ]
        assert first.poll() is None, "the refused run must not disturb the running one"
        workers = [int(pid) for pid in read_marks(runs, "started").values()]
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)

    # Ray's processes share the driver's fate: no trial keeps computing after the kill.
    wait_for(lambda: not child_pids_alive(workers), 120, f"trial processes {workers} to exit")
    assert (runs / "killed.lock.info").exists()  # the holder's PID is left behind, as by any SIGKILL
    assert _runs(runs, "killed") == Counter({("2", "FINISHED"): 1, ("4", "RUNNING"): 1, ("6", "RUNNING"): 1})
    stale_tmp = results / "killed" / ".killed-4-vidvrd-s0-0000000000.x1y2z3.tmp"
    stale_tmp.write_bytes(b"PAR1 half a parquet file")  # what a writer killed mid-write leaves

    (runs / "HOLD").unlink()
    rerun = _driver(study, runs, results, tmp_path / "rerun.log")
    assert rerun.wait(timeout=600) == 0, (tmp_path / "rerun.log").read_text()[-3000:]
    assert "STATUSES skipped,finished,finished" in (tmp_path / "rerun.log").read_text()

    frame = read_results(results, "killed")
    assert sorted(Counter(frame["trial_id"].to_list()).values()) == [1, 1, 1]
    assert sorted(frame["value"].to_list()) == [20.0, 40.0, 60.0]
    folder = results / "killed"
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert [f.split("/")[0] for f in files] == sorted(frame["trial_id"].to_list()), files  # no temp file left
    assert _runs(runs, "killed") == Counter(
        {
            ("2", "FINISHED"): 1,
            ("4", "KILLED"): 1,
            ("6", "KILLED"): 1,
            ("4", "FINISHED"): 1,
            ("6", "FINISHED"): 1,
        }
    )
    assert not (runs / "killed.lock.info").exists()  # the rerun took the lock (no takeover needed)
    with StudyLock(runs, "killed"):  # and released it
        pass
