"""``harness run --dry-run``: what a launch would cost, before it starts. Nothing is started,
locked or written (no Ray, no MLflow, no lock, no synthetic data generated, no preflight probe).

Per study: the trials to run and those already done (the runner's own plan), then per trial an
estimated wall time from

* the schedule (epochs per stage, batch sizes) of the trial's resolved config;
* the data size: pair rows of the training, validation and test videos, read from the stores'
  row tables (a real root, or a synthetic root already generated in the cache) or, for the
  embedded synthetic data not generated yet, estimated from its usual rows per video;
* a per-step cost: from finished trials of the same config (their recorded wall time), else
  measured here in seconds (:mod:`sage_model.cost`: one optimiser step of each stage, inference
  per pair) with the CPU threads a trial gets, on the local GPU where there is one.

Wall = steps x seconds per step + validation and test passes + start-up. GPU-hours = wall x the
study's GPU share. Peak GPU memory per trial (measured on a GPU, else counted on fake tensors) is
compared with the share of the GPU (``--gpu-mem-gb`` or the local GPU's size), with a warning
where trials sharing a GPU would not fit. Each figure says where it came from.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.configs import TrialSpec
from harness.progress import fmt_duration
from harness.runner import RunOptions, group_by_config, plan_study
from harness.schedules import budget_differences
from harness.spec import StudySpec
from sage_model.config import ExperimentConfig

#: Rows per video of the embedded synthetic data, measured on the root the studies run on
#: (``SYNTHETIC_BUDGET``: VidVRD, 96 training and 200 test videos): 4,516 ground-truth pairs over
#: the 86 training videos left after the 10 % validation hold-out (seed 0's), 10,434 / 11,034
#: ground-truth / detected pairs over the 200 test videos (24-video roots have ~60 / 65 a video);
#: used only before the root exists.
SYNTH_ROWS_PER_VIDEO = {"gt": 52.0, "det": 55.0}
#: Of a synthetic video's ground-truth pairs, the share training keeps with ``novel_object_pairs:
#: drop`` (a pair with a novel object class is left out): 2,470 of 4,516 on that root (1,836 of
#: 3,204 on the 64-video one; VidOR, with more novel objects, keeps fewer).
SYNTH_TRAIN_SHARE_DROP = 0.55
SYNTH_FEATURE_DIM = 64
#: Per-trial start-up besides building the model: process, data opening, predictions, metrics.
STARTUP_S = 15.0
#: CUDA context and allocator slack on top of the counted peak (checked against the share).
CUDA_OVERHEAD_MB = 1024.0


@dataclass(frozen=True)
class DataSizes:
    """Pair rows a trial reads, and where the counts come from."""

    train: int
    val: int
    test: dict[str, int]  # source ("gt" / "det") -> pairs scored
    feature_dim: int
    teacher_dim: int | None
    source: str


@dataclass(frozen=True)
class TrialEstimate:
    trial: TrialSpec
    data: DataSizes
    wall_s: float
    gpus: float
    peak_mb: float | None
    cost_source: str


@dataclass
class StudyEstimate:
    study: str
    schedule: str
    done: int
    trials: list[TrialEstimate]
    gpu_mem_mb: float | None
    warnings: list[str] = field(default_factory=list)

    @property
    def wall_s(self) -> float:
        return sum(t.wall_s for t in self.trials)

    @property
    def gpu_hours(self) -> float:
        return sum(t.wall_s * t.gpus for t in self.trials) / 3600.0


# ------------------------------------------------------------------------------ data sizes
def data_sizes(cfg: ExperimentConfig, cache_dir: Path) -> DataSizes:
    """Rows of the trial's training, validation and test videos (caps and held-out share applied)."""
    from sage_model.experiment import default_root_path

    root = cfg.data.root
    if root is None:
        root = default_root_path(cfg.data, cfg.data.dataset, cache_dir)
        if not (root / "dataset.json").is_file():
            return _synthetic_estimate(cfg)
    return _store_sizes(cfg, Path(root))


