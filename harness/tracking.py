"""Experiment tracking with MLflow: the only module that imports mlflow.

Design (see docs/harness.md): only the driver talks to MLflow. Workers send their epoch reports
and final result back through Ray Tune, and the driver logs them. One writer means no sqlite lock
contention, the embedded store works on a multi-node cluster without a shared filesystem for the
database, and a worker killed by the OS still gets its run closed (FAILED) by the driver.

Store: ``MLFLOW_TRACKING_URI`` when set (a server), else an embedded sqlite database
``<run_dir>/mlflow.db`` with artifacts under ``<run_dir>/mlartifacts/<study>``. The store and the
study's experiment are created by the driver before any trial starts.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

# No traffic but loopback: mlflow 3.17 reads MLFLOW_DISABLE_TELEMETRY (true/1); its DO_NOT_TRACK
# check only accepts the string "true", so "1" alone would not switch telemetry off.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")

from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric, Param, RunTag, ViewType  # noqa: E402
from mlflow.utils.validation import (  # noqa: E402
    MAX_ENTITY_KEY_LENGTH,
    MAX_PARAM_VAL_LENGTH,
    MAX_TAG_VAL_LENGTH,
)

log = logging.getLogger(__name__)

RunStatus = Literal["FINISHED", "FAILED", "KILLED"]
_KEY_RE = re.compile(r"[^\w\-./ :]")

for _noisy in ("alembic", "mlflow.store.db.utils"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)


def default_tracking_uri(run_dir: Path) -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the embedded sqlite store under ``run_dir``."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{(Path(run_dir).resolve() / 'mlflow.db')}"


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config dict -> {'model.prompt.insert_layer': '6', ...} (lists as JSON)."""
    flat: dict[str, str] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{path}."))
        else:
            flat[path] = json.dumps(value) if isinstance(value, list | tuple) else str(value)
    return flat


def _key(name: str) -> str:
    return _KEY_RE.sub("_", name)[:MAX_ENTITY_KEY_LENGTH]


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 14] + "...[truncated]"


def _now_ms() -> int:
    return int(time.time() * 1000)


class Tracker:
    """The driver's handle on the tracking store for one study."""

    def __init__(self, uri: str, run_dir: Path) -> None:
        self.uri = uri
        self.run_dir = Path(run_dir)
        self.client = MlflowClient(tracking_uri=uri)

    @property
    def embedded(self) -> bool:
        """True for the sqlite store the harness manages (artifacts go under the run dir)."""
        return self.uri.startswith("sqlite:")

    def ensure_experiment(self, study: str, description: str = "") -> str:
        """Create (or find) the study's experiment; creating it here, before trials, avoids races."""
        found = self.client.get_experiment_by_name(study)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(found.experiment_id)
            return found.experiment_id
        location = None
        if self.embedded:
            location = (self.run_dir.resolve() / "mlartifacts" / study).as_uri()
        return self.client.create_experiment(
            study, artifact_location=location, tags={"mlflow.note.content": description}
        )

    def mark_stale_runs_killed(self, experiment_id: str) -> list[str]:
        """Runs left RUNNING by a driver that died: mark them KILLED. Call under the study lock."""
        stale = self.client.search_runs(
            [experiment_id], filter_string="attributes.status = 'RUNNING'", run_view_type=ViewType.ALL
        )
        for run in stale:
            self.client.set_terminated(run.info.run_id, status="KILLED")
            log.warning("marked stale run %s (%s) KILLED", run.info.run_name, run.info.run_id)
        return [run.info.run_id for run in stale]

    def start_run(
        self, experiment_id: str, run_name: str, params: Mapping[str, str], tags: Mapping[str, str]
    ) -> str:
        """Create a RUNNING run with its params and tags; returns the run id."""
        run = self.client.create_run(
            experiment_id,
            run_name=run_name,
            tags={_key(k): _clip(str(v), MAX_TAG_VAL_LENGTH) for k, v in tags.items()},
        )
        run_id = run.info.run_id
        self.client.log_batch(
            run_id, params=[Param(_key(k), _clip(v, MAX_PARAM_VAL_LENGTH)) for k, v in params.items()]
        )
        return run_id

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        """Log a batch of metrics at ``step`` (per-epoch curves use the global epoch index)."""
        stamp = _now_ms()
        entities = [Metric(_key(k), float(v), stamp, step) for k, v in metrics.items()]
        if entities:
            self.client.log_batch(run_id, metrics=entities)

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        entities = [RunTag(_key(k), _clip(str(v), MAX_TAG_VAL_LENGTH)) for k, v in tags.items()]
        if entities:
            self.client.log_batch(run_id, tags=entities)

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        """Copy a file (or a folder's files) into the run's artifacts."""
        if Path(path).is_dir():
            self.client.log_artifacts(run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(run_id, str(path), artifact_path)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, text, artifact_file)

    def end_run(self, run_id: str, status: RunStatus) -> None:
        self.client.set_terminated(run_id, status=status)

    def runs(self, experiment_id: str) -> list[Any]:
        """Every run of the experiment (tests and `harness ui` read them back)."""
        return self.client.search_runs([experiment_id], run_view_type=ViewType.ALL, max_results=10000)

    def metric_history(self, run_id: str, key: str) -> list[Any]:
        return self.client.get_metric_history(run_id, key)
