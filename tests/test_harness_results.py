"""Results files: schema, atomic writes, reading back; provenance facts."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness.provenance import _code_version, code_version, git_state, hardware_summary, package_versions
from harness.results import (
    METRIC_COLUMNS,
    RESULTS_SCHEMA,
    RESULTS_SCHEMA_VERSION,
    VIDEO_COLUMNS,
    MetricRow,
    ResultRows,
    TrialRecord,
    is_finished,
    legacy_result_path,
    read_results,
    read_videos,
    remove_stale_temp_files,
    result_files,
    trial_dir,
    write_result,
)
from sage_model.records import VideoScore


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
VIDEOS = [
    VideoScore("predcls", "all", "v1", 0.5, 1, 2, 2, 1.0, 0.4, 0.3),
    VideoScore("predcls", "all", "v2", 0.27, 0, 1, 3, 0.0, 0.2, 0.1),
]


def test_write_then_read_back_long_format(tmp_path: Path) -> None:
    path = write_result(tmp_path, record(), ResultRows(METRICS, VIDEOS))
    assert path.parent == trial_dir(tmp_path, "toy", "toy-2-vidvrd-s0-abc")
    assert is_finished(tmp_path, "toy", "toy-2-vidvrd-s0-abc")
    frame = read_results(tmp_path, "toy")
    assert frame.height == 2 and frame.columns == METRIC_COLUMNS
    assert frame.select("task", "split", "metric", "value").rows() == [
        ("predcls", "all", "map", 38.5),
        ("sgdet", "novel", "r50", 12.25),
    ]
    row = frame.row(0, named=True)
    assert row["schema_version"] == RESULTS_SCHEMA_VERSION and row["study_version"] == 3
    assert row["synthetic"] is True and row["git_dirty"] is True
    assert json.loads(row["packages"]) == {"torch": "2.14.1"}
    assert row["code_version"] == code_version() and path.stem == row["result_id"]
    assert path.stem.endswith("-" + code_version())


def test_per_video_rows_come_back_with_their_trial(tmp_path: Path) -> None:
    write_result(tmp_path, record(), ResultRows(METRICS, VIDEOS))
    videos = read_videos(tmp_path, "toy")
    assert videos.columns == VIDEO_COLUMNS
    assert videos.select("video_id", "ap", "tp50", "tp100", "n_gt", "p1", "p5", "p10").rows() == [
        ("v1", 0.5, 1, 2, 2, 1.0, 0.4, 0.3),
        ("v2", 0.27, 0, 1, 3, 0.0, 0.2, 0.1),
    ]
    assert set(videos["trial_id"]) == {"toy-2-vidvrd-s0-abc"} and set(videos["seed"]) == {0}
    assert read_videos(tmp_path, "toy", result_ids=["someone else"]).height == 0


def test_file_carries_the_versioned_arrow_schema(tmp_path: Path) -> None:
    path = write_result(tmp_path, record(), METRICS)
    schema = pq.read_schema(path)
    assert schema.remove_metadata() == RESULTS_SCHEMA.remove_metadata()
    assert schema.metadata[b"sage_harness.results_schema_version"] == str(RESULTS_SCHEMA_VERSION).encode()


def test_a_rerun_adds_a_result_beside_the_old_one_and_the_newest_wins(tmp_path: Path) -> None:
    first = write_result(tmp_path, record(), METRICS)
    second = write_result(tmp_path, replace(record(), finished_at="2026-01-02T00:00:00+00:00"), METRICS[:1])
    assert first != second and first.is_file() and second.is_file()
    assert sorted(p.name for p in trial_dir(tmp_path, "toy", "toy-2-vidvrd-s0-abc").iterdir()) == sorted(
        [first.name, second.name]
    )  # and no temporary file
    assert result_files(tmp_path, "toy", "toy-2-vidvrd-s0-abc") == sorted([first, second])
    assert read_results(tmp_path).height == 1  # the newest result only
    assert read_results(tmp_path, latest=False).height == 3


def test_a_rerun_in_the_same_second_still_gets_its_own_file(tmp_path: Path) -> None:
    paths = {write_result(tmp_path, record(), METRICS) for _ in range(3)}
    assert len(paths) == 3
    newest = read_results(tmp_path)
    assert newest.height == 2 and newest["result_id"][0] == max(p.stem for p in paths)


def test_finished_means_a_result_of_the_same_code(tmp_path: Path) -> None:
    write_result(tmp_path, replace(record(), code_version="aaaa"), METRICS)
    assert is_finished(tmp_path, "toy", "toy-2-vidvrd-s0-abc", "aaaa")
    assert not is_finished(tmp_path, "toy", "toy-2-vidvrd-s0-abc", "bbbb")
    assert is_finished(tmp_path, "toy", "toy-2-vidvrd-s0-abc")  # by any code
    assert not is_finished(tmp_path, "toy", "other-trial")


def test_failed_write_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="no metrics"):
        write_result(tmp_path, record(), [])

    def disk_full(table: object, handle: object) -> None:
        handle.write(b"PAR1 half a file")  # type: ignore[attr-defined]
        raise OSError("No space left on device")

    monkeypatch.setattr(pq, "write_table", disk_full)
    with pytest.raises(OSError, match="No space"):
        write_result(tmp_path, record(), METRICS)
    assert list((tmp_path / "toy").rglob("*.*")) == []  # neither a result nor a temporary file
    assert not is_finished(tmp_path, "toy", "toy-2-vidvrd-s0-abc")


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path: Path) -> None:
    path = write_result(tmp_path, record(), METRICS)
    stale = path.parent / f".{path.stem}.x.tmp"
    stale.write_bytes(b"half")
    assert remove_stale_temp_files(tmp_path, "toy") == [stale]
    assert path.is_file() and not stale.exists()


def test_read_results_across_studies_and_empty(tmp_path: Path) -> None:
    empty = read_results(tmp_path)
    assert empty.height == 0 and empty.columns == METRIC_COLUMNS
    assert read_videos(tmp_path).height == 0
    write_result(tmp_path, record("a-1"), METRICS)
    write_result(tmp_path, record("b-1", study="other", synthetic=False), METRICS[:1])
    both = read_results(tmp_path)
    assert both.height == 3
    assert sorted(both["study"].unique().to_list()) == ["other", "toy"]
    assert read_results(tmp_path, "other")["synthetic"].to_list() == [False]


def write_version_1(results_dir: Path, rec: TrialRecord) -> Path:
    """A result as the harness wrote it before schema version 2 (``<study>/<trial_id>.parquet``)."""
    fields = [f for f in RESULTS_SCHEMA if f.name not in ("code_version", "result_id", *VIDEO_COLUMNS[9:])]
    schema = pa.schema(fields, metadata={b"sage_harness.results_schema_version": b"1"})
    columns = {f.name: [getattr(rec, f.name, None)] for f in fields}
    columns |= {
        "schema_version": [1],
        "task": ["predcls"],
        "split": ["all"],
        "metric": ["map"],
        "value": [7.5],
    }
    columns["packages"] = [json.dumps(rec.packages)]
    path = legacy_result_path(results_dir, rec.study, rec.trial_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns, schema=schema), path)
    return path


def test_version_1_files_are_still_read_without_videos_or_code_version(tmp_path: Path) -> None:
    old = write_version_1(tmp_path, record())
    frame = read_results(tmp_path)
    assert frame.select("metric", "value", "code_version").rows() == [("map", 7.5, "")]
    assert read_videos(tmp_path).height == 0
    assert is_finished(tmp_path, "toy", "toy-2-vidvrd-s0-abc")  # by some code
    assert not is_finished(tmp_path, "toy", "toy-2-vidvrd-s0-abc", code_version())  # not by this code
    new = write_result(tmp_path, replace(record(), finished_at="2026-02-01T00:00:00+00:00"), METRICS)
    assert result_files(tmp_path, "toy", "toy-2-vidvrd-s0-abc") == [old, new]
    assert read_results(tmp_path)["code_version"].unique().to_list() == [code_version()]


def test_other_schema_version_is_refused(tmp_path: Path) -> None:
    path = write_result(tmp_path, record(), METRICS)
    table = pq.read_table(path).replace_schema_metadata({b"sage_harness.results_schema_version": b"99"})
    pq.write_table(table, path)
    with pytest.raises(ValueError, match="schema version 99"):
        read_results(tmp_path)


def test_result_frame_types_are_stable(tmp_path: Path) -> None:
    write_result(tmp_path, record(), ResultRows(METRICS, VIDEOS))
    frame = read_results(tmp_path)
    assert frame.schema["value"] == pl.Float64 and frame.schema["seed"] == pl.Int32
    videos = read_videos(tmp_path)
    assert videos.schema["ap"] == pl.Float64 and videos.schema["tp50"] == pl.Int32


def test_code_version_follows_the_code_and_resources(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "resources").mkdir(parents=True)
    (package / "a.py").write_text("x = 1\n")
    (package / "resources" / "vocab.json").write_text("[]")
    (package / "notes.md").write_text("not code")

    def version() -> str:
        _code_version.cache_clear()  # computed once per process in real use
        return code_version(package)

    first = version()
    (package / "notes.md").write_text("still not code")
    assert version() == first  # docs do not change the numbers
    (package / "resources" / "vocab.json").write_text('["a"]')
    second = version()
    (package / "a.py").write_text("x = 2\n")
    third = version()
    assert len({first, second, third}) == 3 and all(len(v) == 16 for v in (first, second, third))


def test_provenance_describes_code_packages_and_machine(project_root: Path) -> None:
    state = git_state(project_root)
    assert state.sha == "unknown" or len(state.sha) == 40
    versions = package_versions()
    assert versions["python"].count(".") == 2 and "torch" in versions and "ray" in versions
    summary = hardware_summary()
    assert summary.count("|") == 3 and "GPU:" in summary


def test_git_state_outside_a_checkout_is_unknown(tmp_path: Path) -> None:
    assert git_state(tmp_path).sha == "unknown"
