"""Two-stage training of SAGE with per-epoch reports, model selection and checkpoint/resume.

Stage 1 trains the visual modules against the frozen hand-crafted classifier ``W_clip``;
stage 2 freezes them and trains the class enhancement (prompts, TKE, adapters). Each stage has
its own AdamW and MultiStep schedule (milestones counted in epochs of that stage). Training
sees base classes only: the label columns of novel predicates are dropped, novel objects are
ignored by the object loss, and the interaction target is "has a base predicate" (OV-MMP
derives it from all predicates, which leaks the novel labels into training).

A checkpoint is written after every epoch (atomically); a run that finds one resumes after
the last finished epoch with the same optimiser, schedule and RNG state, so an interrupted
and resumed run gives the numbers of an uninterrupted one.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from sage_model.config import TrainConfig
from sage_model.model.losses import IGNORE, LossTerms, sage_loss
from sage_model.model.sage import SageModel
from sage_model.records import EpochReport  # re-exported: the harness contract names it here
from sage_model.train.seeding import rng_state, set_rng_state

log = logging.getLogger(__name__)
CHECKPOINT_NAME = "checkpoint.pt"
SELECT_METRIC = "val/predcls_all_map"


class BatchSource(Protocol):
    """Training pairs as batches of tensors (keys of ``sage_model.data.PairDataset``)."""

    def __len__(self) -> int: ...

    def batches(self, batch_size: int, generator: torch.Generator | None) -> Iterator[dict[str, Tensor]]:
        """Shuffled batches when ``generator`` is given, in row order otherwise."""
        ...


@dataclass(frozen=True)
class TrainingVocabulary:
    """Which classes training may see: base predicates and base objects (index tensors)."""

    base_predicates: Tensor  # (Pb,) long indices into the full predicate vocabulary
    base_objects: Tensor  # (Ob,) long indices into the full object vocabulary
    object_target: Tensor  # (O + 1,) long: full object index + 1 -> base position or IGNORE

    @classmethod
    def from_counts(cls, n_base_predicates: int, n_base_objects: int, n_objects: int) -> TrainingVocabulary:
        """Vocabularies list base classes first, so the base classes are index prefixes."""
        target = torch.full((n_objects + 1,), IGNORE, dtype=torch.long)
        target[1 : n_base_objects + 1] = torch.arange(n_base_objects)  # slot 0 = unknown (-1)
        return cls(torch.arange(n_base_predicates), torch.arange(n_base_objects), target)

    @property
    def device(self) -> torch.device:
        return self.object_target.device

    def to(self, device: torch.device | str) -> TrainingVocabulary:
        """The same vocabulary on ``device``: it indexes batch tensors, so it must live where they do
        (a CUDA index into a CPU tensor is an error; a CPU index into a CUDA tensor a host sync)."""
        return TrainingVocabulary(
            self.base_predicates.to(device), self.base_objects.to(device), self.object_target.to(device)
        )


@dataclass
class TrainSummary:
    history: list[EpochReport] = field(default_factory=list)
    wall_s: float = 0.0
    samples_per_s: float = 0.0
    resumed_from: tuple[int, int] | None = None


def resolve_device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ValueError("train.device: 'cuda' requested but CUDA is not available")
        return torch.device("cuda")
    return torch.device("cpu")


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA (no loss scaling needed); nothing on the CPU."""
    if device.type == "cuda" and enabled:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def to_device(batch: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, Tensor) else v) for k, v in batch.items()}


def batch_loss(model: SageModel, batch: dict[str, Tensor], vocab: TrainingVocabulary) -> LossTerms:
    """Forward one batch on the training classes and compute L.

    ``vocab`` must sit on the batch's device (:meth:`TrainingVocabulary.to`); checked here because
    CUDA's own error names neither tensor.
    """
    if vocab.device != batch["labels"].device:
        raise ValueError(
            f"batch_loss: the training vocabulary is on {vocab.device}, the batch on "
            f"{batch['labels'].device}; move it with TrainingVocabulary.to(device)"
        )
    out = model(batch, vocab.base_predicates, vocab.base_objects)
    labels = batch["labels"][:, vocab.base_predicates].float()  # (B, Pb): novel columns masked
    return sage_loss(
        rel_logits=out.rel_logits,
        labels=labels,
        int_logit=out.int_logit,
        interaction=labels.amax(dim=1),
        subject_logits=out.subject_logits,
        object_logits=out.object_logits,
        subject_target=vocab.object_target[batch["subject_class"].long() + 1],
        object_target=vocab.object_target[batch["object_class"].long() + 1],
        classifier=out.classifier,
        knowledge=out.knowledge,
        cfg=model.cfg.loss,
    )


