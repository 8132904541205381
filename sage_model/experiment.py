"""One SAGE experiment: data -> two-stage training -> predictions -> official metrics.

``run_experiment`` is what the harness calls for every trial (docs/CONTRACTS.md). The rules it
applies, written once here:

* Data: ``cfg.data.root`` or, when it is None, the embedded synthetic dataset generated (once,
  then reused) under ``$SAGE_DATA_CACHE`` or ``<work_dir>/../_data``.
* Training uses the ``train`` split on ground-truth trajectories; ``train.val_fraction`` of its
  videos (seeded by ``cfg.seed``) are held out for validation: the per-epoch PredCls curves and,
  with ``train.select_on: val``, model selection. The test split is only read after training.
* Tasks: PredCls = ground-truth trajectories and classes (object score 1); SGCls =
  ground-truth trajectories, predicted classes; SGDet = detected tracklets, predicted classes.
* Splits: ``all`` scores every predicate of the test vocabulary; ``novel`` scores only the novel
  predicates and evaluates on ground truth with a novel predicate (objects of any class).
* Cross-dataset (``data.test_dataset`` differs, Table 11): the model's vocabulary is the training
  vocabulary plus the test-only names; ``novel`` then means the test dataset's predicates whose
  name the training dataset lacks altogether (base or novel there), ``all`` every test predicate;
  objects are always all test-dataset classes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sage_model.analysis import STABILITY_FILE, classifier_features_under_noise, pick_classes, save_stability
from sage_model.clip import build_clip, clip_identity
from sage_model.compat import check_clip_matches
from sage_model.config import DataConfig, ExperimentConfig
from sage_model.data import DatasetRoot, FeatureStore, PairDataset, TeacherStore, split_videos
from sage_model.data.selection import training_rows
from sage_model.data.vocab import Vocabulary
from sage_model.metrics import EVAL_METRICS
from sage_model.model.predict import (
    PairRows,
    PairScores,
    choose_objects,
    score_pairs,
    segment_relations,
    video_relations,
    write_predictions,
)
from sage_model.model.sage import SageModel, build_model
from sage_model.records import EpochReport, ExperimentResult, Metric, VideoScore
from sage_model.train.seeding import seed_everything
from sage_model.train.trainer import (
    TrainingVocabulary,
    resolve_device,
    train_two_stage,
)

if TYPE_CHECKING:
    from sage_model.eval import DetectionMetrics

log = logging.getLogger(__name__)
#: DetectionMetrics attribute -> our metric name, from the catalogue (sage_model.metrics)
METRIC_NAMES = {m.source: m.name for m in EVAL_METRICS if m.source and m.kind == "detection"}
TAGGING_NAMES = {m.source: m.name for m in EVAL_METRICS if m.source and m.kind == "tagging"}
STABILITY_PAIRS = 24
STABILITY_CLASSES = 8

__all__ = ["EpochReport", "ExperimentResult", "Metric", "run_experiment"]


# ------------------------------------------------------------------------------------- data
def synthetic_cache(work_dir: Path) -> Path:
    """Where synthetic dataset roots are generated once and shared by the trials."""
    env = os.environ.get("SAGE_DATA_CACHE")
    return Path(env) if env else Path(work_dir).resolve().parent / "_data"


def default_root_path(data: DataConfig, dataset: str, cache: Path) -> Path:
    """Where the embedded synthetic dataset of ``data`` lives under ``cache`` (one folder per settings)."""
    from sage_model.data import synthetic_root_name

    name = synthetic_root_name(
        dataset, data.synthetic_videos, data.synthetic_seed, test_videos=data.synthetic_test_videos
    )
    return cache / name


def ensure_default_root(data: DataConfig, dataset: str, cache: Path) -> Path:
    """The embedded synthetic dataset of ``data`` under ``cache``, generated on first use."""
    from sage_model.data import ensure_synthetic

    return ensure_synthetic(
        dataset,
        default_root_path(data, dataset, cache),
        data.synthetic_videos,
        data.synthetic_seed,
        test_videos=data.synthetic_test_videos,
    )


def resolve_roots(cfg: ExperimentConfig, work_dir: Path) -> tuple[DatasetRoot, DatasetRoot]:
    """(training root, test root); the same root unless ``data.test_dataset`` differs."""
    data = cfg.data
    test_dataset = data.test_dataset or data.dataset

    def synthetic(dataset: str) -> DatasetRoot:
        return DatasetRoot.open(ensure_default_root(data, dataset, synthetic_cache(work_dir)))

    train = synthetic(data.dataset) if data.root is None else DatasetRoot.open(data.root)
    if train.dataset != data.dataset:
        raise ValueError(f"data.root: {train.path} holds {train.dataset!r}, data.dataset is {data.dataset!r}")
    if test_dataset == data.dataset:
        return train, train
    if data.root is None:
        return train, synthetic(test_dataset)
    if data.test_root is None:
        raise ValueError("data.test_root: a real cross-dataset run needs the test dataset's root")
    test = DatasetRoot.open(data.test_root)
    if test.dataset != test_dataset:
        raise ValueError(
            f"data.test_root: {test.path} holds {test.dataset!r}, data.test_dataset is {test_dataset!r}"
        )
    return train, test


@dataclass(frozen=True)
class EvalVocabulary:
    """Class names that an evaluation scores and how they map into the model's vocabulary."""

    predicates: tuple[str, ...]  # the 'all' split
    novel: tuple[str, ...]  # the 'novel' split
    objects: tuple[str, ...]
    #: cross-dataset ``eval.cross_dataset_novel: category``: a relation is novel when its predicate
    #: or one of its object classes (``novel_objects``) is absent from the training dataset
    by_category: bool = False
    novel_objects: tuple[str, ...] = ()

    @classmethod
    def build(cls, train: Vocabulary, test: Vocabulary, cross_rule: str = "predicate") -> EvalVocabulary:
        if train.dataset == test.dataset:
            return cls(test.predicates, test.novel_predicates, test.objects)
        lacking = tuple(p for p in test.predicates if p not in set(train.predicates))
        if cross_rule == "predicate":
            return cls(test.predicates, lacking, test.objects)
        objects = tuple(o for o in test.objects if o not in set(train.objects))
        return cls(test.predicates, lacking, test.objects, by_category=True, novel_objects=objects)

    def split_predicates(self, split: str) -> tuple[str, ...]:
        """Predicates a split's predictions are made for (``category``: all, filtered per triplet)."""
        return self.novel if split == "novel" and not self.by_category else self.predicates

    @cached_property
    def _novel_sets(self) -> tuple[frozenset[str], frozenset[str]]:
        return frozenset(self.novel), frozenset(self.novel_objects if self.by_category else ())

    def is_novel(self, triplet: Sequence[str]) -> bool:
        """Whether a (subject, predicate, object) relation belongs to the novel split."""
        predicates, objects = self._novel_sets
        return triplet[1] in predicates or triplet[0] in objects or triplet[2] in objects

    def novel_only(self, relations: dict[str, list[dict]], drop_empty: bool) -> dict[str, list[dict]]:
        """``relations`` (official layout) restricted to novel triplets; videos left empty dropped if asked."""
        kept = {vid: [r for r in rels if self.is_novel(r["triplet"])] for vid, rels in relations.items()}
        return {vid: rels for vid, rels in kept.items() if rels or not drop_empty}


