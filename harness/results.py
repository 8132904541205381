"""Results: one Parquet file per finished trial, the project's source of truth.

This module is the only writer of results and owns their Arrow schema. Files are long format
(one row per metric) with provenance repeated on every row, so any subset of rows still says
where it came from. Each file is written to a temporary name in the same folder and renamed, so
a crash never leaves a half-written result and resume can trust "the file exists" to mean "the
trial finished".
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from sage_model.records import ExperimentResult

RESULTS_SCHEMA_VERSION = 1
_META_KEY = b"sage_harness.results_schema_version"

RESULTS_SCHEMA = pa.schema(
    [
        ("schema_version", pa.int32()),
        ("study", pa.string()),
        ("study_version", pa.int32()),
        ("trial_id", pa.string()),
        ("variant", pa.string()),
        ("dataset", pa.string()),
        ("seed", pa.int32()),
        ("task", pa.string()),
        ("split", pa.string()),
        ("metric", pa.string()),
        ("value", pa.float64()),
        ("config_hash", pa.string()),
        ("config_json", pa.string()),
        ("git_sha", pa.string()),
        ("git_dirty", pa.bool_()),
        ("packages", pa.string()),
        ("hardware", pa.string()),
        ("device", pa.string()),
        ("data_hash", pa.string()),
        ("teacher_hash", pa.string()),
        ("synthetic", pa.bool_()),
        ("wall_s", pa.float64()),
        ("finished_at", pa.string()),
        ("mlflow_run_id", pa.string()),
    ],
    metadata={_META_KEY: str(RESULTS_SCHEMA_VERSION).encode()},
)


@dataclass(frozen=True)
class MetricRow:
    """One metric of a trial: ``value`` in percent for detection metrics."""

    task: str
    split: str
    metric: str
    value: float


@dataclass(frozen=True)
class TrialRecord:
    """Everything a result file holds about a trial besides its metrics."""

    study: str
    study_version: int
    trial_id: str
    variant: str
    dataset: str
    seed: int
    config_hash: str
    config_json: str
    git_sha: str
    git_dirty: bool
    packages: dict[str, str]
    hardware: str
    device: str
    data_hash: str
    teacher_hash: str
    synthetic: bool
    wall_s: float
    finished_at: str
    mlflow_run_id: str


def result_path(results_dir: Path, study: str, trial_id: str) -> Path:
    """Where a trial's result lives: ``<results_dir>/<study>/<trial_id>.parquet``."""
    return Path(results_dir) / study / f"{trial_id}.parquet"


def is_finished(results_dir: Path, study: str, trial_id: str) -> bool:
    """A trial is finished when its result file exists (files appear only by atomic rename)."""
    return result_path(results_dir, study, trial_id).is_file()


def to_table(record: TrialRecord, metrics: Sequence[MetricRow]) -> pa.Table:
    """The Arrow table of one trial: one row per metric, provenance repeated."""
    if not metrics:
        raise ValueError(f"trial {record.trial_id}: no metrics to write")
    n = len(metrics)
    columns = {
        "schema_version": [RESULTS_SCHEMA_VERSION] * n,
        "task": [m.task for m in metrics],
        "split": [m.split for m in metrics],
        "metric": [m.metric for m in metrics],
        "value": [float(m.value) for m in metrics],
    }
    for field, value in record.__dict__.items():
        columns[field] = [json.dumps(value, sort_keys=True) if field == "packages" else value] * n
    return pa.table({name: columns[name] for name in RESULTS_SCHEMA.names}, schema=RESULTS_SCHEMA)


def write_result(
    results_dir: Path, record: TrialRecord, result: ExperimentResult | Sequence[MetricRow]
) -> Path:
    """Write one trial's file atomically (temp file in the same folder, fsync, rename)."""
    if isinstance(result, ExperimentResult):
        metrics = [MetricRow(m.task, m.split, m.name, m.value) for m in result.metrics]
    else:
        metrics = list(result)
    table = to_table(record, metrics)
    final = result_path(results_dir, record.study, record.trial_id)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{record.trial_id}.", suffix=".tmp", dir=final.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            pq.write_table(table, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, final)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return final


def remove_stale_temp_files(results_dir: Path, study: str) -> list[Path]:
    """Delete temp files a writer left when it died mid-write (SIGKILL, power loss, full disk).

    They are never results (only the rename publishes one) and nothing else cleans them up.
    Call it only while holding the study's lock, so no live writer owns them.
    """
    folder = Path(results_dir) / study
    stale = sorted(folder.glob(".*.tmp")) if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _check_version(path: Path) -> None:
    metadata = pq.read_schema(path).metadata or {}
    version = metadata.get(_META_KEY)
    if version is None or int(version) != RESULTS_SCHEMA_VERSION:
        raise ValueError(
            f"{path}: results schema version {version and version.decode()} != {RESULTS_SCHEMA_VERSION} "
            "(written by another harness version; rerun the trial with --force)"
        )


def read_results(results_dir: str | Path, study: str | None = None) -> pl.DataFrame:
    """All result rows under ``results_dir`` (one study, or every study), as one DataFrame.

    Returns an empty frame with the full schema when nothing has finished yet.
    """
    root = Path(results_dir)
    pattern = f"{study}/*.parquet" if study else "*/*.parquet"
    files = sorted(p for p in root.glob(pattern) if not p.name.startswith("."))
    if not files:
        return pl.from_arrow(RESULTS_SCHEMA.empty_table())  # type: ignore[return-value]
    frames = []
    for path in files:
        _check_version(path)
        frames.append(pl.from_arrow(pq.read_table(path, schema=RESULTS_SCHEMA)))
    return pl.concat(frames, how="vertical")  # type: ignore[arg-type,type-var,return-value]
