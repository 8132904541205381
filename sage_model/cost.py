"""What one trial's model costs per step and at its peak, measured in seconds on this machine.

``harness run --dry-run`` turns these per-step numbers into wall time and GPU-hours with the
schedule and the data size (``harness.estimate``). Measured here:

* seconds per optimiser step of stage 1 and stage 2 at the training batch: timed at that batch
  (best of 3 after a warm-up) where a step is cheap per pair (stage 1; stage 2 of class-aware and
  hand-crafted prompts, whose text pass runs once per step whatever the batch), and fitted as
  ``a + b * batch`` from two small probe batches for Image-Cond's stage 2 (a full ViT-B/16
  Image-Cond step at batch 32 takes minutes on a CPU; its cost is a text pass per pair, linear in
  the batch). Why not fit everywhere: on a small model the steps at batches 2 and 4 differ by
  less than their timing noise, and the slope extrapolated 8x to batch 32 overestimated the
  embedded default's trials 2-3x and varied 2x between runs (docs/data.md 9.3);
* seconds per pair at inference (every predicate scored; the class-aware classifier cached);
* peak device memory of training at the real batch: ``torch.cuda.max_memory_allocated`` on a GPU;
  without one, the same steps on fake tensors (no arithmetic, every allocation and free counted:
  :class:`LiveBytes`), as the CUDA path runs them (Image-Cond's text tower unsliced). The CUDA
  context (~0.5 GiB) and allocator slack are not in either number.

Random inputs of the store's shapes; timing does not need data or trained weights.
"""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from sage_model.model import prompts
from sage_model.model.sage import SageModel
from sage_model.train.trainer import TrainingVocabulary, autocast, batch_loss

#: Stage-2 probe batches of the strategies whose per-pair cost is too high to time at the real batch.
#: Why 4 and 8, not 1 and 2: Image-Cond computes each pair's shared prompt prefix once; at 1-2 pairs
#: the fixed per-step work hides that and the default's trial was estimated 2.4x too long (35m52s
#: against 15m05s measured); at 4-8, 1.4x (20m48s). A ViT-B/16 probe on a CPU then takes minutes.
PROBE_BATCHES = {"image_cond": (4, 8)}
REPEATS = 3  # best of, after one warm-up step
INFER_BATCH = {"class_aware": 64, "none": 64, "image_cond": 8}


@dataclass(frozen=True)
class StepCosts:
    """Per-step costs of one model shape on one device."""

    device: str
    stage1_s: float  # seconds per stage-1 step at ``batch``
    stage2_s: float  # seconds per stage-2 step at ``stage2_batch`` (0 when stage 2 trains nothing)
    infer_pair_s: float  # seconds per pair at inference with the stage-2 classifier
    infer1_pair_s: float  # ... with the stage-1 classifier (W_clip: per-epoch validation in stage 1)
    batch: int
    stage2_batch: int
    peak_mb: float  # peak device memory of a training step at the real batch (MiB)
    peak_source: str  # "measured" (CUDA) or "fake-tensor estimate"
    measure_s: float  # what measuring took


class LiveBytes(TorchDispatchMode):
    """Counts the bytes of every storage created under it while alive; keeps the peak.

    Storages are followed with ``weakref.finalize`` (torch keeps one Python object per storage),
    so a freed activation leaves the count the moment it is freed, as in the CUDA allocator.
    """

    def __init__(self, resident: Iterable[torch.Tensor] = ()) -> None:
        """``resident``: tensors already allocated (weights, the batch); counted once from the start,
        and never again through a view."""
        super().__init__()
        storages = {id(t.untyped_storage()): t.untyped_storage().nbytes() for t in resident}
        self._seen: set[int] = set(storages)
        self.now = sum(storages.values())
        self.peak = self.now

    def _release(self, key: int, nbytes: int) -> None:
        self._seen.discard(key)
        self.now -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                key = id(storage)
                if key not in self._seen:
                    self._seen.add(key)
                    self.now += storage.nbytes()
                    weakref.finalize(storage, self._release, key, storage.nbytes())
        self.peak = max(self.peak, self.now)
        return out