def stage_has_work(model: SageModel, stage: int, epochs: int) -> bool:
    model.set_stage(stage)
    return epochs > 0 and bool(model.stage_parameters())


def run_epoch(
    model: SageModel,
    source: BatchSource,
    vocab: TrainingVocabulary,
    optimizer: torch.optim.Optimizer,
    cfg: TrainConfig,
    device: torch.device,
    generator: torch.Generator,
) -> dict[str, float]:
    """One pass over the training pairs; returns mean losses and throughput.

    Loss sums stay on the device; the only host sync per step is the finiteness check.
    """
    model.train()
    names = ("loss", "l_rel", "l_obj", "l_int", "l_kg")
    sums = torch.zeros(len(names), dtype=torch.float64, device=device)  # pair-weighted loss sums
    seen, start = 0, time.perf_counter()
    batch_size = cfg.stage2_batch_size if model.stage == 2 and cfg.stage2_batch_size else cfg.batch_size
    for batch in source.batches(batch_size, generator):
        batch = to_device(batch, device)
        with autocast(device, cfg.amp):
            terms = batch_loss(model, batch, vocab)
        parts = torch.stack([terms.total.detach(), terms.rel, terms.obj, terms.int, terms.kg]).double()
        if not bool(torch.isfinite(parts[0])):
            raise FloatingPointError(
                f"stage {model.stage}: non-finite loss {dict(zip(names, parts.tolist(), strict=True))} (lr {cfg.lr})"
            )
        optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        optimizer.step()
        n = int(batch["labels"].shape[0])
        seen += n
        sums += parts * n
    elapsed = time.perf_counter() - start
    metrics = {f"train/{k}": v / max(seen, 1) for k, v in zip(names, sums.tolist(), strict=True)}
    metrics["train/samples_per_s"] = seen / max(elapsed, 1e-9)
    metrics["train/lr"] = optimizer.param_groups[0]["lr"]
    return metrics


