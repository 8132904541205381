"""(II) Spatio-temporal modelling: motion, a spatial transformer per keyframe, a temporal one across them.

Shapes: B pairs, T keyframes centred on the segment's keyframe, 4 region tokens (subject,
object, union, whole frame), H hidden width.

* Motion: normalised boxes of subject and object, their relative layout and the change from
  the previous keyframe -> MLP -> one vector per keyframe, added to all four region tokens
  (as OV-MMP adds its pair-position embedding), so the motion also survives the w/o Spa stand-in.
* Spatial: attention over the 4 region tokens of one keyframe; its subject/object outputs
  feed the object classifier.
* Temporal: per region, attention over the ``window`` keyframes around the centre; the centre
  output of each region is one stream of ``V_vr = V^s ⊕ V^o ⊕ V^u ⊕ V^b``.
* w/o Spa / w/o Tem: :class:`TokenwiseStandIn`, residual per-token MLP blocks whose width is
  chosen so the parameter count matches the transformer it replaces (tests check within 10%);
  with no cross-token mixing, the stand-in removes exactly the spatial / temporal interaction.
  The temporal stand-in averages the window (order-free pooling) instead of reading the centre.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sage_model.config import SpatioTemporalConfig

MOTION_FEATURES = 29  # see motion_features
EPS = 1e-3


def _geometry(box: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Centre x, centre y, width, height of (..., 4) x1y1x2y2 boxes (widths clamped > 0)."""
    w = (box[..., 2] - box[..., 0]).clamp_min(EPS)
    h = (box[..., 3] - box[..., 1]).clamp_min(EPS)
    return (box[..., 0] + box[..., 2]) / 2, (box[..., 1] + box[..., 3]) / 2, w, h


def motion_features(boxes: Tensor) -> Tensor:
    """Hand-made pair geometry per keyframe: (B, T, 2, 4) normalised boxes -> (B, T, 29).

    [subject box 4, object box 4, subject cx cy w h 4, object cx cy w h 4,
    relative layout (dx/w_o, dy/h_o, log w_s/w_o, log h_s/h_o, IoU) 5,
    change of both cx cy w h from the previous keyframe 8 (0 at the first)].
    """
    subj, obj = boxes[:, :, 0], boxes[:, :, 1]  # (B, T, 4)
    sx, sy, sw, sh = _geometry(subj)
    ox, oy, ow, oh = _geometry(obj)
    s_geo = torch.stack([sx, sy, sw, sh], dim=-1)
    o_geo = torch.stack([ox, oy, ow, oh], dim=-1)
    ix = (torch.minimum(subj[..., 2], obj[..., 2]) - torch.maximum(subj[..., 0], obj[..., 0])).clamp_min(0)
    iy = (torch.minimum(subj[..., 3], obj[..., 3]) - torch.maximum(subj[..., 1], obj[..., 1])).clamp_min(0)
    inter = ix * iy
    iou = inter / (sw * sh + ow * oh - inter).clamp_min(EPS)
    relative = torch.stack(
        [(sx - ox) / ow, (sy - oy) / oh, torch.log(sw / ow), torch.log(sh / oh), iou], dim=-1
    )
    geo = torch.cat([s_geo, o_geo], dim=-1)  # (B, T, 8)
    delta = torch.zeros_like(geo)
    delta[:, 1:] = geo[:, 1:] - geo[:, :-1]
    return torch.cat([subj, obj, geo, relative, delta], dim=-1)


