"""Which stored pairs training reads: the base-category rule of ``train.novel_object_pairs``.

The open-vocabulary protocol trains on base categories only (paper section 3.1). Novel
predicates are masked by the trainer (their label columns are never read); a pair whose subject
or object is a *novel object class* is a separate question: OV-MMP's code keeps such pairs (they
train on their base predicates, the object loss ignores the novel class), so the visual modules
see novel objects during training. ``drop`` removes them, so that nothing of a novel object
class reaches training; ``keep`` is OV-MMP's behaviour. Pairs whose class is unknown (-1, an
unmatched detection) are kept: nothing says they are novel.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from sage_model.data.store import FeatureStore

NovelObjectPairs = Literal["keep", "drop"]


def novel_object_mask(subject_class: np.ndarray, object_class: np.ndarray, n_base_objects: int) -> np.ndarray:
    """(N,) bool: the subject or the object is a novel class (vocabulary index >= n_base_objects)."""
    subject, obj = np.asarray(subject_class, np.int64), np.asarray(object_class, np.int64)
    return (subject >= n_base_objects) | (obj >= n_base_objects)


def training_rows(
    store: FeatureStore, rows: np.ndarray, n_base_objects: int, novel_object_pairs: NovelObjectPairs
) -> np.ndarray:
    """``rows`` (store indices) less the pairs with a novel object class when ``drop``."""
    rows = np.asarray(rows, dtype=np.int64)
    if novel_object_pairs == "keep":
        return rows
    if novel_object_pairs != "drop":
        raise ValueError(f"train.novel_object_pairs: must be 'keep' or 'drop', got {novel_object_pairs!r}")
    novel = novel_object_mask(store.subject_class[rows], store.object_class[rows], n_base_objects)
    return rows[~novel]
