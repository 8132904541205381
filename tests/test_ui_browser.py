"""`harness ui` serves a study's MLflow store; headless Chromium sees its runs and a metric.

The store is filled by a small study (two trials through the harness's own trial recorder), the
real ``harness`` entry point starts the UI in its own process, Chromium loads the printed runs
page (a JavaScript app, so the DOM is read after it ran), and SIGINT (Ctrl-C) stops everything.
The screenshot stays in ``test-artifacts/mlflow_ui.png``.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.expand import expand_study
from harness.spec import load_study
from harness.trial import recording_context, run_trial
from tests.reliability_support import (
    PROJECT_ROOT,
    QUIET_ENV,
    free_port,
    http_ok,
    quick_experiment,
    write_study,
)

pytestmark = pytest.mark.slow  # real processes, Ray and MLflow servers: about a minute or more

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(url: str, profile: Path, *action: str) -> subprocess.CompletedProcess:
    command = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
        f"--user-data-dir={profile}", "--virtual-time-budget=15000", "--window-size=1400,900", *action, url,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)


def _dom_showing(url: str, tmp_path: Path, wanted: list[str], tries: int = 3) -> str:
    """The page's DOM after its scripts ran; on a busy machine the app may need another look."""
    dom = ""
    for attempt in range(tries):
        done = _chromium(url, tmp_path / f"profile-dom-{attempt}", "--dump-dom")
        assert done.returncode == 0, done.stderr[-2000:]
        dom = done.stdout
        if all(piece in dom for piece in wanted):
            break
    return dom


def _first_line(process: subprocess.Popen, timeout_s: float) -> str:
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(process.stdout.readline()), daemon=True).start()  # type: ignore[union-attr]
    try:
        return lines.get(timeout=timeout_s).strip()
    except queue.Empty:
        return ""


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A two-trial study recorded the way `harness run` records it (MLflow runs + Parquet)."""
    tmp_path = tmp_path_factory.mktemp("ui")
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    spec = load_study(write_study(tmp_path, "uistudy", [2, 6]))
    runs, results = tmp_path / "runs", tmp_path / "results"
    ctx = recording_context(runs, results, spec.name, spec.description)
    ids = []
    for trial in expand_study(spec):
        outcome = run_trial(trial, runs, results_dir=results, experiment_fn=quick_experiment, ctx=ctx)
        assert outcome.status == "finished", outcome.error
        ids.append(trial.trial_id)
    if saved is not None:
        os.environ["MLFLOW_TRACKING_URI"] = saved
    return runs, ids


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_ui_shows_the_study_runs_and_a_metric_in_chromium(
    tmp_path: Path, store: tuple[Path, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    runs, trial_ids = store
    port = free_port()
    env = {**os.environ, **QUIET_ENV, "PYTHONPATH": str(PROJECT_ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    ui = subprocess.Popen(
        [sys.executable, "-c", "from harness.cli import main; main()", "ui", "uistudy", "--run-dir", str(runs), "--port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = _first_line(ui, 300)
        assert line.startswith("uistudy: http://127.0.0.1:"), (line, ui.poll())
        url = line.split(": ", 1)[1]
        assert url == f"http://127.0.0.1:{port}/#/experiments/1/runs"

        charts = url + "?compareRunsMode=CHART"  # the runs page with its metric charts shown
        dom = _dom_showing(charts, tmp_path, [*trial_ids, "train/loss"])
        for trial_id in trial_ids:
            assert trial_id in dom, f"run {trial_id} is not on the runs page"
        assert "train/loss" in dom, "the logged metric train/loss is not on the runs page"

        artifacts = PROJECT_ROOT / "test-artifacts"
        artifacts.mkdir(exist_ok=True)
        shot = artifacts / "mlflow_ui.png"
        shot.unlink(missing_ok=True)
        taken = _chromium(charts, tmp_path / "profile-shot", f"--screenshot={shot}")
        assert taken.returncode == 0 and shot.is_file(), taken.stderr[-2000:]
    finally:
        ui.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            code = ui.wait(timeout=120)
        except subprocess.TimeoutExpired:
            tree = subprocess.run(
                ["ps", "-eo", "pid,ppid,pgid,stat,etime,args"], capture_output=True, text=True
            ).stdout
            ui.kill()
            raise AssertionError(f"`harness ui` ignored Ctrl-C; processes:\n{tree}") from None
    assert code == 0, ui.stderr.read()[-2000:]  # type: ignore[union-attr]
    assert ui.stderr.read().strip().endswith("stopped.")  # type: ignore[union-attr]
    assert not http_ok(f"http://127.0.0.1:{port}/health"), "the MLflow server outlived `harness ui`"


def test_ui_without_a_store_or_with_an_unknown_study_says_so(
    tmp_path: Path, store: tuple[Path, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = CliRunner().invoke(app, ["ui", "--run-dir", str(tmp_path / "nothing")])
    assert result.exit_code == 2
    assert (
        result.output.strip()
        == f"error: --run-dir: no MLflow store at {(tmp_path / 'nothing').resolve()}/mlflow.db; run a study first"
    )
    runs, _ = store
    result = CliRunner().invoke(app, ["ui", "table8_layers", "--run-dir", str(runs)])
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: STUDY: no study 'table8_layers' in sqlite:///")
    assert result.output.strip().endswith("(studies there: uistudy)")
