"""`harness ui` serves a study's MLflow store the way a user meets it (issue #19).

The store is filled by a small study run through `run_study` (real Ray, real trial recorder),
the real ``harness`` entry point starts the UI in its own process, and:

- MLflow's REST API shows the conventions: the experiment's kind, readable run names, a parent
  run per invocation with every trial as its child, MLflow's source tags, the config and study
  file as artifacts, a dataset input;
- headless Chromium, driven through the DevTools protocol over a pipe (no extra package), opens
  the printed URL: the training-runs table with the parent run and its dataset, unfolds the
  parent to show the trials' names, and opens a trial's metric tab, where the ``val/`` curve is
  drawn (a plotted line, not a spinner). Screenshots stay in ``test-artifacts/``;
- SIGINT (Ctrl-C) stops the UI and its server.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from harness.cli import app
from tests.reliability_support import (
    PROJECT_ROOT,
    QUIET_ENV,
    free_port,
    http_ok,
    quick_experiment,
    wait_for,
    write_study,
)

pytestmark = pytest.mark.slow  # real processes, Ray and MLflow servers: a minute or two

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = PROJECT_ROOT / "test-artifacts"


def _first_line(process: subprocess.Popen, timeout_s: float) -> str:
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(process.stdout.readline()), daemon=True).start()  # type: ignore[union-attr]
    try:
        return lines.get(timeout=timeout_s).strip()
    except queue.Empty:
        return ""


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-trial study run by `run_study`: its run dir (MLflow store + artifacts)."""
    from harness.runner import RunOptions, run_study

    tmp_path = tmp_path_factory.mktemp("ui")
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "PYTHONPATH")}
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), saved["PYTHONPATH"]) if p)
    try:
        study = write_study(tmp_path, "uistudy", [2, 6])
        options = RunOptions(run_dir=tmp_path / "runs", results_dir=tmp_path / "results", num_cpus=2)
        outcome = run_study(study, options, experiment_fn=quick_experiment)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    assert outcome.exit_code == 0 and not outcome.tracking_errors, outcome
    return options.run_dir


@dataclass
class Ui:
    process: subprocess.Popen
    port: int
    url: str  # what `harness ui` printed

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One call of MLflow's REST API (GET with a query string, or POST with JSON)."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.base}/api/2.0/mlflow/{path}", data=data, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())


