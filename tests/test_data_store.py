"""Feature / teacher stores: format, memory mapping, hashes, clear errors; the torch view; splits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sage_model.data import (
    FeatureStore,
    PairDataset,
    PairSamples,
    TeacherStore,
    collate_pairs,
    load_vocabulary,
    parse_annotation,
    plan_pair_samples,
    split_videos,
    write_feature_store,
    write_teacher_store,
)
from tests.test_data_annotations import vidvrd_video

D = 8


def _samples() -> PairSamples:
    vocab = load_vocabulary("vidvrd")
    parts = [
        plan_pair_samples(parse_annotation(vidvrd_video(vid), "vidvrd"), vocab)
        for vid in ("ILSVRC2015_train_00000001", "ILSVRC2015_train_00000002")
    ]
    return PairSamples.concat(parts, len(vocab.predicates))


def _write_store(directory: Path) -> FeatureStore:
    samples = _samples()
    visual = np.random.default_rng(0).standard_normal((len(samples), 3, 4, D)).astype(np.float16)
    return write_feature_store(
        directory, samples, visual, dataset="vidvrd", split="train", source="gt",
        feature_model={"name": "test", "fingerprint": "0"}, synthetic=True, settings={"why": "test"},
    )  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> FeatureStore:
    return _write_store(tmp_path / "store")


def test_store_is_memory_mapped_and_matches_the_contract_shapes(store: FeatureStore) -> None:
    n = len(store)
    assert n == 20 and store.feature_dim == D and store.num_keyframes == 3
    assert isinstance(store.visual, np.memmap)
    expected = {
        "visual": ((n, 3, 4, D), np.float16),
        "boxes": ((n, 3, 2, 4), np.float32),
        "labels": ((n, 132), np.uint8),
        "subject_class": ((n,), np.int16),
        "object_class": ((n,), np.int16),
        "seg_traj": ((n, 2, 30, 4), np.float32),
        "seg_span": ((n, 2), np.int32),
        "keyframes": ((n, 3), np.int32),
    }
    for name, (shape, dtype) in expected.items():
        array = getattr(store, name)
        assert array.shape == shape and array.dtype == dtype, name
    assert store.rows.video_ids() == ["ILSVRC2015_train_00000001", "ILSVRC2015_train_00000002"]
    assert store.rows.rows_of_videos(["ILSVRC2015_train_00000002"]).tolist() == list(range(10, 20))
    manifest = json.loads((store.path / "manifest.json").read_text())
    assert manifest["synthetic"] is True and manifest["feature_model"]["name"] == "test"
    store.verify()


def test_same_content_gives_the_same_hash_and_a_change_is_detected(
    tmp_path: Path, store: FeatureStore
) -> None:
    again = _write_store(tmp_path / "again")
    assert again.content_hash == store.content_hash and len(store.content_hash) == 64
    labels = np.load(store.path / "labels.npy")
    labels[0, 0] ^= 1
    np.save(store.path / "labels.npy", labels)
    with pytest.raises(ValueError, match="content hash mismatch"):
        FeatureStore.open(store.path).verify()


def test_truncated_array_fails_at_open_naming_the_file(store: FeatureStore) -> None:
    path = store.path / "visual.npy"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"visual\.npy: array 'visual' is truncated or unreadable"):
        FeatureStore.open(store.path)


def test_wrong_shape_or_missing_file_fails_naming_the_file(store: FeatureStore) -> None:
    np.save(store.path / "boxes.npy", np.zeros((3, 3, 2, 4), np.float32))
    with pytest.raises(
        ValueError, match=r"boxes\.npy: array 'boxes' is float32\[3, 3, 2, 4\], manifest.json says"
    ):
        FeatureStore.open(store.path)
    (store.path / "boxes.npy").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"boxes\.npy: array 'boxes' listed in manifest.json is missing"
    ):
        FeatureStore.open(store.path)
    with pytest.raises(FileNotFoundError, match="manifest.json missing"):
        FeatureStore.open(store.path / "nowhere")


def test_refuses_to_overwrite_a_store(tmp_path: Path, store: FeatureStore) -> None:
    with pytest.raises(FileExistsError, match="non-empty folder"):
        _write_store(store.path)


def test_teacher_store_is_aligned_with_its_feature_store(tmp_path: Path, store: FeatureStore) -> None:
    text = np.ones((len(store), 3, 4, D), np.float16)
    teacher = write_teacher_store(
        tmp_path / "teacher", text, name="asmv2", store=store, teacher_model={"name": "t"}, synthetic=True
    )
    assert TeacherStore.open(teacher.path).name == "asmv2"
    teacher.verify()
    teacher.check_aligned(store)
    other = write_feature_store(
        tmp_path / "other", _samples(), np.zeros((len(store), 3, 4, D), np.float16), dataset="vidvrd",
        split="train", source="gt", feature_model={"name": "x"}, synthetic=True,
    )  # fmt: skip
    with pytest.raises(ValueError, match="teacher 'asmv2' was made for feature store"):
        PairDataset(other, teacher)


def test_pair_dataset_items_and_batches(tmp_path: Path, store: FeatureStore) -> None:
    vocab = load_vocabulary("vidvrd")
    rows = store.rows.rows_of_videos(["ILSVRC2015_train_00000002"])
    dataset = PairDataset(store, None, rows, interaction_mask=vocab.base_predicate_mask())
    item = dataset[0]
    assert item["visual"].shape == (3, 4, D) and item["visual"].dtype == torch.float32
    assert item["boxes"].shape == (3, 2, 4) and item["labels"].shape == (132,)
    assert item["teacher"].abs().sum() == 0 and not item["has_teacher"]
    assert item["subject_class"].dtype == torch.int64 and item["row"] == rows[0]
    batch = dataset.get_batch([3, 0, 2])
    assert batch["row"].tolist() == [rows[3], rows[0], rows[2]]
    np.testing.assert_array_equal(batch["visual"][0].numpy(), store.visual[rows[3]].astype(np.float32))
    collated = collate_pairs([dataset[3], dataset[0], dataset[2]])
    for key in batch:
        assert torch.equal(collated[key], batch[key]), key
    # 'chase' is base, 'sit_behind' novel: the interaction mask decides whether novel relations count
    labels = store.labels[rows]
    novel_only = (labels[:, vocab.base_predicate_mask()].sum(1) == 0) & (labels.sum(1) > 0)
    assert novel_only.any()
    all_batch = PairDataset(store, None, rows).get_batch(np.arange(len(rows)))
    base_batch = dataset.get_batch(np.arange(len(rows)))
    assert (
        all_batch["interaction"][novel_only].eq(1).all() and base_batch["interaction"][novel_only].eq(0).all()
    )


def test_split_videos_is_seeded_disjoint_and_keeps_both_sides() -> None:
    ids = [f"v{i:03d}" for i in range(50)]
    train, val = split_videos(ids, 0.2, seed=3)
    assert len(val) == 10 and not set(train) & set(val) and sorted(train + val) == ids
    assert split_videos(reversed(ids), 0.2, seed=3) == (train, val)
    assert split_videos(ids, 0.2, seed=4) != (train, val)
    assert split_videos(["a", "b"], 0.01, seed=0)[1] != [] and split_videos(ids, 0.0, seed=0)[1] == []
    with pytest.raises(ValueError, match="val_fraction"):
        split_videos(ids, 1.0, seed=0)
