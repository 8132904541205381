"""CLIP from open_clip: the paper's ViT-B/16 from a local checkpoint, or a tiny random one.

A local checkpoint may be OpenAI's ``ViT-B-16.pt`` (a TorchScript archive), an open_clip state
dict (``.pt`` / ``.bin``, plain or wrapped in ``{"state_dict": ...}``) or ``.safetensors``;
QuickGELU is used only for weights trained with it (:func:`needs_quick_gelu`).

The tiny model exists so that everything (training, prompts inserted at text layer l, the
synthetic dataset's class semantics) runs on a 2-core CPU without weights. It keeps the
12-layer text transformer of ViT-B/16 (so every insertion layer 1..11 of Table 8 exists) but
with width 64. Its weights come from a fixed generator seed, so every process (Ray workers,
the synthetic-data generator, tests) builds the identical model.
"""

from __future__ import annotations

import hashlib
import logging
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import open_clip
import torch
import torch.nn.functional as F
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from open_clip.transformer import QuickGELU
from torch import Tensor, nn

log = logging.getLogger(__name__)

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


QuickGelu = bool | Literal["auto"]

#: Keys OpenAI's ViT-B-16.pt keeps beside the weights (open_clip drops them before loading).
OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


@dataclass(frozen=True)
class ClipCheckpoint:
    """The weights of a local CLIP checkpoint file, whatever its format, in open_clip's key layout."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    format: str  # "openai-torchscript" | "safetensors" | "state-dict"
    openai_marked: bool  # OpenAI's own extra keys were present (OpenAI's weights, re-saved)


def is_torchscript_archive(path: Path) -> bool:
    """TorchScript archives (OpenAI's ``ViT-B-16.pt``) are zip files with ``code/`` and ``constants.pkl``;
    ``torch.save`` zips hold ``data.pkl`` instead."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def read_clip_checkpoint(path: Path) -> ClipCheckpoint:
    """Weights of a TorchScript archive, a ``.safetensors`` file or a ``torch.save`` state dict.

    A state dict may be wrapped in ``{"state_dict": ...}`` and prefixed ``module.`` (DDP), as
    open_clip's training checkpoints are. Nothing is executed but TorchScript's own loader.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model.clip_checkpoint: {path} does not exist or is not a file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        raw: Any = load_file(str(path), device="cpu")
        fmt = "safetensors"
    elif is_torchscript_archive(path):
        raw = torch.jit.load(str(path), map_location="cpu").state_dict()
        fmt = "openai-torchscript"
    else:
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle errors of every kind: one message naming the file
            raise ValueError(f"model.clip_checkpoint: {path} is not a readable checkpoint ({exc})") from None
        fmt = "state-dict"
    if isinstance(raw, dict) and isinstance(raw.get("state_dict"), dict):
        raw = raw["state_dict"]
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"model.clip_checkpoint: {path} holds no state dict ({type(raw).__name__})")
    state = {k.removeprefix("module."): v for k, v in raw.items() if isinstance(v, torch.Tensor)}
    marked = any(key in state for key in OPENAI_EXTRA_KEYS)
    for key in OPENAI_EXTRA_KEYS:
        state.pop(key, None)
    return ClipCheckpoint(path, state, fmt, marked)


def quick_gelu_tags() -> tuple[str, ...]:
    """Names that mark ViT-B/16 weights trained with QuickGELU, from open_clip's own registry
    (pretrained tags and hub ids: ``openai``, ``metaclip_*``, ``dfn2b``, ...)."""
    from open_clip.pretrained import get_pretrained_cfg, list_pretrained_tags_by_model

    names: list[str] = []
    for tag in list_pretrained_tags_by_model("ViT-B-16"):
        cfg = get_pretrained_cfg("ViT-B-16", tag)
        if cfg.get("quick_gelu"):
            names.append(tag.lower())
            hub = str(cfg.get("hf_hub", "")).strip("/").split("/")[-1].lower()
            names += [hub] if hub else []
    return tuple(names)


def needs_quick_gelu(checkpoint: ClipCheckpoint) -> tuple[bool, str]:
    """Whether these weights were trained with QuickGELU, and why we think so.

    OpenAI's CLIP (the paper's) used QuickGELU; LAION/DataComp open_clip weights use nn.GELU.
    A file cannot say which activation it was trained with, so: OpenAI's TorchScript archive or
    its extra keys -> QuickGELU; a path naming a QuickGELU release in open_clip's registry (e.g.
    ``vit_base_patch16_clip_224.openai``) -> QuickGELU; anything else -> GELU. The wrong choice
    runs but drifts every feature, so ``model.clip_quick_gelu`` can say it explicitly.
    """
    if checkpoint.format == "openai-torchscript":
        return True, "OpenAI TorchScript archive"
    if checkpoint.openai_marked:
        return True, "OpenAI's extra keys (input_resolution, ...) in the state dict"
    text = str(checkpoint.path.resolve()).lower()
    named = next((tag for tag in quick_gelu_tags() if tag in text), None)
    if named is not None:
        return True, f"the path names {named!r}, a QuickGELU release in open_clip's registry"
    return False, "no OpenAI marker (assumed LAION-style GELU)"


def build_vitb16_clip(checkpoint: Path | None, quick_gelu: QuickGelu = "auto") -> CLIP:
    """CLIP ViT-B/16 from a local checkpoint in any format :func:`read_clip_checkpoint` reads; never downloads."""
    if checkpoint is None:
        raise ValueError(
            "model.clip_checkpoint: sage_vitb16 needs a local CLIP ViT-B/16 checkpoint path "
            "(e.g. --clip-checkpoint /models/ViT-B-16.pt); nothing is downloaded"
        )
    weights = read_clip_checkpoint(Path(checkpoint))
    if quick_gelu == "auto":
        quick_gelu, why = needs_quick_gelu(weights)
        log_fn = log.info if quick_gelu or weights.format == "safetensors" else log.warning
        log_fn(
            "%s: %s activation (%s); set model.clip_quick_gelu to override",
            weights.path, "QuickGELU" if quick_gelu else "GELU", why,
        )  # fmt: skip
    model = open_clip.create_model(
        "ViT-B-16", pretrained=None, device="cpu", force_quick_gelu=bool(quick_gelu)
    )
    assert isinstance(model, CLIP)
    _load_weights(model, weights)
    return _frozen(model)


def _load_weights(model: CLIP, weights: ClipCheckpoint) -> None:
    """Strict load; a file of another architecture fails with what does not fit."""
    state = dict(weights.state_dict)
    if "logit_scale" in state and state["logit_scale"].ndim != model.logit_scale.ndim:
        state["logit_scale"] = state["logit_scale"].reshape(model.logit_scale.shape)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k, v in state.items() if k in own and v.shape != own[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(
            f"model.clip_checkpoint: {weights.path} ({weights.format}) is not a CLIP ViT-B/16 in OpenAI/open_clip "
            f"layout: {len(missing)} missing keys {missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}, "
            f"wrong shapes {shapes[:3]}"
        )
    model.load_state_dict(state)


def uses_quick_gelu(model: CLIP) -> bool:
    """Which activation the text tower runs (what :func:`needs_quick_gelu` decided at build time)."""
    return isinstance(model.transformer.resblocks[0].mlp.gelu, QuickGELU)


def build_vitb16_random(seed: int = 0) -> CLIP:
    """The ViT-B/16 architecture with random weights: for timing only (benchmarks), never for results."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.create_model("ViT-B-16", pretrained=None, device="cpu")
    assert isinstance(model, CLIP)
    return _frozen(model)