def model_vocabulary(train: Vocabulary, test: Vocabulary) -> tuple[list[str], list[str]]:
    """Training names first (so base classes stay an index prefix), then test-only names."""
    preds = list(train.predicates) + [p for p in test.predicates if p not in set(train.predicates)]
    objs = list(train.objects) + [o for o in test.objects if o not in set(train.objects)]
    return preds, objs


def class_indices(names: list[str], wanted: tuple[str, ...]) -> torch.Tensor:
    lookup = {n: i for i, n in enumerate(names)}
    return torch.tensor([lookup[n] for n in wanted], dtype=torch.long)


def content_digest(*hashes: str) -> str:
    digest = hashlib.sha256("|".join(hashes).encode()).hexdigest()
    return digest[:16]


TARGET_KEYS = ("labels", "subject_class", "object_class", "interaction")


class LabelShuffled:
    """``train.shuffle_labels``: a dataset view whose targets come from a fixed permutation of its rows."""

    def __init__(self, dataset: PairDataset, seed: int) -> None:
        self.dataset = dataset
        self.permutation = np.random.default_rng([seed, 77]).permutation(len(dataset))

    def __len__(self) -> int:
        return len(self.dataset)

    def get_batch(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        batch = self.dataset.get_batch(indices)
        donor = self.dataset.get_batch(self.permutation[np.asarray(indices)])
        return batch | {key: donor[key] for key in TARGET_KEYS}


class ShuffledBatches:
    """Training batches of a :class:`PairDataset` (the trainer's ``BatchSource``)."""

    def __init__(self, dataset: PairDataset | LabelShuffled) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def batches(self, batch_size: int, generator: torch.Generator | None):
        n = len(self.dataset)
        order = torch.randperm(n, generator=generator).numpy() if generator is not None else np.arange(n)
        for start in range(0, n, batch_size):
            yield self.dataset.get_batch(order[start : start + batch_size])


# ------------------------------------------------------------------------------- evaluation
@dataclass
class EvalData:
    """One evaluation set: a store (+ teacher) restricted to some videos, and its ground truth."""

    store: FeatureStore
    teacher: TeacherStore | None
    rows: np.ndarray
    gt: dict[str, list[dict]]
    frames: int  # total frames of its videos (for FPS)

    def dataset(self) -> PairDataset:
        return PairDataset(self.store, self.teacher, self.rows)


def _teacher(root: DatasetRoot, cfg: ExperimentConfig, split: str, source: str) -> TeacherStore | None:
    if cfg.model.semantic.fusion == "none":
        return None
    if cfg.data.teacher == "none":
        raise ValueError(
            "data.teacher: 'none' leaves nothing to fuse; set model.semantic.fusion: none as well"
        )
    return root.teacher_store(cfg.data.teacher, split, source)


def eval_data(
    root: DatasetRoot, cfg: ExperimentConfig, split: str, source: str, videos: list[str] | None
) -> EvalData:
    store = root.feature_store(split, source)
    annotations = root.annotations(split)
    if videos is not None:
        keep = set(videos)
        annotations = [a for a in annotations if a.video_id in keep]
    from sage_model.data import ground_truth_relations

    rows = store.rows.rows_of_videos([a.video_id for a in annotations])
    frames = int(sum(a.frame_count for a in annotations))
    # semantic.at_test: none scores without a teacher: its store is not even opened
    teacher = None if cfg.model.semantic.at_test == "none" else _teacher(root, cfg, split, source)
    return EvalData(store, teacher, rows, ground_truth_relations(annotations), frames)


def predict_task(
    model: SageModel,
    data: EvalData,
    task: str,
    splits: tuple[str, ...],
    vocab: EvalVocabulary,
    cfg: ExperimentConfig,
    store_objects: tuple[str, ...],
    scores: PairScores | None = None,
) -> dict[str, dict[str, list[dict]]]:
    """Video-level predictions of one task for each split (one model pass serves all splits).

    ``scores``: the model's scores of ``data``'s pairs when already computed (SGCls and PredCls
    score the same ground-truth pairs; only the object labels they keep differ).
    """
    all_names = vocab.predicates
    if scores is None:
        scores = score_data(model, data, vocab, cfg)
    rows = PairRows.from_store(data.store, data.rows)
    objects = choose_objects(task, rows, scores, store_objects, vocab.objects)  # type: ignore[arg-type]
    out = {}
    column = {name: i for i, name in enumerate(all_names)}
    for split in splits:
        names = vocab.split_predicates(split)
        cols = np.array([column[n] for n in names], dtype=np.int64)
        seg = segment_relations(
            rows, scores.predicate[:, cols], names, objects, cfg.eval.predicates_per_pair,
            segmentation=cfg.eval.segmentation,
        )  # fmt: skip
        if split == "novel" and vocab.by_category:  # novel triplets before the top-K cut, not after
            seg = [r for r in seg if vocab.is_novel(r.triplet)]
        out[split] = video_relations(seg, list(data.gt), cfg.eval.top_k, **association_options(cfg))
    return out


def association_options(cfg: ExperimentConfig) -> dict[str, object]:
    """Keywords of :func:`sage_model.eval.associate` from ``cfg.eval``."""
    ev = cfg.eval
    options: dict[str, object] = {"method": ev.association, "aggregation": ev.aggregation}
    if ev.association == "greedy":
        options |= {"linkage_threshold": ev.linkage_threshold, "temporal_tolerance": ev.temporal_tolerance}
    return options


def score_data(model: SageModel, data: EvalData, vocab: EvalVocabulary, cfg: ExperimentConfig) -> PairScores:
    """The model's predicate and object scores for every pair of ``data``, in row order."""
    return score_pairs(
        model,
        data.dataset(),
        class_indices(model.predicates, vocab.predicates),
        class_indices(model.objects, vocab.objects),
        batch_size=max(cfg.train.batch_size, 256) if model.cfg.prompt.strategy != "image_cond" else 32,
    )


def score_predictions(
    gt: dict[str, list[dict]],
    results: dict[str, list[dict]],
    split: str,
    vocab: EvalVocabulary,
    cfg: ExperimentConfig,
) -> dict[str, float]:
    """Official metrics in percent, keyed by our metric names (map, r50, r100, p1, p5, p10)."""
    return percent_metrics(evaluate_split(gt, results, split, vocab, cfg))


def evaluate_split(
    gt: dict[str, list[dict]],
    results: dict[str, list[dict]],
    split: str,
    vocab: EvalVocabulary,
    cfg: ExperimentConfig,
) -> DetectionMetrics:
    """The official evaluation of one split (novel: only the novel predicates)."""
    from sage_model.eval import evaluate_relations

    novel = set(vocab.novel) if split == "novel" else None
    if novel is not None and vocab.by_category:  # filter by triplet here; the evaluator filters predicates
        gt, results, novel = vocab.novel_only(gt, drop_empty=True), vocab.novel_only(results, False), None
    return evaluate_relations(gt, results, novel_predicates=novel, tagging_divisor=cfg.eval.tagging_divisor)


def percent_metrics(metrics: DetectionMetrics) -> dict[str, float]:
    """Official metrics in percent, keyed by our metric names (map, r50, r100, p1, p5, p10)."""
    names = METRIC_NAMES | TAGGING_NAMES
    return {short: 100.0 * float(getattr(metrics, long)) for long, short in names.items()}


def video_scores(task: str, split: str, metrics: DetectionMetrics) -> list[VideoScore]:
    """Each evaluated video's parts of the metrics (what the report's intervals resample)."""
    return [
        VideoScore(task, split, v.video_id, v.ap, v.tp50, v.tp100, v.n_gt, v.p1, v.p5, v.p10)
        for v in metrics.videos
    ]


def splits_with_ground_truth(
    gt: dict[str, list[dict]], splits: Sequence[str], vocab: EvalVocabulary
) -> tuple[str, ...]:
    """``splits`` less ``novel`` when no GT relation has a novel predicate.

    Why: a small set (one held-out validation video, ``data.max_test_videos``) may have none;
    the evaluator rightly refuses an empty split, and that must not fail the whole trial.
    """
    has_novel = any(vocab.is_novel(rel["triplet"]) for rels in gt.values() for rel in rels)
    return tuple(s for s in splits if s != "novel" or has_novel)


def make_validator(
    data: EvalData, vocab: EvalVocabulary, cfg: ExperimentConfig, store_objects: tuple[str, ...]
) -> Callable[[SageModel], dict[str, float]]:
    """PredCls on the held-out training videos, both splits (novel only where the held-out
    videos have a novel relation): ``val/predcls_<split>_<metric>``."""
    wanted = ("all", "novel") if vocab.novel else ("all",)
    splits = splits_with_ground_truth(data.gt, wanted, vocab)
    if splits != wanted:
        log.warning("validation: the held-out videos have no relation with a novel predicate; novel not scored")

    def validate(model: SageModel) -> dict[str, float]:
        results = predict_task(model, data, "predcls", splits, vocab, cfg, store_objects)
        out = {}
        for split in splits:
            for name, value in score_predictions(data.gt, results[split], split, vocab, cfg).items():
                if name in ("map", "r50", "r100"):
                    out[f"val/predcls_{split}_{name}"] = value
        return out

    return validate


# ------------------------------------------------------------------------------- experiment
def run_experiment(
    cfg: ExperimentConfig,
    *,
    work_dir: Path,
    on_epoch: Callable[[EpochReport], None] | None = None,
    checkpoint_dir: Path | None = None,
) -> ExperimentResult:
    """Train SAGE as configured and score it on the test split; raises on any failure.

    The per-epoch training checkpoint goes to ``checkpoint_dir`` (default: ``work_dir``); a run that
    finds one there resumes after its epoch. The harness points it at storage every node reaches,
    so a trial retried on another node resumes instead of starting over.
    """
    started = time.perf_counter()
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.train.device)
    train_root, test_root = resolve_roots(cfg, work_dir)
    train_vocab, test_vocab = train_root.vocabulary, test_root.vocabulary
    vocab = EvalVocabulary.build(train_vocab, test_vocab, cfg.eval.cross_dataset_novel)

    store = train_root.feature_store("train", "gt")
    teacher = _teacher(train_root, cfg, "train", "gt")
    train_ids, val_ids = split_videos(store.rows.video_ids(), cfg.train.val_fraction, cfg.seed)
    if cfg.data.max_train_videos is not None:
        train_ids = train_ids[: cfg.data.max_train_videos]
    if cfg.data.max_test_videos is not None:  # validation scores videos too: a smoke run caps it alike
        val_ids = val_ids[: cfg.data.max_test_videos]
    rows = training_rows(
        store, store.rows.rows_of_videos(train_ids), len(train_vocab.base_objects), cfg.train.novel_object_pairs
    )
    train_set = PairDataset(store, teacher, rows)
    if len(train_set) == 0:
        raise ValueError(f"{store.path}: no training pairs in the {len(train_ids)} training videos")

    model, clip_id = _build(cfg, train_vocab, test_vocab, store, teacher)
    check_clip_matches(clip_id, store, teacher, field="data.root")
    validate = None
    if cfg.eval.every_epoch and val_ids:
        val = eval_data(train_root, cfg, "train", "gt", val_ids)
        val_vocab = EvalVocabulary.build(train_vocab, train_vocab)
        validate = make_validator(val, val_vocab, cfg, train_vocab.objects)
    source = ShuffledBatches(LabelShuffled(train_set, cfg.seed) if cfg.train.shuffle_labels else train_set)
    train_two_stage(
        model,
        source,
        TrainingVocabulary.from_counts(
            len(train_vocab.base_predicates), len(train_vocab.base_objects), len(train_vocab.objects)
        ),
        cfg.train,
        device=device,
        seed=cfg.seed,
        checkpoint_dir=work_dir if checkpoint_dir is None else Path(checkpoint_dir),
        fingerprint=cfg.model_dump_json(),
        validate=validate,
        on_epoch=on_epoch,
    )

    metrics, predictions, hashes, teacher_hashes = [], {}, [store.content_hash], []
    videos: list[VideoScore] = []
    if teacher is not None:
        teacher_hashes.append(teacher.content_hash)
    test_ids = _capped_test_videos(test_root, cfg)
    # per track source: SGCls and PredCls read the same ground-truth pairs, loaded and scored once
    loaded: dict[str, EvalData] = {}
    scored: dict[str, PairScores] = {}
    for task in cfg.eval.tasks:
        tracks = "det" if task == "sgdet" else "gt"
        if tracks not in loaded:
            loaded[tracks] = eval_data(test_root, cfg, "test", tracks, test_ids)
        data = loaded[tracks]
        where = "data.root" if test_root is train_root else "data.test_root"
        check_clip_matches(clip_id, data.store, data.teacher, field=where)
        hashes.append(data.store.content_hash)
        if data.teacher is not None:
            teacher_hashes.append(data.teacher.content_hash)
        splits: tuple[str, ...] = cfg.eval.splits
        if cfg.data.max_test_videos is not None:  # a full test split without novel GT stays an error
            splits = splits_with_ground_truth(data.gt, splits, vocab)
            if splits != cfg.eval.splits:
                log.warning(
                    "%s: the first %d test video(s) (data.max_test_videos) have no relation with a novel "
                    "predicate; the novel split is not scored", task, cfg.data.max_test_videos,
                )  # fmt: skip
        tic = time.perf_counter()
        if tracks not in scored or cfg.eval.measure_speed:  # Table 10 times every task's own pass
            scored[tracks] = score_data(model, data, vocab, cfg)
        results = predict_task(model, data, task, splits, vocab, cfg, test_vocab.objects, scores=scored[tracks])
        seconds = time.perf_counter() - tic
        for split in splits:
            path = write_predictions(work_dir / f"predictions_{task}_{split}.json", results[split])
            predictions[f"{task}_{split}"] = path
            detection = evaluate_split(data.gt, results[split], split, vocab, cfg)
            scores = percent_metrics(detection)
            metrics += [Metric(task, split, name, value) for name, value in scores.items()]
            videos += video_scores(task, split, detection)
        if cfg.eval.measure_speed:
            metrics += _speed_metrics(model, data, task, seconds)
    artifacts = {"weights": _save_weights(model, work_dir)}
    if cfg.eval.stability_noise:
        artifacts["stability"] = _stability(model, test_root, cfg, work_dir)
    sizes = {"train": len(train_set), "val": len(store.rows.rows_of_videos(val_ids))}
    sizes |= {f"test_{tracks}": len(data.rows) for tracks, data in loaded.items()}
    return ExperimentResult(
        metrics=metrics,
        predictions=predictions,
        data_hash=content_digest(*hashes),
        teacher_hash=content_digest(*teacher_hashes) if teacher_hashes else "",
        synthetic=bool(train_root.synthetic and test_root.synthetic),
        n_params=model.parameter_count(),
        device=_device_name(device),
        wall_s=time.perf_counter() - started,
        artifacts=artifacts,
        peak_rss_mb=peak_rss_mb(),
        peak_cuda_mb=torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0,
        split_sizes=sizes,
        videos=videos,
    )


