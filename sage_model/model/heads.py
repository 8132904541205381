"""Small heads on top of the spatio-temporal features: interaction, adapters.

Adapters (Table 6) are CLIP-Adapter style residual bottlenecks, ``(1 - r) x + r A(x)``. The
visual adapter sits on the projected relation feature (just before the cosine with the
classifier), the text adapter on each classifier row F'_L. Both are part of stage 2 (they
adapt the two sides of the frozen cosine) and are bypassed in stage 1. ``A``'s last layer
starts at zero, so switching an adapter on at the start of stage 2 only rescales the features
and leaves every cosine -- hence the stage-1 predictions -- unchanged.
"""

from __future__ import annotations

from torch import Tensor, nn


class Adapter(nn.Module):
    """Residual bottleneck MLP: (..., E) -> (..., E)."""

    def __init__(self, dim: int, reduction: int, ratio: float) -> None:
        super().__init__()
        hidden = max(dim // reduction, 1)
        self.ratio = ratio
        last = nn.Linear(hidden, dim)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.body = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True), last)

    def forward(self, x: Tensor) -> Tensor:
        return (1.0 - self.ratio) * x + self.ratio * self.body(x)


class InteractionHead(nn.Module):
    """psi: V_vr (B, 4H) -> interaction logit (B,); y_int = sigmoid of it."""

    def __init__(self, in_dim: int, hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))

    def forward(self, v_vr: Tensor) -> Tensor:
        return self.mlp(v_vr).squeeze(-1)
