"""Shared pieces of the reliability, UI and multi-node tests (issues #9, #10).

Experiment functions here stand in for ``sage_model.experiment.run_experiment`` (a real smoke
trial takes minutes on 2 busy cores); they follow its contract (``EpochReport`` callbacks, an
``ExperimentResult``-shaped return, raising on failure) and are importable by module path, so
Ray workers of any node can unpickle them. What they do is keyed on
``model.prompt.insert_layer``, the knob each tiny study varies.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sage_model.config import ExperimentConfig
from sage_model.records import EpochReport, ExperimentResult, Metric

PROJECT_ROOT = Path(__file__).resolve().parents[1]

STUDY = """\
name: {name}
version: 1
description: "reliability test study"
variants:
{variants}
seeds: {seeds}
datasets: [vidvrd]
resources: {{cpus: {cpus}, gpus: 0}}
"""


def write_study(folder: Path, name: str, layers: list[int], seeds: str = "[0]", cpus: float = 1) -> Path:
    """A tiny study whose variants set ``model.prompt.insert_layer`` to each of ``layers``."""
    variants = "\n".join(
        f'  - {{name: "{n}", overrides: {{model.prompt.insert_layer: {n}}}}}' for n in layers
    )
    path = folder / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(STUDY.format(name=name, variants=variants, seeds=seeds, cpus=cpus))
    return path


def run_dir_of(work_dir: Path) -> Path:
    return Path(work_dir).parents[2]  # <run_dir>/trials/<study>/<trial_id>


def mark(run_dir: Path, what: str, work_dir: Path, text: str = "") -> Path:
    """``<run_dir>/marks/<what>/<trial folder>``: how a test sees what its trials are doing."""
    folder = run_dir / "marks" / what
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / Path(work_dir).name
    path.write_text(text or str(os.getpid()))
    return path


def result_for(cfg: ExperimentConfig, work_dir: Path, on_epoch: Any, epochs: int = 2) -> ExperimentResult:
    """Two epochs of curves, one prediction file and a metric that identifies the trial."""
    for epoch in range(epochs):
        on_epoch(EpochReport(1, epoch, {"train/loss": 1.0 / (epoch + 1), "val/predcls_all_map": 5.0 * epoch}))
    pred = Path(work_dir) / "predictions_predcls_all.json"
    pred.write_text("{}")
    value = float(cfg.model.prompt.insert_layer * 10 + cfg.seed)
    return ExperimentResult(
        [Metric("predcls", "all", "map", value)], {"predcls_all": pred}, "d", "t", True, 1, "cpu", 0.0
    )


def quick_experiment(cfg: ExperimentConfig, *, work_dir: Path, on_epoch: Any = None) -> ExperimentResult:
    """Finishes at once."""
    mark(run_dir_of(work_dir), "started", work_dir)
    return result_for(cfg, work_dir, on_epoch)


def held_experiment(cfg: ExperimentConfig, *, work_dir: Path, on_epoch: Any = None) -> ExperimentResult:
    """Layer 2 finishes at once; the others wait while ``<run_dir>/HOLD`` exists (at most 5 min)."""
    run_dir = run_dir_of(work_dir)
    mark(run_dir, "started", work_dir)
    deadline = time.monotonic() + 300
    while cfg.model.prompt.insert_layer != 2 and (run_dir / "HOLD").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    return result_for(cfg, work_dir, on_epoch)


def failing_experiment(cfg: ExperimentConfig, *, work_dir: Path, on_epoch: Any = None) -> ExperimentResult:
    """Layer 2 finishes; 3 raises on every attempt; 4 fails a real allocation (MemoryError); 5 is
    killed with SIGKILL, as the kernel's OOM killer does; 6 fails its first attempt only.
    Every attempt leaves ``marks/attempts/<trial folder>.<n>``."""
    run_dir, layer = run_dir_of(work_dir), cfg.model.prompt.insert_layer
    attempt = len(list((run_dir / "marks" / "attempts").glob(f"{Path(work_dir).name}.*"))) + 1
    mark(run_dir, "attempts", Path(f"{work_dir}.{attempt}"))
    on_epoch(EpochReport(1, 0, {"train/loss": 1.0}))
    if layer == 3:
        raise RuntimeError("injected failure for layer 3")
    if layer == 4:
        import numpy as np

        np.ones(2**60, dtype=np.uint8)  # 1 EiB: the allocation itself fails
    if layer == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    if layer == 6 and attempt == 1:
        raise ConnectionError("flaky: the data server hung up")
    return result_for(cfg, work_dir, on_epoch)


def barrier_experiment(cfg: ExperimentConfig, *, work_dir: Path, on_epoch: Any = None) -> ExperimentResult:
    """Wait until two trials run at once (at most 3 min), then finish: on a cluster of two
    one-CPU nodes that puts trials on both nodes."""
    run_dir = run_dir_of(work_dir)
    mark(run_dir, "started", work_dir)
    wait_for(lambda: len(read_marks(run_dir, "started")) >= 2, 180, "a second trial running at the same time")
    return result_for(cfg, work_dir, on_epoch)


def held_tune_experiment(cfg: ExperimentConfig, *, work_dir: Path, on_epoch: Any = None) -> ExperimentResult:
    """A tuning trial (no test metrics): two epochs of ``val/predcls_all_map = 10 * alpha``. The
    first trial of a search finishes at once; later ones wait while ``<tuning dir>/HOLD`` exists."""
    run_dir = run_dir_of(work_dir)
    mark(run_dir, "started", work_dir)
    deadline = time.monotonic() + 300
    while (
        len(read_marks(run_dir, "started")) > 1
        and (run_dir / "HOLD").exists()
        and time.monotonic() < deadline
    ):
        time.sleep(0.2)
    for step in range(2):
        on_epoch(EpochReport(1 + step, 1, {"val/predcls_all_map": 10 * cfg.model.loss.alpha}, step))
    return ExperimentResult([], {}, "d", "t", True, 1, "cpu", 0.0)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(predicate: Any, timeout_s: float, what: str, interval_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


QUIET_ENV = {
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_TELEMETRY": "false",
    "DO_NOT_TRACK": "true",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "HF_HUB_OFFLINE": "1",
}


@dataclass
class MlflowServer:
    """A real ``mlflow server`` (sqlite store, one worker) that a test can stop."""

    uri: str
    process: subprocess.Popen
    db: Path  # its sqlite store, readable directly once it is stopped

    def stop(self) -> None:
        """SIGTERM, as a service manager would; then make sure the whole group is gone."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # a worker that outlived its parent
        except ProcessLookupError:
            pass


@contextmanager
def mlflow_server(folder: Path) -> Iterator[MlflowServer]:
    from harness.tracking import seed_sqlite_store

    folder.mkdir(parents=True, exist_ok=True)
    seed_sqlite_store(folder / "server.db")  # at schema head: the server skips MLflow's migrations
    port = free_port()
    command = [
        sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
        "--default-artifact-root", (folder / "artifacts").as_uri(),
    ]  # fmt: skip
    log = open(folder / "server.log", "wb")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **QUIET_ENV}, start_new_session=True
    )
    server = MlflowServer(f"http://127.0.0.1:{port}", process, folder / "server.db")
    try:
        wait_for(lambda: http_ok(f"{server.uri}/health") or process.poll() is not None, 180, "mlflow server")
        assert process.poll() is None, (folder / "server.log").read_text()[-2000:]
        yield server
    finally:
        server.stop()
        log.close()


def child_pids_alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        alive.append(pid)
    return alive


def read_marks(run_dir: Path, what: str) -> dict[str, str]:
    folder = run_dir / "marks" / what
    return {p.name: p.read_text() for p in folder.iterdir()} if folder.is_dir() else {}


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str)
