"""The four SAGE losses: L = L_rel + alpha L_obj + beta L_int + gamma L_kg.

* L_rel: sigmoid focal loss on ``cos(V_vr, F'_L) / tau`` over the training (base) predicates,
  summed over classes and averaged over pairs (the usual normalisation of multi-label focal
  loss: a pair's loss does not shrink as the vocabulary grows).
* L_obj: cross-entropy of subject and object against the CLIP text embeddings of the base
  object classes (novel or unknown objects carry the ignore index -100).
* L_int: sigmoid focal loss on the interaction logit, averaged over pairs.
* L_kg: ``1 - mean_i cos(F'_L_i, W_clip_i)``; zero when the classifier equals W_clip.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from sage_model.config import LossConfig

IGNORE = -100


def focal_loss(logits: Tensor, targets: Tensor, gamma: float) -> Tensor:
    """Element-wise sigmoid focal loss ``-(1 - p_t)^gamma log p_t`` (no alpha balancing)."""
    targets = targets.to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    prob = logits.sigmoid()
    p_t = prob * targets + (1 - prob) * (1 - targets)
    return (1 - p_t).pow(gamma) * bce


def relation_loss(rel_logits: Tensor, labels: Tensor, gamma: float) -> Tensor:
    """(B, C) logits and multi-hot labels -> scalar (sum over classes, mean over pairs)."""
    return focal_loss(rel_logits, labels, gamma).sum(dim=-1).mean()


def interaction_loss(int_logit: Tensor, target: Tensor, gamma: float) -> Tensor:
    return focal_loss(int_logit, target, gamma).mean()


def object_loss(subject_logits: Tensor, object_logits: Tensor, subject_t: Tensor, object_t: Tensor) -> Tensor:
    """CE(subject) + CE(object), each the mean over its non-ignored pairs; all ignored -> 0.

    Written as sum / count rather than ``reduction="mean"`` behind an ``any()`` test so that no
    step waits for the GPU to answer a Python ``if``.
    """
    total = subject_logits.new_zeros((), dtype=torch.float32)
    for logits, target in ((subject_logits, subject_t), (object_logits, object_t)):
        summed = F.cross_entropy(logits.float(), target, ignore_index=IGNORE, reduction="sum")
        total = total + summed / (target != IGNORE).sum().clamp_min(1)
    return total


def knowledge_loss(classifier: Tensor, knowledge: Tensor) -> Tensor:
    """``1 - mean cos(F'_L, W_clip)``; classifier (C, E) or per instance (B, C, E), knowledge (C, E)."""
    return (
        1.0 - F.cosine_similarity(classifier.float(), knowledge.float().expand_as(classifier), dim=-1).mean()
    )


@dataclass(frozen=True)
class LossTerms:
    """The total loss and its parts (0-dim tensors on the loss's device; parts detached, for logging).

    Parts stay tensors so that logging them costs no host-device sync per step (the trainer sums
    them on the device and reads them once per epoch).
    """

    total: Tensor
    rel: Tensor
    obj: Tensor
    int: Tensor
    kg: Tensor


def sage_loss(
    *,
    rel_logits: Tensor,
    labels: Tensor,
    int_logit: Tensor,
    interaction: Tensor,
    subject_logits: Tensor,
    object_logits: Tensor,
    subject_target: Tensor,
    object_target: Tensor,
    classifier: Tensor,
    knowledge: Tensor,
    cfg: LossConfig,
) -> LossTerms:
    rel = relation_loss(rel_logits.float(), labels, cfg.focal_gamma)
    obj = object_loss(subject_logits, object_logits, subject_target, object_target)
    inter = interaction_loss(int_logit.float(), interaction, cfg.focal_gamma)
    kg = knowledge_loss(classifier, knowledge)
    total = rel + cfg.alpha * obj + cfg.beta * inter + cfg.gamma * kg
    return LossTerms(
        total=total,
        rel=rel.detach(),
        obj=obj.detach(),
        int=inter.detach(),
        kg=kg.detach(),
    )