def save_clip_checkpoint(model: CLIP, path: Path) -> Path:
    """The weights of ``model`` as float16 (OpenAI's storage precision): ``.safetensors`` or, for any
    other suffix, a ``torch.save`` state dict. For rehearsals with random weights; returns ``path``."""
    state = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


def build_clip(preset: str, checkpoint: Path | None = None, quick_gelu: QuickGelu = "auto") -> CLIP:
    """The frozen CLIP of a model preset (``sage_tiny`` or ``sage_vitb16``)."""
    if preset == "sage_tiny":
        return build_tiny_clip()
    if preset == "sage_vitb16":
        return build_vitb16_clip(checkpoint, quick_gelu)
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


class LayerwiseTextEncoder(nn.Module):
    """open_clip's text tower, run block by block so that tokens can join at any layer.

    Holds references to the frozen CLIP modules (token/positional embedding, the residual
    blocks, final LayerNorm, projection). With nothing inserted, :meth:`encode_ids` equals
    ``CLIP.encode_text`` (a test checks it). The causal mask is rebuilt for each sequence length:
    since attention is causal, cutting the padding after the longest [EOS] changes no output at
    or before any [EOS], and makes the prompts 3-4x cheaper than the full 77 positions.
    """

    def __init__(self, clip: CLIP) -> None:
        super().__init__()
        self.token_embedding = clip.token_embedding
        self.positional_embedding = clip.positional_embedding
        self.blocks = clip.transformer.resblocks
        self.batch_first = bool(clip.transformer.batch_first)
        self.ln_final = clip.ln_final
        self.text_projection = clip.text_projection
        self.width = int(clip.transformer.width)
        self.embed_dim = int(clip.text_projection.shape[-1])
        self.n_layers = len(self.blocks)
        self._masks: dict[tuple[int, str], Tensor] = {}

    def causal_mask(self, length: int, device: torch.device) -> Tensor:
        key = (length, str(device))
        if key not in self._masks:
            self._masks[key] = torch.full((length, length), float("-inf"), device=device).triu_(1)
        return self._masks[key]

    def embed_ids(self, ids: Tensor) -> Tensor:
        """Token embeddings without positions, (N, L) -> (N, L, W)."""
        return self.token_embedding(ids)

    def add_positions(self, x: Tensor) -> Tensor:
        return x + self.positional_embedding[: x.shape[1]].to(x.dtype)  # (N, L, W)

    def run_blocks(self, x: Tensor, start: int, stop: int) -> Tensor:
        """Blocks ``start .. stop-1`` (0-based) on a (N, L, W) sequence; returns (N, L, W)."""
        if start >= stop:
            return x
        mask = self.causal_mask(x.shape[1], x.device)
        if not self.batch_first:
            x = x.transpose(0, 1)
        for block in self.blocks[start:stop]:
            x = block(x, attn_mask=mask)
        if not self.batch_first:
            x = x.transpose(0, 1)
        return x

    def run_blocks_in_slices(self, x: Tensor, start: int, stop: int, rows: int | None) -> Tensor:
        """:meth:`run_blocks` over slices of at most ``rows`` sequences (None: all at once).

        Why: image_cond sends (pairs x classes) sequences at once, tens of thousands; on the CPU
        such a batch spills the caches, and slices of 256 run the tiny text tower about 2x
        faster (`benchmarks/bench_text_slices.py`: 4.7 vs 10.1 pairs/s on one thread). Sequences are independent, so slicing
        changes no output; gradients flow through every slice.
        """
        if rows is None or x.shape[0] <= rows:
            return self.run_blocks(x, start, stop)
        return torch.cat([self.run_blocks(part, start, stop) for part in x.split(rows)])

    def run_blocks_after_shared_prefix(self, prefix: Tensor, suffix: Tensor, rows: int | None) -> Tensor:
        """All blocks on sequences that share their first P positions within each group.

        ``prefix`` (G, P, W): the first positions of group g (with positions added); ``suffix``
        (G, C, S, W): the rest of each of the group's C sequences. Returns the suffix outputs
        (G * C, S, W), equal to :meth:`run_blocks` on the whole (G * C, P + S, W) sequences cut
        after P (to float rounding; a test checks it).

        Why: Image-Cond's prompts of one pair differ only from the class name on; under the causal
        mask the positions before it are the same for every class, so they are computed once per
        pair instead of once per class, and each block's suffix attends to the prefix's keys
        (the prefix is ~half of every prompt at the default layout: 7 of ~15 tokens).
        """
        groups, classes, length, width = suffix.shape
        n_prefix = prefix.shape[1]
        x = suffix.reshape(groups * classes, length, width)  # (G*C, S, W)
        owner = torch.arange(groups, device=suffix.device).repeat_interleave(classes)  # (G*C,) group of a row
        mask = torch.cat(
            [torch.zeros(length, n_prefix, device=x.device), self.causal_mask(length, x.device)], dim=1
        ).to(x.dtype)  # (S, P + S): every prefix key, then causal within the suffix
        step = rows or x.shape[0]
        for index, block in enumerate(self.blocks):
            keys = block.ln_1(prefix)  # (G, P, W): the prefix's attention input at this block
            parts = [
                self._suffix_block(block, part, keys[part_owner], mask)
                for part, part_owner in zip(x.split(step), owner.split(step), strict=True)
            ]
            x = torch.cat(parts) if len(parts) > 1 else parts[0]
            prefix = self.run_blocks(prefix, index, index + 1)
        return x

    def _suffix_block(self, block: Any, x: Tensor, prefix_keys: Tensor, mask: Tensor) -> Tensor:
        """One residual block on suffix rows (N, S, W) whose keys start with ``prefix_keys`` (N, P, W)."""
        query = block.ln_1(x)
        keys = torch.cat([prefix_keys, query], dim=1)  # (N, P + S, W)
        if self.batch_first:
            attended = block.attn(query, keys, keys, need_weights=False, attn_mask=mask)[0]
        else:
            q, k = query.transpose(0, 1), keys.transpose(0, 1)
            attended = block.attn(q, k, k, need_weights=False, attn_mask=mask)[0].transpose(0, 1)
        x = x + block.ls_1(attended)
        return x + block.ls_2(block.mlp(block.ln_2(x)))

    def finish(self, x: Tensor, eos_index: Tensor) -> Tensor:
        """Final LayerNorm, the [EOS] token, projection: (N, L, W) -> (N, E), not normalised."""
        x = self.ln_final(x)
        pooled = x[torch.arange(x.shape[0], device=x.device), eos_index]  # (N, W)
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(pooled)
        return pooled @ self.text_projection

    def encode_ids(self, ids: Tensor) -> Tensor:
        """Plain CLIP text features of tokenised texts (N, L) -> (N, E), not normalised."""
        x = self.run_blocks(self.add_positions(self.embed_ids(ids)), 0, self.n_layers)
        return self.finish(x, ids.argmax(dim=-1))


