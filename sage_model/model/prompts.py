"""(III) Class enhancement: the relation classifier F'_L built by CLIP's frozen text encoder.

Three prompt strategies share one layer-wise text encoder (passed to ``forward``, never owned,
so that unfreezing a prompt module can never unfreeze CLIP):

* ``class_aware`` (SAGE): learnable context tokens around the class name, plus M class-aware
  tokens made by the TKE network from the frozen CLIP embedding of each predicate and inserted
  into the hidden sequence after text layer ``l``. The prompt depends on the class only, so the
  classifier of a vocabulary is computed once and cached at inference.
* ``image_cond`` (Table 5 baseline, CoCoOp / OV-MMP style): a meta-net turns the pair's visual
  feature into a bias added to every context token, so each instance needs its own text pass.
* ``none`` (w/o CE): the fixed hand-crafted template; the classifier is ``W_clip`` itself.

Prompt layout (token positions, before padding)::

    [SOS] ctx_1 .. ctx_k  <class name tokens>  ctx_k+1 .. ctx_n  "."  [EOS]

For the ``random`` and ``domain_specific`` inits n = ``n_ctx`` and k = ``class_position``; the
``fixed`` and ``learnable`` inits use the hand-crafted template's own tokens as context with
the class name at its natural place, the end (``"a video of two objects that sit behind."``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sage_model.clip import LayerwiseTextEncoder, class_name_text, tokenizer
from sage_model.config import PromptConfig

SOS_ID = 49406
EOS_ID = 49407
PLACEHOLDER_ID = 343  # "x": its embedding is always overwritten by a context vector
DOT_ID = 269  # "."
CTX_INIT_STD = 0.02  # CoOp's N(0, 0.02) for context tokens without a text init


#: Sequences per slice when image_cond runs the text tower on the CPU (see run_blocks_in_slices and
#: run_blocks_after_shared_prefix).
CPU_SLICE_ROWS = 256


@dataclass(frozen=True)
class PromptLayout:
    """Token ids of every class prompt and where its context slots and [EOS] sit."""

    ids: Tensor  # (C, L) long, placeholders at the context slots
    ctx_positions: Tensor  # (C, n_ctx) long
    eos_index: Tensor  # (C,) long


def encode_words(text: str) -> list[int]:
    return list(tokenizer().encode(text))


def build_layout(names: list[str], n_prefix: int, n_suffix: int) -> PromptLayout:
    """Class prompts ``[SOS] X*n_prefix <name> X*n_suffix . [EOS]``, padded to the longest."""
    rows: list[list[int]] = []
    positions: list[list[int]] = []
    for name in names:
        name_ids = encode_words(class_name_text(name))
        rows.append(
            [SOS_ID] + [PLACEHOLDER_ID] * n_prefix + name_ids + [PLACEHOLDER_ID] * n_suffix + [DOT_ID, EOS_ID]
        )
        after_name = 1 + n_prefix + len(name_ids)
        positions.append(list(range(1, 1 + n_prefix)) + list(range(after_name, after_name + n_suffix)))
    length = max(len(r) for r in rows)
    if length > 77:
        raise ValueError(f"prompt of {length} tokens exceeds CLIP's context length 77 (n_ctx too large?)")
    ids = torch.zeros(len(rows), length, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
    return PromptLayout(
        ids=ids,
        ctx_positions=torch.tensor(positions, dtype=torch.long).reshape(len(rows), n_prefix + n_suffix),
        eos_index=ids.argmax(dim=-1),
    )


def class_sentences(names: list[str], template: str) -> list[str]:
    """The sentences behind ``W_clip`` / ``W_obj``: ``template`` with ``{}`` = the class name as words."""
    if "{}" not in template:
        raise ValueError(f"model.class_template: {template!r} has no '{{}}' placeholder for the class name")
    return [template.format(class_name_text(n)) for n in names]


class ContextTokens(nn.Module):
    """The learnable (or frozen, for the ``fixed`` init) context vectors and their layout."""

    ids: Tensor  # (C, L) buffers, declared for the type checker
    ctx_positions: Tensor  # (C, n_ctx)
    eos_index: Tensor  # (C,)
    base_embeddings: Tensor  # (C, L, W)

    def __init__(self, cfg: PromptConfig, encoder: LayerwiseTextEncoder, names: list[str]) -> None:
        super().__init__()
        width = encoder.width
        if cfg.init in ("fixed", "learnable"):
            words = encode_words(cfg.template_text)
            n_prefix, n_suffix = len(words), 0
            init = encoder.embed_ids(torch.tensor(words)).detach().clone()  # (k, W)
        else:
            n_prefix, n_suffix = cfg.class_position, cfg.n_ctx - cfg.class_position
            init = torch.randn(cfg.n_ctx, width) * CTX_INIT_STD  # (n_ctx, W)
            if cfg.init == "domain_specific":
                words = encode_words(cfg.init_text)
                if len(words) > cfg.n_ctx:
                    raise ValueError(
                        f"model.prompt.init_text: {cfg.init_text!r} has {len(words)} tokens, more than "
                        f"model.prompt.n_ctx={cfg.n_ctx}"
                    )
                # The text fills the first slots; the rest keep CoOp's random init.
                init[: len(words)] = encoder.embed_ids(torch.tensor(words)).detach()
        self._n_prefix = n_prefix
        self.vectors = nn.Parameter(init, requires_grad=cfg.init != "fixed")  # (n_ctx, W)
        self.trainable = cfg.init != "fixed"
        layout = build_layout(names, n_prefix, n_suffix)
        self.register_buffer("ids", layout.ids, persistent=False)
        self.register_buffer("ctx_positions", layout.ctx_positions, persistent=False)
        self.register_buffer("eos_index", layout.eos_index, persistent=False)
        with torch.no_grad():
            base = encoder.embed_ids(layout.ids)  # (C, L, W): frozen token embeddings
        self.register_buffer("base_embeddings", base, persistent=False)

    @property
    def n_ctx(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def shared_prefix(self) -> int:
        """Leading positions every class prompt has alike: [SOS] and the context before the name."""
        return self._n_prefix + 1

    def assemble(self, classes: Tensor, ctx: Tensor) -> Tensor:
        """Prompt embeddings of ``classes`` (C,) with context ``ctx`` (n_ctx, W) or (B, n_ctx, W).

        Returns (C, L, W) or (B, C, L, W).
        """
        base = self.base_embeddings[classes]  # (C, L, W)
        pos = self.ctx_positions[classes]  # (C, n)
        if ctx.dim() == 2:
            src = ctx.unsqueeze(0).expand(len(classes), -1, -1)  # (C, n, W)
            return base.scatter(1, pos.unsqueeze(-1).expand_as(src), src.to(base.dtype))
        batch = ctx.shape[0]
        src = ctx.unsqueeze(1).expand(batch, len(classes), -1, -1)  # (B, C, n, W)
        index = pos.unsqueeze(0).unsqueeze(-1).expand_as(src)
        return base.unsqueeze(0).expand(batch, -1, -1, -1).scatter(2, index, src.to(base.dtype))


class TKE(nn.Module):
    """Textual knowledge embedding: W_clip of each class -> M class-aware tokens.

    Bottleneck MLP (embed_dim -> bottleneck -> M * width). The up-projection starts small
    (std 0.02, the scale of CLIP's token embeddings) so that the inserted tokens begin as
    token-like vectors rather than large perturbations.
    """

    def __init__(self, embed_dim: int, width: int, bottleneck: int, n_tokens: int) -> None:
        super().__init__()
        self.n_tokens = n_tokens
        self.width = width
        self.down = nn.Linear(embed_dim, bottleneck)
        self.act = nn.GELU()
        self.up = nn.Linear(bottleneck, n_tokens * width)
        nn.init.normal_(self.up.weight, std=CTX_INIT_STD)
        nn.init.zeros_(self.up.bias)

    def forward(self, knowledge: Tensor) -> Tensor:
        """(C, E) -> (C, M, W)."""
        out = self.up(self.act(self.down(knowledge)))
        return out.reshape(knowledge.shape[0], self.n_tokens, self.width)


class ClassAwarePrompt(nn.Module):
    """SAGE's decoupled class-aware prompt: context tokens + TKE tokens inserted after layer l.

    ``insert_layer`` l (1..11) means: blocks 1..l run on the context prompt alone (their
    outputs are exactly those without TKE), then the M class tokens join the hidden sequence
    and blocks l+1..L see them. ``append`` puts them right after [SOS], so that under the causal
    mask every later position (context, class name, [EOS]) can attend to them (appending after
    [EOS] would leave the pooled [EOS] feature unchanged); ``replace`` overwrites the first M
    context slots instead (deep prompting, as TCP does), which needs M <= n_ctx.
    """

    knowledge: Tensor  # (C, E) W_clip buffer

    def __init__(
        self, cfg: PromptConfig, encoder: LayerwiseTextEncoder, names: list[str], knowledge: Tensor
    ) -> None:
        super().__init__()
        self.context = ContextTokens(cfg, encoder, names)
        if cfg.insertion == "replace" and cfg.n_class_tokens > self.context.n_ctx:
            raise ValueError(
                f"model.prompt.n_class_tokens: {cfg.n_class_tokens} tokens cannot replace the "
                f"{self.context.n_ctx} context tokens of init {cfg.init!r} (insertion 'replace' needs n_class_tokens <= context tokens)"
            )
        self.tke = TKE(encoder.embed_dim, encoder.width, cfg.tke_bottleneck, cfg.n_class_tokens)
        self.insert_layer = cfg.insert_layer
        self.insertion = cfg.insertion
        self.register_buffer("knowledge", knowledge, persistent=False)  # (C, E) W_clip

    def forward(self, enc: LayerwiseTextEncoder, classes: Tensor) -> Tensor:
        """Classifier features of ``classes`` (C,) -> (C, E), not normalised."""
        x = enc.add_positions(self.context.assemble(classes, self.context.vectors))  # (C, L, W)
        x = enc.run_blocks(x, 0, self.insert_layer)
        tokens = self.tke(self.knowledge[classes]).to(x.dtype)  # (C, M, W)
        eos = self.context.eos_index[classes]
        if self.insertion == "append":
            x = torch.cat([x[:, :1], tokens, x[:, 1:]], dim=1)  # (C, L + M, W)
            eos = eos + tokens.shape[1]
        else:
            slots = self.context.ctx_positions[classes][:, : tokens.shape[1]]  # (C, M)
            x = x.scatter(1, slots.unsqueeze(-1).expand_as(tokens), tokens)
        x = enc.run_blocks(x, self.insert_layer, enc.n_layers)
        return enc.finish(x, eos)


class ImageCondPrompt(nn.Module):
    """CoCoOp / OV-MMP style baseline: context conditioned on the pair's visual feature.

    Meta-net Linear(V -> V/16) -> ReLU -> Linear(-> W) on the L2-normalised pair feature; its
    output is added to every context token (CoCoOp; OV-MMP adds it to every other token).
    No TKE: this strategy is the instance-conditioned alternative to the class-aware tokens.
    Every instance needs its own pass over all classes, so nothing can be cached.
    """

    def __init__(
        self, cfg: PromptConfig, encoder: LayerwiseTextEncoder, names: list[str], visual_dim: int
    ) -> None:
        super().__init__()
        self.context = ContextTokens(cfg, encoder, names)
        hidden = max(visual_dim // 16, 1)
        self.meta_net = nn.Sequential(
            nn.Linear(visual_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, encoder.width)
        )

    def forward(self, enc: LayerwiseTextEncoder, classes: Tensor, visual: Tensor) -> Tensor:
        """``classes`` (C,), pair features (B, V) -> per-instance classifier (B, C, E)."""
        bias = self.meta_net(nn.functional.normalize(visual, dim=-1))  # (B, W)
        ctx = self.context.vectors.unsqueeze(0) + bias.unsqueeze(1)  # (B, n_ctx, W)
        x = self.context.assemble(classes, ctx)  # (B, C, L, W)
        batch, n_cls, length, width = x.shape
        x = enc.add_positions(x.reshape(batch * n_cls, length, width)).reshape(batch, n_cls, length, width)
        shared = self.context.shared_prefix  # [SOS] + the context before the class name: equal across classes
        rows = CPU_SLICE_ROWS if x.device.type == "cpu" else None
        out = enc.run_blocks_after_shared_prefix(x[:, 0, :shared], x[:, :, shared:], rows)  # (B*C, L - P, W)
        eos = self.context.eos_index[classes].repeat(batch) - shared  # (B*C,)
        return enc.finish(out, eos).reshape(batch, n_cls, -1)
