"""Dataset roots (real or synthetic) and the torch view of a feature store.

A dataset root holds everything a trial reads (layout in ``docs/CONTRACTS.md``)::

    dataset.json  annotations/  features/<split>/<source>/  teachers/<name>/<split>/<source>/  tracklets/<split>.json

``split`` is ``train`` or ``test`` for both datasets (VidOR's ``test`` is its validation split, the one
the paper evaluates on); ``source`` is ``gt`` (ground-truth trajectories: PredCls/SGCls) or ``det``
(detected tracklets: SGDet). Validation videos are carved out of ``train`` with :func:`split_videos`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from sage_model.data.annotations import VideoAnnotation, ground_truth_relations, load_annotation_folder
from sage_model.data.store import FeatureStore, TeacherStore
from sage_model.data.tracks import Track, load_ovmmp_tracks
from sage_model.data.vocab import Vocabulary, load_vocabulary

SPLITS = ("train", "test")
SOURCES = ("gt", "det")
NO_TEACHER = "none"


def split_videos(video_ids: Iterable[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(train ids, val ids): a seeded random ``val_fraction`` of the videos, both lists sorted.

    With a positive fraction and at least two videos, at least one video goes to each side.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"train.val_fraction: must be in [0, 1), got {val_fraction}")
    ids = sorted(set(video_ids))
    n_val = int(round(val_fraction * len(ids)))
    if val_fraction > 0 and len(ids) >= 2:
        n_val = min(max(n_val, 1), len(ids) - 1)
    order = np.random.default_rng(seed).permutation(len(ids))
    val = sorted(ids[i] for i in order[:n_val])
    train = sorted(ids[i] for i in order[n_val:])
    return train, val


class PairDataset(Dataset):
    """Samples of a feature store (optionally with its teacher) as torch tensors.

    Item (T keyframes, D feature dim, P predicates of the full vocabulary):
    ``visual (T, 4, D) float32``, ``boxes (T, 2, 4) float32``, ``teacher (T, 4, D) float32`` (zeros when
    there is no teacher; ``has_teacher`` says which), ``labels (P,) float32``, ``subject_class``,
    ``object_class``, ``row`` (long) and ``interaction`` (float: 1 when any predicate of
    ``interaction_mask`` is on). Pass the base-predicate mask as ``interaction_mask`` for training so
    that novel relations do not leak into the interaction head (OV-MMP's leak).
    """

    def __init__(
        self,
        store: FeatureStore,
        teacher: TeacherStore | None = None,
        rows: Sequence[int] | np.ndarray | None = None,
        *,
        interaction_mask: np.ndarray | None = None,
    ) -> None:
        if teacher is not None:
            teacher.check_aligned(store)
        self.store = store
        self.teacher = teacher
        self.rows = (
            np.arange(len(store), dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        )
        if len(self.rows) and (self.rows.min() < 0 or self.rows.max() >= len(store)):
            raise ValueError(f"rows: indices must be in [0, {len(store)}) for {store.path}")
        num_predicates = store.labels.shape[1]
        mask = (
            np.ones(num_predicates, dtype=bool)
            if interaction_mask is None
            else np.asarray(interaction_mask, bool)
        )
        if mask.shape != (num_predicates,):
            raise ValueError(f"interaction_mask: expected shape ({num_predicates},), got {mask.shape}")
        self.interaction_mask = mask

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        batch = self.get_batch(np.array([index]))
        return {key: value[0] for key, value in batch.items()}

    def get_batch(self, indices: Sequence[int] | np.ndarray) -> dict[str, torch.Tensor]:
        """A whole batch at once (one fancy-index per array; much faster than per-item collation)."""
        rows = self.rows[np.asarray(indices, dtype=np.int64)]  # (B,)
        order = np.argsort(rows, kind="stable")
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        sorted_rows = rows[order]  # sorted reads are sequential on the memory map

        def take(array: np.ndarray, dtype: Any) -> torch.Tensor:
            return torch.from_numpy(np.asarray(array[sorted_rows], dtype=dtype)[inverse])

        labels = np.asarray(self.store.labels[sorted_rows])[inverse]  # (B, P) uint8
        visual = take(self.store.visual, np.float32)  # (B, T, 4, D)
        if self.teacher is None:
            teacher, has_teacher = torch.zeros_like(visual), torch.zeros(len(rows), dtype=torch.bool)
        else:
            teacher, has_teacher = (
                take(self.teacher.text, np.float32),
                torch.ones(len(rows), dtype=torch.bool),
            )
        return {
            "visual": visual,
            "boxes": take(self.store.boxes, np.float32),  # (B, T, 2, 4)
            "teacher": teacher,  # (B, T, 4, D)
            "has_teacher": has_teacher,  # (B,)
            "labels": torch.from_numpy(labels.astype(np.float32)),  # (B, P)
            "subject_class": take(self.store.subject_class, np.int64),  # (B,)
            "object_class": take(self.store.object_class, np.int64),  # (B,)
            "interaction": torch.from_numpy(
                (labels[:, self.interaction_mask] > 0).any(axis=1).astype(np.float32)
            ),
            "row": torch.from_numpy(rows.copy()),  # (B,)
        }


def collate_pairs(items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack :class:`PairDataset` items into a batch (for a ``DataLoader``)."""
    return {key: torch.stack([item[key] for item in items]) for key in items[0]}


@dataclass(frozen=True)
class DatasetRoot:
    """A dataset root directory and its ``dataset.json``."""

    path: Path
    info: dict[str, Any]

    @classmethod
    def open(cls, path: Path | str) -> DatasetRoot:
        path = Path(path)
        info_path = path / "dataset.json"
        if not info_path.is_file():
            raise FileNotFoundError(f"{info_path}: not a dataset root (dataset.json missing)")
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{info_path}: not valid JSON ({exc})") from None
        for key in ("dataset", "synthetic"):
            if key not in info:
                raise ValueError(f"{info_path}: key '{key}': missing")
        load_vocabulary(info["dataset"])  # validates the name
        return cls(path=path, info=info)

    @property
    def dataset(self) -> str:
        return str(self.info["dataset"])

    @property
    def synthetic(self) -> bool:
        return bool(self.info["synthetic"])

    @property
    def vocabulary(self) -> Vocabulary:
        return load_vocabulary(self.dataset)

    @property
    def annotations_dir(self) -> Path:
        return self.path / "annotations"

    def annotations(self, split: str) -> list[VideoAnnotation]:
        return load_annotation_folder(self.annotations_dir, self.dataset, _split(split))

    def ground_truth(self, split: str) -> dict[str, list[dict[str, Any]]]:
        """Official-format video-level GT relations of a split."""
        return ground_truth_relations(self.annotations(split))

    def feature_store(self, split: str, source: str) -> FeatureStore:
        if source not in SOURCES:
            raise ValueError(f"source: unknown trajectory source {source!r}; valid: {', '.join(SOURCES)}")
        return FeatureStore.open(self.path / "features" / _split(split) / source)

    def teacher_names(self) -> list[str]:
        folder = self.path / "teachers"
        return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []

    def teacher_store(self, name: str, split: str, source: str) -> TeacherStore | None:
        """The teacher artifact aligned with ``feature_store(split, source)``; None for ``'none'``."""
        if name == NO_TEACHER:
            return None
        if name not in self.teacher_names():
            raise FileNotFoundError(
                f"{self.path / 'teachers' / name}: data.teacher: no teacher {name!r}; "
                f"available: {', '.join(self.teacher_names() + [NO_TEACHER])}"
            )
        return TeacherStore.open(self.path / "teachers" / name / _split(split) / source)

    def tracklets(self, split: str) -> dict[str, list[Track]]:
        """Detected tracklets of a split (OV-MMP layout), frames shifted by ``tracklet_frame_offset``."""
        offset = int(self.info.get("tracklet_frame_offset", 0))
        return load_ovmmp_tracks(self.path / "tracklets" / f"{_split(split)}.json", frame_offset=offset)


def _split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split: unknown split {split!r}; valid: {', '.join(SPLITS)}")
    return split