def encode_texts(model: CLIP, texts: list[str]) -> torch.Tensor:
    """L2-normalised CLIP text embeddings, (N, embed_dim) float32 on the CPU.

    The same as ``model.encode_text(tokens, normalize=True)`` (a test checks it to float rounding)
    but run on the tokens up to the last [EOS] only: attention is causal, so the padding after it
    changes nothing, and class sentences of ~10 tokens then cost a fraction of the 77 positions
    (ViT-B/16's 167 VidVRD class sentences: ~10x faster on the CPU).
    """
    tokens = tokenizer()(texts)  # (N, 77)
    length = int(tokens.argmax(dim=-1).max()) + 1  # [EOS] has the largest id
    device = next(model.parameters()).device
    features = LayerwiseTextEncoder(model).encode_ids(tokens[:, :length].to(device))  # (N, E)
    return F.normalize(features, dim=-1).float().cpu()


@torch.no_grad()
def class_embeddings(model: CLIP, names: list[str], template: str = "{}") -> torch.Tensor:
    """W_clip: frozen text embeddings of class names, (C, embed_dim)."""
    return encode_texts(model, [template.format(class_name_text(n)) for n in names])


def model_fingerprint(model: CLIP) -> str:
    """Short content hash of the weights, recorded with features made from this model."""
    return state_fingerprint(model.state_dict())


