"""A small, fixed set of studies and results for the report tests (not collected by pytest).

Results are written through the real ``harness.results.write_result`` and read back with
``read_results``, so the tests exercise the same Parquet path as a real run. The numbers are
chosen by hand so that every expectation in the tests can be checked with a pencil.
"""

from __future__ import annotations

from pathlib import Path

from harness.report.fmt import ReportMeta
from harness.results import MetricRow, ResultRows, TrialRecord, write_result
from harness.spec import StudySpec, load_study
from sage_model.records import VideoScore

SWEEP_YAML = """\
name: toy_sweep
version: 2
description: "Toy insertion-layer sweep for the report tests"
base:
  train.stage1_epochs: 1
variants:
  - name: "2"
    overrides: {model.prompt.insert_layer: 2}
  - name: "6"
    overrides: {model.prompt.insert_layer: 6}
  - name: "10"
    overrides: {model.prompt.insert_layer: 10}
seeds: [0, 1]
datasets: [vidvrd]
table:
  paper: "Table T"
  columns:
    - {name: novel_predcls, split: novel, task: predcls, metric: map}
    - {name: all_predcls, split: all, task: predcls, metric: map}
  headline: [all_predcls]
  tolerance: 1.0
  min_seeds: 2
  reference:
    "2": [20.0, 38.0]
    "6": [22.0, 39.0]
    "10": [21.0, 38.5]
  cited:
    "OV-MMP": [19.0, 37.0]
"""

EFFICIENCY_YAML = """\
name: toy_efficiency
version: 1
description: "Toy efficiency table for the report tests"
variants:
  - name: "Image-Cond"
    overrides: {model.prompt.strategy: image_cond}
  - name: "Ours"
    overrides: {model.prompt.strategy: class_aware}
seeds: [0]
datasets: [vidvrd]
table:
  paper: "Table E"
  columns:
    - {name: params_m, split: all, task: predcls, metric: params_m}
    - {name: fps_predcls, split: all, task: predcls, metric: fps}
  headline: []
  tolerance: 1.0
  min_seeds: 1
  reference:
    "Image-Cond": [47.03, 6.28]
    "Ours": [55.64, 121.62]
"""

META = ReportMeta(
    command="harness report --paper-tables",
    results_dir="results",
    result_files=9,
    generated_at="2026-01-03T00:00:00+00:00",
    git_sha="ffffffffffff",
)
"""A fixed report header, so rendered output does not depend on the clock or the checkout."""

TOY_CODE_VERSION = "0123456789abcdef"
"""A fixed code version, so the golden report does not change with every edit of sage_model."""

VIDEO_OFFSETS = ((-0.075, -0.025, 0.025, 0.075), (0.05, -0.05, 0.02, -0.02))
"""Per-video AP minus the trial's mAP (fractions) for even and odd seeds; each sums to 0, so the
per-video APs of a trial average exactly to its mAP, as the evaluator's do."""

NOVEL = ("predcls", "novel", "map")
ALL = ("predcls", "all", "map")

# (variant, seed, study_version, finished_at, {cell: value}); see the module docstring.
SWEEP_TRIALS = [
    ("2", 0, 2, "2026-01-01T00:00:00+00:00", {NOVEL: 19.0, ALL: 37.5}),
    ("2", 1, 2, "2026-01-01T00:00:00+00:00", {NOVEL: 21.0, ALL: 38.5}),
    ("6", 0, 2, "2026-01-01T00:00:00+00:00", {NOVEL: 22.5, ALL: 36.0}),
    ("6", 1, 2, "2026-01-01T00:00:00+00:00", {NOVEL: 0.0, ALL: 0.0}),  # superseded by the rerun below
    ("6", 1, 2, "2026-01-02T00:00:00+00:00", {NOVEL: 23.5, ALL: 37.0}),
    ("10", 0, 2, "2026-01-01T00:00:00+00:00", {ALL: 38.4}),  # novel_predcls missing; seed 1 never ran
    ("2", 0, 1, "2025-12-01T00:00:00+00:00", {NOVEL: 99.0, ALL: 99.0}),  # stale: study version 1
]