def _synthetic_estimate(cfg: ExperimentConfig) -> DataSizes:
    videos = cfg.data.synthetic_videos
    val = max(1, round(videos * cfg.train.val_fraction)) if cfg.train.val_fraction > 0 else 0
    train = min(videos - val, cfg.data.max_train_videos or videos)
    if cfg.data.max_test_videos is not None:
        val = min(val, cfg.data.max_test_videos)
    test_videos = cfg.data.synthetic_test_videos or videos
    test = min(test_videos, cfg.data.max_test_videos or test_videos)
    sources = _test_sources(cfg)
    dropping = cfg.train.novel_object_pairs == "drop"
    return DataSizes(
        train=round(train * SYNTH_ROWS_PER_VIDEO["gt"] * (SYNTH_TRAIN_SHARE_DROP if dropping else 1.0)),
        val=round(val * SYNTH_ROWS_PER_VIDEO["gt"]) if cfg.eval.every_epoch else 0,
        test={s: round(test * SYNTH_ROWS_PER_VIDEO[s]) for s in sources},
        feature_dim=SYNTH_FEATURE_DIM,
        teacher_dim=None if cfg.model.semantic.fusion == "none" else SYNTH_FEATURE_DIM,
        source=f"estimated ({SYNTH_ROWS_PER_VIDEO['gt']:g} pairs per synthetic video; not generated yet)",
    )


def _test_sources(cfg: ExperimentConfig) -> list[str]:
    return sorted({"det" if task == "sgdet" else "gt" for task in cfg.eval.tasks})


def _store_sizes(cfg: ExperimentConfig, root_path: Path) -> DataSizes:
    from sage_model.data import DatasetRoot, split_videos
    from sage_model.data.selection import training_rows

    root = DatasetRoot.open(root_path)
    store = root.feature_store("train", "gt")
    train_ids, val_ids = split_videos(store.rows.video_ids(), cfg.train.val_fraction, cfg.seed)
    train_ids = train_ids[: cfg.data.max_train_videos] if cfg.data.max_train_videos else train_ids
    val_ids = val_ids[: cfg.data.max_test_videos] if cfg.data.max_test_videos else val_ids
    test_root = root if cfg.data.test_root is None else DatasetRoot.open(cfg.data.test_root)
    test: dict[str, int] = {}
    for source in _test_sources(cfg):
        test_store = test_root.feature_store("test", source)
        ids = sorted(test_store.rows.video_ids())
        ids = ids[: cfg.data.max_test_videos] if cfg.data.max_test_videos else ids
        test[source] = len(test_store.rows.rows_of_videos(ids))
    teacher_dim = None
    if cfg.model.semantic.fusion != "none" and cfg.data.teacher != "none":
        teacher = root.teacher_store(cfg.data.teacher, "train", "gt")
        teacher_dim = int(teacher.text.shape[-1]) if teacher is not None else store.feature_dim
    return DataSizes(
        # the pairs training steps over: run_experiment's own selection (novel-object pairs dropped)
        train=len(
            training_rows(
                store, store.rows.rows_of_videos(train_ids), len(root.vocabulary.base_objects),
                cfg.train.novel_object_pairs,
            )
        ),  # fmt: skip
        val=len(store.rows.rows_of_videos(val_ids)) if cfg.eval.every_epoch else 0,
        test=test,
        feature_dim=store.feature_dim,
        teacher_dim=teacher_dim,
        source=f"counted in {root_path}",
    )


# ------------------------------------------------------------------------------ step costs
def shape_key(cfg: ExperimentConfig, data: DataSizes) -> str:
    """What a step's cost depends on: the model, the dataset's vocabulary, widths and batch sizes."""
    train = cfg.train
    return json.dumps(
        [cfg.model.model_dump(mode="json"), cfg.data.dataset, data.feature_dim, data.teacher_dim,
         train.batch_size, train.stage2_batch_size, train.amp, train.stage2_epochs > 0],
        sort_keys=True,
    )  # fmt: skip


