"""Semantic-stability analysis (paper Fig. 4): relation-classifier features under visual noise.

The claim under test: a class-aware prompt depends on the predicate only, so its classifier
feature F'_L stays put however noisy the visual input is, while an image-conditional prompt
(CoCoOp / OV-MMP meta-net) moves with every instance. We add Gaussian noise of growing strength
to the pairs' region features, recompute the classifier of a few predicates for every pair and
noise level, and keep the features; a 2-D t-SNE of them is the figure.

Use after training (stage 2, where the prompt learner is the classifier)::

    feats = classifier_features_under_noise(model, batch, classes, [0.0, 0.1, 0.3])
    save_stability(work_dir / STABILITY_FILE, feats)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

STABILITY_FILE = "stability.npz"
"""Name of the analysis file in a trial's work directory (the report looks for it there)."""


class StageTwoModel(Protocol):
    """What the analysis needs of :class:`sage_model.model.sage.SageModel`."""

    stage: int
    training: bool
    predicates: list[str]

    def encode_pairs(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]: ...

    def classifier(self, classes: Tensor, v_vr: Tensor | None = None) -> Tensor: ...

    def train(self, mode: bool = True) -> object: ...


@dataclass(frozen=True)
class ClassifierFeatures:
    """Classifier features of (noise level, pair, predicate) triples, flattened to N rows."""

    features: np.ndarray  # (N, E) float32, L2-normalised F'_L
    class_index: np.ndarray  # (N,) int64, index into class_names
    noise: np.ndarray  # (N,) float64, noise level of the row (exact, so levels compare equal)
    instance: np.ndarray  # (N,) int64, pair index within the batch
    class_names: tuple[str, ...]

    def mean_cosine_to_clean(self) -> dict[float, float]:
        """Noise level -> mean cosine between each row and its noise-free twin (same pair, class).

        1.0 means the classifier did not move at all. Needs noise level 0 among the levels.
        """
        clean = {
            (int(i), int(c)): f
            for i, c, f, n in zip(self.instance, self.class_index, self.features, self.noise, strict=True)
            if n == 0
        }
        if not clean:
            raise ValueError("mean_cosine_to_clean: noise level 0.0 is not among the analysed levels")
        out: dict[float, list[float]] = {}
        for i, c, f, n in zip(self.instance, self.class_index, self.features, self.noise, strict=True):
            out.setdefault(float(n), []).append(float(np.dot(f, clean[(int(i), int(c))])))
        return {level: float(np.mean(values)) for level, values in sorted(out.items())}


def add_visual_noise(visual: Tensor, level: float, generator: torch.Generator) -> Tensor:
    """``visual`` (..., D) plus Gaussian noise whose norm is about ``level`` x each token's norm."""
    noise = torch.randn(visual.shape, generator=generator, dtype=torch.float32).to(visual.device)
    scale = visual.float().norm(dim=-1, keepdim=True) / math.sqrt(visual.shape[-1])  # (..., 1)
    return visual.float() + level * scale * noise


def pick_classes(n_predicates: int, n_classes: int) -> Tensor:
    """``n_classes`` predicate indices spread evenly over the vocabulary (base and novel alike)."""
    if n_predicates < 1:
        raise ValueError("pick_classes: the vocabulary has no predicates")
    return torch.linspace(0, n_predicates - 1, min(n_classes, n_predicates)).round().long().unique()


@torch.no_grad()
def classifier_features_under_noise(
    model: StageTwoModel,
    batch: dict[str, Tensor],
    classes: Tensor,
    noise_levels: Sequence[float],
    *,
    seed: int = 0,
) -> ClassifierFeatures:
    """F'_L of ``classes`` for every pair of ``batch`` at every noise level (model in eval mode).

    For a class-aware model the classifier is the same (C, E) for every pair; it is repeated per
    pair so both strategies give the same number of points.
    """
    if model.stage != 2:
        raise ValueError(
            f"the stability analysis reads the stage-2 classifier; the model is in stage {model.stage}"
        )
    if not noise_levels or any(level < 0 for level in noise_levels):
        raise ValueError(f"eval.stability_noise: need non-negative levels, got {list(noise_levels)}")
    was_training = model.training
    model.train(False)
    generator = torch.Generator().manual_seed(seed)
    rows: list[tuple[np.ndarray, float]] = []
    try:
        for level in noise_levels:
            noisy = dict(batch)
            noisy["visual"] = add_visual_noise(batch["visual"], float(level), generator)  # (B, T, 4, D)
            v_vr, _ = model.encode_pairs(noisy)  # (B, 4H)
            clf = model.classifier(classes, v_vr)  # (C, E) or (B, C, E)
            if clf.dim() == 2:
                clf = clf.unsqueeze(0).expand(v_vr.shape[0], -1, -1)
            rows.append((clf.float().cpu().numpy(), float(level)))
    finally:
        model.train(was_training)
    return _flatten(rows, [model.predicates[int(c)] for c in classes])


def _flatten(rows: list[tuple[np.ndarray, float]], names: list[str]) -> ClassifierFeatures:
    """[(B, C, E) per level] -> N = levels x B x C rows."""
    feats, cls, noise, inst = [], [], [], []
    for clf, level in rows:
        b, c, _ = clf.shape
        feats.append(clf.reshape(b * c, -1))
        cls.append(np.tile(np.arange(c), b))
        inst.append(np.repeat(np.arange(b), c))
        noise.append(np.full(b * c, level, dtype=np.float64))
    return ClassifierFeatures(
        features=np.concatenate(feats).astype(np.float32),
        class_index=np.concatenate(cls).astype(np.int64),
        noise=np.concatenate(noise),
        instance=np.concatenate(inst).astype(np.int64),
        class_names=tuple(names),
    )


def save_stability(path: Path, feats: ClassifierFeatures) -> Path:
    """Write the analysis as a compressed ``.npz`` (what the report reads)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        np.savez_compressed(
            handle,
            features=feats.features,
            class_index=feats.class_index,
            noise=feats.noise,
            instance=feats.instance,
            class_names=np.array(feats.class_names, dtype=str),
        )
    return path


def load_stability(path: Path) -> ClassifierFeatures:
    """Read a file written by :func:`save_stability`; errors name the file."""
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            return ClassifierFeatures(
                features=data["features"],
                class_index=data["class_index"],
                noise=data["noise"],
                instance=data["instance"],
                class_names=tuple(str(n) for n in data["class_names"]),
            )
    except (OSError, KeyError, ValueError) as exc:
        raise ValueError(f"{path}: not a stability analysis file ({exc})") from None


def tsne_2d(features: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """(N, E) -> (N, 2) t-SNE embedding (cosine metric, PCA init, fixed seed: reproducible)."""
    from sklearn.manifold import TSNE  # imported here: only the report needs scikit-learn

    n = features.shape[0]
    if n < 3:
        raise ValueError(f"tsne_2d: need at least 3 points, got {n}")
    perplexity = float(min(30.0, (n - 1) / 3))
    # Barnes-Hut, not exact gradients: on a Fig. 4 panel of the smoke run (768 points, E = 64) it
    # took 1.7 s against 17.6 s for exact, measured side by side on an idle 2-core machine.
    tsne = TSNE(
        n_components=2, perplexity=perplexity, init="pca", metric="cosine", random_state=seed, method="barnes_hut"
    )
    return tsne.fit_transform(features.astype(np.float64)).astype(np.float32)