WEIGHTS_FILE = "weights.pt"


def _save_weights(model: SageModel, work_dir: Path) -> Path:
    """The trained weights without the frozen CLIP text tower (rebuilt from the preset on load),
    so the file holds what training changed and stays small."""
    path = work_dir / WEIGHTS_FILE
    torch.save(model.trainable_state(), path)
    return path


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports KiB, macOS bytes)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _capped_test_videos(root: DatasetRoot, cfg: ExperimentConfig) -> list[str] | None:
    """The first ``data.max_test_videos`` test videos by id, or None for all of them."""
    if cfg.data.max_test_videos is None:
        return None
    return sorted(a.video_id for a in root.annotations("test"))[: cfg.data.max_test_videos]


def _build(
    cfg: ExperimentConfig,
    train: Vocabulary,
    test: Vocabulary,
    store: FeatureStore,
    teacher: TeacherStore | None,
) -> tuple[SageModel, dict[str, Any]]:
    """The model and the identity of its CLIP (what the stores are checked against)."""
    preds, objs = model_vocabulary(train, test)
    clip = build_clip(cfg.model.preset, cfg.model.clip_checkpoint, cfg.model.clip_quick_gelu)
    identity = clip_identity(clip, cfg.model.preset, cfg.model.clip_checkpoint)
    return build_model(
        cfg.model,
        train,
        store.feature_dim,
        teacher_dim=int(teacher.text.shape[-1]) if teacher is not None else None,
        frames=store.num_keyframes,
        clip=clip,
        predicates=preds,
        objects=objs,
    ), identity


