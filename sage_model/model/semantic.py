"""(I) Semantic enhancement: the offline MLLM teacher's four-perspective text enters the visual tokens.

Per keyframe there are four visual tokens (subject, object, union, whole frame) and four
teacher text tokens describing the same four perspectives. Each modality is first refined by
its own self-attention block; the fusion then injects the text into the visual tokens:

* ``cross_attention`` (paper): ``F_vis + CrossAttn(Q=F'_text, K=V=F'_vis)``; the four queries
  line up with the four regions, so the result is added back token by token.
* ``sum``: ``F'_vis + F'_text``.
* ``concat``: ``Linear([F'_vis ; F'_text])`` (2H -> H).
* ``gated``: ``F'_vis + g * F'_text`` with ``g = sigmoid(Linear([F'_vis ; F'_text]))`` per channel.
* ``none`` (w/o SE): the visual tokens pass unchanged and the teacher is not read.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sage_model.config import SemanticConfig


def self_attention_block(dim: int, heads: int, dropout: float) -> nn.TransformerEncoderLayer:
    """Pre-norm self-attention + feed-forward block (feed-forward 2x width)."""
    return nn.TransformerEncoderLayer(
        dim, heads, dim_feedforward=2 * dim, dropout=dropout, batch_first=True, norm_first=True
    )


class SemanticEnhancement(nn.Module):
    """Fuses teacher text tokens (B, T, 4, H) into visual tokens (B, T, 4, H)."""

    def __init__(self, cfg: SemanticConfig, dim: int) -> None:
        super().__init__()
        self.fusion = cfg.fusion
        if self.fusion == "none":
            return
        self.text_block = self_attention_block(dim, cfg.heads, cfg.dropout)
        self.visual_block = self_attention_block(dim, cfg.heads, cfg.dropout)
        if self.fusion == "cross_attention":
            self.norm_q = nn.LayerNorm(dim)
            self.norm_kv = nn.LayerNorm(dim)
            self.cross = nn.MultiheadAttention(dim, cfg.heads, dropout=cfg.dropout, batch_first=True)
        elif self.fusion == "concat":
            self.merge = nn.Linear(2 * dim, dim)
        elif self.fusion == "gated":
            self.gate = nn.Linear(2 * dim, dim)

    @property
    def uses_teacher(self) -> bool:
        return self.fusion != "none"

    def forward(self, visual: Tensor, text: Tensor | None) -> Tensor:
        if self.fusion == "none":
            return visual
        if text is None:
            raise ValueError(
                f"model.semantic.fusion={self.fusion!r} needs teacher text features (teacher is None)"
            )
        batch, frames, regions, dim = visual.shape
        vis = visual.reshape(batch * frames, regions, dim)  # (BT, 4, H)
        txt = text.reshape(batch * frames, regions, dim)
        vis_ref = self.visual_block(vis)  # F'_vis
        txt_ref = self.text_block(txt)  # F'_text
        if self.fusion == "cross_attention":
            kv = self.norm_kv(vis_ref)
            attended = self.cross(self.norm_q(txt_ref), kv, kv, need_weights=False)[0]
            fused = vis + attended
        elif self.fusion == "sum":
            fused = vis_ref + txt_ref
        elif self.fusion == "concat":
            fused = self.merge(torch.cat([vis_ref, txt_ref], dim=-1))
        else:  # gated
            gate = self.gate(torch.cat([vis_ref, txt_ref], dim=-1)).sigmoid()
            fused = vis_ref + gate * txt_ref
        return fused.reshape(batch, frames, regions, dim)
