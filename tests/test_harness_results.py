"""Results files: schema, atomic writes, reading back; provenance facts."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from harness.provenance import git_state, hardware_summary, package_versions
from harness.results import (
    RESULTS_SCHEMA,
    RESULTS_SCHEMA_VERSION,
    MetricRow,
    TrialRecord,
    is_finished,
    read_results,
    result_path,
    write_result,
)


def record(trial_id: str = "toy-2-vidvrd-s0-abc", study: str = "toy", synthetic: bool = True) -> TrialRecord:
    return TrialRecord(
        study=study,
        study_version=3,
        trial_id=trial_id,
        variant="2",
        dataset="vidvrd",
        seed=0,
        config_hash="abc" * 10,
        config_json='{"seed": 0}',
        git_sha="deadbeef",
        git_dirty=True,
        packages={"torch": "2.14.1"},
        hardware="Linux x86_64 | cpu x2",
        device="cpu",
        data_hash="d" * 8,
        teacher_hash="t" * 8,
        synthetic=synthetic,
        wall_s=12.5,
        finished_at="2026-01-01T00:00:00+00:00",
        mlflow_run_id="run1",
    )


METRICS = [MetricRow("predcls", "all", "map", 38.5), MetricRow("sgdet", "novel", "r50", 12.25)]


def test_write_then_read_back_long_format(tmp_path: Path) -> None:
    path = write_result(tmp_path, record(), METRICS)
    assert path == result_path(tmp_path, "toy", "toy-2-vidvrd-s0-abc") and is_finished(
        tmp_path, "toy", path.stem
    )
    frame = read_results(tmp_path, "toy")
    assert frame.height == 2
    assert frame.select("task", "split", "metric", "value").rows() == [
        ("predcls", "all", "map", 38.5),
        ("sgdet", "novel", "r50", 12.25),
    ]
    row = frame.row(0, named=True)
    assert row["schema_version"] == RESULTS_SCHEMA_VERSION and row["study_version"] == 3
    assert row["synthetic"] is True and row["git_dirty"] is True
    assert json.loads(row["packages"]) == {"torch": "2.14.1"}


def test_file_carries_the_versioned_arrow_schema(tmp_path: Path) -> None:
    path = write_result(tmp_path, record(), METRICS)
    schema = pq.read_schema(path)
    assert schema.remove_metadata() == RESULTS_SCHEMA.remove_metadata()
    assert schema.metadata[b"sage_harness.results_schema_version"] == str(RESULTS_SCHEMA_VERSION).encode()


def test_write_leaves_no_temporary_files_and_replaces_atomically(tmp_path: Path) -> None:
    write_result(tmp_path, record(), METRICS)
    write_result(tmp_path, record(), METRICS[:1])  # --force rerun replaces the file
    assert [p.name for p in (tmp_path / "toy").iterdir()] == ["toy-2-vidvrd-s0-abc.parquet"]
    assert read_results(tmp_path).height == 1


def test_failed_write_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="no metrics"):
        write_result(tmp_path, record(), [])

    def disk_full(table: object, handle: object) -> None:
        handle.write(b"PAR1 half a file")  # type: ignore[attr-defined]
        raise OSError("No space left on device")

    monkeypatch.setattr(pq, "write_table", disk_full)
    with pytest.raises(OSError, match="No space"):
        write_result(tmp_path, record(), METRICS)
    assert list((tmp_path / "toy").glob("*")) == []  # neither a result nor a temporary file
    assert not is_finished(tmp_path, "toy", "toy-2-vidvrd-s0-abc")


def test_read_results_across_studies_and_empty(tmp_path: Path) -> None:
    empty = read_results(tmp_path)
    assert empty.height == 0 and empty.columns == RESULTS_SCHEMA.names
    write_result(tmp_path, record("a-1"), METRICS)
    write_result(tmp_path, record("b-1", study="other", synthetic=False), METRICS[:1])
    both = read_results(tmp_path)
    assert both.height == 3
    assert sorted(both["study"].unique().to_list()) == ["other", "toy"]
    assert read_results(tmp_path, "other")["synthetic"].to_list() == [False]


def test_other_schema_version_is_refused(tmp_path: Path) -> None:
    path = write_result(tmp_path, record(), METRICS)
    table = pq.read_table(path).replace_schema_metadata({b"sage_harness.results_schema_version": b"99"})
    pq.write_table(table, path)
    with pytest.raises(ValueError, match="schema version 99"):
        read_results(tmp_path)


def test_result_frame_types_are_stable(tmp_path: Path) -> None:
    write_result(tmp_path, record(), METRICS)
    frame = read_results(tmp_path)
    assert frame.schema["value"] == pl.Float64 and frame.schema["seed"] == pl.Int32


def test_provenance_describes_code_packages_and_machine(project_root: Path) -> None:
    state = git_state(project_root)
    assert state.sha == "unknown" or len(state.sha) == 40
    versions = package_versions()
    assert versions["python"].count(".") == 2 and "torch" in versions and "ray" in versions
    summary = hardware_summary()
    assert summary.count("|") == 3 and "GPU:" in summary


def test_git_state_outside_a_checkout_is_unknown(tmp_path: Path) -> None:
    assert git_state(tmp_path).sha == "unknown"
