"""CLIP from open_clip: the paper's ViT-B/16 from a local checkpoint, or a tiny random one.

The tiny model exists so that everything (training, prompts inserted at text layer l, the
synthetic dataset's class semantics) runs on a 2-core CPU without weights. It keeps the
12-layer text transformer of ViT-B/16 (so every insertion layer 1..11 of Table 8 exists) but
with width 64. Its weights come from a fixed generator seed, so every process (Ray workers,
the synthetic-data generator, tests) builds the identical model.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import open_clip
import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

TINY_SEED = 0
TINY_EMBED_DIM = 64
VITB16_EMBED_DIM = 512


def _tiny_configs() -> tuple[CLIPVisionCfg, CLIPTextCfg]:
    vision = CLIPVisionCfg(layers=2, width=64, head_width=16, patch_size=16, image_size=64)
    text = CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=4, layers=12)
    return vision, text


def build_tiny_clip() -> CLIP:
    """A randomly initialised tiny CLIP, identical in every process (seeded, CPU)."""
    vision, text = _tiny_configs()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = CLIP(embed_dim=TINY_EMBED_DIM, vision_cfg=vision, text_cfg=text)
    return _frozen(model)


def build_vitb16_clip(checkpoint: Path | None) -> CLIP:
    """CLIP ViT-B/16 from a local open_clip checkpoint; never downloads."""
    if checkpoint is None:
        raise ValueError(
            "model.clip_checkpoint: sage_vitb16 needs a local CLIP ViT-B/16 checkpoint path "
            "(e.g. --clip-checkpoint /models/ViT-B-16.pt); nothing is downloaded"
        )
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"model.clip_checkpoint: {path} does not exist or is not a file")
    # OpenAI's ViT-B/16 (the paper's) was trained with QuickGELU; open_clip only infers that from a
    # pretrained *tag*, not from a file path, so it is forced here or the features silently drift.
    model = open_clip.create_model("ViT-B-16", pretrained=str(path), device="cpu", force_quick_gelu=True)
    assert isinstance(model, CLIP)
    return _frozen(model)


def build_vitb16_random(seed: int = 0) -> CLIP:
    """The ViT-B/16 architecture with random weights: for timing only (benchmarks), never for results."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.create_model("ViT-B-16", pretrained=None, device="cpu")
    assert isinstance(model, CLIP)
    return _frozen(model)


def build_clip(preset: str, checkpoint: Path | None = None) -> CLIP:
    """The frozen CLIP of a model preset (``sage_tiny`` or ``sage_vitb16``)."""
    if preset == "sage_tiny":
        return build_tiny_clip()
    if preset == "sage_vitb16":
        return build_vitb16_clip(checkpoint)
    raise ValueError(f"model.preset: unknown preset {preset!r}; valid: sage_tiny, sage_vitb16")


def _frozen(model: CLIP) -> CLIP:
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model


@lru_cache(maxsize=1)
def tokenizer() -> open_clip.tokenizer.SimpleTokenizer:
    """CLIP's BPE tokenizer (its vocabulary ships inside open_clip: no download)."""
    return open_clip.tokenizer.SimpleTokenizer()


def class_name_text(name: str) -> str:
    """Dataset class names as words: ``sit_behind`` -> ``sit behind``, ``bus/truck`` -> ``bus or truck``."""
    return name.replace("_", " ").replace("/", " or ")


@torch.no_grad()
def encode_texts(model: CLIP, texts: list[str]) -> torch.Tensor:
    """L2-normalised CLIP text embeddings, (N, embed_dim) float32 on the CPU."""
    tokens = tokenizer()(texts)  # (N, 77)
    device = next(model.parameters()).device
    features = model.encode_text(tokens.to(device), normalize=True)  # (N, E)
    return features.float().cpu()


@torch.no_grad()
def class_embeddings(model: CLIP, names: list[str], template: str = "{}") -> torch.Tensor:
    """W_clip: frozen text embeddings of class names, (C, embed_dim)."""
    return encode_texts(model, [template.format(class_name_text(n)) for n in names])


def model_fingerprint(model: CLIP) -> str:
    """Short content hash of the weights, recorded with features made from this model."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes()[:4096])
    return digest.hexdigest()[:16]
