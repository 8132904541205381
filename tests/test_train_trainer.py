"""Two-stage trainer: determinism, checkpoint/resume, per-epoch reports, model selection on validation."""

from __future__ import annotations

import pytest
import torch

from sage_model.clip import build_tiny_clip
from sage_model.config import ModelConfig, SemanticConfig, TrainConfig
from sage_model.data.vocab import Vocabulary
from sage_model.model.sage import SageModel, build_model
from sage_model.train import EpochReport, TrainingVocabulary, seed_everything, train_two_stage
from sage_model.train.trainer import resolve_device

VOCAB = Vocabulary(
    "vidvrd", ("person", "dog", "car"), ("bear",), ("ride", "chase", "next_to"), ("watch", "fly_above")
)
TRAIN_VOCAB = TrainingVocabulary.from_counts(3, 3, 4)
N, T, D = 24, 3, 64


class RandomPairs:
    """A fixed random training set in memory (the trainer's BatchSource)."""

    def __init__(self, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        corners = torch.rand(N, T, 2, 2, 2, generator=g).sort(dim=2).values
        self.data = {
            "visual": torch.randn(N, T, 4, D, generator=g),
            "boxes": corners.permute(0, 1, 2, 4, 3).reshape(N, T, 2, 4)[..., [0, 2, 1, 3]],
            "teacher": torch.randn(N, T, 4, D, generator=g),
            "labels": (torch.rand(N, 5, generator=g) < 0.3).float(),
            "subject_class": torch.randint(-1, 4, (N,), generator=g),
            "object_class": torch.randint(-1, 4, (N,), generator=g),
        }

    def __len__(self) -> int:
        return N

    def batches(self, batch_size, generator):
        order = torch.randperm(N, generator=generator) if generator is not None else torch.arange(N)
        for start in range(0, N, batch_size):
            idx = order[start : start + batch_size]
            yield {k: v[idx] for k, v in self.data.items()}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def clip():
    return build_tiny_clip()


def fresh_model(clip, seed: int = 0) -> SageModel:
    seed_everything(seed)
    return build_model(ModelConfig(), VOCAB, D, teacher_dim=D, frames=T, clip=clip)


CFG = TrainConfig(stage1_epochs=2, stage2_epochs=2, batch_size=8, milestones=(1,), val_fraction=0.0)


def run(clip, tmp_path=None, on_epoch=None, cfg=CFG, validate=None, seed=0):
    model = fresh_model(clip, seed)
    summary = train_two_stage(
        model,
        RandomPairs(),
        TRAIN_VOCAB,
        cfg,
        device=torch.device("cpu"),
        seed=seed,
        checkpoint_dir=tmp_path,
        fingerprint="test",
        validate=validate,
        on_epoch=on_epoch,
    )
    return model, summary


def state(model: SageModel) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.trainable_state().items()}


@pytest.mark.slow
def test_same_seed_on_cpu_gives_identical_numbers(clip):
    a, sa = run(clip)
    b, sb = run(clip)
    assert [r.metrics["train/loss"] for r in sa.history] == [r.metrics["train/loss"] for r in sb.history]
    for key, value in state(a).items():
        assert torch.equal(value, state(b)[key]), key
    c, sc = run(clip, seed=1)
    assert sc.history[0].metrics["train/loss"] != sa.history[0].metrics["train/loss"]


def test_every_epoch_of_both_stages_is_reported_through_the_callback(clip):
    reports: list[EpochReport] = []
    _, summary = run(clip, on_epoch=reports.append)
    assert [(r.stage, r.epoch, r.step) for r in reports] == [(1, 1, 0), (1, 2, 1), (2, 1, 2), (2, 2, 3)]
    assert reports == summary.history
    assert {"train/loss", "train/l_rel", "train/l_kg", "train/lr", "train/samples_per_s"} <= set(
        reports[0].metrics
    )
    # stage 1 classifies with W_clip itself: zero up to float32 rounding (-1.2e-7 on one CPU)
    assert abs(reports[0].metrics["train/l_kg"]) < 1e-6
    assert reports[1].metrics["train/lr"] == pytest.approx(1e-4)  # MultiStep decay after epoch 1


