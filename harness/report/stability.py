"""Fig. 4 in the report: read each variant's stability analysis and draw the t-SNE panels.

The trial writes ``sage_model.analysis.STABILITY_FILE`` into its work directory
(``<runs>/trials/<study>/<trial_id>/``, see ``harness.trial.trial_work_dir``); the report finds it
there from the trial ids in the results. A study takes part when its ``base`` (or a variant)
sets ``eval.stability_noise``. Whatever is missing becomes a note in the table, never a silent gap.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import polars as pl
from matplotlib.figure import Figure

from harness.report.plots import StabilityPoints, stability_scatter
from harness.report.tables import PaperTable, current_trials
from harness.spec import StudySpec
from sage_model.analysis import STABILITY_FILE, load_stability, tsne_2d

NOISE_KEY = "eval.stability_noise"


def wants_stability(spec: StudySpec) -> bool:
    """Does any trial of the study run the stability analysis?"""
    return bool(spec.base.get(NOISE_KEY)) or any(v.overrides.get(NOISE_KEY) for v in spec.variants)


def stability_path(runs_dir: Path, study: str, trial_id: str) -> Path:
    """Where a trial's analysis lives: its work dir (``harness.trial.trial_work_dir``)."""
    return Path(runs_dir) / "trials" / study / trial_id / STABILITY_FILE


def stability_figure(
    table: PaperTable, spec: StudySpec, results: pl.DataFrame, runs_dir: Path
) -> tuple[Figure | None, PaperTable]:
    """The t-SNE figure (None when no variant has its file) and the table with notes added."""
    if not wants_stability(spec):
        return None, table
    kept, _, _ = current_trials(results, spec)
    points: list[StabilityPoints] = []
    notes: list[str] = []
    for variant in (v.name for v in spec.variants):
        trials = kept.filter(pl.col("variant") == variant).sort(["seed", "finished_at"])
        if trials.is_empty():
            notes.append(f"t-SNE: {variant}: no finished trial")
            continue
        trial_id = str(trials["trial_id"][0])
        path = stability_path(runs_dir, spec.name, trial_id)
        if not path.is_file():
            notes.append(f"t-SNE: {variant}: {path} is missing (run dir moved or on another node?)")
            continue
        feats = load_stability(path)
        cosines = ", ".join(f"{level:g}: {cos:.4f}" for level, cos in feats.mean_cosine_to_clean().items())
        notes.append(
            f"{variant}: mean cosine of the classifier to its noise-free self, per noise level: {cosines}"
        )
        xy = tsne_2d(feats.features, seed=0)
        points.append(StabilityPoints(variant, xy, feats.class_index, feats.noise, feats.class_names))
    table = dataclasses.replace(table, notes=table.notes + tuple(notes))
    if not points:
        return None, table
    return stability_scatter(points, table.paper or table.study, table.synthetic), table