def state_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """:func:`model_fingerprint` of the model a strict load of ``state`` gives (float32 bytes), so a
    checkpoint's fingerprint needs no model built."""
    digest = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().flatten()[:1024].float().cpu().numpy().tobytes())  # first 4096 bytes
    return digest.hexdigest()[:16]


def clip_identity(model: CLIP, preset: str, checkpoint: Path | None) -> dict[str, Any]:
    """What features and teacher texts record as their ``feature_model`` (and models compare with)."""
    return {
        "name": preset,
        "checkpoint": None if checkpoint is None else Path(checkpoint).name,
        "fingerprint": model_fingerprint(model),
        "embed_dim": int(model.text_projection.shape[-1]),
        "quick_gelu": uses_quick_gelu(model),
    }


@lru_cache(maxsize=8)
def _checkpoint_identity(path: Path, mtime_ns: int, size: int, quick_gelu: QuickGelu) -> dict[str, Any]:
    weights = read_clip_checkpoint(path)
    chosen = needs_quick_gelu(weights)[0] if quick_gelu == "auto" else bool(quick_gelu)
    state = weights.state_dict
    if "text_projection" not in state:
        raise ValueError(f"model.clip_checkpoint: {path} has no 'text_projection': not a CLIP checkpoint")
    return {
        "name": "sage_vitb16",
        "checkpoint": path.name,
        "fingerprint": state_fingerprint(state),
        "embed_dim": int(state["text_projection"].shape[-1]),
        "quick_gelu": chosen,
    }


def preset_identity(
    preset: str, checkpoint: Path | None = None, quick_gelu: QuickGelu = "auto"
) -> dict[str, Any]:
    """:func:`clip_identity` of ``build_clip(preset, checkpoint, quick_gelu)``, read from the checkpoint
    file without building ViT-B/16 (cached per file and modification time)."""
    if preset == "sage_tiny":
        return dict(_tiny_identity())
    if preset != "sage_vitb16":
        raise ValueError(f"model.preset: unknown preset {preset!r}; valid: sage_tiny, sage_vitb16")
    if checkpoint is None:
        build_vitb16_clip(None)  # raises the error that names the missing checkpoint
    path = Path(checkpoint).resolve()  # type: ignore[arg-type]
    if not path.is_file():
        raise FileNotFoundError(f"model.clip_checkpoint: {path} does not exist or is not a file")
    stat = path.stat()
    return dict(_checkpoint_identity(path, stat.st_mtime_ns, stat.st_size, quick_gelu))


@lru_cache(maxsize=1)
def _tiny_identity() -> dict[str, Any]:
    return clip_identity(build_tiny_clip(), "sage_tiny", None)