class CostTable:
    """Per-step costs by model shape, measured once per dry-run (``sage_model.cost``)."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._costs: dict[str, Any] = {}
        self._clips: dict[tuple[Any, ...], Any] = {}

    def costs(self, cfg: ExperimentConfig, data: DataSizes) -> Any:
        key = shape_key(cfg, data)
        if key not in self._costs:
            self._costs[key] = self._measure(cfg, data)
        return self._costs[key]

    def _measure(self, cfg: ExperimentConfig, data: DataSizes) -> Any:
        import torch

        from sage_model.clip import build_clip
        from sage_model.cost import measure
        from sage_model.data import load_vocabulary
        from sage_model.model.sage import build_model

        clip_key = (cfg.model.preset, cfg.model.clip_checkpoint, cfg.model.clip_quick_gelu)
        if clip_key not in self._clips:
            self._clips[clip_key] = build_clip(*clip_key)
        vocab = load_vocabulary(cfg.data.dataset)
        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            model = build_model(
                cfg.model,
                vocab,
                data.feature_dim,
                teacher_dim=data.teacher_dim,
                frames=3,
                clip=self._clips[clip_key],
            )
            device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
            return measure(
                model, device=device, feature_dim=data.feature_dim, teacher_dim=data.teacher_dim or data.feature_dim,
                frames=3, batch=cfg.train.batch_size, stage2_batch=cfg.train.stage2_batch_size or cfg.train.batch_size,
                amp=cfg.train.amp, n_base_predicates=len(vocab.base_predicates), n_base_objects=len(vocab.base_objects),
            )  # fmt: skip
        finally:
            torch.set_num_threads(before)


def trial_wall_s(cfg: ExperimentConfig, data: DataSizes, costs: Any) -> float:
    """Seconds of one trial from its schedule, its data and per-step costs (see the module docstring)."""
    train = cfg.train
    stage2_batch = train.stage2_batch_size or train.batch_size
    stage2 = train.stage2_epochs if costs.stage2_s > 0 else 0
    seconds = train.stage1_epochs * math.ceil(data.train / train.batch_size) * costs.stage1_s
    seconds += stage2 * math.ceil(data.train / stage2_batch) * costs.stage2_s
    seconds += data.val * (train.stage1_epochs * costs.infer1_pair_s + stage2 * costs.infer_pair_s)
    final = costs.infer_pair_s if stage2 else costs.infer1_pair_s
    passes = {s: 1 for s in data.test}
    if cfg.eval.measure_speed:  # Table 10 times every task's own pass
        passes = {
            s: sum(1 for t in cfg.eval.tasks if ("det" if t == "sgdet" else "gt") == s) for s in data.test
        }
    seconds += sum(pairs * passes[s] * final for s, pairs in data.test.items())
    return seconds + STARTUP_S


def finished_walls(results_dir: Path, study: str) -> dict[str, float]:
    """Mean recorded wall time of finished trials by config (seed left out): the best estimate."""
    from harness.results import read_results

    frame = read_results(results_dir, study)
    if frame.is_empty():
        return {}
    walls: dict[str, list[float]] = {}
    for row in frame.unique("trial_id").select("config_json", "wall_s").to_dicts():
        walls.setdefault(_seedless(json.loads(row["config_json"])), []).append(float(row["wall_s"]))
    return {key: sum(v) / len(v) for key, v in walls.items()}


def _seedless(config: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in config.items() if k != "seed"}, sort_keys=True)


# ------------------------------------------------------------------------------ estimates
def local_gpu_mem_mb() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(0).total_memory / 2**20


def estimate_study(
    spec: StudySpec, options: RunOptions, table: CostTable, gpu_mem_mb: float | None
) -> StudyEstimate:
    """The plan of one study with a time and memory estimate per trial to run."""
    plan = plan_study(spec, options)
    cache = Path(os.environ.get("SAGE_DATA_CACHE") or Path(options.run_dir) / "synthetic-data")
    known = finished_walls(options.results_dir, spec.name)
    out = StudyEstimate(spec.name, options.schedule, len(plan.skipped), [], gpu_mem_mb)
    for trial in plan.to_run:
        cfg = trial.config
        data = data_sizes(cfg, cache)
        recorded = known.get(_seedless(cfg.model_dump(mode="json")))
        costs = table.costs(cfg, data)
        if recorded is not None:
            wall, source = recorded, "finished trials of this config"
        else:
            wall, source = trial_wall_s(cfg, data, costs), f"measured per step on {costs.device}"
        out.trials.append(TrialEstimate(trial, data, wall, spec.resources.gpus, costs.peak_mb, source))
    out.warnings += _memory_warnings(out, spec.resources.gpus)
    out.warnings += _budget_warnings(out)
    return out


def _memory_warnings(study: StudyEstimate, gpus: float) -> list[str]:
    if study.gpu_mem_mb is None or gpus <= 0:
        return []
    share = study.gpu_mem_mb * min(gpus, 1.0)
    warnings = []
    for variant in dict.fromkeys(t.trial.variant for t in study.trials):
        peak = max((t.peak_mb or 0.0) for t in study.trials if t.trial.variant == variant)
        if peak + CUDA_OVERHEAD_MB > share:
            warnings.append(
                f"{variant}: peak {peak / 1024:.1f} GiB (+{CUDA_OVERHEAD_MB / 1024:.0f} GiB CUDA context) does not fit "
                f"its GPU share {gpus:g} x {study.gpu_mem_mb / 1024:.0f} GiB = {share / 1024:.1f} GiB: "
                "trials sharing a GPU would run out of memory (raise resources.gpus)"
            )
    return warnings


def _budget_warnings(study: StudyEstimate) -> list[str]:
    real = [t for t in study.trials if t.trial.config.data.root is not None]
    off = [t for t in real if budget_differences(t.trial.config.train)]
    if not off:
        return []
    diff = budget_differences(off[0].trial.config.train)
    shown = ", ".join(f"{k.removeprefix('train.')} {a} (paper {b})" for k, (a, b) in list(diff.items())[:3])
    return [f"{len(off)} real-data trial(s) train off the paper's budget ({shown}); use --schedule paper"]


def render(studies: Sequence[StudyEstimate]) -> list[str]:
    """The dry-run report, one line per variant (seeds of a variant share its estimate)."""
    lines: list[str] = []
    for study in studies:
        first = study.trials[0].trial.config.train if study.trials else None
        budget = (
            f": {first.stage1_epochs} + {first.stage2_epochs} epochs, batch {first.batch_size}"
            if first
            else ""
        )
        lines.append(f"{study.study} (schedule {study.schedule}{budget})")
        lines.append(f"  trials: {len(study.trials)} to run, {study.done} already done")
        if study.trials:
            lines.append(f"  data: {_data_line(study.trials[0].data)}")
        lines.append(
            f"  {'variant':<16} {'trials':>6} {'wall/trial':>11} {'GPU-h':>7} {'peak mem':>10}  from"
        )
        for variant in dict.fromkeys(t.trial.variant for t in study.trials):
            rows = [t for t in study.trials if t.trial.variant == variant]
            wall = sum(t.wall_s for t in rows) / len(rows)
            peak = max(t.peak_mb or 0.0 for t in rows)
            gpu_h = sum(t.wall_s * t.gpus for t in rows) / 3600
            lines.append(
                f"  {variant:<16} {len(rows):>6} {fmt_duration(wall):>11} {gpu_h:>7.2f} {peak / 1024:>7.2f} GiB  "
                f"{rows[0].cost_source}"
            )
        lines.append(
            f"  total: {fmt_duration(study.wall_s)} one after another, {study.gpu_hours:.2f} GPU-hours"
            + (
                f" (GPU {study.gpu_mem_mb / 1024:.0f} GiB)"
                if study.gpu_mem_mb
                else " (GPU size unknown: --gpu-mem-gb)"
            )
        )
        lines += [f"  WARNING: {w}" for w in study.warnings]
    lines += _launch_total(studies)
    lines.append(
        "estimates only: per-step costs measured with random inputs on this machine (a CPU measures an upper "
        "bound of a GPU run); nothing was started, locked or written"
    )
    return lines


def _launch_total(studies: Sequence[StudyEstimate]) -> list[str]:
    """The whole launch: a config several trials share is computed once (harness.runner.group_by_config)."""
    trials = [t for study in studies for t in study.trials]
    computed = {t.trial_id for t in group_by_config([e.trial for e in trials])[0]}
    if len(studies) < 2 and len(computed) == len(trials):
        return []
    wall = sum(e.wall_s for e in trials if e.trial.trial_id in computed)
    return [
        f"all {len(studies)} studies: {len(trials)} trials to run, {len(computed)} distinct configs "
        f"(each computed once, recorded for every trial that has it): {fmt_duration(wall)} one after another"
    ]


def _data_line(data: DataSizes) -> str:
    test = ", ".join(f"{s} {n:,}" for s, n in data.test.items())
    return f"train {data.train:,} pairs, validation {data.val:,}, test {test} ({data.source})"
