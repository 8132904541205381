"""A CLIP ViT-B/16 checkpoint loads from a local path in every format a user will have.

One random ViT-B/16 is written (float16, as OpenAI ships its weights) as OpenAI's TorchScript
archive, an open_clip state dict (``.bin``), an open_clip training checkpoint (``.pt``:
``{"state_dict": {"module.…": …}}``) and ``.safetensors``; each must load through
``build_clip("sage_vitb16", path)`` (what ``--clip-checkpoint`` reaches) with the same weights,
and QuickGELU only where OpenAI's weights need it. ViT-B/16 is 150 M parameters: slow on a CPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sage_model.clip import (
    ClipCheckpoint,
    build_clip,
    build_vitb16_random,
    model_fingerprint,
    needs_quick_gelu,
    read_clip_checkpoint,
    uses_quick_gelu,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def source() -> dict[str, torch.Tensor]:
    """The weights every file holds: a random ViT-B/16, rounded to float16."""
    return {k: v.half() for k, v in build_vitb16_random(seed=3).state_dict().items()}


class OpenAIArchive(torch.nn.Module):
    """OpenAI's CLIP layout for tracing: the same submodules (so the same state-dict keys), the
    three integer buffers OpenAI's archive carries, and no non-persistent buffer (TorchScript has none)."""

    def __init__(self, clip: torch.nn.Module) -> None:
        super().__init__()
        for name in ("visual", "transformer", "token_embedding", "ln_final"):
            setattr(self, name, getattr(clip, name))
        for name in ("positional_embedding", "text_projection", "logit_scale"):
            setattr(self, name, getattr(clip, name))
        for key, value in (("input_resolution", 224), ("context_length", 77), ("vocab_size", 49408)):
            self.register_buffer(key, torch.tensor(value))

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(text) + self.positional_embedding  # (N, 77, W)
        mask = torch.full((77, 77), float("-inf")).triu(1)
        x = self.ln_final(self.transformer(x, attn_mask=mask))
        return x[torch.arange(x.shape[0]), text.argmax(dim=-1)] @ self.text_projection


def write_torchscript(state: dict[str, torch.Tensor], path: Path) -> None:
    """Like OpenAI's ViT-B-16.pt: a traced model with float16 weights and three extra integer buffers."""
    model = build_vitb16_random(seed=3)
    model.load_state_dict({k: v.float() for k, v in state.items()})
    traced = torch.jit.trace(OpenAIArchive(model), torch.zeros(1, 77, dtype=torch.long), check_trace=False)
    traced.half()
    torch.jit.save(traced, str(path))


def write(fmt: str, state: dict[str, torch.Tensor], folder: Path) -> Path:
    if fmt == "openai-torchscript":
        path = folder / "ViT-B-16.pt"
        write_torchscript(state, path)
    elif fmt == "open_clip-bin":
        path = folder / "open_clip_pytorch_model.bin"
        torch.save(state, path)
    elif fmt == "open_clip-training-pt":
        path = folder / "epoch_32.pt"
        torch.save({"epoch": 32, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    else:
        from safetensors.torch import save_file

        path = folder / "open_clip_model.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


@pytest.mark.parametrize(
    ("fmt", "quick_gelu"),
    [
        ("openai-torchscript", True),
        ("open_clip-bin", False),
        ("open_clip-training-pt", False),
        ("safetensors", False),
    ],
)
def test_each_checkpoint_format_loads_with_its_weights_and_activation(
    fmt: str, quick_gelu: bool, source: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    path = write(fmt, source, tmp_path)
    model = build_clip("sage_vitb16", path)
    loaded = model.state_dict()
    assert set(source) == set(loaded)
    assert all(torch.equal(loaded[k], source[k].float()) for k in source)
    assert uses_quick_gelu(model) is quick_gelu
    assert model_fingerprint(model) == model_fingerprint(
        build_clip("sage_vitb16", path, quick_gelu=not quick_gelu)
    )
    path.unlink()


def test_an_explicit_activation_overrides_the_guess(source: dict[str, torch.Tensor], tmp_path: Path) -> None:
    path = write("open_clip-bin", source, tmp_path)
    assert uses_quick_gelu(build_clip("sage_vitb16", path, quick_gelu=True))


def test_open_clip_registry_names_mark_quick_gelu_releases(tmp_path: Path) -> None:
    """A re-saved state dict is recognised by a path naming a QuickGELU release, not by its bytes."""
    weights = {"w": torch.zeros(1)}

    def guess(path: str) -> bool:
        return needs_quick_gelu(ClipCheckpoint(tmp_path / path, weights, "state-dict", False))[0]

    assert guess("models--timm--vit_base_patch16_clip_224.openai/open_clip_pytorch_model.bin")
    assert guess("metaclip_400m/b16.pt")
    assert not guess("CLIP-ViT-B-16-laion2B-s34B-b88K/open_clip_pytorch_model.bin")
    assert needs_quick_gelu(ClipCheckpoint(tmp_path / "x.pt", weights, "state-dict", True))[0]


def test_a_checkpoint_of_another_architecture_is_refused_with_what_does_not_fit(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"visual.proj": torch.zeros(3, 3)}, path)
    assert read_clip_checkpoint(path).format == "state-dict"
    with pytest.raises(ValueError, match=r"other.pt \(state-dict\) is not a CLIP ViT-B/16.*missing keys"):
        build_clip("sage_vitb16", path)
