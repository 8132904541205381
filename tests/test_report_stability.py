"""Fig. 4: classifier features under visual noise (sage_model.analysis) and their t-SNE in the report."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.report.paper import write_paper_tables
from harness.report.stability import stability_path, wants_stability
from harness.report.tables import build_paper_table
from harness.results import read_results
from harness.spec import load_study
from sage_model.analysis import (
    ClassifierFeatures,
    classifier_features_under_noise,
    load_stability,
    pick_classes,
    save_stability,
    tsne_2d,
)
from sage_model.clip import build_tiny_clip
from sage_model.config import ModelConfig, PromptConfig
from sage_model.data.vocab import Vocabulary
from sage_model.model.sage import build_model
from tests.report_data import META, write_study, write_trial

VOCAB = Vocabulary(
    dataset="vidvrd",
    base_objects=("person", "dog"),
    novel_objects=("bear",),
    base_predicates=("ride", "chase", "next_to"),
    novel_predicates=("watch", "fly_above"),
)
B, T, D = 4, 3, 32
LEVELS = (0.0, 0.3, 1.0)

STABILITY_YAML = """\
name: toy_stability
version: 1
description: "Toy Fig. 4 study for the report tests"
base:
  eval.stability_noise: [0.0, 0.3, 1.0]
variants:
  - name: "Image-Cond"
    overrides: {model.prompt.strategy: image_cond}
  - name: "Class-Aware"
    overrides: {model.prompt.strategy: class_aware}
seeds: [0]
datasets: [vidvrd]
"""


@pytest.fixture(scope="module")
def clip():
    return build_tiny_clip()


def batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    corners = torch.rand(B, T, 2, 2, 2, generator=g).sort(dim=2).values
    boxes = corners.permute(0, 1, 2, 4, 3).reshape(B, T, 2, 4)[..., [0, 2, 1, 3]]
    return {
        "visual": torch.randn(B, T, 4, D, generator=g),
        "boxes": boxes,
        "teacher": torch.randn(B, T, 4, 16),
    }


def features(clip, strategy: str) -> ClassifierFeatures:
    torch.manual_seed(0)
    cfg = ModelConfig(prompt=PromptConfig(strategy=strategy))
    model = build_model(cfg, VOCAB, D, teacher_dim=16, frames=T, clip=clip)
    model.set_stage(2)
    return classifier_features_under_noise(model, batch(), pick_classes(len(VOCAB.predicates), 3), LEVELS)


def test_class_aware_classifier_does_not_move_under_visual_noise(clip):
    feats = features(clip, "class_aware")
    assert feats.features.shape == (len(LEVELS) * B * 3, 64)
    assert feats.class_names == ("ride", "next_to", "fly_above")
    cosines = feats.mean_cosine_to_clean()
    assert list(cosines) == list(LEVELS)
    assert all(c == pytest.approx(1.0, abs=1e-5) for c in cosines.values())


@pytest.mark.slow
def test_image_conditional_classifier_moves_with_the_noise(clip):
    cosines = features(clip, "image_cond").mean_cosine_to_clean()
    assert cosines[0.0] == pytest.approx(1.0, abs=1e-5)
    assert cosines[1.0] < cosines[0.3] < 1.0 - 1e-6


def test_the_analysis_needs_the_stage_two_classifier(clip):
    model = build_model(ModelConfig(), VOCAB, D, teacher_dim=16, frames=T, clip=clip)
    with pytest.raises(ValueError, match="stage-2 classifier"):
        classifier_features_under_noise(model, batch(), pick_classes(5, 2), LEVELS)


@pytest.mark.slow
def test_stability_file_round_trips_and_tsne_is_reproducible(clip, tmp_path):
    feats = features(clip, "image_cond")
    loaded = load_stability(save_stability(tmp_path / "s.npz", feats))
    assert loaded.class_names == feats.class_names
    np.testing.assert_array_equal(loaded.features, feats.features)
    xy = tsne_2d(loaded.features, seed=0)
    assert xy.shape == (feats.features.shape[0], 2)
    np.testing.assert_allclose(xy, tsne_2d(loaded.features, seed=0))


@pytest.mark.slow
def test_report_draws_the_tsne_from_the_trials_files_and_notes_what_is_missing(clip, tmp_path):
    spec = load_study(write_study(tmp_path / "studies", STABILITY_YAML))
    assert wants_stability(spec)
    cell = {("predcls", "all", "map"): 10.0}
    for variant in ("Image-Cond", "Class-Aware"):
        write_trial(tmp_path / "results", "toy_stability", variant, 0, cell)
    frame = read_results(tmp_path / "results")
    trial_id = frame.filter(frame["variant"] == "Class-Aware")["trial_id"][0]
    save_stability(
        stability_path(tmp_path / "runs", "toy_stability", trial_id), features(clip, "class_aware")
    )
    outcome = write_paper_tables([spec], frame, tmp_path / "out", meta=META, runs_dir=tmp_path / "runs")
    assert (tmp_path / "out" / "plots" / "toy_stability-tsne.png").is_file()
    notes = outcome.tables[0].notes
    assert any(n.startswith("t-SNE: Image-Cond:") and "is missing" in n for n in notes)
    assert any(n.startswith("Class-Aware: mean cosine") and "1: 1.0000" in n for n in notes)
    assert "Class-Aware: mean cosine" in (tmp_path / "out" / "toy_stability.md").read_text()


def test_studies_without_the_analysis_get_no_tsne(tmp_path):
    spec = load_study(
        write_study(
            tmp_path / "studies",
            STABILITY_YAML.replace("eval.stability_noise: [0.0, 0.3, 1.0]", "train.stage1_epochs: 1"),
        )
    )
    assert not wants_stability(spec)
    table = build_paper_table(read_results(tmp_path / "none"), spec)
    assert table.notes == ()
