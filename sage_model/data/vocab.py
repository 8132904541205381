"""Object and predicate vocabularies of VidVRD and VidOR with their open-vocabulary splits.

The base/novel split is the one every open-vocabulary peer uses (RePro ICLR'23, OV-MMP AAAI'24;
the two agree set by set). Names are ordered base first, then novel, so that the base classes are
the contiguous index range ``[0, B)`` and a classifier can be split by slicing. The facts live in
``sage_model/resources/<dataset>_vocabulary.json`` (package data, no network, no ../shared).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np

DATASETS = ("vidvrd", "vidor")


@dataclass(frozen=True)
class Vocabulary:
    """Class names of one dataset; ``objects``/``predicates`` = base names then novel names."""

    dataset: str
    base_objects: tuple[str, ...]
    novel_objects: tuple[str, ...]
    base_predicates: tuple[str, ...]
    novel_predicates: tuple[str, ...]

    @property
    def objects(self) -> tuple[str, ...]:
        return self.base_objects + self.novel_objects

    @property
    def predicates(self) -> tuple[str, ...]:
        return self.base_predicates + self.novel_predicates

    def object_index(self, name: str) -> int:
        """Index of an object class in :attr:`objects`; ValueError names the vocabulary."""
        return _index(self.objects, name, f"{self.dataset} object")

    def predicate_index(self, name: str) -> int:
        """Index of a predicate in :attr:`predicates`; ValueError names the vocabulary."""
        return _index(self.predicates, name, f"{self.dataset} predicate")

    def base_predicate_mask(self) -> np.ndarray:
        """(P,) bool: True for base predicates (the first B entries)."""
        mask = np.zeros(len(self.predicates), dtype=bool)
        mask[: len(self.base_predicates)] = True
        return mask

    def base_object_mask(self) -> np.ndarray:
        """(C,) bool: True for base object classes (the first B entries)."""
        mask = np.zeros(len(self.objects), dtype=bool)
        mask[: len(self.base_objects)] = True
        return mask


def _index(names: tuple[str, ...], name: str, what: str) -> int:
    lookup = _lookup(names)
    if name not in lookup:
        raise ValueError(f"unknown {what} {name!r} (not in the {len(names)}-class vocabulary)")
    return lookup[name]


@cache
def _lookup(names: tuple[str, ...]) -> dict[str, int]:
    return {n: i for i, n in enumerate(names)}


@cache
def load_vocabulary(dataset: str) -> Vocabulary:
    """The vocabulary and base/novel split of ``vidvrd`` or ``vidor`` (packaged project data)."""
    if dataset not in DATASETS:
        raise ValueError(f"data.dataset: unknown dataset {dataset!r}; valid: {', '.join(DATASETS)}")
    name = f"{dataset}_vocabulary.json"
    text = resources.files("sage_model").joinpath("resources", name).read_text(encoding="utf-8")
    raw = json.loads(text)
    vocab = Vocabulary(
        dataset=dataset,
        base_objects=tuple(raw["objects"]["base"]),
        novel_objects=tuple(raw["objects"]["novel"]),
        base_predicates=tuple(raw["predicates"]["base"]),
        novel_predicates=tuple(raw["predicates"]["novel"]),
    )
    for kind, names in (("objects", vocab.objects), ("predicates", vocab.predicates)):
        if len(set(names)) != len(names):
            raise ValueError(f"sage_model/resources/{name}: key '{kind}': duplicate class names")
    return vocab