def write_study(folder: Path, text: str) -> Path:
    """Write a study YAML named after its ``name`` line; returns the path."""
    name = text.split("\n", 1)[0].removeprefix("name: ").strip()
    path = Path(folder) / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def write_trial(
    results_dir: Path,
    study: str,
    variant: str,
    seed: int,
    metrics: dict[tuple[str, str, str], float],
    *,
    version: int = 1,
    finished_at: str = "2026-01-01T00:00:00+00:00",
    synthetic: bool = True,
    device: str = "cpu",
    dataset: str = "vidvrd",
    videos: bool = True,
    git_sha: str = "f" * 40,
    config_json: str = "{}",
) -> Path:
    """One trial's result file, as ``harness.trial`` would write it (``videos``: with per-video rows)."""
    trial_id = f"{study}-{variant.lower().replace('-', '_')}-{dataset}-s{seed}-v{version}-{finished_at[:10]}"
    record = TrialRecord(
        study=study,
        study_version=version,
        trial_id=trial_id,
        variant=variant,
        dataset=dataset,
        seed=seed,
        config_hash="0" * 64,
        config_json=config_json,
        git_sha=git_sha,
        git_dirty=False,
        packages={"python": "3.11"},
        hardware="test machine",
        device=device,
        data_hash="d" * 16,
        teacher_hash="t" * 16,
        synthetic=synthetic,
        wall_s=1.0,
        finished_at=finished_at,
        mlflow_run_id="run",
        code_version=TOY_CODE_VERSION,
    )
    rows = [MetricRow(task, split, metric, value) for (task, split, metric), value in metrics.items()]
    parts = toy_videos(metrics, variant, seed) if videos else []
    return write_result(results_dir, record, ResultRows(rows, parts))


def toy_videos(metrics: dict[tuple[str, str, str], float], variant: str, seed: int) -> list[VideoScore]:
    """Four test videos per mAP metric whose APs average to it (VIDEO_OFFSETS, rotated by the
    variant so that differences between variants vary over videos); none where an AP would leave
    [0, 1] (the superseded and stale toy trials)."""
    turn = sum(map(ord, variant)) // 4 + seed
    offsets = VIDEO_OFFSETS[seed % 2][turn % 4 :] + VIDEO_OFFSETS[seed % 2][: turn % 4]
    return [
        VideoScore(task, split, f"video{i}", value / 100 + offset, 0, 0, 1, 0.0, 0.0, 0.0)
        for (task, split, metric), value in metrics.items()
        if metric == "map" and 0.1 <= value / 100 <= 0.9
        for i, offset in enumerate(offsets)
    ]


def write_sweep_results(results_dir: Path, *, synthetic: bool = True) -> None:
    for variant, seed, version, finished, metrics in SWEEP_TRIALS:
        write_trial(
            results_dir,
            "toy_sweep",
            variant,
            seed,
            metrics,
            version=version,
            finished_at=finished,
            synthetic=synthetic,
        )


def write_efficiency_results(results_dir: Path, *, devices: tuple[str, str] = ("cpu", "cpu")) -> None:
    params, fps = ("predcls", "all", "params_m"), ("predcls", "all", "fps")
    write_trial(results_dir, "toy_efficiency", "Image-Cond", 0, {params: 10.0, fps: 2.0}, device=devices[0])
    write_trial(results_dir, "toy_efficiency", "Ours", 0, {params: 12.0, fps: 8.0}, device=devices[1])


def load_toy_studies(folder: Path) -> tuple[StudySpec, StudySpec]:
    sweep = load_study(write_study(folder, SWEEP_YAML))
    efficiency = load_study(write_study(folder, EFFICIENCY_YAML))
    return sweep, efficiency