@pytest.fixture(scope="module")
def ui(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ui]:
    """`harness ui uistudy` on the store, in its own process (stopped by the last test)."""
    port = free_port()
    env = {**os.environ, **QUIET_ENV, "PYTHONPATH": str(PROJECT_ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    command = [sys.executable, "-c", "from harness.cli import main; main()", "ui", "uistudy",
               "--run-dir", str(store), "--port", str(port)]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=tmp_path_factory.mktemp("ui-cwd"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    line = _first_line(process, 300)
    assert line.startswith("uistudy: http://127.0.0.1:"), (line, process.poll())
    yield Ui(process, port, line.split(": ", 1)[1])
    if process.poll() is None:
        process.kill()


def _runs(ui: Ui) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    experiment = ui.api("experiments/get-by-name?experiment_name=uistudy")["experiment"]
    runs = ui.api("runs/search", {"experiment_ids": [experiment["experiment_id"]], "max_results": 100})[
        "runs"
    ]
    return experiment, runs


def _tags(entity: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in entity.get("tags", [])}


def test_the_rest_api_shows_mlflow_conventions(ui: Ui) -> None:
    assert ui.url == f"{ui.base}/#/experiments/1/runs?workflowType=machine_learning"
    experiment, runs = _runs(ui)
    assert _tags(experiment)["mlflow.experimentKind"] == "custom_model_development"
    parents = {r["info"]["run_id"]: r for r in runs if _tags(r["data"]).get("harness.role") == "study"}
    trials = [r for r in runs if r["info"]["run_id"] not in parents]
    assert len(parents) == 1 and len(trials) == 2
    (parent,) = parents.values()
    assert parent["info"]["run_name"].startswith("uistudy · 20") and parent["info"]["status"] == "FINISHED"
    assert parent["inputs"]["dataset_inputs"][0]["dataset"]["name"] == "vidvrd (synthetic)"
    for run in trials:
        tags, info = _tags(run["data"]), run["info"]
        assert info["run_name"].startswith(f"{tags['variant']} · vidvrd · s0")
        assert tags["mlflow.parentRunId"] in parents
        assert len(tags["mlflow.source.git.commit"]) == 40 and tags["mlflow.source.name"] == "harness run"
        assert tags["mlflow.user"] and tags["trial_id"].startswith("uistudy-")
        files = ui.api(f"artifacts/list?run_id={info['run_id']}")["files"]
        assert {"config.json", "uistudy.yaml", "trial.log"} <= {f["path"] for f in files}
        (dataset,) = run["inputs"]["dataset_inputs"]
        assert dataset["dataset"]["digest"] == "d"
        assert json.loads(dataset["dataset"]["profile"])["teacher_hash"] == "t"
        keys = {m["key"] for m in run["data"]["metrics"]}
        assert {"test/predcls_all_map", "val/predcls_all_map", "train/loss"} <= keys
        assert not keys & {"stage", "epoch"}


# --- Chromium through the DevTools protocol ---------------------------------------------------


class Chromium:
    """Headless Chromium driven over ``--remote-debugging-pipe`` (NUL-separated JSON on fds 3/4)."""

    def __init__(self, profile: Path) -> None:
        to_browser, self._send_fd = _high_pipe()
        self._recv_fd, from_browser = _high_pipe()

        def wire() -> None:  # in the child: its fd 3 reads our commands, fd 4 writes its replies
            os.dup2(to_browser, 3)
            os.dup2(from_browser, 4)

        self.process = subprocess.Popen(
            [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
             "--remote-debugging-pipe", f"--user-data-dir={profile}", "about:blank"],
            # no close_fds: it would run after `wire` and close 3 and 4 (our pipes are CLOEXEC)
            preexec_fn=wire, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(to_browser)
        os.close(from_browser)
        self._buffer = b""
        self._id = 0

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> Any:
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._send_fd, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read(timeout_s=120)
            if reply.get("id") == self._id:
                assert "error" not in reply, (method, reply["error"])
                return reply.get("result", {})

    def _read(self, timeout_s: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._recv_fd], [], [], timeout_s)
            assert ready, f"Chromium did not answer within {timeout_s} s"
            chunk = os.read(self._recv_fd, 1 << 20)
            assert chunk, "Chromium closed its DevTools pipe"
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def open(self, url: str, width: int, height: int) -> str:
        """A new tab at ``url`` (``width`` x ``height`` CSS pixels); returns its session id."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        self.send("Emulation.setDeviceMetricsOverride", metrics, session)
        self.send("Page.navigate", {"url": url}, session)
        return session

    def evaluate(self, session: str, expression: str) -> Any:
        params = {"expression": expression, "returnByValue": True, "awaitPromise": True}
        return self.send("Runtime.evaluate", params, session)["result"].get("value")

    def wait_for(self, session: str, expression: str, what: str, timeout_s: float = 180) -> Any:
        deadline = time.monotonic() + timeout_s
        while not (value := self.evaluate(session, expression)):
            assert time.monotonic() < deadline, f"timed out after {timeout_s:.0f} s waiting for {what}"
            time.sleep(0.5)
        return value

    def screenshot(self, session: str, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", {"format": "png"}, session)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)
        os.close(self._send_fd)
        os.close(self._recv_fd)


def _high_pipe() -> tuple[int, int]:
    """A pipe whose ends sit above fd 4, so wiring them onto 3 and 4 cannot clobber each other."""
    read, write = os.pipe()
    high = fcntl.fcntl(read, fcntl.F_DUPFD_CLOEXEC, 10), fcntl.fcntl(write, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(read)
    os.close(write)
    return high


def _text(chromium: Chromium, session: str) -> str:
    return chromium.evaluate(session, "document.body ? document.body.innerText : ''") or ""


RUN_NAME_CELL = (
    "[...document.querySelectorAll('[col-id*=\"Run Name\"]')].find(c => c.innerText.includes({name!r}))"
)
#: the val/ chart is drawn: the plotly chart whose legend names val/predcls_all_map holds a line
VAL_CHART_DRAWN = """(() => {
  const legend = [...document.querySelectorAll('span')].find(
    e => e.childElementCount === 0 && e.textContent.trim().endsWith('(val/predcls_all_map)'));
  let card = legend;
  while (card && !card.querySelector('.js-plotly-plot')) card = card.parentElement;
  const line = card && card.querySelector('.js-plotly-plot .scatterlayer path.js-line');
  return Boolean(line && (line.getAttribute('d') || '').length > 10);
})()"""


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_chromium_shows_training_runs_with_names_datasets_and_a_val_curve(ui: Ui, tmp_path: Path) -> None:
    _, runs = _runs(ui)
    names = sorted(r["info"]["run_name"] for r in runs)  # the parent's, then the trials'
    parent, trials = names[-1], names[:-1]
    assert trials == ["2 · vidvrd · s0", "6 · vidvrd · s0"] and parent.startswith("uistudy · ")
    chromium = Chromium(tmp_path / "profile")
    try:
        page = chromium.open(ui.url, 1400, 900)
        chromium.wait_for(
            page, f"Boolean({RUN_NAME_CELL.format(name=parent)})", "the parent run in the runs table"
        )
        text = _text(chromium, page)
        assert "Run Name" in text and "Dataset" in text and "vidvrd (synthetic)" in text, text[:2000]
        assert "No data available" not in text  # not the GenAI overview
        chromium.evaluate(page, f"{RUN_NAME_CELL.format(name=parent)}.querySelector('button').click()")
        chromium.wait_for(
            page,
            " && ".join(f"document.body.innerText.includes({t!r})" for t in trials),
            "the unfolded trials",
        )
        assert _text(chromium, page).count("vidvrd (synthetic)") == 3  # the parent's and both trials'
        chromium.screenshot(page, ARTIFACTS / "mlflow_ui_runs.png")

        trial = next(r for r in runs if r["info"]["run_name"] == trials[0])
        metrics = ui.url.replace("/runs?", f"/runs/{trial['info']['run_id']}/model-metrics?")
        page = chromium.open(metrics, 1400, 2600)  # tall: every chart section in view (they render lazily)
        chromium.wait_for(page, VAL_CHART_DRAWN, "the val/predcls_all_map chart drawn")
        text = _text(chromium, page)
        assert trials[0] in text and all(f"\n{section}\n(" in text for section in ("train", "val", "test"))
        assert chromium.screenshot(page, ARTIFACTS / "mlflow_ui_val_curve.png").stat().st_size > 10_000
    finally:
        chromium.close()


def test_ui_without_a_store_or_with_an_unknown_study_says_so(
    tmp_path: Path, store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = CliRunner().invoke(app, ["ui", "--run-dir", str(tmp_path / "nothing")])
    assert result.exit_code == 2
    assert (
        result.output.strip()
        == f"error: --run-dir: no MLflow store at {(tmp_path / 'nothing').resolve()}/mlflow.db; run a study first"
    )
    result = CliRunner().invoke(app, ["ui", "table8_layers", "--run-dir", str(store)])
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: STUDY: no study 'table8_layers' in sqlite:///")
    assert result.output.strip().endswith("(studies there: uistudy)")


def test_ctrl_c_stops_the_ui_and_its_server(ui: Ui) -> None:
    ui.process.send_signal(signal.SIGINT)  # Ctrl-C
    try:
        code = ui.process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        tree = subprocess.run(
            ["ps", "-eo", "pid,ppid,pgid,stat,etime,args"], capture_output=True, text=True
        ).stdout
        ui.process.kill()
        raise AssertionError(f"`harness ui` ignored Ctrl-C; processes:\n{tree}") from None
    stderr = ui.process.stderr.read()  # type: ignore[union-attr]
    assert code == 0, stderr[-2000:]
    assert stderr.strip().endswith("stopped.")
    wait_for(lambda: not http_ok(f"{ui.base}/health"), 30, "the MLflow server to stop")
