"""Results: one Parquet file per finished trial run, the project's source of truth, with history.

This module is the only writer of results and owns their Arrow schema. Files are long format
with provenance repeated on every row, so any subset of rows still says where it came from:

* one **metric row** per (task, split, metric): ``value`` set, the video columns null;
* one **video row** per (task, split, evaluated test video): what every official metric of that
  video decomposes into (``ap``, ``tp50``, ``tp100``, ``n_gt``, ``p1``, ``p5``, ``p10``; see
  :class:`sage_model.records.VideoScore`), ``metric`` and ``value`` null. The report resamples
  these to put confidence intervals on every cell and to test paired differences.

History: a result is never overwritten. Each run of a trial adds a file

    <results_dir>/<study>/<trial_id>/<result_id>.parquet

where ``result_id = <UTC time of writing>-<code_version>`` and ``code_version``
(:func:`harness.provenance.code_version`) hashes the code that computed the
numbers. :func:`is_finished` (the runner's skip rule) asks for a result of *this* code, so a rerun
after a code change or with ``--force`` adds a file beside the old ones; :func:`read_results`
keeps the newest result of each trial unless asked for all of them.

Each file is written to a temporary name in the same folder and published by a hard link, which
fails instead of replacing an existing file: a crash never leaves a half-written result, and
resume can trust "the file exists" to mean "the trial finished".

Schema versions: 2 (this one) added the video rows, ``code_version`` and ``result_id``. Files
of version 1 (``<study>/<trial_id>.parquet``, metric rows only) are still read: their
``code_version`` is empty and they have no video rows, so the report shows their cells without
intervals and says why.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sage_model.records import Metric, VideoScore

RESULTS_SCHEMA_VERSION = 2
_META_KEY = b"sage_harness.results_schema_version"

_PROVENANCE_FIELDS = [
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
]
_KEY_FIELDS = [
    ("study", pa.string()),
    ("study_version", pa.int32()),
    ("trial_id", pa.string()),
    ("variant", pa.string()),
    ("dataset", pa.string()),
    ("seed", pa.int32()),
    ("task", pa.string()),
    ("split", pa.string()),
]
VIDEO_FIELDS = [
    ("video_id", pa.string()),
    ("ap", pa.float64()),
    ("tp50", pa.int32()),
    ("tp100", pa.int32()),
    ("n_gt", pa.int32()),
    ("p1", pa.float64()),
    ("p5", pa.float64()),
    ("p10", pa.float64()),
]
"""The per-video parts; fractions in [0, 1] and counts (metric values are in percent)."""

_SCHEMA_V1 = pa.schema(
    [
        ("schema_version", pa.int32()),
        *_KEY_FIELDS,
        ("metric", pa.string()),
        ("value", pa.float64()),
        *_PROVENANCE_FIELDS,
    ]
)

RESULTS_SCHEMA = pa.schema(
    [
        *_SCHEMA_V1,
        ("code_version", pa.string()),
        ("result_id", pa.string()),
        *VIDEO_FIELDS,
    ],
    metadata={_META_KEY: str(RESULTS_SCHEMA_VERSION).encode()},
)
"""The schema of a version-2 file (metric and video rows)."""

METRIC_COLUMNS = [name for name in RESULTS_SCHEMA.names if name not in dict(VIDEO_FIELDS)]
"""Columns of :func:`read_results` (one row per metric)."""

VIDEO_COLUMNS = [
    "study",
    "study_version",
    "trial_id",
    "result_id",
    "variant",
    "dataset",
    "seed",
    "task",
    "split",
    *(name for name, _ in VIDEO_FIELDS),
]
"""Columns of :func:`read_videos` (one row per evaluated test video)."""

MetricRow = Metric
"""The old name of a metric row (``task, split, name, value``): :class:`sage_model.records.Metric`."""


class ResultLike(Protocol):
    """What :func:`write_result` reads of an ``ExperimentResult``: its metrics and per-video parts."""

    @property
    def metrics(self) -> Sequence[Metric]: ...

    @property
    def videos(self) -> Sequence[VideoScore]: ...


@dataclass(frozen=True)
class ResultRows:
    """Metrics and per-video parts of a trial run when the ``ExperimentResult`` itself is not at
    hand (the driver rebuilds them from the worker's message)."""

    metrics: Sequence[Metric]
    videos: Sequence[VideoScore] = ()


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
    code_version: str = ""
    """Hash of the code that computed the numbers; empty = the writer's own (filled on write)."""


# --- where results live -----------------------------------------------------------------------


def trial_dir(results_dir: Path, study: str, trial_id: str) -> Path:
    """The folder of one trial's results: ``<results_dir>/<study>/<trial_id>/``."""
    return Path(results_dir) / study / trial_id


def legacy_result_path(results_dir: Path, study: str, trial_id: str) -> Path:
    """Where schema version 1 kept a trial's only result (read, never written)."""
    return Path(results_dir) / study / f"{trial_id}.parquet"


def result_files(results_dir: Path, study: str, trial_id: str) -> list[Path]:
    """Every result of one trial, oldest first (a version-1 file first, where there is one)."""
    folder = trial_dir(results_dir, study, trial_id)
    files = (
        sorted(p for p in folder.glob("*.parquet") if not p.name.startswith(".")) if folder.is_dir() else []
    )
    legacy = legacy_result_path(results_dir, study, trial_id)
    return ([legacy] if legacy.is_file() else []) + files


def is_finished(results_dir: Path, study: str, trial_id: str, code_version: str | None = None) -> bool:
    """Does a result of this trial exist, computed by ``code_version`` (None: by any code)?

    The runner's skip rule. A version-1 file records no code version, so it counts only for None.
    Files appear only by an atomic publish, so an existing file is a finished trial.
    """
    files = result_files(results_dir, study, trial_id)
    if code_version is None:
        return bool(files)
    return any(p.stem.endswith(f"-{code_version}") for p in files)


# --- writing ----------------------------------------------------------------------------------


def to_table(
    record: TrialRecord, metrics: Sequence[Metric], videos: Sequence[VideoScore] = (), result_id: str = ""
) -> pa.Table:
    """The Arrow table of one trial run: metric rows, then video rows, provenance repeated."""
    if not metrics:
        raise ValueError(f"trial {record.trial_id}: no metrics to write")
    n_metrics, n = len(metrics), len(metrics) + len(videos)
    none: list[Any] = [None] * len(videos)
    columns: dict[str, list[Any]] = {
        "schema_version": [RESULTS_SCHEMA_VERSION] * n,
        "task": [m.task for m in metrics] + [v.task for v in videos],
        "split": [m.split for m in metrics] + [v.split for v in videos],
        "metric": [m.name for m in metrics] + none,
        "value": [float(m.value) for m in metrics] + none,
        "result_id": [result_id or new_result_id(record.code_version)] * n,
    }
    for name, _ in VIDEO_FIELDS:
        columns[name] = [None] * n_metrics + [getattr(v, name) for v in videos]
    for name, value in record.__dict__.items():
        columns[name] = [json.dumps(value, sort_keys=True) if name == "packages" else value] * n
    return pa.table({name: columns[name] for name in RESULTS_SCHEMA.names}, schema=RESULTS_SCHEMA)


def new_result_id(code_version: str) -> str:
    """``<UTC now, microseconds>-<code_version>``: sorts by time of writing, names the code."""
    return f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%fZ')}-{code_version}"


def write_result(results_dir: Path, record: TrialRecord, result: ResultLike | Sequence[Metric]) -> Path:
    """Write one trial run's file atomically beside the trial's earlier results; never overwrite.

    ``result``: an ``ExperimentResult`` (its ``metrics`` and per-video ``videos``), or just a list
    of metrics (no per-video rows: the report then shows that trial without intervals). A record
    without ``code_version`` gets the writer's :func:`harness.provenance.code_version`.
    """
    from harness.provenance import code_version

    metrics, videos = _parts(result)
    if not record.code_version:
        record = replace(record, code_version=code_version())
    folder = trial_dir(results_dir, record.study, record.trial_id)
    folder.mkdir(parents=True, exist_ok=True)
    for _ in range(100):  # a name is taken only by another write of this trial in the same microsecond
        rid = new_result_id(record.code_version)
        final = folder / f"{rid}.parquet"
        if not final.exists() and _publish(to_table(record, metrics, videos, rid), final):
            return final
    raise FileExistsError(f"{folder}: no free result name after 100 attempts")


def _parts(result: ResultLike | Sequence[Metric]) -> tuple[Sequence[Metric], Sequence[VideoScore]]:
    if hasattr(result, "metrics"):
        return result.metrics, getattr(result, "videos", ())
    return result, ()  # type: ignore[return-value]  # a plain sequence of metrics


def _publish(table: pa.Table, final: Path) -> bool:
    """Temp file in the same folder, fsync, hard link to ``final`` (False when it exists by now)."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=".tmp", dir=final.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            pq.write_table(table, handle)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp_name, final)  # unlike rename, fails when another writer got there first
        except FileExistsError:
            return False
        return True
    finally:
        Path(tmp_name).unlink(missing_ok=True)


def remove_stale_temp_files(results_dir: Path, study: str) -> list[Path]:
    """Delete temp files a writer left when it died mid-write (SIGKILL, power loss, full disk).

    They are never results (only the link publishes one) and nothing else cleans them up.
    Call it only while holding the study's lock, so no live writer owns them.
    """
    folder = Path(results_dir) / study
    stale = sorted([*folder.glob(".*.tmp"), *folder.glob("*/.*.tmp")]) if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


# --- reading ----------------------------------------------------------------------------------


def schema_version(path: Path) -> int:
    """The schema version a result file was written with (ValueError for one this code cannot read)."""
    metadata = pq.read_schema(path).metadata or {}
    raw = metadata.get(_META_KEY)
    version = int(raw) if raw is not None else None
    if version not in (1, RESULTS_SCHEMA_VERSION):
        raise ValueError(
            f"{path}: results schema version {raw and raw.decode()} is not 1 or {RESULTS_SCHEMA_VERSION} "
            "(written by another harness version; rerun the trial with --force)"
        )
    return version  # type: ignore[return-value]  # narrowed by the check above


def _files(results_dir: str | Path, study: str | None) -> list[Path]:
    root = Path(results_dir)
    where = study or "*"
    found = [*root.glob(f"{where}/*.parquet"), *root.glob(f"{where}/*/*.parquet")]
    return sorted(p for p in found if not p.name.startswith("."))


def _metric_table(path: Path) -> pa.Table:
    """The metric rows of one file, in the version-2 metric columns."""
    if schema_version(path) == 1:
        table = pq.read_table(path, schema=_SCHEMA_V1)
        n = table.num_rows
        table = table.append_column("code_version", pa.array([""] * n, pa.string()))
        return table.append_column("result_id", pa.array([f"v1-{path.stem}"] * n, pa.string()))
    table = pq.read_table(path, columns=METRIC_COLUMNS + ["video_id"], schema=RESULTS_SCHEMA)
    return table.filter(pc.is_null(table["video_id"])).select(METRIC_COLUMNS)


def read_results(results_dir: str | Path, study: str | None = None, *, latest: bool = True) -> pl.DataFrame:
    """The metric rows under ``results_dir`` (one study, or every study), as one DataFrame.

    ``latest``: only the newest result of each trial (by ``finished_at``, then ``result_id``);
    False keeps every result of the history (``harness compare --commits`` picks from them).
    Returns an empty frame with the metric columns when nothing has finished yet.
    """
    tables = [_metric_table(path) for path in _files(results_dir, study)]
    if not tables:
        return pl.from_arrow(RESULTS_SCHEMA.empty_table().select(METRIC_COLUMNS))  # type: ignore[return-value]
    frame: pl.DataFrame = pl.from_arrow(pa.concat_tables(tables))  # type: ignore[assignment]
    return latest_results(frame) if latest else frame


def latest_results(frame: pl.DataFrame) -> pl.DataFrame:
    """Only the rows of each trial's newest result (``finished_at``, then ``result_id``)."""
    if frame.is_empty():
        return frame
    newest = (
        frame.select("study", "trial_id", "finished_at", "result_id")
        .unique()
        .sort(["finished_at", "result_id"])
        .group_by(["study", "trial_id"])
        .agg(pl.col("result_id").last())
    )
    return frame.join(newest, on=["study", "trial_id", "result_id"], how="semi")


def read_videos(
    results_dir: str | Path, study: str | None = None, *, result_ids: Iterable[str] | None = None
) -> pl.DataFrame:
    """The per-video rows (:data:`VIDEO_COLUMNS`) of the results ``result_ids`` (None: all).

    Version-1 files have none. Pass the ``result_id`` values of a :func:`read_results` frame to
    get the videos of exactly the results it kept.
    """
    wanted = None if result_ids is None else set(result_ids)
    tables = []
    for path in _files(results_dir, study):
        if wanted is not None and path.stem not in wanted:  # a version-2 file is named by its result_id
            continue
        if schema_version(path) == 1:
            continue
        table = pq.read_table(path, columns=VIDEO_COLUMNS, schema=RESULTS_SCHEMA)
        tables.append(table.filter(pc.is_valid(table["video_id"])))
    if not tables:
        return pl.from_arrow(RESULTS_SCHEMA.empty_table().select(VIDEO_COLUMNS))  # type: ignore[return-value]
    return pl.from_arrow(pa.concat_tables(tables))  # type: ignore[return-value]