def _save(path: Path, state: dict[str, object]) -> None:
    """Write the checkpoint atomically: a temp file, flushed to the disk, renamed over the old one.

    A kill mid-write (a lost node, the OOM killer) leaves the previous checkpoint whole and a stray
    temp file that the next save overwrites; on a shared filesystem (NFS) the rename is atomic too.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


@dataclass
class Best:
    """The best-validated epoch of a stage so far (``train.select_on: val``)."""

    value: float = -math.inf
    state: dict[str, Tensor] | None = None


@dataclass
class StageRun:
    """Everything one stage needs besides the model (shared by both stages)."""

    source: BatchSource
    vocab: TrainingVocabulary
    cfg: TrainConfig
    device: torch.device
    seed: int
    ckpt_path: Path | None
    fingerprint: str
    validate: Callable[[SageModel], dict[str, float]] | None
    on_epoch: Callable[[EpochReport], None] | None
    summary: TrainSummary


def train_two_stage(
    model: SageModel,
    source: BatchSource,
    vocab: TrainingVocabulary,
    cfg: TrainConfig,
    *,
    device: torch.device,
    seed: int,
    checkpoint_dir: Path | None = None,
    fingerprint: str = "",
    validate: Callable[[SageModel], dict[str, float]] | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> TrainSummary:
    """Train stage 1 then stage 2; returns the per-epoch history (also sent to ``on_epoch``).

    ``validate`` scores the model on held-out training videos (never the test split); with
    ``cfg.select_on == "val"`` each stage ends on its best-validated epoch. ``fingerprint``
    identifies the configuration: a checkpoint written under another one is refused.
    """
    started = time.perf_counter()
    model.to(device)
    vocab = vocab.to(device)
    ckpt_path = None
    if checkpoint_dir is not None:
        Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
        ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAME
    run = StageRun(
        source, vocab, cfg, device, seed, ckpt_path, fingerprint, validate, on_epoch, TrainSummary()
    )
    resume = _load_checkpoint(ckpt_path, fingerprint)
    if resume is not None:
        run.summary.resumed_from = (int(resume["stage"]), int(resume["epoch"]))
        run.summary.history = [EpochReport(**r) for r in resume["history"]]
    samples = 0
    for stage, epochs in ((1, cfg.stage1_epochs), (2, cfg.stage2_epochs)):
        if resume is not None and stage < int(resume["stage"]):
            continue
        if not stage_has_work(model, stage, epochs):
            log.info("stage %d: nothing to train (epochs=%d)", stage, epochs)
            continue
        here = resume if resume is not None and stage == int(resume["stage"]) else None
        samples += _train_stage(model, stage, epochs, run, here)
        resume = None
    model.set_stage(2 if _trained_stage2(model, cfg) else 1)
    model.eval()
    run.summary.wall_s = time.perf_counter() - started
    run.summary.samples_per_s = samples / max(run.summary.wall_s, 1e-9)
    return run.summary


def _train_stage(model: SageModel, stage: int, epochs: int, run: StageRun, resume: dict | None) -> int:
    """The epochs of one stage (from a checkpoint of this stage if given); returns samples seen."""
    cfg = run.cfg
    optimizer = torch.optim.AdamW(model.stage_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(cfg.milestones), gamma=cfg.lr_decay)
    first, best = 1, Best()
    if resume is not None:
        model.load_trainable_state(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        set_rng_state(resume["rng"])
        first, best = int(resume["epoch"]) + 1, Best(**resume["best"])
    samples = 0
    for epoch in range(first, epochs + 1):
        generator = torch.Generator().manual_seed(run.seed * 1000 + stage * 100 + epoch)
        metrics = run_epoch(model, run.source, run.vocab, optimizer, cfg, run.device, generator)
        scheduler.step()
        samples += len(run.source)
        if run.validate is not None:
            model.eval()
            metrics.update(run.validate(model))
            value = metrics.get(SELECT_METRIC, -math.inf)
            if cfg.select_on == "val" and value > best.value:
                best = Best(value, {k: v.detach().clone() for k, v in model.trainable_state().items()})
        # the global epoch index: the history is restored from the checkpoint, so it continues
        report = EpochReport(stage=stage, epoch=epoch, metrics=metrics, step=len(run.summary.history))
        run.summary.history.append(report)
        if run.on_epoch is not None:
            run.on_epoch(report)
        if run.ckpt_path is not None:
            _save(run.ckpt_path, {
                "fingerprint": run.fingerprint, "stage": stage, "epoch": epoch,
                "model": model.trainable_state(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": rng_state(), "best": best.__dict__,
                "history": [r.__dict__ for r in run.summary.history],
            })  # fmt: skip
    if cfg.select_on == "val" and best.state is not None:
        model.load_trainable_state(best.state)
        log.info("stage %d: kept the epoch with %s = %.3f", stage, SELECT_METRIC, best.value)
    return samples


def _trained_stage2(model: SageModel, cfg: TrainConfig) -> bool:
    """Inference uses the stage-2 classifier only if stage 2 had something to train."""
    if cfg.stage2_epochs <= 0:
        return False
    model.set_stage(2)
    return bool(model.stage_parameters())


def _load_checkpoint(path: Path | None, fingerprint: str) -> dict | None:
    """The checkpoint to resume from, or None to start at epoch 1.

    An unreadable checkpoint (cut short by a copy, a disk error, a torch that cannot read it) is
    reported as a warning and training starts from scratch: losing the epochs is better than a
    trial that can never finish. One of another configuration is an error (wrong folder).
    """
    if path is None or not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(state, dict) or not {"stage", "epoch", "history"} <= state.keys():
            raise ValueError("not a training checkpoint (no stage, epoch or history)")
    except Exception as exc:  # any failure to read it means the same: no usable checkpoint
        log.warning("%s: unreadable checkpoint (%s: %s); training starts from epoch 1", path,
                    type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")  # fmt: skip
        return None
    if state.get("fingerprint") != fingerprint:
        raise ValueError(
            f"{path}: checkpoint of another configuration (fingerprint {state.get('fingerprint')!r}, "
            f"expected {fingerprint!r}); delete it or use another work_dir"
        )
    log.info("resuming from %s (stage %s, epoch %s)", path, state["stage"], state["epoch"])
    return state
