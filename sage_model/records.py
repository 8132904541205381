"""What an experiment returns, as plain data: no torch, no numpy, no harness.

Why a module of its own: the harness driver, the report, tests and benchmarks all need these
types, and importing :mod:`sage_model.experiment` costs seconds (torch, open_clip). Everything
here is a frozen dataclass of built-in values, so it pickles across Ray and serialises to JSON
with :func:`dataclasses.asdict`.

Units: detection and tagging values are in percent (papers print x100); efficiency values in the
unit the metric catalogue (:mod:`sage_model.metrics`) gives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Metric:
    """One number of a trial: ``task`` x ``split`` x ``name`` (a :mod:`sage_model.metrics` name)."""

    task: str
    split: str
    name: str
    value: float

    @property
    def key(self) -> str:
        """``{task}_{split}_{name}``, e.g. ``predcls_all_map``: the one flat spelling of a metric."""
        return f"{self.task}_{self.split}_{self.name}"


@dataclass(frozen=True)
class VideoScore:
    """What the official metrics of one test video decompose into (see STATS_NOTES).

    mAP and tagging precision@K are plain means over videos of ``ap`` / ``p{K}``; recall@K is a
    ratio estimator, sum of ``tp{K}`` over sum of ``n_gt``. So a resample of videos recomputes
    every metric exactly. Values are fractions in [0, 1] (not percent) except the counts.
    """

    task: str
    split: str
    video_id: str
    ap: float
    tp50: int
    tp100: int
    n_gt: int
    p1: float
    p5: float
    p10: float


@dataclass(frozen=True)
class EpochReport:
    """What the harness logs after each epoch: ``{"train/loss": .., "val/predcls_all_map": ..}``.

    ``step`` counts epochs over both stages from 0 (stage-1 epochs then stage-2 epochs), so a
    resumed trial continues its curves where the checkpoint left them instead of at 0.
    """

    stage: int
    epoch: int
    metrics: dict[str, float]
    step: int = -1


@dataclass(frozen=True)
class ExperimentResult:
    """A finished experiment: its metrics, per-video scores, files and the facts of its run."""

    metrics: list[Metric]
    predictions: dict[str, Path]
    data_hash: str
    teacher_hash: str
    synthetic: bool
    n_params: int
    device: str
    wall_s: float
    artifacts: dict[str, Path] = field(default_factory=dict)
    videos: list[VideoScore] = field(default_factory=list)
    #: peak resident memory of the process (MiB) and, where CUDA ran, ``torch.cuda.max_memory_allocated``
    peak_rss_mb: float = 0.0
    peak_cuda_mb: float = 0.0
    #: sizes of the data the trial read: {"train": pairs, "val": pairs, "test_gt": pairs, ...}
    split_sizes: dict[str, int] = field(default_factory=dict)
