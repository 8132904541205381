"""SAGE on CUDA: both training stages under bf16 autocast, prediction, evaluation, Table 10 speed.

Marked ``gpu``: skipped without CUDA (``python -m pytest -m gpu``; ``benchmarks/gpu_check.sh``).
``SAGE_GPU_TESTS_ON_CPU=1`` runs the same bodies on the CPU to check the tests themselves.
The CPU-side guard against the device bugs these tests would find is tests/test_train_device.py.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sage_model.clip import build_tiny_clip
from sage_model.config import ExperimentConfig, ModelConfig, PromptConfig, TrainConfig
from sage_model.data.vocab import Vocabulary
from sage_model.experiment import run_experiment
from sage_model.model.predict import score_pairs
from sage_model.model.sage import SageModel, build_model
from sage_model.train import TrainingVocabulary, seed_everything, train_two_stage

pytestmark = [pytest.mark.gpu]

VOCAB = Vocabulary(
    "vidvrd", ("person", "dog", "car"), ("bear",), ("ride", "chase", "next_to"), ("watch", "fly_above")
)
N, T, D = 40, 3, 64


class RandomPairs:
    """A fixed random training set in memory, on the CPU like a real store's batches."""

    def __init__(self, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        corners = torch.rand(N, T, 2, 2, 2, generator=g).sort(dim=2).values
        self.data = {
            "visual": torch.randn(N, T, 4, D, generator=g).half(),
            "boxes": corners.permute(0, 1, 2, 4, 3).reshape(N, T, 2, 4)[..., [0, 2, 1, 3]],
            "teacher": torch.randn(N, T, 4, D, generator=g).half(),
            "labels": (torch.rand(N, 5, generator=g) < 0.3).to(torch.uint8),
            "subject_class": torch.randint(-1, 4, (N,), generator=g).to(torch.int16),
            "object_class": torch.randint(-1, 4, (N,), generator=g).to(torch.int16),
        }

    def __len__(self) -> int:
        return N

    def batches(self, batch_size, generator):  # type: ignore[no-untyped-def]
        order = torch.randperm(N, generator=generator) if generator is not None else torch.arange(N)
        for start in range(0, N, batch_size):
            yield {k: v[order[start : start + batch_size]] for k, v in self.data.items()}

    def get_batch(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        return {k: v[torch.as_tensor(indices)] for k, v in self.data.items()}


def fresh_model(strategy: str = "class_aware") -> SageModel:
    seed_everything(0)
    cfg = ModelConfig(prompt=PromptConfig(strategy=strategy))  # type: ignore[arg-type]
    return build_model(cfg, VOCAB, D, teacher_dim=D, frames=T, clip=build_tiny_clip())


@pytest.mark.parametrize("strategy", ["class_aware", "image_cond"])
def test_both_stages_train_on_the_device_under_bf16_autocast(
    gpu_device: torch.device, strategy: str, tmp_path: Path
) -> None:
    model = fresh_model(strategy)
    before = {k: v.clone() for k, v in model.trainable_state().items()}
    dtypes: list[torch.dtype] = []
    model.relation_proj.register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype))
    cfg = TrainConfig(
        stage1_epochs=2, stage2_epochs=2, batch_size=8, milestones=(1,), amp=True, val_fraction=0.0
    )
    summary = train_two_stage(
        model, RandomPairs(), TrainingVocabulary.from_counts(3, 3, 4), cfg,
        device=gpu_device, seed=0, checkpoint_dir=tmp_path, fingerprint="gpu",
    )  # fmt: skip
    assert [(r.stage, r.epoch) for r in summary.history] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert all(math.isfinite(r.metrics["train/loss"]) for r in summary.history)
    assert {p.device.type for p in model.parameters()} == {gpu_device.type}
    expected = torch.bfloat16 if gpu_device.type == "cuda" else torch.float32
    assert set(dtypes) == {expected}
    after = model.trainable_state()
    assert not torch.equal(before["relation_proj.weight"], after["relation_proj.weight"].cpu())  # stage 1
    assert not torch.equal(
        before["text_adapter.body.2.weight"], after["text_adapter.body.2.weight"].cpu()
    )  # stage 2
    # a checkpoint written on the device resumes there: nothing left to train, history intact
    resumed = train_two_stage(
        fresh_model(strategy), RandomPairs(), TrainingVocabulary.from_counts(3, 3, 4), cfg,
        device=gpu_device, seed=0, checkpoint_dir=tmp_path, fingerprint="gpu",
    )  # fmt: skip
    assert resumed.resumed_from == (2, 2) and len(resumed.history) == 4


def test_prediction_on_the_device_matches_the_cpu(gpu_device: torch.device) -> None:
    model = fresh_model()
    model.set_stage(2)
    pairs, preds, objs = RandomPairs(1), torch.arange(5), torch.arange(4)
    on_cpu = score_pairs(model, pairs, preds, objs, batch_size=16)
    on_device = score_pairs(copy.deepcopy(model).to(gpu_device), pairs, preds, objs, batch_size=16)
    np.testing.assert_allclose(on_device.predicate, on_cpu.predicate, atol=2e-3)
    np.testing.assert_allclose(on_device.subject, on_cpu.subject, atol=2e-3)


@pytest.fixture(scope="module")
def data_cache(tmp_path_factory):  # type: ignore[no-untyped-def]
    cache = tmp_path_factory.mktemp("sage_data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SAGE_DATA_CACHE", str(cache))
        yield cache


def experiment_config(device: torch.device, strategy: str) -> ExperimentConfig:
    return ExperimentConfig.model_validate({
        "model": {"prompt": {"strategy": strategy}},
        "data": {"synthetic_videos": 4, "max_train_videos": 1, "max_test_videos": 1},
        "train": {"stage1_epochs": 1, "stage2_epochs": 1, "val_fraction": 0.25, "device": device.type},
        "eval": {"tasks": ["sgdet", "sgcls", "predcls"], "measure_speed": True},
    })  # fmt: skip


@pytest.fixture(scope="module")
def experiments(gpu_device, data_cache, tmp_path_factory):  # type: ignore[no-untyped-def]
    """One Table 10 pair: Ours and Image-Cond trained and scored on the device."""
    return {
        strategy: run_experiment(
            experiment_config(gpu_device, strategy), work_dir=tmp_path_factory.mktemp(strategy)
        )
        for strategy in ("class_aware", "image_cond")
    }


def test_a_trial_trains_predicts_and_evaluates_every_task_on_the_device(experiments, gpu_device) -> None:
    for result in experiments.values():
        assert result.device.startswith(f"{gpu_device.type}:")
        detection = [m for m in result.metrics if m.name not in ("params_m", "fps")]
        assert {(m.task, m.split) for m in detection} >= {(t, "all") for t in ("sgdet", "sgcls", "predcls")}
        assert all(0.0 <= m.value <= 100.0 for m in detection)
        assert all(path.is_file() for path in result.predictions.values())


def test_table10_speed_is_measured_and_class_aware_inference_is_faster(experiments) -> None:
    """Image-Cond runs the text tower for every pair; Ours computes its classifier once."""
    fps = {
        strategy: {m.task: m.value for m in result.metrics if m.name == "fps"}
        for strategy, result in experiments.items()
    }
    assert set(fps["class_aware"]) == set(fps["image_cond"]) == {"sgdet", "sgcls", "predcls"}
    assert all(v > 0 for f in fps.values() for v in f.values())
    assert fps["class_aware"]["predcls"] > fps["image_cond"]["predcls"]
