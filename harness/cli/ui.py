"""``harness ui [STUDY]``: the MLflow UI on a study's tracking store, on 127.0.0.1, until Ctrl-C.

With the embedded store (``<run-dir>/mlflow.db``) it starts ``mlflow server`` with light settings
(one worker, no job execution, telemetry off), waits until it answers, and prints the URL of the
study's runs page. The bare experiment URL opens an empty overview page in MLflow 3.17, so the
printed URL ends in ``/runs``, with the UI's "Model training" view chosen in it: MLflow 3.17 picks
the view from its GenAI / Model training switch (the URL's ``workflowType``, else the choice the
browser remembers, GenAI at first), not from the experiment's ``mlflow.experimentKind`` tag that
the harness sets as well. With ``MLFLOW_TRACKING_URI`` pointing at a server, that server already
serves the UI: the command only prints its runs-page URL.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import typer

from harness.cli.app import UserError, app, user_errors

HOST = "127.0.0.1"
#: Environment of the UI server: no background job runner, no telemetry.
UI_ENV = {
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_TELEMETRY": "false",
    "DO_NOT_TRACK": "true",
}


def runs_page_url(base: str, experiment_id: str) -> str:
    """``<base>/#/experiments/<id>/runs?workflowType=machine_learning``: the training-runs table
    of the study (see the module docstring for the view switch)."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def _study_name(study: str) -> str:
    """A study file's name (validated), or the argument itself when it is already a name."""
    if study.endswith((".yaml", ".yml")) or Path(study).is_file():
        from harness.spec import load_study

        return load_study(study).name
    return study


def find_experiment(tracker: Any, study: str | None) -> tuple[str, str]:
    """(name, id) of the study's experiment; without a study, the store's only one."""
    experiments = [e for e in tracker.client.search_experiments() if e.name != "Default"]
    names = sorted(e.name for e in experiments)
    if study is None:
        if len(experiments) != 1:
            listed = ", ".join(names) or "none"
            raise UserError(
                f"STUDY: the store {tracker.uri} holds {len(experiments)} studies ({listed}); name one"
            )
        return experiments[0].name, experiments[0].experiment_id
    name = _study_name(study)
    for experiment in experiments:
        if experiment.name == name:
            return name, experiment.experiment_id
    raise UserError(
        f"STUDY: no study {name!r} in {tracker.uri} (studies there: {', '.join(names) or 'none'})"
    )


def _check_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            raise UserError(f"--port: {HOST}:{port} is already in use; pick another with --port") from None


def _healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_ui_server(uri: str, run_dir: Path, port: int, log_path: Path) -> subprocess.Popen:
    """``mlflow server`` on 127.0.0.1:port against ``uri``, in its own process group."""
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--host", HOST,
        "--port", str(port),
        "--workers", "1",
        "--backend-store-uri", uri,
        "--default-artifact-root", (run_dir.resolve() / "mlartifacts").as_uri(),
    ]  # fmt: skip
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log_file:
        return subprocess.Popen(
            command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **UI_ENV},
            start_new_session=True,  # Ctrl-C reaches us; we stop the whole server group
        )


def wait_until_ready(process: subprocess.Popen, base: str, log_path: Path, timeout_s: float = 180.0) -> None:
    """Block until the server answers /health; a server that exits first is a user-facing error."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
            raise UserError(
                f"mlflow server exited with code {process.returncode}: {tail[0]} (log: {log_path})"
            )
        if _healthy(base):
            return
        time.sleep(0.5)
    stop_server(process)
    raise UserError(f"mlflow server did not answer on {base} within {timeout_s:.0f} s (log: {log_path})")


def stop_server(process: subprocess.Popen, grace_s: float = 15.0) -> None:
    """SIGTERM the server's process group (uvicorn and its worker), SIGKILL what outlives grace."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        try:  # the leader is gone; a worker of its group may linger a moment
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)


def _wait_interruptibly(process: subprocess.Popen) -> None:
    """Wait for the server in short naps. A plain ``wait()`` blocks in waitpid, and when the
    kernel hands Ctrl-C to another thread (MLflow's client starts some) Python only runs the
    handler once the main thread wakes up: never, while it waits for a server that runs."""
    while process.poll() is None:
        time.sleep(0.2)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@app.command("ui")
@user_errors
def ui(
    study: str | None = typer.Argument(
        None, help="Study file or name (default: the only study in the store)."
    ),
    port: int = typer.Option(5000, "--port", min=1, max=65535, help="Port on 127.0.0.1."),
    run_dir: Path = typer.Option(Path("runs"), "--run-dir", help="Where `harness run` put the MLflow store."),
) -> None:
    """Open the MLflow UI on a study's runs (127.0.0.1 only; Ctrl-C stops it)."""
    from harness.preflight import is_server_uri
    from harness.tracking import Tracker, default_tracking_uri

    uri = default_tracking_uri(run_dir)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise UserError(f"--run-dir: no MLflow store at {uri.removeprefix('sqlite:///')}; run a study first")
    name, experiment_id = find_experiment(Tracker(uri, run_dir), study)
    if is_server_uri(uri):
        typer.echo(f"{name}: {runs_page_url(uri, experiment_id)} (served by the tracking server)")
        return
    _check_port_free(port)
    base = f"http://{HOST}:{port}"
    log_path = Path(run_dir) / "mlflow-ui.log"
    process = start_ui_server(uri, Path(run_dir), port, log_path)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)  # `kill` stops it as cleanly as Ctrl-C
    try:
        wait_until_ready(process, base, log_path)
        typer.echo(f"{name}: {runs_page_url(base, experiment_id)}")
        typer.echo("MLflow UI running (one worker); Ctrl-C to stop.", err=True)
        _wait_interruptibly(process)
        raise UserError(f"mlflow server stopped by itself with code {process.returncode} (log: {log_path})")
    except KeyboardInterrupt:
        typer.echo("stopping the MLflow UI ...", err=True)
    finally:
        stop_server(process)
        signal.signal(signal.SIGTERM, previous)
    typer.echo("stopped.", err=True)
