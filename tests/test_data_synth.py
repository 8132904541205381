"""The embedded synthetic datasets: official formats round-trip, stores, reuse, determinism, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sage_model.data import DatasetRoot, ensure_synthetic, ground_truth_relations, load_vocabulary
from sage_model.data.checks import check_annotation_folder
from sage_model.data.synth import SynthSpec, _rng, generate_video

VIDEOS = 4


@pytest.fixture(scope="module", params=["vidvrd", "vidor"])
def root(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> DatasetRoot:
    out = tmp_path_factory.mktemp("synth") / request.param
    return DatasetRoot.open(ensure_synthetic(request.param, out, VIDEOS, seed=0))


def test_annotations_are_in_the_official_layout_and_round_trip(root: DatasetRoot) -> None:
    vocab = load_vocabulary(root.dataset)
    pattern = "train/*.json" if root.dataset == "vidvrd" else "annotation/training/*/*.json"
    assert len(list(root.annotations_dir.glob(pattern))) == VIDEOS
    spec = SynthSpec(root.dataset, VIDEOS, 0)
    for split in ("train", "test"):
        rng = _rng(spec, split, "videos")
        generated = [generate_video(rng, vocab, split, i) for i in range(VIDEOS)]
        loaded = root.annotations(split)  # through the strict official-format loader
        assert ground_truth_relations(loaded) == ground_truth_relations(
            sorted(generated, key=lambda v: v.video_id)
        )
        for video in loaded:
            assert video.annotated_len % 15 == 0 and video.annotated_len <= video.frame_count
            assert all(f.begin % 15 == 0 and len(f) % 15 == 0 and len(f) >= 30 for f in video.fragments)
            assert all(r.begin_fid % 15 == 0 and r.end_fid - r.begin_fid >= 30 for r in video.relations)


def test_check_counts_agree_with_the_generator(root: DatasetRoot) -> None:
    counts = check_annotation_folder(root.path)
    assert counts["dataset"] == root.dataset
    for split, generated in root.info["splits"].items():
        for key in ("videos", "trajectories", "relation_instances", "segments"):
            assert counts["splits"][split][key] == generated[key], (split, key)


def test_stores_and_teachers_open_verify_and_align(root: DatasetRoot) -> None:
    assert root.synthetic and root.teacher_names() == ["asmv2", "blip2"]
    for split in ("train", "test"):
        for source in ("gt", "det"):
            store = root.feature_store(split, source)
            assert store.synthetic and store.feature_dim == 64 and len(store) > 0
            assert store.labels.shape[1] == len(root.vocabulary.predicates)
            store.verify()
            assert root.info["content_hashes"][f"features/{split}/{source}"] == store.content_hash
            for name in ("asmv2", "blip2"):
                teacher = root.teacher_store(name, split, source)
                teacher.check_aligned(store)
            assert root.teacher_store("none", split, source) is None
    tracklets = root.tracklets("test")
    assert set(tracklets) == {v.video_id for v in root.annotations("test")}


def test_existing_dataset_is_reused_and_a_different_one_refused(root: DatasetRoot) -> None:
    before = (root.path / "dataset.json").stat().st_mtime_ns
    assert ensure_synthetic(root.dataset, root.path, VIDEOS, seed=0) == root.path
    assert (root.path / "dataset.json").stat().st_mtime_ns == before
    with pytest.raises(ValueError, match="exists and is not the synthetic dataset"):
        ensure_synthetic(root.dataset, root.path, VIDEOS + 1, seed=0)


def test_generation_is_deterministic_per_seed(tmp_path: Path) -> None:
    a = DatasetRoot.open(ensure_synthetic("vidvrd", tmp_path / "a", 2, seed=5))
    b = DatasetRoot.open(ensure_synthetic("vidvrd", tmp_path / "b", 2, seed=5))
    c = DatasetRoot.open(ensure_synthetic("vidvrd", tmp_path / "c", 2, seed=6))
    assert a.info["content_hashes"] == b.info["content_hashes"]
    assert a.info["content_hashes"]["features/train/gt"] != c.info["content_hashes"]["features/train/gt"]


def test_a_larger_test_split_leaves_the_training_split_byte_identical(tmp_path: Path) -> None:
    """``test_videos`` (the studies' budget: 200) adds test videos only: every training array and
    annotation is the same bytes (only the manifests record the new setting), so a model trained on
    either root is the same model."""
    from sage_model.data import synthetic_root_name

    plain = DatasetRoot.open(ensure_synthetic("vidvrd", tmp_path / "plain", 2, seed=3))
    wide = DatasetRoot.open(ensure_synthetic("vidvrd", tmp_path / "wide", 2, seed=3, test_videos=5))
    compared = 0
    for path in sorted(plain.path.rglob("*")):
        relative = path.relative_to(plain.path)
        if path.is_file() and "train" in relative.parts and path.name not in ("manifest.json", "content_hash"):
            assert (wide.path / relative).read_bytes() == path.read_bytes(), relative
            compared += 1
    assert compared >= 8  # annotations, tracklets, both sources' arrays and teachers
    assert wide.info["content_hashes"]["features/test/gt"] != plain.info["content_hashes"]["features/test/gt"]
    assert len(wide.annotations("test")) == 5 and len(wide.annotations("train")) == len(plain.annotations("train"))
    assert wide.info["generator"]["test_videos"] == 5 and "test_videos" not in plain.info["generator"]
    assert synthetic_root_name("vidvrd", 2, 3, test_videos=5) == synthetic_root_name("vidvrd", 2, 3) + "-t5"
    with pytest.raises(ValueError, match="exists and is not the synthetic dataset"):
        ensure_synthetic("vidvrd", tmp_path / "plain", 2, seed=3, test_videos=5)
    with pytest.raises(ValueError, match="data.synthetic_test_videos"):
        ensure_synthetic("vidvrd", tmp_path / "bad", 2, seed=3, test_videos=1)


def test_wider_features_are_supported(tmp_path: Path) -> None:
    root = DatasetRoot.open(ensure_synthetic("vidor", tmp_path / "wide", 2, seed=0, feature_dim=96))
    store = root.feature_store("train", "gt")
    assert store.feature_dim == 96 and root.teacher_store("asmv2", "train", "gt").text.shape[-1] == 96
    assert np.isfinite(store.visual[:].astype(np.float32)).all()


def test_cli_synth_writes_a_dataset_root(tmp_path: Path) -> None:
    from harness.cli import app  # imports every command module: only here

    out = tmp_path / "cli"
    result = CliRunner().invoke(
        app, ["data", "synth", "--dataset", "vidor", "--out", str(out), "--videos", "2"]
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["dataset"] == "vidor" and printed["splits"]["train"]["videos"] == 2
    assert (out / "dataset.json").is_file() and (out / "tracklets" / "test.json").is_file()
    result = CliRunner().invoke(
        app, ["data", "synth", "--dataset", "vidvrd", "--out", str(out), "--videos", "2"]
    )
    assert result.exit_code == 2 and "exists and is not the synthetic dataset" in result.stderr