def _speed_metrics(model: SageModel, data: EvalData, task: str, seconds: float) -> list[Metric]:
    """Table 10: parameters (millions, CLIP text tower included; also without its token
    embedding) and video frames per second of inference (model passes over every pair +
    association; features are precomputed offline), also with the teacher's descriptions of
    the test pairs generated (:mod:`sage_model.efficiency`)."""
    from sage_model.efficiency import fps_with_teacher, teacher_questions, tiny_teacher_seconds_per_question

    questions = teacher_questions(data.store, data.rows) if data.teacher is not None else 0
    per_question = tiny_teacher_seconds_per_question() if questions else 0.0
    return [
        Metric(task, "all", "params_m", model.parameter_count() / 1e6),
        Metric(task, "all", "params_m_no_tok", model.parameter_count(token_embedding=False) / 1e6),
        Metric(task, "all", "fps", data.frames / max(seconds, 1e-9)),
        Metric(task, "all", "fps_teacher", fps_with_teacher(data.frames, seconds, questions, per_question)),
        Metric(task, "all", "teacher_qpf", questions / max(data.frames, 1)),
    ]


def _stability(model: SageModel, root: DatasetRoot, cfg: ExperimentConfig, work_dir: Path) -> Path:
    """Fig. 4: classifier features of a few predicates for a few test pairs under visual noise."""
    if model.stage != 2:
        raise ValueError(
            "eval.stability_noise: the analysis reads the stage-2 classifier; set train.stage2_epochs > 0"
        )
    data = eval_data(root, cfg, "test", "gt", None)
    picks = np.linspace(0, len(data.rows) - 1, min(STABILITY_PAIRS, len(data.rows))).round().astype(np.int64)
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in data.dataset().get_batch(picks).items()}
    classes = pick_classes(len(model.predicates), STABILITY_CLASSES).to(device)
    feats = classifier_features_under_noise(model, batch, classes, cfg.eval.stability_noise, seed=cfg.seed)
    return save_stability(work_dir / STABILITY_FILE, feats)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{torch.get_num_threads()} threads"
