"""Device discipline without a GPU: every tensor a training step touches lives on the batch's device.

CUDA refuses to index a CPU tensor with CUDA indices (the crash of issue #17: the training
vocabulary's ``object_target`` stayed on the CPU). The CPU cannot reproduce that error, so these
tests run the model on torch's ``meta`` device and watch every aten op through a dispatch mode:
an op that receives tensors of two devices is exactly the class of bug, found on the CPU.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from functools import cache

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from sage_model.clip import build_tiny_clip
from sage_model.config import ModelConfig, PromptConfig, SemanticConfig, TrainConfig
from sage_model.data.vocab import Vocabulary
from sage_model.model.sage import SageModel, build_model
from sage_model.train import TrainingVocabulary, seed_everything, train_two_stage
from sage_model.train.trainer import batch_loss

VOCAB = Vocabulary(
    "vidvrd", ("person", "dog", "car"), ("bear",), ("ride", "chase", "next_to"), ("watch", "fly_above")
)
B, T, D = 6, 3, 48

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class DeviceMixes(TorchDispatchMode):
    """Records every aten op called with non-scalar tensors of more than one device."""

    def __init__(self) -> None:
        super().__init__()
        self.mixes: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        flat, _ = tree_flatten((args, kwargs or {}))
        devices = {t.device.type for t in flat if isinstance(t, torch.Tensor) and t.dim() > 0}
        if len(devices) > 1:
            self.mixes.append(f"{func} on {sorted(devices)}")
        return func(*args, **(kwargs or {}))


def make_batch(device: str, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    corners = torch.rand(B, T, 2, 2, 2, generator=g).sort(dim=2).values
    batch = {
        "visual": torch.randn(B, T, 4, D, generator=g).half(),
        "boxes": corners.permute(0, 1, 2, 4, 3).reshape(B, T, 2, 4)[..., [0, 2, 1, 3]],
        "teacher": torch.randn(B, T, 4, 32, generator=g).half(),
        "labels": (torch.rand(B, 5, generator=g) < 0.4).to(torch.uint8),
        "subject_class": torch.tensor([0, 1, 2, 3, -1, 0], dtype=torch.int16),
        "object_class": torch.tensor([2, 0, 3, 1, 0, -1], dtype=torch.int16),
    }
    return {k: v.to(device) for k, v in batch.items()}


@cache
def cpu_model(strategy: str, fusion: str) -> SageModel:
    seed_everything(0)
    cfg = ModelConfig(prompt=PromptConfig(strategy=strategy), semantic=SemanticConfig(fusion=fusion))  # type: ignore[arg-type]
    return build_model(cfg, VOCAB, D, teacher_dim=32, frames=T, clip=build_tiny_clip())


def model_on(device: str, strategy: str = "class_aware", fusion: str = "cross_attention") -> SageModel:
    """A fresh copy of a tiny model (CLIP included: moving the model moves the CLIP modules it shares)."""
    return copy.deepcopy(cpu_model(strategy, fusion)).to(device)


def test_training_vocabulary_to_moves_every_tensor() -> None:
    vocab = TrainingVocabulary.from_counts(3, 3, 4).to("meta")
    for field in dataclasses.fields(vocab):
        assert getattr(vocab, field.name).device.type == "meta", field.name
    assert vocab.device.type == "meta"


STRATEGIES = ["class_aware", "image_cond", "none"]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("stage", [1, 2])
def test_training_step_mixes_no_devices(strategy: str, stage: int) -> None:
    """Forward, losses and backward of one batch, with model, batch and vocabulary on ``meta``."""
    model = model_on("meta", strategy)
    model.set_stage(stage)
    model.train()
    vocab = TrainingVocabulary.from_counts(3, 3, 4).to("meta")
    with DeviceMixes() as watch:
        terms = batch_loss(model, make_batch("meta"), vocab)
        if model.stage_parameters():
            terms.total.backward()
    assert watch.mixes == []
    assert terms.total.device.type == "meta"


def test_batch_loss_refuses_a_vocabulary_on_another_device() -> None:
    model = model_on("meta", fusion="none")
    with pytest.raises(ValueError, match=r"TrainingVocabulary.to\(device\)"):
        batch_loss(model, make_batch("meta"), TrainingVocabulary.from_counts(3, 3, 4))


class MemoryPairs:
    """A few random pairs in memory (the trainer's BatchSource)."""

    def __init__(self) -> None:
        self.data = make_batch("cpu")

    def __len__(self) -> int:
        return B

    def batches(self, batch_size, generator):  # type: ignore[no-untyped-def]
        order = torch.randperm(B, generator=generator) if generator is not None else torch.arange(B)
        for start in range(0, B, batch_size):
            yield {k: v[order[start : start + batch_size]] for k, v in self.data.items()}


class RecordingVocabulary(TrainingVocabulary):
    """A training vocabulary that remembers where it was asked to go."""

    moved_to: list[str] = []

    def to(self, device: torch.device | str) -> TrainingVocabulary:
        RecordingVocabulary.moved_to.append(str(device))
        return super().to(device)


def test_trainer_moves_the_vocabulary_to_its_device() -> None:
    model = model_on("cpu")
    cfg = TrainConfig(stage1_epochs=1, stage2_epochs=1, batch_size=3, val_fraction=0.0)
    base = TrainingVocabulary.from_counts(3, 3, 4)
    vocab = RecordingVocabulary(base.base_predicates, base.base_objects, base.object_target)
    summary = train_two_stage(model, MemoryPairs(), vocab, cfg, device=torch.device("cpu"), seed=0)
    assert RecordingVocabulary.moved_to == ["cpu"]
    assert [(r.stage, r.epoch) for r in summary.history] == [(1, 1), (2, 1)]
    assert all(math.isfinite(r.metrics["train/loss"]) for r in summary.history)


def test_moving_the_model_drops_cached_classifiers() -> None:
    model = model_on("cpu")
    model.set_stage(2)
    model.eval()
    with torch.no_grad():
        model.classifier(torch.arange(3))
    assert model._cache
    model.to("cpu")
    assert not model._cache