def random_batch(
    n: int, model: SageModel, feature_dim: int, teacher_dim: int, frames: int
) -> dict[str, torch.Tensor]:
    """Inputs of a store's shapes and dtypes for ``n`` pairs (on the CPU)."""
    g = torch.Generator().manual_seed(n)
    corners = torch.rand(n, frames, 2, 2, 2, generator=g).sort(dim=2).values
    n_objects = len(model.objects)
    return {
        "visual": torch.randn(n, frames, 4, feature_dim, generator=g).half(),
        "boxes": corners.permute(0, 1, 2, 4, 3).reshape(n, frames, 2, 4)[..., [0, 2, 1, 3]],
        "teacher": torch.randn(n, frames, 4, teacher_dim, generator=g).half(),
        "labels": (torch.rand(n, len(model.predicates), generator=g) < 0.02).to(torch.uint8),
        "subject_class": torch.randint(0, n_objects, (n,), generator=g).to(torch.int16),
        "object_class": torch.randint(0, n_objects, (n,), generator=g).to(torch.int16),
    }


@contextmanager
def unsliced_text_tower() -> Iterator[None]:
    """Image-Cond's text tower in one piece, as on a GPU (the CPU path runs it in slices)."""
    before = prompts.CPU_SLICE_ROWS
    prompts.CPU_SLICE_ROWS = 1 << 30
    try:
        yield
    finally:
        prompts.CPU_SLICE_ROWS = before


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_of(fn: Callable[[], None], repeats: int, device: torch.device) -> float:
    best = math.inf
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def _train_step(model: SageModel, vocab: TrainingVocabulary, device: torch.device, amp: bool) -> Callable:
    optimizer = torch.optim.AdamW(model.stage_parameters(), lr=1e-4)

    def step(batch: dict[str, torch.Tensor]) -> None:
        with autocast(device, amp):
            terms = batch_loss(model, batch, vocab)
        optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        optimizer.step()

    return step


def _fit(at: dict[int, float], batch: int) -> float:
    """Seconds at ``batch`` from two probe batches, linear (slope >= 0)."""
    (b1, t1), (b2, t2) = sorted(at.items())
    slope = max((t2 - t1) / (b2 - b1), 0.0)
    return t1 + slope * (batch - b1)


def time_stage(
    model: SageModel, stage: int, vocab: TrainingVocabulary, make: Callable[[int], dict], device: torch.device,
    batch: int, amp: bool,
) -> float:  # fmt: skip
    """Seconds per optimiser step of ``stage`` at ``batch`` (0 when the stage trains nothing)."""
    model.set_stage(stage)
    model.train()
    if not model.stage_parameters():
        return 0.0
    step = _train_step(model, vocab, device, amp)
    sizes = PROBE_BATCHES.get(model.cfg.prompt.strategy) if stage == 2 else None
    if sizes is None:  # cheap per pair: the real batch, nothing to extrapolate
        real = make(batch)
        step(real)  # warm-up (allocator, kernels, masks)
        return _best_of(partial(step, real), REPEATS, device)
    probes = {b: make(b) for b in sizes}
    step(probes[sizes[0]])  # warm-up
    return _fit({b: _best_of(partial(step, probes[b]), 2, device) for b in sizes}, batch)


@torch.no_grad()
def time_inference(
    model: SageModel, make: Callable[[int], dict], device: torch.device, amp: bool, stage: int = 2
) -> float:
    """Seconds per pair at inference over every predicate (classifier cached where it can be)."""
    model.set_stage(stage)
    model.eval()
    n = INFER_BATCH[model.cfg.prompt.strategy] if stage == 2 else INFER_BATCH["class_aware"]
    batch = make(n)
    preds = torch.arange(len(model.predicates), device=device)
    objs = torch.arange(len(model.objects), device=device)

    def forward() -> None:
        with autocast(device, amp):
            model(batch, preds, objs)

    forward()  # warm-up; caches the class-aware classifier as a real evaluation does
    return _best_of(forward, REPEATS, device) / n