class MotionEncoder(nn.Module):
    """F_mot: projection MLP of :func:`motion_features`, (B, T, 2, 4) -> (B, T, H)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        # The last layer starts at zero: added to every region token, a random motion embedding
        # as large as the region features would drown them until it learnt to shrink.
        last = nn.Linear(dim, dim)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.mlp = nn.Sequential(nn.Linear(MOTION_FEATURES, dim), nn.ReLU(inplace=True), last)

    def forward(self, boxes: Tensor) -> Tensor:
        return self.mlp(motion_features(boxes))


def transformer(dim: int, blocks: int, heads: int, dropout: float) -> nn.Module:
    """``blocks`` pre-norm encoder layers (feed-forward 4x width) and a final LayerNorm."""
    layer = nn.TransformerEncoderLayer(
        dim, heads, dim_feedforward=4 * dim, dropout=dropout, batch_first=True, norm_first=True
    )
    return nn.Sequential(nn.TransformerEncoder(layer, blocks, enable_nested_tensor=False), nn.LayerNorm(dim))


def transformer_parameter_count(dim: int, blocks: int) -> int:
    """Parameters of :func:`transformer` without building it."""
    per_block = (3 * dim * dim + 3 * dim) + (dim * dim + dim)  # attention in/out projections
    per_block += (dim * 4 * dim + 4 * dim) + (4 * dim * dim + dim)  # feed-forward
    per_block += 2 * 2 * dim  # two LayerNorms
    return blocks * per_block + 2 * dim


class TokenwiseStandIn(nn.Module):
    """Linear layers instead of a transformer: residual per-token MLP blocks, no token mixing.

    Each block is LayerNorm -> Linear(H, F) -> ReLU -> Linear(F, H) added back; F is chosen so
    the whole stand-in has about as many parameters as the transformer of the same depth.
    """

    def __init__(self, dim: int, blocks: int, dropout: float) -> None:
        super().__init__()
        target = transformer_parameter_count(dim, blocks) - 2 * dim  # minus the final LayerNorm
        hidden = max(round((target / blocks - 3 * dim) / (2 * dim + 1)), 1)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.LayerNorm(dim),
                nn.Linear(dim, hidden),
                nn.ReLU(inplace=True),
                nn.Dropout(dropout),
                nn.Linear(hidden, dim),
            )
            for _ in range(blocks)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = x + block(x)
        return self.norm(x)


class SpatioTemporal(nn.Module):
    """Enhanced region tokens + boxes -> V_vr (B, 4H) and the subject/object features (B, 2, H)."""

    def __init__(self, cfg: SpatioTemporalConfig, dim: int, blocks: int, frames: int) -> None:
        super().__init__()
        if cfg.window > frames:
            raise ValueError(
                f"model.spatio_temporal.window: {cfg.window} keyframes requested but the feature store has T={frames}"
            )
        self.window = cfg.window
        self.temporal_kind = cfg.temporal
        self.motion = MotionEncoder(dim)
        self.role = nn.Parameter(torch.randn(4, dim) * 0.02)  # region-role embedding
        self.time = nn.Parameter(torch.randn(cfg.window, dim) * 0.02)  # keyframe-position embedding
        self.spatial = self._body(cfg.spatial, dim, blocks, cfg)
        self.temporal = self._body(cfg.temporal, dim, blocks, cfg)

    @staticmethod
    def _body(kind: str, dim: int, blocks: int, cfg: SpatioTemporalConfig) -> nn.Module:
        if kind == "transformer":
            return transformer(dim, blocks, cfg.heads, cfg.dropout)
        return TokenwiseStandIn(dim, blocks, cfg.dropout)

    def centre_window(self, x: Tensor) -> Tensor:
        """Keep the ``window`` keyframes centred on the segment's keyframe (dim 1)."""
        start = x.shape[1] // 2 - self.window // 2
        return x[:, start : start + self.window]

    def forward(self, tokens: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
        tokens = self.centre_window(tokens)  # (B, t, 4, H)
        boxes = self.centre_window(boxes)  # (B, t, 2, 4)
        batch, frames, regions, dim = tokens.shape
        x = tokens + self.role + self.motion(boxes).unsqueeze(2)  # (B, t, 4, H)
        x = self.spatial(x.reshape(batch * frames, regions, dim)).reshape(batch, frames, regions, dim)
        objects = x[:, :, :2].mean(dim=1)  # (B, 2, H): subject / object for classification
        seq = (x + self.time.unsqueeze(1)).transpose(1, 2).reshape(batch * regions, frames, dim)
        seq = self.temporal(seq).reshape(batch, regions, frames, dim)  # (B, 4, t, H)
        streams = seq[:, :, frames // 2] if self.temporal_kind == "transformer" else seq.mean(dim=2)
        return streams.reshape(batch, regions * dim), objects  # V_vr (B, 4H), (B, 2, H)