class Interrupt(Exception):
    pass


@pytest.mark.slow
def test_an_interrupted_run_resumes_to_the_numbers_of_an_uninterrupted_one(clip, tmp_path):
    reference, ref_summary = run(clip, tmp_path / "a")

    def crash_at(stage: int, epoch: int):
        def on_epoch(report: EpochReport) -> None:
            if (report.stage, report.epoch) == (stage, epoch):
                raise Interrupt

        return on_epoch

    for crash in ((1, 2), (2, 2)):
        work = tmp_path / f"b{crash}"
        with pytest.raises(Interrupt):
            run(clip, work, on_epoch=crash_at(*crash))
        after: list[EpochReport] = []
        resumed, summary = run(clip, work, on_epoch=after.append)
        assert summary.resumed_from is not None
        # the curves go on where the checkpoint left them (the crashed epoch is redone)
        assert [r.step for r in after] == list(range(3 if crash == (2, 2) else 1, 4))
        assert [r.step for r in summary.history] == [0, 1, 2, 3]
        assert [r.metrics["train/loss"] for r in summary.history] == [
            r.metrics["train/loss"] for r in ref_summary.history
        ]
        for key, value in state(reference).items():
            assert torch.equal(value, state(resumed)[key]), f"{crash}: {key}"


def test_a_checkpoint_of_another_configuration_is_refused(clip, tmp_path):
    run(clip, tmp_path)
    model = fresh_model(clip)
    with pytest.raises(ValueError, match="checkpoint of another configuration"):
        train_two_stage(model, RandomPairs(), TRAIN_VOCAB, CFG, device=torch.device("cpu"), seed=0,
                        checkpoint_dir=tmp_path, fingerprint="other")  # fmt: skip


def test_selection_on_validation_keeps_the_best_epoch_of_each_stage(clip):
    snapshots: dict[tuple[int, int], dict[str, torch.Tensor]] = {}
    holder: dict[str, SageModel] = {}
    scores = iter([5.0, 1.0, 3.0, 7.0])  # best: stage 1 epoch 1, stage 2 epoch 2

    def validate(model: SageModel) -> dict[str, float]:
        holder["model"] = model
        return {"val/predcls_all_map": next(scores)}

    def on_epoch(report: EpochReport) -> None:
        snapshots[(report.stage, report.epoch)] = state(holder["model"])

    cfg = CFG.model_copy(update={"select_on": "val"})
    model, _ = run(clip, on_epoch=on_epoch, cfg=cfg, validate=validate)
    final = state(model)
    best1, best2 = snapshots[(1, 1)], snapshots[(2, 2)]
    visual = [k for k in final if k.startswith("spatio_temporal.")]
    prompt = [k for k in final if k.startswith("prompt.")]
    assert all(torch.equal(final[k], best1[k]) for k in visual)
    assert not all(torch.equal(snapshots[(1, 2)][k], best1[k]) for k in visual)
    assert all(torch.equal(final[k], best2[k]) for k in prompt)


def test_without_stage_two_inference_keeps_the_stage_one_classifier(clip):
    cfg = CFG.model_copy(update={"stage2_epochs": 0})
    model, summary = run(clip, cfg=cfg)
    assert model.stage == 1 and not model.training
    assert {r.stage for r in summary.history} == {1}


def test_without_anything_to_train_in_stage_two_the_stage_is_skipped(clip):
    seed_everything(0)
    model = build_model(
        ModelConfig(prompt={"strategy": "none"}, adapters={"visual": False, "text": False},
                    semantic=SemanticConfig(fusion="none")),
        VOCAB, D, frames=T, clip=clip,
    )  # fmt: skip
    summary = train_two_stage(model, RandomPairs(), TRAIN_VOCAB, CFG, device=torch.device("cpu"), seed=0)
    assert {r.stage for r in summary.history} == {1}


def test_auto_device_is_the_cpu_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(ValueError, match="train.device"):
        resolve_device("cuda")