def measure(
    model: SageModel, *, device: torch.device, feature_dim: int, teacher_dim: int, frames: int,
    batch: int, stage2_batch: int, amp: bool, n_base_predicates: int, n_base_objects: int,
) -> StepCosts:  # fmt: skip
    """Per-step costs of ``model`` on ``device`` (see the module docstring)."""
    started = time.perf_counter()
    model.to(device)
    vocab = TrainingVocabulary.from_counts(n_base_predicates, n_base_objects, len(model.objects)).to(device)

    def make(n: int) -> dict[str, torch.Tensor]:
        return {k: v.to(device) for k, v in random_batch(n, model, feature_dim, teacher_dim, frames).items()}

    with unsliced_text_tower() if device.type == "cuda" else _nothing():
        s1 = time_stage(model, 1, vocab, make, device, batch, amp)
        s2 = time_stage(model, 2, vocab, make, device, stage2_batch, amp)
        infer = time_inference(model, make, device, amp)
        infer1 = time_inference(model, make, device, amp, stage=1)
    if device.type == "cuda":
        peak, source = _cuda_peak(model, vocab, make, device, batch, stage2_batch, amp), "measured"
    else:
        cpu_vocab = TrainingVocabulary.from_counts(n_base_predicates, n_base_objects, len(model.objects))
        batches = {b: random_batch(b, model, feature_dim, teacher_dim, frames) for b in {batch, stage2_batch}}
        peak, source = (
            fake_peak_bytes(model, cpu_vocab, batches[batch], batches[stage2_batch]),
            "fake-tensor estimate",
        )
    return StepCosts(
        device=_device_name(device), stage1_s=s1, stage2_s=s2, infer_pair_s=infer, infer1_pair_s=infer1, batch=batch,
        stage2_batch=stage2_batch, peak_mb=peak / 2**20, peak_source=source,
        measure_s=time.perf_counter() - started,
    )  # fmt: skip


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _cuda_peak(
    model: SageModel, vocab: TrainingVocabulary, make: Callable[[int], dict], device: torch.device,
    batch: int, stage2_batch: int, amp: bool,
) -> int:  # fmt: skip
    """Peak allocated CUDA memory of one step of each stage at the real batch (weights included)."""
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    for stage, size in ((1, batch), (2, stage2_batch)):
        model.set_stage(stage)
        model.train()
        if model.stage_parameters():
            _train_step(model, vocab, device, amp)(make(size))
    return int(torch.cuda.max_memory_allocated(device))


def fake_peak_bytes(
    model: SageModel,
    vocab: TrainingVocabulary,
    batch1: dict[str, torch.Tensor],
    batch2: dict[str, torch.Tensor],
) -> int:
    """Peak bytes of a training step of each stage, counted on fake tensors (no arithmetic).

    Weights and buffers count from the start; gradients, AdamW state and activations as they are
    made. Runs on a deep copy of the model whose tensors are fakes; ``model`` is untouched.
    """
    import copy

    from torch._subclasses.fake_tensor import FakeTensorMode

    mode = FakeTensorMode(allow_non_fake_inputs=True)
    fake = copy.deepcopy(model).cpu()
    with mode:
        for module in fake.modules():
            for name, param in list(module.named_parameters(recurse=False)):
                module._parameters[name] = torch.nn.Parameter(mode.from_tensor(param), param.requires_grad)
            for name, buf in list(module.named_buffers(recurse=False)):
                if buf is not None:
                    module._buffers[name] = mode.from_tensor(buf)
    weights = [*fake.parameters(), *fake.buffers()]
    peak = sum(t.untyped_storage().nbytes() for t in weights)
    with unsliced_text_tower():
        for stage, batch in ((1, batch1), (2, batch2)):
            fake.set_stage(stage)
            fake.train()
            if not fake.stage_parameters():
                continue
            with mode:
                inputs = {k: mode.from_tensor(v) for k, v in batch.items()}
                fake_vocab = TrainingVocabulary(*(mode.from_tensor(t) for t in dataclass_tensors(vocab)))
                step = _train_step(fake, fake_vocab, torch.device("cpu"), amp=True)
                with LiveBytes([*weights, *inputs.values()]) as live:
                    with torch.autocast("cpu", dtype=torch.bfloat16):  # as bf16 autocast on CUDA
                        step(inputs)
            peak = max(peak, live.peak)
    return peak


def dataclass_tensors(vocab: TrainingVocabulary) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return vocab.base_predicates, vocab.base_objects, vocab.object_target


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{torch.get_num_threads()} threads"
